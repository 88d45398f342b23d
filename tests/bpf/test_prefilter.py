"""Foreign-prefix and quiet-port bitmaps: traffic to a /16 with no service address or CIDR (from_pod), or
from a port no backend uses (to_pod), passes after one array lookup; every verdict stays what the full
path gives."""

from __future__ import annotations

import ctypes as ct
from collections import Counter
from typing import Any

import pytest
from bpfproxy.controller.sync import MapsWriter
from bpfproxy.loader.structs import FOREIGN_WORDS, ForeignWord, Verdict
from bpfproxy.loader.testrun import TcAction
from packets import BACKENDS, CLIENT, FRONTEND, OTHER, Harness, Svc, icmp, rebuilt, seed, tcp, udp
from scapy.layers.inet import IP
from scapy.packet import Packet
from test_forward import PASS_ROWS
from test_reject import ICMP_ROWS, RST_ROWS, expected_icmp_unreach
from test_service_cidr import CIDR, ROWS, WEB
from test_sync_writer import fe, sync


def _foreign(h: Harness, addr: str) -> bool:
    a, b = (int(x) for x in addr.split(".")[:2])
    net = a << 8 | b
    word = h.maps.foreign.get(ct.c_uint32(net >> 6))
    assert word is not None
    return bool(word.bits >> (net & 63) & 1)


@pytest.mark.parametrize(("desc", "pkt", "verdict", "action"), ROWS, ids=[r[0] for r in ROWS])
def test_cidr_rows_with_prefilter(h: Harness, desc: str, pkt: Packet | bytes, verdict: Verdict, action: int) -> None:
    seed(h.maps, WEB)
    h.maps.set_service_cidrs([CIDR])  # rebuilds the bitmap from the service map and the CIDRs
    assert not _foreign(h, FRONTEND) and _foreign(h, OTHER) and _foreign(h, "10.97.0.1")
    res = h.from_pod(pkt)
    assert res.action == action
    assert h.verdicts() == Counter({verdict: 1})


@pytest.mark.parametrize(("desc", "svcs", "pkt"), PASS_ROWS, ids=[r[0] for r in PASS_ROWS])
def test_pass_rows_with_prefilter(h: Harness, desc: str, svcs: list[Svc], pkt: Packet) -> None:
    for s in svcs:
        seed(h.maps, s)
    h.maps.rebuild_foreign()
    res = h.from_pod(pkt)
    assert (res.action, res.packet) == (TcAction.OK, bytes(pkt))
    assert h.verdicts() == Counter({Verdict.PASS: 1})


@pytest.mark.parametrize(("desc", "svc", "pkt", "want"), RST_ROWS[:2], ids=[r[0] for r in RST_ROWS[:2]])
def test_reset_rows_with_prefilter(h: Harness, desc: str, svc: Svc, pkt: Packet, want: bytes) -> None:
    seed(h.maps, svc)
    h.maps.rebuild_foreign()
    res = h.from_pod(pkt)
    assert (res.action, res.packet) == (TcAction.REDIRECT, want)


@pytest.mark.parametrize(("desc", "svc", "pkt"), ICMP_ROWS[:3], ids=[r[0] for r in ICMP_ROWS[:3]])
def test_icmp_rows_with_prefilter(h: Harness, desc: str, svc: Svc, pkt: Packet) -> None:
    seed(h.maps, svc)
    h.maps.rebuild_foreign()
    res = h.from_pod(pkt)
    assert (res.action, res.packet) == (TcAction.REDIRECT, expected_icmp_unreach(pkt))


def test_forward_and_revnat_with_prefilter(h: Harness) -> None:
    seed(h.maps, Svc(backends=[(11, BACKENDS[0], 8080)]))
    h.maps.rebuild_foreign()
    assert _foreign(h, BACKENDS[0]) and _foreign(h, CLIENT)
    pkt = tcp()
    assert h.from_pod(pkt).packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA")
    assert h.to_pod(reply).packet == rebuilt(reply, ip_src=FRONTEND, sport=80)  # to_pod ignores the bitmap
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})


def test_rebuild_marks_cidrs_and_addresses_outside_them(h: Harness) -> None:
    seed(h.maps, Svc(addr="192.168.7.7", backends=[(11, BACKENDS[0], 8080)]))
    h.maps.set_service_cidrs(["10.96.0.0/12", "172.30.5.0/24"])
    for addr in ("10.96.0.1", "10.111.255.255", "172.30.5.1", "172.30.200.1", "192.168.7.1"):
        assert not _foreign(h, addr), addr
    for addr in ("10.95.255.255", "10.112.0.0", "172.31.0.1", "192.169.0.1", "0.0.0.0", "255.255.255.255"):
        assert _foreign(h, addr), addr
    # a /24 CIDR leaves its whole /16 to the full path: the trie decides inside it
    assert h.from_pod(tcp(dst="172.30.200.1")).action == TcAction.OK
    assert h.from_pod(tcp(dst="172.30.5.9")).action == TcAction.SHOT
    h.maps.set_service_cidrs([])
    assert _foreign(h, "10.96.0.1") and not _foreign(h, "192.168.7.1")


def test_reset_means_nothing_is_foreign(h: Harness) -> None:
    h.maps.rebuild_foreign()
    h.maps.reset_foreign()
    words = [h.maps.foreign.get(ct.c_uint32(w)) for w in range(FOREIGN_WORDS)]
    assert all(w is not None and w.bits == 0 for w in words)
    seed(h.maps, WEB)
    assert h.from_pod(tcp(dport=81)).action == TcAction.REDIRECT


def test_writer_rebuilds_then_unmarks_new_addresses_before_writing(h: Harness, maps: Any) -> None:
    w = MapsWriter(maps)
    sync(w, [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080)])])
    assert not _foreign(h, "10.96.0.10") and _foreign(h, "172.16.0.1")
    pkt = tcp()
    assert h.from_pod(pkt).packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)
    # a second frontend in a /16 that was foreign: unmarked before its entries are written
    sync(w, [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080)]),
             fe("default/ext", "172.16.0.1", 53, [(BACKENDS[1], 5353)])])
    assert not _foreign(h, "172.16.0.1")
    res = h.from_pod(tcp(dst="172.16.0.1", dport=53))
    assert res.action == TcAction.OK and res.packet[30:34] == bytes(map(int, BACKENDS[1].split(".")))
    assert h.from_pod(udp(dst="172.16.0.1")).action == TcAction.REDIRECT  # unserved port: rejected, not passed
    assert h.from_pod(icmp(dst="172.17.0.1")).action == TcAction.OK
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 2, Verdict.REJECT_ICMP: 1, Verdict.PASS: 1})


def test_restarted_writer_rebuilds_from_what_it_read(h: Harness, maps: Any) -> None:
    sync(MapsWriter(maps), [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080)])])
    maps.reset_foreign()  # as a map pinned fresh next to an older service map
    w = MapsWriter(maps)
    _, writes = sync(w, [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080)])])
    assert writes == 0 and not _foreign(h, "10.96.0.10") and _foreign(h, OTHER)
    assert h.from_pod(tcp()).action == TcAction.OK
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})


def test_rebuild_keeps_frontends_without_an_address_entry(h: Harness) -> None:
    """A frontend whose address entry is missing (an inconsistent pin) is still not foreign."""
    seed(h.maps, Svc(addr="172.18.0.5", addr_entry=False, backends=[(11, BACKENDS[0], 8080)]))
    h.maps.rebuild_foreign()
    assert not _foreign(h, "172.18.0.5")
    pkt = tcp(dst="172.18.0.5")
    assert h.from_pod(pkt).packet == rebuilt(pkt, ip_dst=BACKENDS[0], dport=8080)


def _quiet(h: Harness, port: int) -> bool:
    word = h.maps.quietport.get(ct.c_uint32(port >> 6))
    assert word is not None
    return bool(word.bits >> (port & 63) & 1)


def test_to_pod_quiet_ports_pass_and_replies_are_translated(h: Harness) -> None:
    seed(h.maps, Svc(backends=[(11, BACKENDS[0], 8080)]))
    h.from_pod(tcp())
    h.maps.rebuild_quiet_ports()
    assert not _quiet(h, 8080) and _quiet(h, 5000) and _quiet(h, 80)
    request = tcp(src=OTHER, dst=CLIENT, sport=5000, dport=40000)
    assert (h.to_pod(request).packet, h.to_pod(udp(src=OTHER, dst=CLIENT, sport=5000)).action) == (
        bytes(request), TcAction.OK)
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA")
    assert h.to_pod(reply).packet == rebuilt(reply, ip_src=FRONTEND, sport=80)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.PASS: 2, Verdict.REVNAT: 1})


def test_reply_port_of_a_live_flow_stays_loud_after_its_backend_is_gone(h: Harness) -> None:
    seed(h.maps, Svc(backends=[(11, BACKENDS[0], 8080)]))
    h.from_pod(tcp())
    h.maps.backend.delete(ct.c_uint32(11))
    h.maps.rebuild_quiet_ports()  # as a restarted agent does: 8080 is only in a conntrack reply entry now
    assert not _quiet(h, 8080)
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="A")
    assert h.to_pod(reply).packet == rebuilt(reply, ip_src=FRONTEND, sport=80)


def test_writer_unmarks_a_new_backend_port_before_writing_it(h: Harness, maps: Any) -> None:
    w = MapsWriter(maps)
    sync(w, [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080)])])
    assert not _quiet(h, 8080) and _quiet(h, 9090)
    sync(w, [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080), (BACKENDS[1], 9090)])])
    assert not _quiet(h, 9090)
    for sport in range(41000, 41040):  # some flow lands on the new backend
        res = h.from_pod(tcp(sport=sport))
        if res.packet[30:34] == bytes(map(int, BACKENDS[1].split("."))):
            reply = tcp(src=BACKENDS[1], dst=CLIENT, sport=9090, dport=sport, flags="SA")
            assert h.to_pod(reply).packet == rebuilt(reply, ip_src=FRONTEND, sport=80)
            break
    else:
        pytest.fail("no flow went to the new backend")


def test_reply_fragments_take_the_full_path(h: Harness) -> None:
    seed(h.maps, Svc(port=53, proto=17, backends=[(11, BACKENDS[0], 5353)]))
    h.from_pod(udp())
    h.maps.rebuild_quiet_ports()
    h.maps.quietport.put(ct.c_uint32(5353 >> 6), ForeignWord(bits=(1 << 64) - 1))
    # even with 5353 wrongly quiet, a fragment is looked up: only unfragmented segments are judged by port
    first = udp(src=BACKENDS[0], dst=CLIENT, sport=5353, dport=40000, payload=b"a" * 40)
    first[IP].flags = 1
    res = h.to_pod(first)
    assert res.packet[26:30] == bytes(map(int, FRONTEND.split(".")))
    assert h.verdicts()[Verdict.REVNAT] == 1


def test_restarted_writer_keeps_backend_ports_unquiet(h: Harness, maps: Any) -> None:
    """A restart reads the backends back: their ports must not be marked quiet, or replies of new flows would
    skip reverse NAT (read_applied once collected the ports before reading the backends)."""
    front = [fe("default/web", "10.96.0.10", 80, [(BACKENDS[0], 8080)])]
    sync(MapsWriter(maps), front)
    maps.reset_foreign()
    _, writes = sync(MapsWriter(maps), front)
    assert writes == 0
    word = h.maps.quietport.get(ct.c_uint32(8080 >> 6))
    assert word is not None and not (word.bits >> (8080 & 63)) & 1
    h.from_pod(tcp())
    reply = tcp(src=BACKENDS[0], dst=CLIENT, sport=8080, dport=40000, flags="SA")
    assert h.to_pod(reply).packet == rebuilt(reply, ip_src=FRONTEND, sport=80)
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.REVNAT: 1})
