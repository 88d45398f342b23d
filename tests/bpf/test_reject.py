"""Reject and drop verdicts of from_pod: TCP reset and ICMP port unreachable built in place, drops."""

from __future__ import annotations

from collections import Counter

import pytest
from bpfproxy.loader.structs import SVC_F_DROP_NO_EP, Verdict
from bpfproxy.loader.testrun import TcAction
from packets import (
    BACKENDS,
    CLIENT,
    FRONTEND,
    HOST_MAC,
    IPPROTO_TCP,
    IPPROTO_UDP,
    POD_MAC,
    Harness,
    Svc,
    icmp,
    seed,
    tcp,
    udp,
)
from scapy.layers.inet import ICMP, IP, TCP, IPOption_Router_Alert
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

NO_EP = Svc(backends=[])
NO_EP_UDP = Svc(port=53, proto=IPPROTO_UDP, backends=[])
WEB = Svc(backends=[(11, BACKENDS[0], 8080)])


def expected_rst(sport: int, dport: int, *, seq: int, ack: int, flags: str) -> bytes:
    """The reset the client must get: from the frontend, no options, checksums by scapy."""
    ip = IP(src=FRONTEND, dst=CLIENT, id=0, ttl=64, flags=0)
    return bytes(
        Ether(src=HOST_MAC, dst=POD_MAC) / ip / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=0)
    )


def expected_icmp_unreach(offending: Packet) -> bytes:
    """ICMP port unreachable from the frontend quoting the offending ip header (with options) + 8 bytes."""
    l3 = bytes(offending[IP])
    quote = l3[: IP(l3).ihl * 4 + 8]
    ip = IP(src=FRONTEND, dst=CLIENT, id=0, ttl=64, flags=0)
    return bytes(Ether(src=HOST_MAC, dst=POD_MAC) / ip / ICMP(type=3, code=3) / Raw(quote))


# description, seeded service, input, expected output
RST_ROWS: list[tuple[str, Svc, Packet, bytes]] = [
    (
        "syn to a service without endpoints",
        NO_EP,
        tcp(flags="S", seq=1000),
        expected_rst(80, 40000, seq=0, ack=1001, flags="RA"),
    ),
    (
        "syn with payload and fin",
        NO_EP,
        tcp(flags="SF", seq=1000, payload=b"abcde"),
        expected_rst(80, 40000, seq=0, ack=1007, flags="RA"),
    ),
    (
        "ack segment: seq = its ack",
        NO_EP,
        tcp(flags="PA", seq=1000, ack=424242, payload=b"hello"),
        expected_rst(80, 40000, seq=424242, ack=0, flags="R"),
    ),
    (
        "unserved port on a service address",
        WEB,
        tcp(dport=81, flags="S", seq=5),
        expected_rst(81, 40000, seq=0, ack=6, flags="RA"),
    ),
    (
        "ip options are dropped from the reset",
        NO_EP,
        tcp(flags="S", seq=1000, ip_options=[IPOption_Router_Alert()]),
        expected_rst(80, 40000, seq=0, ack=1001, flags="RA"),
    ),
    (
        "seq wraps around 2^32",
        NO_EP,
        tcp(flags="S", seq=0xFFFFFFFF),
        expected_rst(80, 40000, seq=0, ack=0, flags="RA"),
    ),
]


@pytest.mark.parametrize(("desc", "svc", "pkt", "want"), RST_ROWS, ids=[r[0] for r in RST_ROWS])
def test_reject_tcp_rst(h: Harness, desc: str, svc: Svc, pkt: Packet, want: bytes) -> None:
    seed(h.maps, svc)
    res = h.from_pod(pkt)
    assert res.action == TcAction.REDIRECT
    assert res.packet == want
    assert h.verdicts() == Counter({Verdict.REJECT_TCP_RST: 1})
    assert list(h.maps.ct.keys()) == []


ICMP_ROWS: list[tuple[str, Svc, Packet]] = [
    ("udp to a service without endpoints", NO_EP_UDP, udp(payload=b"a question longer than 8 bytes")),
    ("udp with a zero checksum", NO_EP_UDP, udp(payload=b"q", chksum=0)),
    ("udp to an unserved port", WEB, udp(dport=5000, payload=b"0123456789")),
    ("udp with ip options: quoted", NO_EP_UDP, udp(payload=b"0123456789", ip_options=[IPOption_Router_Alert()])),
    ("icmp echo to a service address", WEB, icmp(type_=8)),
    (
        "other protocol (sctp) to a service address",
        WEB,
        Ether(src=POD_MAC, dst=HOST_MAC) / IP(src=CLIENT, dst=FRONTEND, id=7, ttl=63, proto=132) / Raw(b"\x01" * 16),
    ),
    (
        "other protocol with less than 8 payload bytes",
        WEB,
        Ether(src=POD_MAC, dst=HOST_MAC) / IP(src=CLIENT, dst=FRONTEND, id=7, ttl=63, proto=47) / Raw(b"\x01\x02\x03"),
    ),
]


@pytest.mark.parametrize(("desc", "svc", "pkt"), ICMP_ROWS, ids=[r[0] for r in ICMP_ROWS])
def test_reject_icmp_port_unreachable(h: Harness, desc: str, svc: Svc, pkt: Packet) -> None:
    seed(h.maps, svc)
    res = h.from_pod(pkt)
    assert res.action == TcAction.REDIRECT
    assert res.packet == expected_icmp_unreach(pkt)
    assert h.verdicts() == Counter({Verdict.REJECT_ICMP: 1})


# description, seeded service, input, verdict
DROP_ROWS: list[tuple[str, Svc | None, Packet | bytes, Verdict]] = [
    (
        "service says drop when no endpoints",
        Svc(backends=[], flags=SVC_F_DROP_NO_EP),
        tcp(),
        Verdict.DROP_NO_EP,
    ),
    ("icmp error to a service address", WEB, icmp(type_=3, code=1), Verdict.DROP_ICMP_ERROR),
    ("icmp time exceeded to a service address", WEB, icmp(type_=11), Verdict.DROP_ICMP_ERROR),
    ("truncated tcp header to a service", WEB, bytes(tcp())[: 14 + 20 + 12], Verdict.DROP_MALFORMED),
    ("ihl below 5 to a service", WEB, bytes(tcp())[:14] + b"\x44" + bytes(tcp())[15:], Verdict.DROP_MALFORMED),
    (
        "total length beyond the packet",
        WEB,
        bytes(tcp())[:16] + b"\x05\xdc" + bytes(tcp())[18:],
        Verdict.DROP_MALFORMED,
    ),
    ("empty slot within count", None, tcp(), Verdict.DROP_BAD_SLOT),
]


@pytest.mark.parametrize(("desc", "svc", "pkt", "verdict"), DROP_ROWS, ids=[r[0] for r in DROP_ROWS])
def test_drop(h: Harness, desc: str, svc: Svc | None, pkt: Packet | bytes, verdict: Verdict) -> None:
    if svc is None:
        # count says 2 but only slot 1 is programmed, and its backend is missing
        from bpfproxy.loader.structs import SvcVal
        from packets import svc_key

        h.maps.svc.put(svc_key(FRONTEND, 80, IPPROTO_TCP), SvcVal(count=1, svc_id=1))
        h.maps.svc.put(svc_key(FRONTEND, 80, IPPROTO_TCP, 1), SvcVal(backend_id=99, svc_id=1))
    else:
        seed(h.maps, svc)
    res = h.from_pod(pkt)
    assert res.action == TcAction.SHOT
    assert h.verdicts() == Counter({verdict: 1})


def test_truncated_tcp_to_non_service_passes(h: Harness) -> None:
    seed(h.maps, WEB)
    pkt = bytes(tcp(dst="10.244.9.9"))[: 14 + 20 + 12]
    res = h.from_pod(pkt)
    assert (res.action, res.packet) == (TcAction.OK, pkt)
    assert h.verdicts() == Counter({Verdict.PASS: 1})


def test_icmp_to_non_service_passes(h: Harness) -> None:
    seed(h.maps, WEB)
    pkt = icmp(dst="10.244.9.9")
    res = h.from_pod(pkt)
    assert (res.action, res.packet) == (TcAction.OK, bytes(pkt))
    assert h.verdicts() == Counter({Verdict.PASS: 1})
