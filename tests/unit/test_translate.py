"""translate_service: object state -> frontends and backends, in rows."""

from __future__ import annotations

from typing import Any

from bpfproxy.controller.model import parse_endpoint_slice, parse_service
from bpfproxy.controller.translate import BackendRef, Frontend, NodeConfig, translate_service
from kobj import endpoint, service, slice_

NODE = NodeConfig(node_name="n1")


def tr(svc: dict[str, Any], *slices: dict[str, Any]) -> list[Frontend]:
    return translate_service(parse_service(svc), [parse_endpoint_slice(s) for s in slices], NODE)


def table(fronts: list[Frontend]) -> list[tuple[str, str, int, int, list[str]]]:
    return [(f.name, f.addr, f.port, f.proto, [f"{b.addr}:{b.port}{'T' if b.terminating else ''}"
                                               for b in f.backends]) for f in fronts]


def test_multiport_different_backends_per_port_and_target_port_by_name() -> None:
    svc = service(ports=[{"name": "http", "port": 80, "targetPort": "web"},
                         {"name": "metrics", "port": 9090, "targetPort": 9100}])
    s1 = slice_("web-1", ports=[{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}],
                endpoints=[endpoint("10.0.0.1")])
    s2 = slice_("web-2", ports=[{"name": "http", "port": 8081}], endpoints=[endpoint("10.0.0.2")])
    assert table(tr(svc, s1, s2)) == [
        ("default/web:http/TCP", "10.96.0.10", 80, 6, ["10.0.0.1:8080", "10.0.0.2:8081"]),
        ("default/web:metrics/TCP", "10.96.0.10", 9090, 6, ["10.0.0.1:9100"]),
    ]


def test_same_port_tcp_and_udp_are_two_frontends() -> None:
    svc = service("dns", ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    sl = slice_("dns-1", svc="dns", ports=[{"name": "dns", "port": 5353, "protocol": "UDP"},
                                           {"name": "dns-tcp", "port": 5353, "protocol": "TCP"}],
                endpoints=[endpoint("10.0.0.5")])
    assert table(tr(svc, sl)) == [
        ("default/dns:dns/UDP", "10.96.0.10", 53, 17, ["10.0.0.5:5353"]),
        ("default/dns:dns-tcp/TCP", "10.96.0.10", 53, 6, ["10.0.0.5:5353"]),
    ]


def test_port_name_and_protocol_must_match() -> None:
    svc = service(ports=[{"name": "http", "port": 80}])
    sl = slice_(ports=[{"name": "http", "port": 8080, "protocol": "UDP"}, {"name": "other", "port": 1}])
    assert table(tr(svc, sl))[0][4] == []


def test_unnamed_port_and_name_uses_number() -> None:
    svc = service(ports=[{"port": 80, "targetPort": 8080}])
    sl = slice_(ports=[{"port": 8080}], endpoints=[endpoint("10.0.0.1")])
    assert table(tr(svc, sl)) == [("default/web:80/TCP", "10.96.0.10", 80, 6, ["10.0.0.1:8080"])]


def test_headless_externalname_and_sctp_have_no_frontends() -> None:
    assert tr(service(ip="None"), slice_()) == []
    assert tr(service(ip=None, type="ExternalName", externalName="x.example")) == []
    assert tr(service(ports=[{"name": "s", "port": 9, "protocol": "SCTP"}])) == []


def test_all_types_get_cluster_ip_frontends() -> None:
    for kind in ("ClusterIP", "NodePort", "LoadBalancer"):
        assert [f.addr for f in tr(service(type=kind), slice_())] == ["10.96.0.10"]


def test_ready_terminating_unready_and_dedupe() -> None:
    s1 = slice_("web-1", endpoints=[
        endpoint("10.0.0.1"),                                              # ready
        endpoint("10.0.0.2", ready=None),                                  # ready unknown = ready
        endpoint("10.0.0.3", ready=False),                                 # not ready: excluded
        endpoint("10.0.0.4", ready=False, serving=True, terminating=True),  # terminating
        endpoint("10.0.0.5", ready=False, serving=False, terminating=True),  # not serving: excluded
    ])
    s2 = slice_("web-2", endpoints=[endpoint("10.0.0.1"), endpoint("10.0.0.10")])
    assert table(tr(service(), s1, s2))[0][4] == [
        "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.4:8080T", "10.0.0.10:8080",
    ]


def test_dedupe_prefers_ready_over_terminating_and_ignores_ipv6_slices() -> None:
    s1 = slice_("web-1", endpoints=[endpoint("10.0.0.1", ready=False, serving=True, terminating=True)])
    s2 = slice_("web-2", endpoints=[endpoint("10.0.0.1")])
    s3 = slice_("web-3", address_type="IPv6", endpoints=[endpoint("fd00::1")])
    assert tr(service(), s1, s2, s3)[0].backends == (BackendRef("10.0.0.1", 8080, False),)


def test_affinity_timeout() -> None:
    assert tr(service(), slice_())[0].affinity_timeout == 0
    assert tr(service(sessionAffinity="ClientIP"), slice_())[0].affinity_timeout == 10800
    custom = service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}})
    assert tr(custom, slice_())[0].affinity_timeout == 30


def test_dual_stack_uses_ipv4_cluster_ip() -> None:
    svc = service()
    svc["spec"]["clusterIPs"] = ["fd00::a", "10.96.0.10"]
    assert [f.addr for f in tr(svc, slice_())] == ["10.96.0.10"]


# --- kube-proxy endpoint and traffic-policy semantics -------------------------------------------------

def ep(ip: str, node: str = "n1", **kw: Any) -> dict[str, Any]:
    return endpoint(ip, node=node, **kw)


def kinds(fronts: list[Frontend]) -> list[tuple[str, str, int, list[str], bool]]:
    return [(f.kind, f.addr, f.port, [f"{b.addr}:{b.port}{'T' if b.terminating else ''}" for b in f.backends],
             f.drop_no_ep) for f in fronts]


def test_no_endpoints_anywhere_rejects_none_for_policy_drops() -> None:
    svc = service(internalTrafficPolicy="Local")
    assert kinds(tr(svc, slice_(endpoints=[]))) == [("ClusterIP", "10.96.0.10", 80, [], False)]
    assert kinds(tr(svc, slice_(endpoints=[ep("10.0.0.1", node="n2")]))) == [
        ("ClusterIP", "10.96.0.10", 80, [], True)]
    assert kinds(tr(svc, slice_(endpoints=[ep("10.0.0.1", node="n2"), ep("10.0.0.2")]))) == [
        ("ClusterIP", "10.96.0.10", 80, ["10.0.0.2:8080"], False)]


def test_terminating_fallback_and_extras() -> None:
    only_term = slice_(endpoints=[ep("10.0.0.1", ready=False, serving=True, terminating=True),
                                  ep("10.0.0.2", ready=False, serving=False, terminating=True)])
    # no ready endpoint: serving+terminating ones get new flows
    assert kinds(tr(service(), only_term))[0][3] == ["10.0.0.1:8080"]


def test_external_frontends_computed_but_not_programmed() -> None:
    from bpfproxy.controller.translate import programmed_frontends

    svc = service(type="LoadBalancer", externalTrafficPolicy="Local", externalIPs=["192.168.99.11", "fd00::1"],
                  ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
                  loadBalancerSourceRanges=[" 203.0.113.0/25", "192.168.0.0/24"])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    sl = slice_(endpoints=[ep("10.0.0.1"), ep("10.0.0.2", node="n2")])
    node = NodeConfig(node_name="n1", node_ips=("192.168.0.2", "192.168.1.2"),
                      nodeport_addresses=("192.168.0.0/24",))
    fronts = translate_service(parse_service(svc), [parse_endpoint_slice(sl)], node)
    assert kinds(fronts) == [
        ("ClusterIP", "10.96.0.10", 80, ["10.0.0.1:8080", "10.0.0.2:8080"], False),
        ("NodePort", "192.168.0.2", 30080, ["10.0.0.1:8080"], False),
        ("ExternalIP", "192.168.99.11", 80, ["10.0.0.1:8080"], False),
        ("LoadBalancer", "1.2.3.4", 80, ["10.0.0.1:8080"], False),
    ]
    assert fronts[-1].source_ranges == ("203.0.113.0/25", "192.168.0.0/24", "1.2.3.4/32")
    assert [f.kind for f in programmed_frontends(parse_service(svc), [parse_endpoint_slice(sl)], node)] == [
        "ClusterIP"]


def test_not_ours_and_foreign_slices() -> None:
    labelled = service()
    labelled["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "other"}
    assert tr(labelled, slice_()) == []
    # a slice without the service-name label is ignored
    assert tr(service(), slice_(svc=None))[0].backends == ()


def test_zone_hints_filter_cluster_endpoints() -> None:
    def hinted(ip: str, zone: str) -> dict[str, Any]:
        e = ep(ip)
        e["hints"] = {"forZones": [{"name": zone}]}
        return e

    sl = parse_endpoint_slice(slice_(endpoints=[hinted("10.0.0.1", "a"), hinted("10.0.0.2", "b")]))
    node = NodeConfig(node_name="n1", zone="a")
    assert [b.addr for b in translate_service(parse_service(service()), [sl], node)[0].backends] == ["10.0.0.1"]
    node = NodeConfig(node_name="n1", zone="c")
    assert len(translate_service(parse_service(service()), [sl], node)[0].backends) == 2
