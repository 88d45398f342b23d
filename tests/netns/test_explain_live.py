"""explain --live: a crafted packet through the program really attached in a node namespace.

The services are programmed through the agent's own pipeline (programmed_frontends -> plan -> diff ->
MapsWriter) into the session's pinned maps, from_pod is attached to a pod device of a namespace
made for the test, and run_live() (inside that namespace) must agree with explain(): verdict,
backend within the computed set, and no conntrack or affinity entry left behind.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from bpfproxy.controller.diff import diff
from bpfproxy.controller.explain import explain
from bpfproxy.controller.model import parse_endpoint_slice, parse_service
from bpfproxy.controller.plan import Limits, plan
from bpfproxy.controller.sync import MapsWriter
from bpfproxy.controller.translate import NodeConfig, programmed_frontends
from bpfproxy.loader.attach import attach
from bpfproxy.loader.build import PROG_FROM_POD

from bpfproxy.explain_live import LiveError, run_live
from bpfproxy.lab.netns import in_netns

if TYPE_CHECKING:
    from conftest import Node

NODE = NodeConfig(node_name="n1", node_ips=("192.168.0.2",), cluster_cidrs=("10.244.0.0/16",))
CLIENT = "10.244.0.10"


def _objects() -> tuple[dict[str, Any], dict[str, list[Any]]]:
    def svc(name: str, ip: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80}], **spec}}

    def sl(name: str, *endpoints: tuple[str, str]) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                              for ip, node in endpoints]}

    services = {s.key: s for s in map(parse_service, [
        svc("web", "10.96.0.10", sessionAffinity="ClientIP"),
        svc("local", "10.96.0.11", internalTrafficPolicy="Local"),
        svc("empty", "10.96.0.12"),
    ])}
    slices = {
        "default/web": [parse_endpoint_slice(sl("web", ("10.244.1.1", "n1"), ("10.244.1.2", "n2")))],
        "default/local": [parse_endpoint_slice(sl("local", ("10.244.1.3", "n2")))],
    }
    return services, slices


def test_live_matches_explain_and_leaves_no_state(datapath: Any, maps: Any, node: Node) -> None:
    services, slices = _objects()
    fronts = [f for key in sorted(services) for f in programmed_frontends(services[key], slices.get(key, []), NODE)]
    writer = MapsWriter(maps)
    applied = writer.read_applied()
    writer.apply(diff(applied, plan(fronts, applied, Limits())))
    with in_netns(node.ns):
        attach(node.pods[0].host_ifname, "ingress", prog_fd=datapath.prog_fds[PROG_FROM_POD], name=PROG_FROM_POD)

    rows = [("10.96.0.10", 80, "tcp", "forward"), ("10.96.0.10", 80, "udp", "reject"),
            ("10.96.0.11", 80, "tcp", "drop"), ("10.96.0.12", 80, "tcp", "reject"),
            ("10.96.0.10", 81, "tcp", "reject"), ("10.97.0.1", 80, "tcp", "pass")]
    for dst, port, proto, verdict in rows:
        want = explain(services, lambda k: slices.get(k, []), NODE, CLIENT, dst, port, proto)
        assert want.verdict == verdict, (dst, port, proto, want.reason)
        with in_netns(node.ns):
            got = run_live(datapath.pin_dir, CLIENT, dst, port, proto)
        assert got.verdict == want.verdict, (dst, port, proto, got)
        if verdict == "forward":
            assert got.backend in want.backends
            assert got.reason in ("fwd_new", "fwd_affinity")
            assert "conntrack forward entry" in got.cleaned and "conntrack reply entry" in got.cleaned
            assert any(c.startswith("affinity entry") for c in got.cleaned)  # web has ClientIP affinity
        # nothing the packet created stays behind
        assert list(maps.ct.keys()) == []
        assert list(maps.affinity.keys()) == []
    assert got.reason == "pass"  # the last row: the V_PASS counter moved


def test_live_keeps_existing_affinity(datapath: Any, maps: Any, node: Node) -> None:
    services, slices = _objects()
    fronts = programmed_frontends(services["default/web"], slices["default/web"], NODE)
    writer = MapsWriter(maps)
    applied = writer.read_applied()
    writer.apply(diff(applied, plan(fronts, applied, Limits())))
    with in_netns(node.ns):
        attach(node.pods[0].host_ifname, "ingress", prog_fd=datapath.prog_fds[PROG_FROM_POD], name=PROG_FROM_POD)
        first = run_live(datapath.pin_dir, CLIENT, "10.96.0.10", 80, "tcp")
    # a real client's affinity entry exists before the next run: it must be left exactly as it was
    from bpfproxy.loader.structs import AffinityKey, AffinityVal

    (svc_entry,) = [v for k, v in maps.svc.items() if k.port != 0 and k.slot == 0]
    key = AffinityKey(svc_id=svc_entry.svc_id, client=int.from_bytes(bytes([10, 244, 0, 10]), "little"))
    (backend_id,) = [k.value for k, v in maps.backend.items()
                     if f"{v.addr & 0xFF}.{v.addr >> 8 & 0xFF}.{v.addr >> 16 & 0xFF}.{v.addr >> 24}"
                     == (first.backend or "").split(":")[0]]
    # used a second ago: a fixed stamp expires once the uptime passes the timeout, and "now" could be
    # ahead of the datapath's coarse clock (a stamp in its future reads as expired)
    stamp = time.monotonic_ns() - 10**9
    maps.affinity.put(key, AffinityVal(last_used=stamp, backend_id=backend_id))
    with in_netns(node.ns):
        again = run_live(datapath.pin_dir, CLIENT, "10.96.0.10", 80, "tcp")
    assert again.backend == first.backend and again.reason == "fwd_affinity"
    kept = maps.affinity.get(key)
    assert kept is not None and (kept.last_used, kept.backend_id) == (stamp, backend_id)
    assert list(maps.ct.keys()) == []


def test_live_without_attached_program_says_so(datapath: Any, node: Node) -> None:
    with in_netns(node.ns), pytest.raises(LiveError, match="no bpfproxy from_pod program is attached"):
        run_live(datapath.pin_dir, CLIENT, "10.96.0.10", 80, "tcp")
