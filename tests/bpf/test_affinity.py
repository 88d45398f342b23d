"""ClientIP session affinity: new flows of one client stick to its backend until the timeout."""

from __future__ import annotations

import ctypes as ct
import time
from collections import Counter

from bpfproxy.loader.structs import CT_DIR_FWD, SVC_F_AFFINITY, AffinityKey, AffinityVal, Verdict
from packets import BACKENDS, CLIENT, FRONTEND, IPPROTO_TCP, Harness, Svc, a32, ct_key, n32, seed, tcp
from scapy.layers.inet import IP

STICKY = Svc(
    backends=[(11, BACKENDS[0], 8080), (12, BACKENDS[1], 8080), (13, BACKENDS[2], 8080)],
    flags=SVC_F_AFFINITY,
    affinity_timeout=60,
)
KEY = AffinityKey(svc_id=1, client=n32(CLIENT))


def now_ns() -> int:
    """bpf_ktime_get_ns(): CLOCK_MONOTONIC."""
    return time.monotonic_ns()


def test_same_client_same_backend_over_new_flows(h: Harness) -> None:
    seed(h.maps, STICKY)
    dsts = {IP(h.from_pod(tcp(sport=20000 + i)).packet[14:]).dst for i in range(30)}
    assert len(dsts) == 1
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_AFFINITY: 29})
    entry = h.maps.affinity.get(KEY)
    assert entry is not None
    be = h.maps.backend.get(ct.c_uint32(entry.backend_id))
    assert be is not None and a32(be.addr) == dsts.pop()


def test_other_clients_are_spread(h: Harness) -> None:
    seed(h.maps, STICKY)
    dsts = {IP(h.from_pod(tcp(src=f"10.244.1.{i}")).packet[14:]).dst for i in range(1, 61)}
    assert dsts == set(BACKENDS)


def test_seeded_entry_is_used_and_refreshed(h: Harness) -> None:
    seed(h.maps, STICKY)
    before = now_ns() - 30 * 10**9
    h.maps.affinity.put(KEY, AffinityVal(last_used=before, backend_id=12))
    res = h.from_pod(tcp())
    assert IP(res.packet[14:]).dst == BACKENDS[1]
    assert h.verdicts() == Counter({Verdict.FWD_AFFINITY: 1})
    entry = h.maps.affinity.get(KEY)
    assert entry is not None and entry.last_used > before + 29 * 10**9


def test_expired_entry_allows_a_new_choice(h: Harness) -> None:
    seed(h.maps, STICKY)
    old = now_ns() - 61 * 10**9
    h.maps.affinity.put(KEY, AffinityVal(last_used=old, backend_id=12))
    h.from_pod(tcp())
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})
    entry = h.maps.affinity.get(KEY)
    assert entry is not None and entry.last_used > old + 60 * 10**9


def test_deleted_affinity_backend_is_rechosen(h: Harness) -> None:
    seed(h.maps, STICKY)
    h.maps.affinity.put(KEY, AffinityVal(last_used=now_ns(), backend_id=77))
    res = h.from_pod(tcp())
    assert IP(res.packet[14:]).dst in BACKENDS
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1})
    entry = h.maps.affinity.get(KEY)
    assert entry is not None and entry.backend_id in (11, 12, 13)


def test_terminating_affinity_backend_gets_no_new_flow(h: Harness) -> None:
    seed(h.maps, Svc(**{**STICKY.__dict__, "terminating": [12]}))
    h.maps.affinity.put(KEY, AffinityVal(last_used=now_ns(), backend_id=12))
    for i in range(10):
        res = h.from_pod(tcp(sport=30000 + i))
        assert IP(res.packet[14:]).dst != BACKENDS[1]
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_AFFINITY: 9})


def test_new_syn_on_a_closing_tuple_follows_affinity(h: Harness) -> None:
    """A reused source port within the closing lifetime goes to the client's affinity backend, not the old one."""
    seed(h.maps, STICKY)
    first = h.from_pod(tcp(flags="S"))
    entry = h.maps.affinity.get(KEY)
    assert entry is not None
    old_id = entry.backend_id
    new_id = 12 if old_id != 12 else 13
    h.from_pod(tcp(flags="FA", seq=1001))
    h.maps.affinity.put(KEY, AffinityVal(last_used=now_ns() - 10**9, backend_id=new_id))  # coarse clock lags
    res = h.from_pod(tcp(flags="S"))
    assert IP(res.packet[14:]).dst == BACKENDS[new_id - 11] != IP(first.packet[14:]).dst
    assert h.verdicts() == Counter({Verdict.FWD_NEW: 1, Verdict.FWD_ESTABLISHED: 1, Verdict.FWD_AFFINITY: 1})
    fwd = h.maps.ct.get(ct_key(CLIENT, FRONTEND, 40000, 80, IPPROTO_TCP, CT_DIR_FWD))
    assert fwd is not None and (fwd.backend_id, fwd.tcp_flags) == (new_id, 0)
