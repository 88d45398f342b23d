"""The cold-start fast paths give exactly what the general paths give, on random and odd inputs.

Each fast path (translate.port_backends via topology.ready_endpoints, plan's cold service, diff
against an empty applied state) is compared with the general code it shortcuts, including the
shapes where it must decline: duplicates across slices, terminating/unready endpoints, hints,
Local policies, several ports of one slice.
"""

from __future__ import annotations

import random
from typing import Any

from bpfproxy.controller.model import parse_endpoint_slice, parse_service
from bpfproxy.controller.topology import ready_endpoints
from bpfproxy.controller.translate import (
    NodeConfig,
    _port_backends_general,
    externally_accessible,
    port_backends,
)
from kobj import endpoint, service, slice_

NODE = NodeConfig(node_name="n1", zone="z1", node_ips=("192.168.0.1",))


def _random_endpoint(rng: random.Random, *, ready_only: bool) -> dict[str, Any]:
    ip = f"10.{rng.randrange(2)}.{rng.randrange(3)}.{rng.randrange(1, 12)}"
    if ready_only:
        ep = endpoint(ip, ready=rng.choice([True, None]), serving=rng.choice([True, False, None]),
                      terminating=rng.choice([True, False, None]), node=rng.choice(["n1", "n2"]))
    else:
        ep = endpoint(ip, ready=rng.choice([True, False, None]), serving=rng.choice([True, False, None]),
                      terminating=rng.choice([True, False, None]), node=rng.choice(["n1", "n2"]))
    if rng.random() < 0.1:
        ep["hints"] = {"forZones": [{"name": rng.choice(["z1", "z2"])}]}
    if rng.random() < 0.1:
        ep["hints"] = {"forNodes": [{"name": rng.choice(["n1", "n2"])}]}
    return ep


def _random_case(rng: random.Random) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec: dict[str, Any] = {
        "internalTrafficPolicy": rng.choice(["Cluster", "Cluster", "Local"]),
        "externalTrafficPolicy": rng.choice(["Cluster", "Local"]),
    }
    kind = rng.choice(["ClusterIP", "ClusterIP", "NodePort"])
    ports = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    svc = service(type=kind, ports=ports, **spec)
    if rng.random() < 0.2:
        svc["spec"]["externalIPs"] = ["192.0.2.7"]
    slices = []
    ready_only = rng.random() < 0.6
    for n in range(rng.choice([0, 1, 1, 1, 2, 3])):
        slice_ports: list[dict[str, Any]] = [{"name": "http", "port": rng.choice([8080, 8081]), "protocol": "TCP"}]
        if rng.random() < 0.2:  # the same port name twice: two numbers per endpoint
            slice_ports.append({"name": "http", "port": 9090, "protocol": "TCP"})
        if rng.random() < 0.1:
            slice_ports = [{"name": "other", "port": 1}]
        eps = [_random_endpoint(rng, ready_only=ready_only) for _ in range(rng.randrange(0, 8))]
        sl = slice_(f"web-{n}", ports=slice_ports, endpoints=eps,
                    address_type=rng.choice(["IPv4"] * 9 + ["IPv6"]) if not eps else "IPv4")
        if rng.random() < 0.05:
            sl["metadata"]["labels"] = {}
        slices.append(sl)
    return svc, slices


def test_port_backends_fast_path_equals_general_path() -> None:
    rng = random.Random(7)
    taken = declined = 0
    for _ in range(3000):
        svc_obj, slice_objs = _random_case(rng)
        svc = parse_service(svc_obj)
        slices = [parse_endpoint_slice(s) for s in slice_objs]
        port = svc.ports[0]
        external_ok = externally_accessible(svc, port)
        itp_local = svc.internal_traffic_policy == "Local"
        etp_local = svc.external_traffic_policy == "Local" and external_ok
        want = _port_backends_general(svc, port, slices, NODE, external_ok, itp_local, etp_local)
        assert port_backends(svc, port, slices, NODE) == want, (svc_obj, slice_objs)
        assert port_backends(svc, port, iter(slices), NODE) == want  # a one-shot iterable too
        if not itp_local and not etp_local and ready_endpoints(port, slices) is not None:
            taken += 1
        else:
            declined += 1
    assert taken > 300 and declined > 300, (taken, declined)


def test_ready_endpoints_declines_odd_shapes() -> None:
    svc = parse_service(service(ports=[{"name": "http", "port": 80}]))
    port = svc.ports[0]

    def ready(*slices: dict[str, Any]) -> list[tuple[str, int]] | None:
        return ready_endpoints(port, [parse_endpoint_slice(s) for s in slices])

    # duplicates across slices collapse; sorted by address as numbers, not text
    a = slice_("a", endpoints=[endpoint("10.0.0.10"), endpoint("10.0.0.9")])
    b = slice_("b", endpoints=[endpoint("10.0.0.9"), endpoint("10.0.0.2")])
    assert ready(a, b) == [("10.0.0.2", 8080), ("10.0.0.9", 8080), ("10.0.0.10", 8080)]
    assert ready(a) == [("10.0.0.9", 8080), ("10.0.0.10", 8080)]
    # a duplicate inside one slice
    assert ready(slice_("c", endpoints=[endpoint("10.0.0.3"), endpoint("10.0.0.3")])) == [("10.0.0.3", 8080)]
    # two numbers for the port name
    two = slice_("d", ports=[{"name": "http", "port": 8080}, {"name": "http", "port": 80}],
                 endpoints=[endpoint("10.0.0.1")])
    assert ready(two) == [("10.0.0.1", 80), ("10.0.0.1", 8080)]
    # unset ready counts as ready
    assert ready(slice_("e", endpoints=[endpoint("10.0.0.1", ready=None)])) == [("10.0.0.1", 8080)]
    # declined: terminating / not ready / hints anywhere
    assert ready(a, slice_("f", endpoints=[endpoint("10.0.0.5", ready=False, serving=True,
                                                     terminating=True)])) is None
    assert ready(slice_("g", endpoints=[endpoint("10.0.0.5", ready=False)])) is None
    hinted = slice_("h", endpoints=[endpoint("10.0.0.5")])
    hinted["endpoints"][0]["hints"] = {"forZones": [{"name": "z1"}]}
    assert ready(a, hinted) is None
    # slices of no service, of another family or without the port are ignored, not declined
    foreign = slice_("i", svc=None, endpoints=[endpoint("10.0.0.7", ready=False)])
    other_port = slice_("j", ports=[{"name": "x", "port": 1}], endpoints=[endpoint("10.0.0.8", ready=False)])
    assert ready(a, foreign, other_port) == [("10.0.0.9", 8080), ("10.0.0.10", 8080)]
    assert ready() == []
