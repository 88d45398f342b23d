"""Default map sizes hold 10,000 services x 2 ports x 10 endpoints, and such a frontend forwards."""

from __future__ import annotations

import ctypes as ct
import socket
import struct
from collections import Counter

from bpfproxy.loader.build import DatapathSettings
from bpfproxy.loader.structs import SVC_F_ADDR, Backend, SvcKey, SvcVal, Verdict
from bpfproxy.loader.testrun import TcAction
from packets import IPPROTO_TCP, Harness, n16, n32, rebuilt, svc_key, tcp

SERVICES = 10_000
PORTS = 2
ENDPOINTS = 10


def _addr(base: str, i: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", socket.inet_aton(base))[0] + i))


def test_defaults_hold_10k_services_with_2_ports_and_10_endpoints(h: Harness) -> None:
    settings = DatapathSettings()
    frontends = SERVICES * PORTS
    assert frontends + frontends * ENDPOINTS + SERVICES <= settings.lb_map_max
    assert frontends * ENDPOINTS <= settings.backend_map_max
    assert frontends < settings.svc_id_max
    assert h.maps.svc.max_entries == settings.lb_map_max
    assert h.maps.backend.max_entries == settings.backend_map_max

    svc: list[tuple[SvcKey, SvcVal]] = []
    backends: list[tuple[ct.c_uint32, Backend]] = []
    for s in range(SERVICES):
        addr = _addr("10.96.0.1", s)
        for p in range(PORTS):
            sid = 1 + s * PORTS + p
            for e in range(ENDPOINTS):
                bid = 1 + (sid - 1) * ENDPOINTS + e
                backends.append((ct.c_uint32(bid), Backend(addr=n32(_addr("10.244.0.1", s * ENDPOINTS + e)),
                                                            port=n16(8080 + p), proto=IPPROTO_TCP, svc_id=sid)))
                svc.append((svc_key(addr, 80 + p, IPPROTO_TCP, 1 + e), SvcVal(backend_id=bid, svc_id=sid)))
            svc.append((svc_key(addr, 80 + p, IPPROTO_TCP), SvcVal(count=ENDPOINTS, svc_id=sid)))
        svc.append((SvcKey(addr=n32(addr)), SvcVal(flags=SVC_F_ADDR)))
    assert len(svc) == 230_000 and len(backends) == 200_000
    try:
        h.maps.backend.put_many(backends)
        h.maps.svc.put_many(svc)
        last = _addr("10.96.0.1", SERVICES - 1)
        pkt = tcp(dst=last, dport=81)
        sid = SERVICES * PORTS
        before = h.svc_stats(sid)[0]
        res = h.from_pod(pkt)
        assert res.action == TcAction.OK
        dst = socket.inet_ntoa(res.packet[30:34])
        want = {_addr("10.244.0.1", (SERVICES - 1) * ENDPOINTS + e) for e in range(ENDPOINTS)}
        assert dst in want
        assert res.packet == rebuilt(pkt, ip_dst=dst, dport=8081)
        assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})
        assert h.svc_stats(sid)[0] == before + 1
    finally:
        h.maps.svc.delete_many([k for k, _ in svc])
        h.maps.backend.delete_many([k for k, _ in backends])
