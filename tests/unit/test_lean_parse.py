"""The lean parse paths for the common Service / EndpointSlice shape give exactly what the general paths give.

model._service_fast handles the shape a cold list is made of (plain dicts, canonical IPv4 cluster IPs,
int ports, no external IPs or load-balancer fields) and declines everything else to
model._service_general, which names the bad field. Here both are run on random services (mostly the
common shape, some with one odd field) and on each odd field alone: same Service, or the same error
message, and the lean path is really taken for the common shape. The same for
model._slice_fast / model._slice_general (the slice header: metadata, labels, annotations, ports;
the endpoint columns have their own tests in test_fastpaths.py).
"""

from __future__ import annotations

import contextlib
import copy
import random
from types import MappingProxyType
from typing import Any

import bpfproxy.controller.model as model_mod
import pytest
from bpfproxy.controller.model import BadObject, EndpointSlice, Service, parse_endpoint_slice, parse_service
from kobj import endpoint, service, slice_

#: (where, field, value): a field set to an unusual or bad value; where is "meta", "spec", "status",
#: "port" (the first port), "obj" (the top level) or "cfg" (sessionAffinityConfig.clientIP)
ODD_FIELDS: list[tuple[str, str, Any]] = [
    ("obj", "metadata", None), ("obj", "metadata", []), ("obj", "spec", None), ("obj", "spec", "x"),
    ("obj", "status", []), ("obj", "status", None), ("obj", "status", {"loadBalancer": {}}),
    ("obj", "status", {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}), ("obj", "status", {"loadBalancer": []}),
    ("obj", "status", {"loadBalancer": {"ingress": [{"ip": "bad"}]}}), ("obj", "status", {"loadBalancer": None}),
    ("meta", "name", ""), ("meta", "name", None), ("meta", "name", 7), ("meta", "namespace", ""),
    ("meta", "namespace", None), ("meta", "namespace", 5), ("meta", "labels", None), ("meta", "labels", {}),
    ("meta", "labels", []), ("meta", "labels", "x"), ("meta", "labels", {"a": "b", "c": 1}),
    ("meta", "labels", MappingProxyType({"a": "b"})),
    ("spec", "type", None), ("spec", "type", ""), ("spec", "type", "NodePort"), ("spec", "type", "LoadBalancer"),
    ("spec", "type", "ExternalName"), ("spec", "type", "Bogus"), ("spec", "type", 3),
    ("spec", "externalName", "db.example.com"),
    ("spec", "clusterIPs", None), ("spec", "clusterIPs", []), ("spec", "clusterIPs", ["None"]),
    ("spec", "clusterIPs", ["10.0.0.1", "fd00::1"]), ("spec", "clusterIPs", ["fd00::1", "10.0.0.1"]),
    ("spec", "clusterIPs", ["010.0.0.1"]), ("spec", "clusterIPs", ["10.0.0.256"]), ("spec", "clusterIPs", [7]),
    ("spec", "clusterIPs", ["bogus"]), ("spec", "clusterIPs", "10.0.0.1"), ("spec", "clusterIPs", ["10.0.0.1 "]),
    ("spec", "clusterIPs", ["10.0.0.1", "10.0.0.2"]), ("spec", "clusterIP", "None"),
    ("spec", "ports", None), ("spec", "ports", []), ("spec", "ports", {}), ("spec", "ports", [None]),
    ("spec", "ports", ["x"]), ("spec", "ports", [{"port": 80}]), ("spec", "ports", [{"port": 80}, {"port": 81}]),
    ("spec", "ports", [{"name": "a", "port": 80}, {"name": "a", "port": 81}]),
    ("spec", "ports", [{"name": "a", "port": 80}, {"name": "a", "port": 81, "protocol": "UDP"}]),
    ("port", "name", None), ("port", "name", ""), ("port", "name", 5), ("port", "port", None),
    ("port", "port", 0), ("port", "port", 65536), ("port", "port", True), ("port", "port", "80"),
    ("port", "port", 80.0), ("port", "protocol", None), ("port", "protocol", "UDP"), ("port", "protocol", "SCTP"),
    ("port", "protocol", "tcp"), ("port", "protocol", ""), ("port", "protocol", 6), ("port", "protocol", ["TCP"]),
    ("port", "targetPort", None), ("port", "targetPort", ""), ("port", "targetPort", "http"),
    ("port", "targetPort", "8080"), ("port", "targetPort", 0), ("port", "targetPort", 70000),
    ("port", "targetPort", True), ("port", "targetPort", 8080.0), ("port", "targetPort", "-1"),
    ("port", "targetPort", "99999"), ("port", "nodePort", 30080), ("port", "nodePort", 0),
    ("port", "nodePort", "30080"), ("port", "nodePort", True), ("port", "appProtocol", "http"),
    ("spec", "sessionAffinity", None), ("spec", "sessionAffinity", ""), ("spec", "sessionAffinity", "ClientIP"),
    ("spec", "sessionAffinity", "Sticky"), ("spec", "sessionAffinity", 1),
    ("spec", "sessionAffinityConfig", None), ("spec", "sessionAffinityConfig", {}),
    ("spec", "sessionAffinityConfig", []), ("spec", "sessionAffinityConfig", {"clientIP": None}),
    ("spec", "sessionAffinityConfig", {"clientIP": "x"}),
    ("cfg", "timeoutSeconds", 60), ("cfg", "timeoutSeconds", 0), ("cfg", "timeoutSeconds", 86401),
    ("cfg", "timeoutSeconds", None), ("cfg", "timeoutSeconds", True), ("cfg", "timeoutSeconds", "60"),
    ("spec", "externalIPs", None), ("spec", "externalIPs", []), ("spec", "externalIPs", ["1.2.3.4"]),
    ("spec", "externalIPs", ["nope"]), ("spec", "externalIPs", ""), ("spec", "externalIPs", "1.2.3.4"),
    ("spec", "loadBalancerSourceRanges", None), ("spec", "loadBalancerSourceRanges", []),
    ("spec", "loadBalancerSourceRanges", ["10.0.0.0/8"]), ("spec", "loadBalancerSourceRanges", ["x/99"]),
    ("spec", "loadBalancerSourceRanges", {}),
    ("spec", "externalTrafficPolicy", None), ("spec", "externalTrafficPolicy", "Local"),
    ("spec", "externalTrafficPolicy", "local"), ("spec", "externalTrafficPolicy", 0),
    ("spec", "internalTrafficPolicy", ""), ("spec", "internalTrafficPolicy", "Local"),
    ("spec", "internalTrafficPolicy", "Everywhere"), ("spec", "internalTrafficPolicy", ["Local"]),
]  # fmt: skip


def _set(obj: dict[str, Any], where: str, field: str, value: Any) -> None:
    if where == "obj":
        obj[field] = value
    elif where == "meta":
        obj["metadata"][field] = value
    elif where == "spec":
        obj["spec"][field] = value
    elif where == "port":
        obj["spec"]["ports"][0][field] = value
    elif where == "cfg":
        obj["spec"]["sessionAffinityConfig"] = {"clientIP": {field: value}}
    else:
        raise AssertionError(where)


def _random_service(rng: random.Random, i: int) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    for j in range(rng.choice([1, 1, 2, 3])):
        port: dict[str, Any] = {"name": f"p{j}", "port": rng.randrange(1, 65536)}
        if rng.random() < 0.8:
            port["protocol"] = rng.choice(["TCP", "TCP", "UDP", "SCTP"])
        target = rng.choice([None, "absent", rng.randrange(1, 65536), "http", "web"])
        if target != "absent":
            port["targetPort"] = target
        if rng.random() < 0.3:
            port["nodePort"] = rng.randrange(30000, 32768)
        ports.append(port)
    if len(ports) == 1 and rng.random() < 0.5:
        del ports[0]["name"]
    ip = f"10.{rng.randrange(96, 100)}.{rng.randrange(256)}.{rng.randrange(256)}"
    spec: dict[str, Any] = {"sessionAffinity": rng.choice(["None", "ClientIP", None])}
    for field in ("externalTrafficPolicy", "internalTrafficPolicy"):
        if rng.random() < 0.7:
            spec[field] = rng.choice(["Cluster", "Local"])
    obj = service(f"svc-{i}", rng.choice(["default", "kube-system", "a"]), ip=rng.choice([ip, ip, None]),
                  ports=ports, type=rng.choice(["ClusterIP", "NodePort", "LoadBalancer"]), **spec)
    if rng.random() < 0.5:
        obj["metadata"]["labels"] = {"app": f"svc-{i}", "tier": rng.choice(["web", "db"])}
    if rng.random() < 0.5:
        obj["status"] = {"loadBalancer": {}}
    return obj


def _both(obj: Any) -> tuple[Service | str, Service | str, bool]:
    """(parse_service, the general path alone, whether the lean path took it)."""
    out: list[Service | str] = []
    for fn in (parse_service, model_mod._service_general):
        try:
            out.append(fn(obj))  # (neither path changes its input)
        except BadObject as e:
            out.append(str(e))
    taken = type(obj) is dict and model_mod._service_fast(obj) is not None
    return out[0], out[1], taken


def _same(fast: Service | str, general: Service | str) -> None:
    assert fast == general
    if isinstance(fast, Service) and isinstance(general, Service):
        assert type(fast.labels) is type(general.labels) or not fast.labels
        for a, b in zip(fast.ports, general.ports, strict=True):
            assert type(a.target_port) is type(b.target_port) and type(a.node_port) is type(b.node_port)


def test_lean_path_equals_general_path_on_random_services() -> None:
    rng = random.Random(11)
    taken = 0
    for i in range(3000):
        obj = _random_service(rng, i)
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            where, field, value = rng.choice(ODD_FIELDS)
            # (a second odd field may have nowhere to go: the first replaced its parent)
            with contextlib.suppress(TypeError, IndexError, KeyError, AttributeError):
                _set(obj, where, field, value if isinstance(value, MappingProxyType) else copy.deepcopy(value))
        fast, general, was_taken = _both(obj)
        _same(fast, general)
        taken += was_taken
    assert taken > 1500, taken


@pytest.mark.parametrize("where,field,value", ODD_FIELDS)
def test_each_odd_field_same_result_and_message(where: str, field: str, value: Any) -> None:
    obj = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    assert model_mod._service_fast(copy.deepcopy(obj)) is not None
    _set(obj, where, field, value)
    fast, general, _ = _both(obj)
    _same(fast, general)
    if isinstance(fast, str):
        assert fast.startswith("Service "), fast


def test_lean_path_takes_the_common_shapes() -> None:
    common = [
        service(),
        service(type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30001, "targetPort": "web"}]),
        service(ports=[{"port": 53, "protocol": "UDP"}], sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}, externalIPs=[],
                loadBalancerSourceRanges=None, internalTrafficPolicy="Local"),
        service(ip="None"),
        service(ip=None),
    ]  # fmt: skip
    for obj in common:
        fast = model_mod._service_fast(copy.deepcopy(obj))
        assert fast is not None, obj
        assert fast == model_mod._service_general(obj)


def test_bad_port_error_names_the_field() -> None:
    obj = service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81, "targetPort": 0}])
    with pytest.raises(BadObject, match=r"^Service default/web: port 0 in spec.ports\[1\].targetPort out of"):
        parse_service(obj)
    obj = service(ports=[{"name": "a", "port": 80}, {"port": 81}])
    with pytest.raises(BadObject, match=r"missing name in spec.ports\[1\]"):
        parse_service(obj)


#: (where, field, value) for slices: "obj" (top level), "meta", "port" (the first port)
ODD_SLICE_FIELDS: list[tuple[str, str, Any]] = [
    ("obj", "metadata", None), ("obj", "metadata", "x"), ("obj", "addressType", "IPv6"),
    ("obj", "addressType", "FQDN"), ("obj", "addressType", None), ("obj", "addressType", "ipv4"),
    ("obj", "ports", None), ("obj", "ports", []), ("obj", "ports", {}), ("obj", "ports", [None]),
    ("obj", "ports", [{"port": 80}, {"name": "b", "port": 81, "protocol": "UDP"}]),
    ("obj", "endpoints", None), ("obj", "endpoints", []), ("obj", "endpoints", {}), ("obj", "endpoints", [None]),
    ("obj", "endpoints", [{"addresses": ["10.0.0.1", "10.0.0.2"], "conditions": {}}]),
    ("obj", "endpoints", [{"addresses": ["010.0.0.1"], "conditions": {}}]),
    ("obj", "endpoints", [{"addresses": ["10.0.0.1"], "conditions": {}, "hints": {"forZones": [{"name": "z"}]}}]),
    ("meta", "name", ""), ("meta", "name", None), ("meta", "name", 3), ("meta", "namespace", ""),
    ("meta", "namespace", None), ("meta", "namespace", 4), ("meta", "labels", None), ("meta", "labels", {}),
    ("meta", "labels", []), ("meta", "labels", {"kubernetes.io/service-name": None}),
    ("meta", "labels", {"kubernetes.io/service-name": 5}), ("meta", "labels", {"kubernetes.io/service-name": ""}),
    ("meta", "labels", {"other": "x"}), ("meta", "labels", MappingProxyType({"kubernetes.io/service-name": "w"})),
    ("meta", "annotations", None), ("meta", "annotations", {}), ("meta", "annotations", []),
    ("meta", "annotations", {"a": "b", "n": 1}), ("meta", "annotations", "x"),
    ("port", "name", None), ("port", "name", ""), ("port", "name", 5), ("port", "port", None), ("port", "port", 0),
    ("port", "port", 65536), ("port", "port", True), ("port", "port", "80"), ("port", "protocol", None),
    ("port", "protocol", "UDP"), ("port", "protocol", "SCTP"), ("port", "protocol", "udp"), ("port", "protocol", ""),
    ("port", "protocol", 17), ("port", "appProtocol", "http"),
]  # fmt: skip


def _set_slice(obj: dict[str, Any], where: str, field: str, value: Any) -> None:
    if where == "obj":
        obj[field] = value
    elif where == "meta":
        obj["metadata"][field] = value
    elif where == "port":
        obj["ports"][0][field] = value
    else:
        raise AssertionError(where)


def _both_slices(obj: Any) -> tuple[EndpointSlice | str, EndpointSlice | str, bool]:
    """(parse_endpoint_slice, the general path alone, whether the lean path took it)."""
    out: list[EndpointSlice | str] = []
    for fn in (parse_endpoint_slice, model_mod._slice_general):
        try:
            out.append(fn(obj))
        except BadObject as e:
            out.append(str(e))
    taken = type(obj) is dict and model_mod._slice_fast(obj) is not None
    return out[0], out[1], taken


def _random_slice(rng: random.Random, i: int) -> dict[str, Any]:
    eps = [endpoint(f"10.{rng.randrange(3)}.0.{rng.randrange(1, 255)}", ready=rng.choice([True, False, None]),
                    node=rng.choice(["n1", "n2", ""])) for _ in range(rng.randrange(0, 5))]
    ports: list[dict[str, Any]] = []
    for j in range(rng.choice([0, 1, 1, 2])):
        port: dict[str, Any] = {"name": rng.choice(["http", "dns", f"p{j}", ""])}
        if rng.random() < 0.9:
            port["port"] = rng.randrange(1, 65536)
        if rng.random() < 0.8:
            port["protocol"] = rng.choice(["TCP", "UDP", "SCTP"])
        ports.append(port)
    obj = slice_(f"s{i}-x", rng.choice(["default", "b"]), svc=rng.choice(["web", "db", None]), ports=ports,
                 endpoints=eps)
    if rng.random() < 0.3:
        obj["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:00Z"}
    return obj


def test_lean_slice_path_equals_general_path_on_random_slices() -> None:
    rng = random.Random(12)
    taken = 0
    for i in range(3000):
        obj = _random_slice(rng, i)
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            where, field, value = rng.choice(ODD_SLICE_FIELDS)
            with contextlib.suppress(TypeError, IndexError, KeyError, AttributeError):
                _set_slice(obj, where, field, value if isinstance(value, MappingProxyType) else copy.deepcopy(value))
        fast, general, was_taken = _both_slices(obj)
        assert fast == general
        if isinstance(fast, EndpointSlice):
            assert type(fast.ports) is tuple and all(type(p.name) is str for p in fast.ports)
        taken += was_taken
    assert taken > 1500, taken


@pytest.mark.parametrize("where,field,value", ODD_SLICE_FIELDS)
def test_each_odd_slice_field_same_result_and_message(where: str, field: str, value: Any) -> None:
    obj = slice_(ports=[{"name": "http", "port": 8080, "protocol": "TCP"}])
    assert model_mod._slice_fast(obj) is not None
    _set_slice(obj, where, field, value)
    fast, general, _ = _both_slices(obj)
    assert fast == general
    if isinstance(fast, str):
        assert fast.startswith("EndpointSlice "), fast
