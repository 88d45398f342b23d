"""Parsing Services and EndpointSlices from their dict form, including every bad-input case."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from bpfproxy.controller.model import BadObject, parse_endpoint_slice, parse_service
from kobj import endpoint, service, slice_


def test_service_fields() -> None:
    obj = service(
        ports=[
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053},
        ],
        type="NodePort",
        sessionAffinity="ClientIP",
        externalIPs=["192.0.2.1"],
        loadBalancerSourceRanges=["10.0.0.0/8 "],
        externalTrafficPolicy="Local",
    )
    obj["spec"]["clusterIPs"] = ["10.96.0.10", "fd00::10"]
    obj["metadata"]["labels"] = {"app": "web"}
    svc = parse_service(obj)
    assert svc.key == "default/web"
    assert svc.type == "NodePort"
    assert svc.cluster_ips == ("10.96.0.10",)
    assert [(p.name, p.protocol, p.port, p.target_port, p.node_port) for p in svc.ports] == [
        ("http", "TCP", 80, "web", None),
        ("dns", "UDP", 53, 5353, 30053),
    ]
    assert svc.session_affinity == "ClientIP" and svc.affinity_timeout == 10800
    assert svc.external_ips == ("192.0.2.1",)
    assert svc.load_balancer_source_ranges == ("10.0.0.0/8",)
    assert svc.external_traffic_policy == "Local" and svc.internal_traffic_policy == "Cluster"
    assert svc.labels == {"app": "web"}


def test_service_variants() -> None:
    headless = parse_service(service(ip="None"))
    assert headless.headless and headless.cluster_ips == ()
    ext = parse_service(service(ip=None, type="ExternalName", externalName="example.com"))
    assert ext.external_name == "example.com" and ext.cluster_ips == ()
    only_cluster_ip = service()
    del only_cluster_ip["spec"]["clusterIPs"]
    assert parse_service(only_cluster_ip).cluster_ips == ("10.96.0.10",)
    timeout = parse_service(service(sessionAffinity="ClientIP",
                                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    assert timeout.affinity_timeout == 60
    single = parse_service(service(ports=[{"port": 80}]))
    assert single.ports[0].name == "" and single.ports[0].protocol == "TCP" and single.ports[0].target_port == 80
    lb = service(type="LoadBalancer")
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "x.example"}]}}
    assert parse_service(lb).load_balancer_ingress == ("203.0.113.5",)


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    cur: Any = obj
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    if value is KeyError:
        del cur[last]
    elif last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return obj


BAD_SERVICES = [
    ("metadata.name", KeyError, "missing metadata.name"),
    ("spec.clusterIPs", ["10.96.0.300"], "invalid IP '10.96.0.300'"),
    ("spec.ports.0.port", 0, "out of 1..65535"),
    ("spec.ports.0.port", 70000, "out of 1..65535"),
    ("spec.ports.0.port", "80", "out of 1..65535"),
    ("spec.ports.0.protocol", "ICMP", "unknown protocol 'ICMP'"),
    ("spec.ports.0.targetPort", 0, "out of 1..65535"),
    ("spec.ports.0.nodePort", 99999, "out of 1..65535"),
    ("spec.type", "Weird", "unknown spec.type"),
    ("spec.sessionAffinity", "Cookie", "sessionAffinity"),
    ("spec.sessionAffinityConfig", {"clientIP": {"timeoutSeconds": 0}}, "timeoutSeconds"),
    ("spec.externalIPs", ["nope"], "invalid IP 'nope'"),
    ("spec.loadBalancerSourceRanges", ["10.0.0.0/99"], "invalid CIDR"),
    ("spec.externalTrafficPolicy", "Nearby", "externalTrafficPolicy"),
    ("spec.ports", "80", "not a list"),
    ("spec", "x", "spec is not a mapping"),
]


@pytest.mark.parametrize(("path", "value", "reason"), BAD_SERVICES)
def test_bad_service_names_object_and_reason(path: str, value: Any, reason: str) -> None:
    obj = _set(service(name="api", ns="shop"), path, value)
    with pytest.raises(BadObject) as err:
        parse_service(obj)
    msg = str(err.value)
    assert msg.startswith("Service shop/") and reason in msg
    if path != "metadata.name":
        assert "shop/api" in msg


def test_bad_service_unnamed_multiport_and_duplicates() -> None:
    with pytest.raises(BadObject, match=r"Service default/web: missing name in spec.ports\[1\]"):
        parse_service(service(ports=[{"name": "a", "port": 1}, {"port": 2}]))
    with pytest.raises(BadObject, match="duplicate port name"):
        parse_service(service(ports=[{"name": "a", "port": 1}, {"name": "a", "port": 2}]))


def test_slice_fields() -> None:
    obj = slice_(endpoints=[
        endpoint("10.0.0.1"),
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "serving": True, "terminating": True},
         "zone": "z1", "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]}},
        {"addresses": ["10.0.0.3"]},
    ])
    obj["metadata"]["annotations"] = {"a": "b"}
    sl = parse_endpoint_slice(obj)
    assert sl.key == "default/web-abc" and sl.service_key == "default/web" and sl.address_type == "IPv4"
    assert [(p.name, p.protocol, p.port) for p in sl.ports] == [("http", "TCP", 8080)]
    e1, e2, e3 = sl.endpoints
    assert (e1.ready, e1.serving, e1.terminating, e1.node_name) == (True, None, None, "n1")
    assert (e2.ready, e2.serving, e2.terminating, e2.zone) == (False, True, True, "z1")
    assert e2.hints_for_zones == ("z1",) and e2.hints_for_nodes == ("n1",)
    assert (e3.ready, e3.serving, e3.terminating) == (None, None, None)
    assert sl.annotations == {"a": "b"}
    assert parse_endpoint_slice(slice_(svc=None)).service_key == ""
    assert parse_endpoint_slice(slice_(ports=[{"name": "", "port": None}])).ports[0].port is None


ENDPOINT_SHAPES = [
    # fast path (plain dict, one canonical IPv4 address, boolean conditions, no hints) and the general one
    ({"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": "n1", "zone": "z"},
     (("10.0.0.1",), True, None, None, "n1", "z", (), ())),
    ({"addresses": ["10.0.0.1"], "conditions": {}}, (("10.0.0.1",), None, None, None, "", "", (), ())),
    ({"addresses": ["10.0.0.1"]}, (("10.0.0.1",), None, None, None, "", "", (), ())),
    ({"addresses": ["10.0.0.1", "10.0.0.2"], "conditions": {"ready": False, "serving": True, "terminating": True}},
     (("10.0.0.1", "10.0.0.2"), False, True, True, "", "", (), ())),
    ({"addresses": ["10.0.0.1"], "hints": None, "nodeName": None}, (("10.0.0.1",), None, None, None, "", "", (), ())),
    ({"addresses": ["10.0.0.1"], "hints": {"forZones": [{"name": "z"}]}},
     (("10.0.0.1",), None, None, None, "", "", ("z",), ())),
    ({"addresses": ["10.0.0.1"], "nodeName": 7}, (("10.0.0.1",), None, None, None, "7", "", (), ())),
]


@pytest.mark.parametrize(("raw", "want"), ENDPOINT_SHAPES)
def test_endpoint_shapes(raw: dict[str, Any], want: tuple[Any, ...]) -> None:
    (ep,) = parse_endpoint_slice(slice_(endpoints=[raw])).endpoints
    got = (ep.addresses, ep.ready, ep.serving, ep.terminating, ep.node_name, ep.zone, ep.hints_for_zones,
           ep.hints_for_nodes)
    assert got == want


BAD_SLICES = [
    ("metadata.name", KeyError, "missing metadata.name"),
    ("addressType", "IPv5", "unknown addressType"),
    ("ports.0.port", 0, "out of 1..65535"),
    ("ports.0.protocol", "GRE", "unknown protocol"),
    ("endpoints.0.addresses", ["10.0.0.256"], "invalid IP"),
    ("endpoints.0.addresses", ["fd00::1"], "is not IPv4"),
    ("endpoints.0.addresses", [], "no addresses"),
    ("endpoints.0.conditions", {"ready": "yes"}, "not a boolean"),
    ("endpoints.0.conditions", {"ready": 1}, "not a boolean"),  # 1 == True, but not a boolean
    ("endpoints.0.conditions", {"ready": True, "terminating": 0}, "not a boolean"),
    ("endpoints.0.conditions", [], "not a mapping"),
    ("endpoints.0.addresses", "10.0.0.1", "not a list"),
    ("endpoints.0.hints", {"forZones": [{}]}, "without name"),
    ("endpoints", {"a": 1}, "not a list"),
]


@pytest.mark.parametrize(("path", "value", "reason"), BAD_SLICES)
def test_bad_slice_names_object_and_reason(path: str, value: Any, reason: str) -> None:
    obj = _set(slice_(name="web-1", ns="shop"), path, value)
    with pytest.raises(BadObject) as err:
        parse_endpoint_slice(obj)
    msg = str(err.value)
    assert msg.startswith("EndpointSlice shop/") and reason in msg


def test_slice_columns_mixed_shapes() -> None:
    """The column form: hints and extra addresses appear mid-slice; the columns stay aligned with
    the endpoints and empty columns collapse to ()."""
    plain = {"addresses": ["10.0.0.1"], "conditions": {"ready": True}}
    hinted = {"addresses": ["10.0.0.2"], "hints": {"forZones": [{"name": "z"}]}, "zone": "z"}
    multi = {"addresses": ["10.0.0.3", "10.0.0.4"], "conditions": {"ready": False, "terminating": True},
             "nodeName": "n2"}
    sl = parse_endpoint_slice(slice_(endpoints=[plain, hinted, multi]))
    assert sl.addresses == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert sl.all_addresses == (("10.0.0.1",), ("10.0.0.2",), ("10.0.0.3", "10.0.0.4"))
    assert sl.hints == (((), ()), (("z",), ()), ((), ()))
    assert sl.zones == ("", "z", "") and sl.node_names == ("", "", "n2")
    assert [(e.ready, e.serving, e.terminating) for e in sl.endpoints] == [
        (True, None, None), (None, None, None), (False, None, True)]
    assert [e.addresses for e in sl.endpoints] == [("10.0.0.1",), ("10.0.0.2",), ("10.0.0.3", "10.0.0.4")]
    bare = parse_endpoint_slice(slice_(endpoints=[plain, plain]))
    assert (bare.node_names, bare.zones, bare.hints, bare.all_addresses) == ((), (), (), ())
    assert bare.addresses[0] is plain["addresses"][0]  # the parsed string itself, not a copy


def test_slices_share_equal_columns() -> None:
    """Equal ports tuples and node-name / conditions columns of different slices are one object."""
    eps = [{"addresses": [f"10.0.0.{i}"], "conditions": {"ready": True}, "nodeName": "n1"} for i in (1, 2)]
    a = parse_endpoint_slice(slice_(endpoints=eps))
    b = parse_endpoint_slice(slice_(endpoints=[dict(e, addresses=[f"10.1.0.{i}"]) for i, e in enumerate(eps)]))
    assert a.addresses != b.addresses
    assert a.ports is b.ports and a.node_names is b.node_names and a.conditions is b.conditions
