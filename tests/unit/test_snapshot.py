"""snapshot: a whole source dump to the desired datapath as JSON-able data."""

from __future__ import annotations

import json
from pathlib import Path

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
