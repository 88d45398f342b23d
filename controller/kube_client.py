"""A small Kubernetes REST client for the kube source: kubeconfig / in-cluster credentials -> urllib3 GETs.

Place in the data flow: under source_kube (its `_Api` calls `param_serialize` / `call_api` on whatever
`new_api_client` returned). The `kubernetes` package costs the agent ~22 MiB and ~0.15 s to import
(kube_config pulls oauthlib, requests, pydantic, ...) for three GETs, so the common credentials are
handled here: a server URL, a CA (file or data), a client certificate and key (files or data), a
bearer token or token file (re-read on every request: projected service-account tokens rotate),
insecure-skip-tls-verify, and the in-cluster service account. A kubeconfig using anything else
(exec or auth-provider plugins, proxies, basic auth, impersonation) returns None from
`lite_client`, and the caller uses the kubernetes client instead.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

#: the service-account directory mounted into every pod
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

#: user fields the lite client understands (anything else: the kubernetes client)
_USER_FIELDS = {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
                "client-key-data"}
#: cluster fields the lite client understands
_CLUSTER_FIELDS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                   "tls-server-name", "extensions"}


@dataclass(frozen=True)
class Credentials:
    """Where and how to connect."""

    server: str
    """https://host:port (or http:// for tests)"""
    ca_file: str = ""
    """PEM CA bundle ("" = the system's)"""
    cert_file: str = ""
    """client certificate (PEM file)"""
    key_file: str = ""
    """client key (PEM file)"""
    token: str = ""
    """bearer token"""
    token_file: str = ""
    """file holding the bearer token (read on every request)"""
    verify: bool = True
    """verify the server's certificate"""
    server_hostname: str = ""
    """TLS server name when it differs from the host (tls-server-name)"""


class _Response:
    """What source_kube reads from call_api: the status and the raw urllib3 response."""

    def __init__(self, response: Any) -> None:
        self.status: int = response.status
        self.response = response


class LiteClient:
    """GETs with a urllib3 pool: the two methods of the kubernetes ApiClient that source_kube uses."""

    def __init__(self, creds: Credentials) -> None:
        import urllib3

        self.creds = creds
        kw: dict[str, Any] = {}
        if creds.server.startswith("https:"):
            kw["cert_reqs"] = "CERT_REQUIRED" if creds.verify else "CERT_NONE"
            if creds.ca_file:
                kw["ca_certs"] = creds.ca_file
            if creds.cert_file:
                kw["cert_file"], kw["key_file"] = creds.cert_file, creds.key_file
            if creds.server_hostname:
                kw["server_hostname"] = creds.server_hostname
            if not creds.verify:
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=4, retries=False, **kw)

    def _token(self) -> str:
        if self.creds.token_file:
            with open(self.creds.token_file) as f:
                return f.read().strip()
        return self.creds.token

    def param_serialize(
        self, method: str, resource_path: str, query_params: list[tuple[str, Any]] | None = None,
        header_params: dict[str, str] | None = None, auth_settings: list[str] | None = None,
    ) -> tuple[str, str, dict[str, str], None, None]:
        """(method, url, headers, body, post_params) as the kubernetes ApiClient returns them."""
        query = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in query_params or ()]
        url = self.creds.server.rstrip("/") + resource_path + (f"?{urlencode(query)}" if query else "")
        headers = dict(header_params or {})
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return method, url, headers, None, None

    def call_api(self, method: str, url: str, header_params: dict[str, str], body: None = None,
                 post_params: None = None, _request_timeout: tuple[float, float] | None = None) -> _Response:
        """The request; the response body is not read (stream it or read .response.data)."""
        import urllib3

        timeout = urllib3.Timeout(connect=_request_timeout[0], read=_request_timeout[1]) if _request_timeout else None
        return _Response(self.pool.request(method, url, headers=header_params, preload_content=False,
                                           timeout=timeout, retries=False))


def lite_client(kubeconfig: str | None) -> LiteClient | None:
    """A LiteClient for the kubeconfig's current context (None: the in-cluster service account), or
    None when it uses something only the kubernetes client handles. Raises ValueError on a broken one."""
    creds = in_cluster_credentials() if kubeconfig is None else kubeconfig_credentials(kubeconfig)
    return LiteClient(creds) if creds is not None else None


def in_cluster_credentials() -> Credentials:
    """The pod's service account (KUBERNETES_SERVICE_HOST/PORT, its token and CA)."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ValueError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset")
    token = os.path.join(SA_DIR, "token")
    if not os.path.isfile(token):
        raise ValueError(f"no service account token at {token}")
    host = f"[{host}]" if ":" in host else host
    return Credentials(server=f"https://{host}:{port}", ca_file=os.path.join(SA_DIR, "ca.crt"), token_file=token)


def kubeconfig_credentials(path: str) -> Credentials | None:
    """The current context of a kubeconfig file, or None when it needs the kubernetes client."""
    import yaml

    try:
        with open(os.path.expanduser(path)) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read kubeconfig {path}: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"kubeconfig {path} is not a mapping")
    base = os.path.dirname(os.path.abspath(os.path.expanduser(path)))

    def named(section: str, name: Any) -> dict[str, Any]:
        for item in doc.get(section) or ():
            if isinstance(item, dict) and item.get("name") == name:
                inner = item.get(section[:-1])
                return inner if isinstance(inner, dict) else {}
        raise ValueError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    context = named("contexts", doc.get("current-context"))
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    if set(user) - _USER_FIELDS or set(cluster) - _CLUSTER_FIELDS or not cluster.get("server"):
        return None  # exec/auth-provider plugins, proxies, impersonation...: the kubernetes client
    return Credentials(
        server=str(cluster["server"]),
        ca_file=_file(base, cluster, "certificate-authority"),
        cert_file=_file(base, user, "client-certificate"),
        key_file=_file(base, user, "client-key"),
        token=str(user.get("token") or ""),
        token_file=_path(base, str(user["tokenFile"])) if user.get("tokenFile") else "",
        verify=not cluster.get("insecure-skip-tls-verify"),
        server_hostname=str(cluster.get("tls-server-name") or ""),
    )


def _path(base: str, p: str) -> str:
    return p if os.path.isabs(p) else os.path.join(base, p)


def _file(base: str, section: dict[str, Any], field: str) -> str:
    """The file of field, or of field-data written to a private temp file (removed at exit)."""
    data = section.get(f"{field}-data")
    if data:
        fd, name = tempfile.mkstemp(prefix="bpfproxy-kube-")
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(data))
        atexit.register(_remove, name)
        return name
    value = section.get(field)
    return _path(base, str(value)) if value else ""


def _remove(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)
