"""from_pod / to_pod forwarding: pass-through, DNAT of new and established flows, rebalance, reverse NAT."""

from __future__ import annotations

import ctypes as ct
from collections import Counter

import pytest
from bpfproxy.loader.structs import BE_F_TERMINATING, CT_DIR_FWD, CT_DIR_REPLY, Backend, SvcVal, Verdict
from bpfproxy.loader.testrun import TcAction
from packets import (
    BACKENDS,
    CLIENT,
    FRONTEND,
    IPPROTO_TCP,
    IPPROTO_UDP,
    OTHER,
    Harness,
    Svc,
    a32,
    ct_key,
    eth,
    h16,
    n16,
    n32,
    rebuilt,
    seed,
    svc_key,
    tcp,
    udp,
)
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

WEB = Svc(backends=[(11, BACKENDS[0], 8080), (12, BACKENDS[1], 8080), (13, BACKENDS[2], 8080)])
ONE = Svc(backends=[(11, BACKENDS[0], 8080)])
DNS = Svc(port=53, proto=IPPROTO_UDP, svc_id=2, backends=[(21, BACKENDS[1], 5353)])

# description, seeded services, input packet
PASS_ROWS: list[tuple[str, list[Svc], Packet]] = [
    ("arp", [WEB], eth(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT, pdst=FRONTEND)),
    ("ipv6", [WEB], Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(dst="fd00::1") / (b"x" * 8)),
    ("tcp to a non-service address", [WEB], tcp(dst=OTHER)),
    ("udp to a non-service address", [WEB], udp(dst=OTHER)),
    ("foreign port on a non-service address", [WEB], tcp(dst=OTHER, dport=81)),
    (
        "tcp to a frontend ip:port of another protocol, no address entry",
        [Svc(proto=IPPROTO_UDP, addr_entry=False, backends=[(11, BACKENDS[0], 80)])],
        tcp(),
    ),
]


@pytest.mark.parametrize(("desc", "svcs", "pkt"), PASS_ROWS, ids=[r[0] for r in PASS_ROWS])
def test_pass_through(h: Harness, desc: str, svcs: list[Svc], pkt: Packet) -> None:
    for s in svcs:
        seed(h.maps, s)
    for run in (h.from_pod, h.to_pod):
        res = run(pkt)
        assert res.action == TcAction.OK
        assert res.packet == bytes(pkt)
    assert h.verdicts() == Counter({Verdict.PASS: 2})
    assert list(h.maps.ct.keys()) == []


def test_tcp_syn_new_flow_dnat(h: Harness) -> None:
    seed(h.maps, ONE)
    pkt = tcp(flags="S", payload=b"")
    res = h.from_pod(pkt)
    assert res.action == TcAction.OK
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})
    assert h.svc_stats(1) == (1, len(pkt))
    fwd = h.maps.ct.get(ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD))
    assert fwd is not None
    assert (fwd.backend_id, fwd.svc_id, a32(fwd.nat_addr), h16(fwd.nat_port)) == (11, 1, BACKENDS[0], 8080)
    rep = h.maps.ct.get(ct_key(BACKENDS[0], CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY))
    assert rep is not None
    assert (rep.backend_id, rep.svc_id, a32(rep.nat_addr), h16(rep.nat_port)) == (11, 1, FRONTEND, 80)
    assert rep.expires == fwd.expires > 0
    assert len(list(h.maps.ct.keys())) == 2


def test_tcp_payload_dnat_checksums(h: Harness) -> None:
    seed(h.maps, ONE)
    pkt = tcp(flags="PA", seq=5000, ack=77, payload=b"GET / HTTP/1.1\r\n\r\n")
    res = h.from_pod(pkt)
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})


def test_established_flow_keeps_its_backend(h: Harness) -> None:
    seed(h.maps, WEB)
    first = h.from_pod(tcp(flags="S"))
    backend = IP(first.packet[14:]).dst
    for i in range(20):
        pkt = tcp(flags="A", seq=1001 + i, ack=1)
        res = h.from_pod(pkt)
        assert res.packet == rebuilt(pkt, ip_dst=backend, dport=8080)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 20})
    assert h.svc_stats(1)[0] == 21


def test_new_flows_spread_over_all_backends(h: Harness) -> None:
    seed(h.maps, WEB)
    hits: Counter[str] = Counter()
    for sport in range(30000, 30300):
        res = h.from_pod(tcp(sport=sport))
        hits[IP(res.packet[14:]).dst] += 1
    assert set(hits) == set(BACKENDS)
    assert min(hits.values()) >= 50, hits  # 100 expected each; none starved
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 300})


def test_rebalance_when_ct_backend_deleted(h: Harness) -> None:
    seed(h.maps, WEB)
    h.from_pod(tcp())
    fwd_key = ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)
    entry = h.maps.ct.get(fwd_key)
    assert entry is not None
    gone = entry.backend_id
    # the agent removes the backend: its slot goes and the survivors fill slots 1..2
    survivors = [b for b in WEB.backends if b[0] != gone]
    h.maps.backend.delete(ct.c_uint32(gone))
    seed(h.maps, Svc(backends=survivors))
    h.maps.svc.delete(svc_key(FRONTEND, 80, IPPROTO_TCP, 3))
    for _ in range(10):
        res = h.from_pod(tcp(flags="A"))
        assert res.action == TcAction.OK
        assert IP(res.packet[14:]).dst in {b[1] for b in survivors}
    entry = h.maps.ct.get(fwd_key)
    assert entry is not None and entry.backend_id != gone
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_REBALANCED: 1, Verdict.FWD_ESTABLISHED: 9})


def test_rebalance_when_backend_id_reused_by_another_service(h: Harness) -> None:
    seed(h.maps, ONE)
    pkt = tcp()
    h.from_pod(pkt)
    # backend 11 now belongs to svc 9 (same address even): the flow must not keep using it
    h.maps.backend.put(ct.c_uint32(11), Backend(addr=n32(BACKENDS[0]), port=n16(8080), proto=IPPROTO_TCP, svc_id=9))
    h.maps.backend.put(ct.c_uint32(14), Backend(addr=n32(BACKENDS[2]), port=n16(9090), proto=IPPROTO_TCP, svc_id=1))
    from packets import svc_key

    h.maps.svc.put(svc_key(FRONTEND, 80, IPPROTO_TCP, 1), SvcVal(backend_id=14, svc_id=1))
    res = h.from_pod(pkt)
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[2], dport=9090)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_REBALANCED: 1})
    entry = h.maps.ct.get(ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD))
    assert entry is not None and entry.backend_id == 14


def test_udp_fixed_source_port_rebalanced_never_black_holed(h: Harness) -> None:
    seed(h.maps, DNS)
    pkt = udp()
    h.from_pod(pkt)
    h.maps.backend.delete(ct.c_uint32(21))
    seed(h.maps, Svc(port=53, proto=IPPROTO_UDP, svc_id=2, backends=[(22, BACKENDS[2], 5353)]))
    res = h.from_pod(pkt)
    assert res.action == TcAction.OK
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[2], dport=5353)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_REBALANCED: 1})


def test_terminating_backend_keeps_existing_flow_with_count_zero(h: Harness) -> None:
    seed(h.maps, ONE)
    h.from_pod(tcp())
    # the only endpoint turns terminating: no slots, count 0, backend kept with BE_F_TERMINATING
    h.maps.svc.delete(svc_key(FRONTEND, 80, IPPROTO_TCP, 1))
    seed(h.maps, Svc(backends=[(11, BACKENDS[0], 8080)], terminating=[11]))
    pkt = tcp(flags="A", seq=1001, ack=1)
    res = h.from_pod(pkt)
    assert res.action == TcAction.OK
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)
    be = h.maps.backend.get(ct.c_uint32(11))
    assert be is not None and be.flags & BE_F_TERMINATING
    # a new flow gets no terminating backend: count 0 rejects it
    res = h.from_pod(tcp(sport=40001))
    assert res.action == TcAction.REDIRECT
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 1, Verdict.REJECT_TCP_RST: 1})


@pytest.mark.parametrize("chksum", [None, 0], ids=["udp-checksum", "udp-zero-checksum"])
def test_udp_dnat(h: Harness, chksum: int | None) -> None:
    seed(h.maps, DNS)
    pkt = udp(chksum=chksum)
    res = h.from_pod(pkt)
    assert res.action == TcAction.OK
    assert res.packet == rebuilt(pkt, ip_dst=BACKENDS[1], dport=5353)
    if chksum == 0:
        assert res.packet[14 + 20 + 6 : 14 + 20 + 8] == b"\x00\x00"
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})
    assert h.svc_stats(2) == (1, len(pkt))


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_reverse_nat_on_to_pod(h: Harness, proto: str) -> None:
    if proto == "tcp":
        seed(h.maps, ONE)
        h.from_pod(tcp())
        reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA", seq=9000, ack=1001)
        fe_port = 80
    else:
        seed(h.maps, DNS)
        h.from_pod(udp())
        reply = udp(src=BACKENDS[1], dst=CLIENT, sport=5353, dport=40000, payload=b"answer")
        fe_port = 53
    res = h.to_pod(reply)
    assert res.action == TcAction.OK
    assert res.packet == rebuilt(reply, ip_src=FRONTEND, sport=fe_port)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})


def test_reply_without_conntrack_passes(h: Harness) -> None:
    seed(h.maps, ONE)
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA")
    res = h.to_pod(reply)
    assert (res.action, res.packet) == (TcAction.OK, bytes(reply))
    assert h.verdicts() == Counter({Verdict.PASS: 1})


def test_expired_conntrack_is_a_new_flow(h: Harness) -> None:
    seed(h.maps, ONE)
    h.from_pod(tcp())
    key = ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)
    entry = h.maps.ct.get(key)
    assert entry is not None
    entry.expires = 1
    h.maps.ct.put(key, entry)
    h.from_pod(tcp(flags="A"))
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 2})


def test_fin_shortens_conntrack_lifetime(h: Harness) -> None:
    seed(h.maps, ONE)
    h.from_pod(tcp())
    key = ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)
    before = h.maps.ct.get(key)
    assert before is not None and before.tcp_flags == 0
    h.from_pod(tcp(flags="FA"))
    after = h.maps.ct.get(key)
    assert after is not None
    assert after.tcp_flags == 1  # CT_F_FIN
    assert after.expires < before.expires - 3600 * 10**9  # closing lifetime (10 s) instead of 6 h


@pytest.mark.parametrize("close", ["FA", "R"])
def test_new_syn_on_a_closing_tuple_is_a_new_flow(h: Harness, close: str) -> None:
    """As Linux conntrack kills a closing entry on a new SYN: the reused source port gets a fresh choice."""
    seed(h.maps, WEB)
    key = ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)
    hits: Counter[str] = Counter()
    for _ in range(60):
        res = h.from_pod(tcp(flags="S"))
        hits[IP(res.packet[14:]).dst] += 1
        entry = h.maps.ct.get(key)
        assert entry is not None and entry.tcp_flags == 0
        backend = h.maps.backend.get(ct.c_uint32(entry.backend_id))
        assert backend is not None and a32(backend.addr) == IP(res.packet[14:]).dst
        reply = ct_key(IP(res.packet[14:]).dst, CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY)
        assert h.maps.ct.get(reply) is not None
        h.from_pod(tcp(flags=close, seq=1001))
    assert set(hits) == set(BACKENDS), hits  # 3 * (2/3)^60: never one backend left out
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 60, Verdict.FWD_ESTABLISHED: 60})


def test_retransmitted_syn_of_a_live_flow_keeps_its_backend(h: Harness) -> None:
    seed(h.maps, WEB)
    first = IP(h.from_pod(tcp(flags="S")).packet[14:]).dst
    for _ in range(20):
        assert IP(h.from_pod(tcp(flags="S")).packet[14:]).dst == first
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 20})


def test_syn_ack_on_a_closing_tuple_keeps_its_backend(h: Harness) -> None:
    """Only a pure SYN opens a connection: anything else on a closing tuple belongs to the old flow."""
    seed(h.maps, WEB)
    first = IP(h.from_pod(tcp(flags="S")).packet[14:]).dst
    h.from_pod(tcp(flags="FA", seq=1001))
    for _ in range(20):
        assert IP(h.from_pod(tcp(flags="SA")).packet[14:]).dst == first
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 21})


@pytest.mark.parametrize("close", ["FA", "R"])
def test_direct_connection_reusing_a_closed_reply_tuple_is_not_translated(h: Harness, close: str) -> None:
    """A client that closed a service flow and then opens a connection to the backend pod itself from the
    same source port: the backend's SYN-ACK and later packets reach the client untouched (no stale reverse NAT)."""
    seed(h.maps, ONE)
    h.from_pod(tcp())
    h.from_pod(tcp(flags=close, seq=1001))
    reply_key = ct_key(BACKENDS[0], CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY)
    # a FIN leaves a closing entry, a RST deletes it (CT_DELETE_ON_RST): either way the backend's own connection passes
    assert (h.maps.ct.get(reply_key) is None) == (close == "R")
    syn_ack = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA", seq=5000, ack=1)
    res = h.to_pod(syn_ack)
    assert (res.action, res.packet) == (TcAction.OK, bytes(syn_ack))
    assert h.maps.ct.get(reply_key) is None
    data = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="PA", seq=5001, ack=65)
    res = h.to_pod(data)
    assert (res.action, res.packet) == (TcAction.OK, bytes(data))
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 1, Verdict.PASS: 2})


def test_syn_ack_of_a_live_service_flow_is_translated(h: Harness) -> None:
    """The check above only applies to closing entries: the SYN-ACK of an open flow is reverse-translated."""
    seed(h.maps, ONE)
    h.from_pod(tcp())
    syn_ack = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001)
    res = h.to_pod(syn_ack)
    assert res.packet == rebuilt(syn_ack, ip_src=FRONTEND, sport=80)
    assert h.maps.ct.get(ct_key(BACKENDS[0], CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY)) is not None
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})


def test_client_fin_shortens_the_reply_entry_too(h: Harness) -> None:
    """A client's FIN is only seen forward: the reply entry gets the closing flag and lifetime as well."""
    seed(h.maps, ONE)
    h.from_pod(tcp())
    reply_key = ct_key(BACKENDS[0], CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY)
    before = h.maps.ct.get(reply_key)
    assert before is not None and before.tcp_flags == 0
    h.from_pod(tcp(flags="FA", seq=1001))
    after = h.maps.ct.get(reply_key)
    assert after is not None
    assert after.tcp_flags == 1  # CT_F_FIN
    assert after.expires < before.expires - 3600 * 10**9


def test_client_reset_deletes_both_entries(h: Harness) -> None:
    """A RST ends the flow: both entries go at once, so dead flows do not fill the LRU map."""
    seed(h.maps, ONE)
    h.from_pod(tcp())
    fwd_key = ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)
    reply_key = ct_key(BACKENDS[0], CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY)
    assert h.maps.ct.get(fwd_key) is not None and h.maps.ct.get(reply_key) is not None
    res = h.from_pod(tcp(flags="R", seq=1001))
    assert IP(res.packet[14:]).dst == BACKENDS[0]  # the RST itself is still translated
    assert h.maps.ct.get(fwd_key) is None and h.maps.ct.get(reply_key) is None
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 1})


def test_backend_reset_is_translated_then_deletes_both_entries(h: Harness) -> None:
    seed(h.maps, ONE)
    h.from_pod(tcp())
    rst = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="RA", seq=0, ack=1001)
    res = h.to_pod(rst)
    assert res.packet == rebuilt(rst, ip_src=FRONTEND, sport=80)
    assert h.maps.ct.get(ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)) is None
    assert h.maps.ct.get(ct_key(BACKENDS[0], CLIENT, 8080, 40000, IPPROTO_TCP, CT_DIR_REPLY)) is None
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})


def test_backend_fin_shortens_the_forward_entry_too(h: Harness) -> None:
    seed(h.maps, ONE)
    h.from_pod(tcp())
    fwd_key = ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD)
    before = h.maps.ct.get(fwd_key)
    assert before is not None
    h.to_pod(tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="FA", seq=9000, ack=1001))
    after = h.maps.ct.get(fwd_key)
    assert after is not None
    assert after.tcp_flags == 1  # CT_F_FIN
    assert after.expires < before.expires - 3600 * 10**9
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})
