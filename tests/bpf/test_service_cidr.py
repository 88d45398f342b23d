"""Service-CIDR drop: an address inside --service-cidr that no service owns is dropped; owned ones behave as before."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from bpfproxy.loader.maps import DatapathMaps, Map, parse_service_cidrs
from bpfproxy.loader.structs import Verdict
from bpfproxy.loader.testrun import TcAction
from packets import (
    BACKENDS,
    CLIENT,
    FRONTEND,
    HOST_MAC,
    IPPROTO_UDP,
    OTHER,
    POD_MAC,
    Harness,
    Svc,
    icmp,
    rebuilt,
    seed,
    tcp,
    udp,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

#: the service CIDR of these tests (FRONTEND 10.96.0.10 is inside)
CIDR = "10.96.0.0/16"
#: inside CIDR, owned by no service
UNOWNED = "10.96.7.7"
WEB = Svc(backends=[(11, BACKENDS[0], 8080)])


def _sctp(dst: str) -> Packet:
    return Ether(src=POD_MAC, dst=HOST_MAC) / IP(src=CLIENT, dst=dst, id=7, ttl=63, proto=132) / Raw(b"\x01" * 16)


# description, input packet, verdict, tc action; every row runs with WEB seeded and CIDR set
ROWS: list[tuple[str, Packet | bytes, Verdict, int]] = [
    ("tcp to an unowned address in the cidr", tcp(dst=UNOWNED), Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("udp to an unowned address in the cidr", udp(dst=UNOWNED), Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("icmp echo to an unowned address in the cidr", icmp(dst=UNOWNED), Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("icmp error to an unowned address in the cidr", icmp(dst=UNOWNED, type_=3, code=1), Verdict.DROP_NO_SERVICE,
     TcAction.SHOT),
    ("sctp to an unowned address in the cidr", _sctp(UNOWNED), Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("truncated tcp to an unowned address in the cidr", bytes(tcp(dst=UNOWNED))[: 14 + 20 + 12],
     Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("later fragment to an unowned address in the cidr", tcp(dst=UNOWNED, frag=10, payload=b"x" * 16),
     Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("network address of the cidr", tcp(dst="10.96.0.0"), Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("broadcast address of the cidr", tcp(dst="10.96.255.255"), Verdict.DROP_NO_SERVICE, TcAction.SHOT),
    ("tcp just outside the cidr", tcp(dst="10.97.0.1"), Verdict.PASS, TcAction.OK),
    ("tcp to a pod", tcp(dst=OTHER), Verdict.PASS, TcAction.OK),
    ("icmp to a pod", icmp(dst=OTHER), Verdict.PASS, TcAction.OK),
    ("sctp to a pod", _sctp(OTHER), Verdict.PASS, TcAction.OK),
    ("unserved port of an owned address: reset as before", tcp(dport=81), Verdict.REJECT_TCP_RST,
     TcAction.REDIRECT),
    ("udp to an owned address: port unreachable as before", udp(dport=53), Verdict.REJECT_ICMP,
     TcAction.REDIRECT),
    ("icmp echo to an owned address: port unreachable as before", icmp(), Verdict.REJECT_ICMP, TcAction.REDIRECT),
]


@pytest.mark.parametrize(("desc", "pkt", "verdict", "action"), ROWS, ids=[r[0] for r in ROWS])
def test_service_cidr_verdicts(h: Harness, desc: str, pkt: Packet | bytes, verdict: Verdict, action: int) -> None:
    seed(h.maps, WEB)
    h.maps.set_service_cidrs([CIDR])
    res = h.from_pod(pkt)
    assert res.action == action
    if action != TcAction.REDIRECT:
        assert res.packet == bytes(pkt)  # drops and passes leave the packet untouched
    assert h.verdicts() == Counter({verdict: 1})
    assert list(h.maps.ct.keys()) == []


def test_frontend_inside_the_cidr_still_forwards(h: Harness) -> None:
    seed(h.maps, WEB)
    h.maps.set_service_cidrs([CIDR])
    pkt = tcp()
    res = h.from_pod(pkt)
    assert (res.action, res.packet) == (TcAction.OK, rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080))
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA")
    assert h.to_pod(reply).packet == rebuilt(reply, ip_src=FRONTEND, sport=80)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})


def test_to_pod_never_drops_for_the_cidr(h: Harness) -> None:
    """Traffic entering a pod from an unowned service-CIDR source is not ours to judge."""
    h.maps.set_service_cidrs([CIDR])
    pkt = tcp(src=UNOWNED, dst=CLIENT, sport=80, dport=40000, flags="SA")
    res = h.to_pod(pkt)
    assert (res.action, res.packet) == (TcAction.OK, bytes(pkt))
    assert h.verdicts() == Counter({Verdict.PASS: 1})


def test_without_cidrs_unowned_addresses_pass(h: Harness) -> None:
    seed(h.maps, WEB)
    res = h.from_pod(tcp(dst=UNOWNED))
    assert res.action == TcAction.OK
    assert h.verdicts() == Counter({Verdict.PASS: 1})


def test_reset_from_owned_address_is_byte_exact_with_cidr(h: Harness) -> None:
    seed(h.maps, WEB)
    h.maps.set_service_cidrs([CIDR])
    res = h.from_pod(tcp(dport=81, flags="S", seq=5))
    want = Ether(src=HOST_MAC, dst=POD_MAC) / IP(src=FRONTEND, dst=CLIENT, id=0, ttl=64, flags=0) / TCP(
        sport=81, dport=40000, seq=0, ack=6, flags="RA", window=0
    )
    assert res.packet == bytes(want)


def test_cidrs_replaced_and_removed(h: Harness) -> None:
    m = h.maps
    m.set_service_cidrs(["10.96.0.0/12", "172.20.0.0/16", "10.96.0.0/12"])
    assert m.service_cidrs() == ["10.96.0.0/12", "172.20.0.0/16"]
    assert h.from_pod(tcp(dst="172.20.1.1")).action == TcAction.SHOT
    m.set_service_cidrs(["192.168.128.0/17"])
    assert m.service_cidrs() == ["192.168.128.0/17"]
    assert h.from_pod(tcp(dst="172.20.1.1")).action == TcAction.OK
    assert h.from_pod(tcp(dst="192.168.200.1")).action == TcAction.SHOT
    assert h.from_pod(tcp(dst="192.168.127.255")).action == TcAction.OK
    m.set_service_cidrs([])
    assert m.service_cidrs() == []
    assert h.from_pod(tcp(dst="192.168.200.1")).action == TcAction.OK
    assert h.verdicts() == Counter({Verdict.DROP_NO_SERVICE: 2, Verdict.PASS: 3})


def test_cidr_update_is_make_before_break(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.maps.set_service_cidrs(["10.96.0.0/16", "10.100.0.0/16"])
    ops: list[tuple[str, str]] = []
    real_put, real_delete = Map.put, Map.delete

    def put(self: Map, key, value) -> None:  # type: ignore[no-untyped-def,type-arg]
        ops.append(("put", f"{ipaddress.IPv4Address(bytes(key)[4:8])}/{key.prefixlen}"))
        real_put(self, key, value)

    def delete(self: Map, key) -> bool:  # type: ignore[no-untyped-def,type-arg]
        ops.append(("delete", f"{ipaddress.IPv4Address(bytes(key)[4:8])}/{key.prefixlen}"))
        return real_delete(self, key)

    monkeypatch.setattr(Map, "put", put)
    monkeypatch.setattr(Map, "delete", delete)
    h.maps.set_service_cidrs(["10.96.0.0/12", "10.100.0.0/16"])
    assert ops == [("put", "10.96.0.0/12"), ("delete", "10.96.0.0/16")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.96.0.0/12", "must be a list of strings"),
        (["10.96.0.0"], "'10.96.0.0': expected an IPv4 CIDR"),
        (["10.96.0.1/12"], "'10.96.0.1/12': 10.96.0.1/12 has host bits set"),
        (["fd00::/108"], "'fd00::/108': not IPv4"),
        (["10.96.0.0/33"], "'10.96.0.0/33'"),
        (["banana/8"], "'banana/8'"),
        ([f"10.{i}.0.0/16" for i in range(17)], "17 given, at most 16"),
    ],
)
def test_bad_cidrs_are_named_and_change_nothing(maps: DatapathMaps, value: object, message: str) -> None:
    maps.set_service_cidrs(["10.96.0.0/12"])
    with pytest.raises(ValueError) as err:
        maps.set_service_cidrs(value)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert maps.service_cidrs() == ["10.96.0.0/12"]
    maps.set_service_cidrs([])


def test_parse_service_cidrs_accepts_every_prefix_length() -> None:
    nets = parse_service_cidrs(["0.0.0.0/0", "10.96.0.10/32", " 10.0.0.0/8"])
    assert sorted(map(str, nets)) == ["0.0.0.0/0", "10.0.0.0/8", "10.96.0.10/32"]


def test_udp_unowned_counts_per_verdict(h: Harness) -> None:
    """The drop counter counts every dropped packet; forwarded traffic next to it is unaffected."""
    seed(h.maps, Svc(port=53, proto=IPPROTO_UDP, svc_id=2, backends=[(21, BACKENDS[1], 5353)]))
    h.maps.set_service_cidrs([CIDR])
    for sport in range(40000, 40005):
        assert h.from_pod(udp(dst=UNOWNED, sport=sport)).action == TcAction.SHOT
    assert h.from_pod(udp()).action == TcAction.OK
    assert h.verdicts() == Counter({Verdict.DROP_NO_SERVICE: 5, Verdict.FWD_NEW: 1})
