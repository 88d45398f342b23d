"""MapsWriter against real pinned maps: apply, read back, idempotence, shrink, delete, restart."""

from __future__ import annotations

import ctypes as ct
import socket
from typing import Any

from bpfproxy.controller.diff import diff
from bpfproxy.controller.plan import DatapathState, FrontendKey, Limits, plan
from bpfproxy.controller.sync import MapsWriter, address_key, svc_key
from bpfproxy.controller.translate import BackendRef, Frontend
from bpfproxy.loader.structs import SVC_F_ADDR, SVC_F_AFFINITY, AffinityKey, AffinityVal, SvcStats

LIMITS = Limits()
KEY = FrontendKey("10.96.0.10", 80, 6, 0)


def fe(svc: str, addr: str, port: int, backends: list[tuple[str, int]], *, affinity: int = 0,
       terminating: tuple[tuple[str, int], ...] = ()) -> Frontend:
    refs = [BackendRef(a, p, False) for a, p in backends] + [BackendRef(a, p, True) for a, p in terminating]
    return Frontend(service=svc, port_name="", name=f"{svc}:{port}/TCP", addr=addr, port=port, proto=6, scope=0,
                    backends=tuple(sorted(refs)), affinity_timeout=affinity, drop_no_ep=False)


def sync(writer: MapsWriter, frontends: list[Frontend]) -> tuple[DatapathState, int]:
    applied = writer.read_applied()
    desired = plan(frontends, applied, LIMITS)
    wp = diff(applied, desired)
    writer.apply(wp)
    return desired, wp.writes()


def test_apply_and_read_back(maps: Any) -> None:
    w = MapsWriter(maps)
    fronts = [
        fe("default/web", "10.96.0.10", 80, [("10.0.0.1", 8080), ("10.0.0.2", 8080)], affinity=60,
           terminating=(("10.0.0.3", 8080),)),
        fe("default/web", "10.96.0.10", 443, [("10.0.0.1", 8443)]),
        fe("default/db", "10.96.0.20", 5432, []),
    ]
    desired, writes = sync(w, fronts)
    assert writes > 0
    back = w.read_applied()
    assert back == desired
    assert {k: e.name for k, e in back.frontends.items()} == {k: e.name for k, e in desired.frontends.items()}
    # raw checks of byte order and flags
    slot0 = maps.svc.get(svc_key(KEY, 0))
    assert slot0.count == 2 and slot0.flags == SVC_F_AFFINITY and slot0.affinity_timeout == 60
    raw_key = svc_key(KEY, 0)
    assert bytes(raw_key)[:6] == socket.inet_aton("10.96.0.10") + (80).to_bytes(2, "big")
    assert maps.svc.get(address_key("10.96.0.20")).flags == SVC_F_ADDR
    slot1 = maps.svc.get(svc_key(KEY, 1))
    be = maps.backend.get(ct.c_uint32(slot1.backend_id))
    assert bytes(be)[:6] == socket.inet_aton("10.0.0.1") + (8080).to_bytes(2, "big")
    assert bytes(maps.svcname.get(ct.c_uint32(slot0.svc_id)).name) == b"default/web:80/TCP"
    # second apply of the same desired state writes nothing
    _, writes = sync(w, fronts)
    assert writes == 0


def test_shrink_delete_and_purges(maps: Any) -> None:
    w = MapsWriter(maps)
    big = [fe("default/web", "10.96.0.10", 80, [(f"10.0.0.{i}", 80) for i in range(1, 6)], affinity=30),
           fe("default/api", "10.96.0.11", 80, [("10.0.1.1", 80)])]
    s1, _ = sync(w, big)
    api_id = s1.frontends[FrontendKey("10.96.0.11", 80, 6, 0)].svc_id
    web_id = s1.frontends[KEY].svc_id
    ncpu = len(maps.svcstat.get_percpu(ct.c_uint32(api_id)))
    maps.affinity.put(AffinityKey(svc_id=api_id, client=1), AffinityVal(backend_id=1))
    maps.affinity.put(AffinityKey(svc_id=web_id, client=2), AffinityVal(backend_id=1))
    small = [fe("default/web", "10.96.0.10", 80, [("10.0.0.5", 80)])]
    s2, _ = sync(w, small)
    assert w.read_applied() == s2
    assert maps.svc.get(svc_key(KEY, 0)).count == 1
    assert maps.svc.get(svc_key(KEY, 2)) is None
    assert maps.svc.get(address_key("10.96.0.11")) is None
    assert len(list(maps.backend.keys())) == 1
    assert maps.svcname.get(ct.c_uint32(api_id)) is None
    # affinity turned off on web and api removed: both purged
    assert list(maps.affinity.keys()) == []
    # a new frontend gets api's freed id; its counters start at zero
    from bpfproxy.loader import bpfsys

    dirty = (SvcStats * ncpu)(*[SvcStats(packets=5, bytes=500)] * ncpu)
    bpfsys.update(maps.svcstat.fd, ct.c_uint32(api_id), dirty)
    s3, _ = sync(w, [*small, fe("default/new", "10.96.0.12", 80, [("10.0.2.1", 80)])])
    assert s3.frontends[FrontendKey("10.96.0.12", 80, 6, 0)].svc_id == api_id
    assert all(v.packets == 0 for v in maps.svcstat.get_percpu(ct.c_uint32(api_id)))
    # delete everything
    s4, _ = sync(w, [])
    assert s4 == DatapathState() and list(maps.svc.keys()) == [] and list(maps.backend.keys()) == []
    assert list(maps.svcname.keys()) == []


def test_restart_repairs_strays(maps: Any) -> None:
    w = MapsWriter(maps)
    fronts = [fe("default/web", "10.96.0.10", 80, [("10.0.0.1", 80), ("10.0.0.2", 80)])]
    desired, _ = sync(w, fronts)
    from bpfproxy.loader.structs import SvcVal

    maps.svc.put(svc_key(KEY, 7), SvcVal(backend_id=99, svc_id=1))  # beyond count
    maps.svc.delete(svc_key(KEY, 2))                                  # missing slot
    _, writes = sync(w, fronts)
    assert writes == 2
    assert w.read_applied() == desired and maps.svc.get(svc_key(KEY, 7)) is None
