"""snapshot: a whole source dump to the desired datapath as JSON-able data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bpfproxy.controller.snapshot import plan_json
from bpfproxy.controller.translate import NodeConfig
from kobj import endpoint, service, slice_


def test_plan_json(tmp_path: Path) -> None:
    docs = [
        service(sessionAffinity="ClientIP"),
        slice_(endpoints=[endpoint("10.0.0.2"), endpoint("10.0.0.1", ready=False, serving=True,
                                                          terminating=True)]),
        service("bad", ip="10.96.0.300"),
    ]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs))
    out = plan_json(str(tmp_path), NodeConfig())
    json.dumps(out)
    assert out["bad_objects"] == 1 and out["addresses"] == ["10.96.0.10"] and out["skipped"] == {}
    (f,) = out["frontends"]
    assert (f["name"], f["addr"], f["port"], f["proto"], f["flags"], f["affinity_timeout"]) == (
        "default/web:http/TCP", "10.96.0.10", 80, "TCP", ["affinity"], 10800)
    assert [(b["addr"], b["slot"], b["terminating"]) for b in f["backends"]] == [
        ("10.0.0.2", 1, False), ("10.0.0.1", None, True)]


def _demo(tmp_path: Path) -> str:
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}
    svc = service(type="LoadBalancer", externalTrafficPolicy="Local",
                  ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    e1, e2 = endpoint("10.0.0.1", node="n1"), endpoint("10.0.0.2", node="n2")
    e1["hints"] = {"forZones": [{"name": "zone-a"}]}
    e2["hints"] = {"forZones": [{"name": "zone-b"}]}
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([node, svc, slice_(endpoints=[e1, e2])]))
    return str(tmp_path)


def test_plan_json_external_frontends_and_zone_from_node(tmp_path: Path) -> None:
    out = plan_json(_demo(tmp_path), NodeConfig(node_name="n1", node_ips=("192.168.0.2",)))
    assert out["node"]["zone"] == "zone-a"
    # zone hints: only the zone-a endpoint for cluster traffic
    assert [b["addr"] for b in out["frontends"][0]["backends"]] == ["10.0.0.1"]
    assert [(f["kind"], f["addr"], f["port"], [b["addr"] for b in f["backends"]]) for f in out["external_frontends"]] \
        == [("NodePort", "192.168.0.2", 30080, ["10.0.0.1"]), ("LoadBalancer", "192.0.2.10", 80, ["10.0.0.1"])]


def test_cli_plan_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bpfproxy.cli import main

    flags = ["--source", f"file:{_demo(tmp_path)}", "--node-name", "n2", "--node-ip", "192.168.0.3",
             "--cluster-cidr", "10.0.0.0/8", "--service-cidr", "10.96.0.0/16"]
    assert main(["plan", *flags, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["external_frontends"][0]["addr"] == "192.168.0.3"
    rows = [
        (["10.0.0.9", "10.96.0.10:80"], {"verdict": "forward", "backends": ["10.0.0.1:8080", "10.0.0.2:8080"],
                                          "masquerade": False, "service": "default/web:http"}),
        # externalTrafficPolicy Local from outside on n2: only n2's endpoint, source kept
        (["203.0.113.1", "192.168.0.3:30080"], {"verdict": "forward", "backends": ["10.0.0.2:8080"],
                                                "masquerade": False, "service": "default/web:http"}),
        (["10.0.0.9", "10.96.0.77:80"], {"verdict": "drop", "backends": [], "masquerade": False, "service": None}),
        (["10.0.0.9", "10.97.0.1:80"], {"verdict": "pass", "backends": [], "masquerade": False, "service": None}),
    ]
    for args, want in rows:
        assert main(["explain", *flags, "--json", *args]) == 0
        assert json.loads(capsys.readouterr().out) == want
    assert main(["explain", *flags, "10.0.0.9", "10.96.0.10:80"]) == 0
    assert "verdict:    forward" in capsys.readouterr().out
    assert main(["explain", *flags, "10.0.0.9", "10.96.0.10"]) == 2
    assert main(["explain", "--source", f"file:{tmp_path}/missing", "10.0.0.9", "10.96.0.10:80"]) == 1
    assert "no such file" in capsys.readouterr().err
