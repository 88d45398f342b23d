"""The cold-start fast paths give exactly what the general paths give, on random and odd inputs.

Each fast path (model's whole-slice endpoint columns, translate.port_backends via
topology.ready_endpoints, plan's cold full plan, diff against empty maps) is compared with the
general code it shortcuts, including the shapes where it must decline: duplicates across slices,
terminating/unready endpoints, hints, Local policies, several ports of one slice, odd or bad
endpoint fields (with the same error message), tight map capacities, frontends claimed twice.
"""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any

import bpfproxy.controller.diff as diff_mod
import bpfproxy.controller.model as model_mod
import bpfproxy.controller.plan as plan_mod
import pytest
from bpfproxy.controller.diff import SlotWrite, diff
from bpfproxy.controller.model import BadObject, parse_endpoint_slice, parse_service
from bpfproxy.controller.plan import BackendEntry, DatapathState, FrontendKey, Limits, plan
from bpfproxy.controller.topology import ready_endpoints
from bpfproxy.controller.translate import (
    BackendRef,
    Frontend,
    NodeConfig,
    _port_backends_general,
    externally_accessible,
    port_backends,
)
from kobj import endpoint, service, slice_
from planhelp import fe

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
        got = port_backends(svc, port, slices, NODE)
        assert got == want, (svc_obj, slice_objs)
        assert all(type(r) is BackendRef for r in got.internal + got.external + got.cluster)  # not plain tuples
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


def _random_frontends(rng: random.Random) -> list[Frontend]:
    """Frontends of up to 12 services: shared addresses, terminating and no backends, affinity, and
    sometimes one frontend key claimed twice."""
    out = []
    for i in range(rng.randint(0, 12)):
        svc = f"ns/s{rng.randrange(30)}"
        addr = f"10.96.0.{rng.randint(1, 6)}"
        for port in rng.sample([80, 81, 443], rng.randint(0, 2)):
            pool = [f"10.0.{i}.{n}:8080" for n in range(1, 9)]
            ready = rng.sample(pool, rng.randint(0, 5))
            term = rng.sample([b for b in pool if b not in ready], rng.randint(0, 2))
            out.append(fe(svc, addr, port, backends=ready, terminating=term, affinity=rng.choice([0, 0, 30])))
    if out and rng.random() < 0.1:
        out.append(out[0])  # claimed twice
    return out


def _internals(state: DatapathState) -> tuple[Any, ...]:
    assert all(type(b) is BackendEntry for b in state.backends.values())  # not plain tuples
    return (
        list(state.frontends.items()), list(state.backends.items()), state.addresses, state.names,
        state.stray_slots, state.skipped, state._by_service, state._by_svc_id, state._backends_by_svc,
        state._addr_refs, state._slots,
        [(a.limit, a._next, sorted(a._free), a._free_set) for a in (state.svc_id_alloc, state.backend_id_alloc)],
    )


def test_cold_plan_equals_general_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    bulk = general = 0
    cold = plan_mod._plan_cold
    for _ in range(1500):
        fronts = _random_frontends(rng)
        limits = rng.choice([Limits(), Limits(lb_entries=rng.randint(5, 60), backends=rng.randint(3, 40),
                                              svc_ids=rng.randint(2, 12))])
        taken: list[bool] = []
        monkeypatch.setattr(plan_mod, "_plan_cold", lambda *a, t=taken: t.append(cold(*a)) or t[-1])
        fast = plan(fronts, DatapathState(), limits)
        monkeypatch.setattr(plan_mod, "_plan_cold", lambda *a: False)
        slow = plan(fronts, DatapathState(), limits)
        assert _internals(fast) == _internals(slow), fronts
        # the next (partial and full) plans from either give the same too
        again = _random_frontends(rng)
        services = {f.service for f in fronts + again}
        assert _internals(plan(again, fast, limits, services=services)) == _internals(
            plan(again, slow, limits, services=services))
        bulk += taken == [True]
        general += taken == [False]
    assert bulk > 300 and general > 300, (bulk, general)


def test_cold_plan_declines_non_empty_states() -> None:
    fronts = [fe("ns/a", backends=["10.0.0.1:80"])]
    state = plan(fronts, DatapathState(), Limits())
    assert not plan_mod._plan_cold(["ns/a"], {"ns/a": fronts}, state.copy(), Limits())
    fresh = DatapathState()
    fresh.stray_slots.add((FrontendKey("10.96.0.10", 80, 6, 0), 1))
    assert not plan_mod._plan_cold(["ns/a"], {"ns/a": fronts}, fresh, Limits())
    used = DatapathState()
    used.backend_id_alloc.reserve(3)
    assert not plan_mod._plan_cold(["ns/a"], {"ns/a": fronts}, used, Limits())
    assert not plan_mod._plan_cold(["ns/a"], {"ns/a": fronts}, DatapathState(), Limits(lb_entries=2))


def test_diff_from_empty_equals_general_diff() -> None:
    rng = random.Random(5)
    for _ in range(500):
        desired = plan(_random_frontends(rng), DatapathState(), Limits())
        got = diff(DatapathState(), desired)
        assert got == diff_mod._diff_general(DatapathState(), desired, None)
        assert all(type(s) is SlotWrite for s in got.slot_puts)  # not plain tuples
    # anything applied takes the general path: strays, names, addresses
    desired = plan([fe("ns/a", backends=["10.0.0.1:80", "10.0.0.2:80"])], DatapathState(), Limits())
    for field in ("stray_slots", "names", "addresses"):
        applied = DatapathState()
        if field == "stray_slots":
            applied.stray_slots.add((FrontendKey("10.96.0.10", 80, 6, 0), 7))
        elif field == "names":
            applied.names[9] = "ns/old:80/TCP"
        else:
            applied.addresses.add("10.96.0.99")
        assert diff(applied, desired) == diff_mod._diff_general(applied, desired, None)
        assert diff(applied, desired) != diff(DatapathState(), desired)


ODD_ENDPOINT_FIELDS: list[tuple[str, Any]] = [
    ("addresses", ["10.0.0.1", "10.0.0.2"]), ("addresses", []), ("addresses", None), ("addresses", "10.0.0.1"),
    ("addresses", ["010.0.0.1"]), ("addresses", ["10.0.0.1 "]), ("addresses", ["10.0.0.256"]),
    ("addresses", ["1.2.3.4\n5.6.7.8"]), ("addresses", ["fd00::1"]), ("addresses", ["::ffff:1.2.3.4"]),
    ("addresses", [167772161]), ("addresses", ["10.0.0.1\n"]), ("addresses", ["\uff110.0.0.1"]),
    ("conditions", None), ("conditions", {}), ("conditions", {"ready": 1}), ("conditions", {"serving": 0}),
    ("conditions", {"terminating": "true"}), ("conditions", {"ready": None, "serving": False}),
    ("conditions", []), ("nodeName", None), ("nodeName", ""), ("nodeName", 7), ("zone", "z1"), ("zone", None),
    ("zone", 3), ("hints", None), ("hints", {}), ("hints", {"forZones": [{"name": "z1"}]}),
    ("hints", {"forNodes": [{"name": "n1"}], "forZones": []}), ("hints", {"forZones": [{}]}),
    ("targetRef", {"kind": "Pod", "name": "p"}),
]


def _parse_both(obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(fast-path result, general-path result): the parsed slice or the BadObject message."""
    out = []
    for force_general in (False, True):
        with monkeypatch.context() as m:
            if force_general:
                m.setattr(model_mod, "_columns_fast", lambda raws: None)
            try:
                out.append(parse_endpoint_slice(obj))
            except BadObject as e:
                out.append(str(e))
    return out[0], out[1]


def test_slice_fast_path_equals_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    fast_taken = 0
    for _ in range(3000):
        eps: list[Any] = []
        for _ in range(rng.randrange(0, 6)):
            ep: Any = endpoint(f"10.{rng.randrange(3)}.0.{rng.randrange(1, 255)}",
                               ready=rng.choice([True, False, None]), serving=rng.choice([True, False, None]),
                               terminating=rng.choice([True, False, None]), node=rng.choice(["n1", "n2", ""]))
            if rng.random() < 0.15:
                field, value = rng.choice(ODD_ENDPOINT_FIELDS)
                ep[field] = value
            if rng.random() < 0.02:
                ep = rng.choice([None, [], "x", MappingProxyType(ep)])
            eps.append(ep)
        obj = slice_(endpoints=eps, address_type=rng.choice(["IPv4"] * 8 + ["IPv6", "FQDN"]))
        fast, general = _parse_both(obj, monkeypatch)
        assert fast == general, eps
        if not isinstance(fast, str):  # same columns, same sharing of equal values
            assert type(fast.addresses) is tuple and all(type(a) is str for a in fast.addresses)
        fast_taken += obj["addressType"] == "IPv4" and model_mod._columns_fast(eps) is not None and len(eps) > 2
    assert fast_taken > 500, fast_taken


@pytest.mark.parametrize("field,value", ODD_ENDPOINT_FIELDS)
def test_slice_fast_path_declines_each_odd_field(field: str, value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [endpoint("10.0.0.1"), endpoint("10.0.0.2")]
    assert model_mod._columns_fast(eps) is not None
    eps[1][field] = value
    fast, general = _parse_both(slice_(endpoints=eps), monkeypatch)
    assert fast == general
    common = (field in ("targetRef", "zone", "nodeName") and value not in (7, 3)) or (
        field == "conditions" and value in ({}, {"ready": None, "serving": False}))
    assert (model_mod._columns_fast(eps) is not None) == common, (field, value)
    if isinstance(fast, str):  # the error names the slice and the field of the second endpoint
        assert fast.startswith("EndpointSlice default/web-abc: ") and "endpoints[1]" in fast, fast
