"""kube_client: which kubeconfigs the small client takes (and how), which go to the kubernetes client."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from bpfproxy.controller.kube_client import LiteClient, kubeconfig_credentials, lite_client


def kubeconfig(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster or {"server": "https://10.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "other", "context": {"cluster": "nope", "user": "nope"}},
                     {"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_token_and_relative_files(tmp_path: Path) -> None:
    creds = kubeconfig_credentials(kubeconfig(
        tmp_path, {"tokenFile": "tok", "client-certificate": "c.pem", "client-key": "/abs/k.pem"},
        {"server": "https://10.0.0.1:6443", "certificate-authority": "ca.pem", "insecure-skip-tls-verify": True},
    ))
    assert creds is not None
    assert (creds.server, creds.token_file, creds.ca_file) == (
        "https://10.0.0.1:6443", str(tmp_path / "tok"), str(tmp_path / "ca.pem"))
    assert (creds.cert_file, creds.key_file, creds.verify) == (str(tmp_path / "c.pem"), "/abs/k.pem", False)


def test_data_fields_become_private_files(tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    creds = kubeconfig_credentials(kubeconfig(
        tmp_path, {"token": "t0k", "client-certificate-data": base64.b64encode(pem).decode(),
                   "client-key-data": base64.b64encode(b"key").decode()},
        {"server": "https://h:1", "certificate-authority-data": base64.b64encode(pem).decode()},
    ))
    assert creds is not None and creds.token == "t0k"
    assert Path(creds.ca_file).read_bytes() == pem and Path(creds.cert_file).read_bytes() == pem
    assert Path(creds.key_file).read_bytes() == b"key"
    assert os.stat(creds.key_file).st_mode & 0o077 == 0


@pytest.mark.parametrize("user,cluster", [
    ({"exec": {"command": "aws"}}, None),
    ({"auth-provider": {"name": "oidc"}}, None),
    ({"token": "x"}, {"server": "https://h:1", "proxy-url": "http://proxy:3128"}),
    ({"username": "a", "password": "b"}, None),
])
def test_plugins_and_proxies_go_to_the_kubernetes_client(tmp_path: Path, user: dict[str, Any],
                                                         cluster: dict[str, Any] | None) -> None:
    assert kubeconfig_credentials(kubeconfig(tmp_path, user, cluster)) is None
    assert lite_client(kubeconfig(tmp_path, user, cluster)) is None


def test_broken_kubeconfig_names_it(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({"current-context": "x", "contexts": []}))
    with pytest.raises(ValueError, match="no context named 'x'"):
        kubeconfig_credentials(str(path))
    with pytest.raises(ValueError, match="cannot read kubeconfig"):
        kubeconfig_credentials(str(tmp_path / "missing"))


def test_request_url_and_token_file_reread(tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("one\n")
    client = lite_client(kubeconfig(tmp_path, {"tokenFile": str(tok)}, {"server": "http://127.0.0.1:9/"}))
    assert isinstance(client, LiteClient)
    method, url, headers, _, _ = client.param_serialize(
        "GET", "/api/v1/nodes", [("watch", True), ("fieldSelector", "metadata.name=n1"), ("limit", 500)],
        {"Accept": "application/json"})
    assert (method, url) == ("GET", "http://127.0.0.1:9/api/v1/nodes?watch=true&fieldSelector=metadata.name%3Dn1&limit=500")
    assert headers == {"Accept": "application/json", "Authorization": "Bearer one"}
    tok.write_text("two\n")  # projected tokens rotate: read on every request
    assert client.param_serialize("GET", "/api/v1/nodes")[2]["Authorization"] == "Bearer two"
