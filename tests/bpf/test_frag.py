"""IPv4 fragments and IP options: later fragments follow their first one; options survive DNAT."""

from __future__ import annotations

from collections import Counter

from bpfproxy.loader.structs import FragKey, Verdict
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
    n16,
    n32,
    rebuilt,
    seed,
    tcp,
    udp,
)
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert, fragment
from scapy.layers.l2 import Ether

DNS = Svc(port=53, proto=IPPROTO_UDP, backends=[(21, BACKENDS[1], 5353)])
PAYLOAD = bytes(range(256)) * 2


def frags(src: str, dst: str, sport: int, dport: int, *, ip_id: int = 4242) -> list[bytes]:
    """A 520-byte UDP datagram split in three fragments (first carries the UDP header), as frames."""
    dgram = IP(src=src, dst=dst, id=ip_id, ttl=63) / UDP(sport=sport, dport=dport) / PAYLOAD
    return [bytes(Ether(src=POD_MAC, dst=HOST_MAC) / f) for f in fragment(dgram, fragsize=200)]


def test_first_fragment_dnat_and_later_fragments_follow(h: Harness) -> None:
    seed(h.maps, DNS)
    sent = frags(CLIENT, FRONTEND, 40000, 53)
    want = frags(CLIENT, BACKENDS[1], 40000, 5353)
    assert len(sent) == 3
    for pkt, exp in zip(sent, want, strict=True):
        res = h.from_pod(pkt)
        assert res.action == TcAction.OK
        assert res.packet == exp
    fv = h.maps.frag.get(FragKey(saddr=n32(CLIENT), daddr=n32(FRONTEND), id=n16(4242), proto=IPPROTO_UDP))
    assert fv is not None and (fv.sport, fv.dport) == (n16(40000), n16(53))
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 2})


def test_reply_fragments_reverse_translated(h: Harness) -> None:
    seed(h.maps, DNS)
    h.from_pod(udp())
    sent = frags(BACKENDS[1], CLIENT, 5353, 40000, ip_id=99)
    want = frags(FRONTEND, CLIENT, 53, 40000, ip_id=99)
    for pkt, exp in zip(sent, want, strict=True):
        res = h.to_pod(pkt)
        assert (res.action, res.packet) == (TcAction.OK, exp)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 3})


def test_orphan_later_fragment_to_service_dropped(h: Harness) -> None:
    seed(h.maps, DNS)
    later = frags(CLIENT, FRONTEND, 40000, 53)[1]
    res = h.from_pod(later)
    assert res.action == TcAction.SHOT
    assert h.verdicts() == Counter({Verdict.DROP_FRAG: 1})


def test_orphan_later_fragment_to_other_address_passes(h: Harness) -> None:
    seed(h.maps, DNS)
    later = frags(CLIENT, OTHER, 40000, 53)[1]
    for run in (h.from_pod, h.to_pod):
        res = run(later)
        assert (res.action, res.packet) == (TcAction.OK, later)
    assert h.verdicts() == Counter({Verdict.PASS: 2})


def test_later_fragment_never_rejected(h: Harness) -> None:
    seed(h.maps, Svc(port=53, proto=IPPROTO_UDP, backends=[]))
    sent = frags(CLIENT, FRONTEND, 40000, 53)
    assert h.from_pod(sent[0]).action == TcAction.REDIRECT  # the first one gets the ICMP error
    assert h.from_pod(sent[1]).action == TcAction.SHOT
    assert h.verdicts() == Counter({Verdict.REJECT_ICMP: 1, Verdict.DROP_FRAG: 1})


def test_tcp_dnat_keeps_ip_options(h: Harness) -> None:
    seed(h.maps, Svc(backends=[(11, BACKENDS[0], 8080)]))
    pkt = tcp(flags="S", ip_options=[IPOption_Router_Alert()], payload=b"xyz")
    res = h.from_pod(pkt)
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)
    assert IP(res.packet[14:]).ihl == 6
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA", ip_options=[IPOption_Router_Alert()])
    res = h.to_pod(reply)
    assert res.packet == rebuilt(reply, ip_src=FRONTEND, sport=80)
