"""MapsWriter against real pinned maps: apply, read back, idempotence, shrink, delete, restart."""

from __future__ import annotations

import ctypes as ct
import socket
from typing import Any

import pytest
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


@pytest.mark.parametrize("bulk_min", [0, 1 << 30], ids=["bulk", "one-by-one"])
def test_packed_writes_equal_ctypes_structs(maps: Any, monkeypatch: pytest.MonkeyPatch, bulk_min: int) -> None:
    """Every element apply packs, in bulk (runs, joins, columns: a full sync) and one by one (a partial sync),
    holds exactly the ctypes struct built field by field: backend ids past 16 bits, svc ids with a high byte,
    UDP, both scopes, terminating backends, a run of one service's backends, a name longer than struct svc_name."""
    import bpfproxy.controller.sync as sync_mod

    monkeypatch.setattr(sync_mod, "_BULK_MIN", bulk_min)
    from bpfproxy.controller.plan import BackendEntry, FrontendEntry
    from bpfproxy.controller.sync import ip_to_be32
    from bpfproxy.loader.structs import BE_F_TERMINATING, SVC_NAME_LEN, SVC_SCOPE_EXT, SVC_SCOPE_INT, Backend, SvcVal

    long_name = "ns/" + "x" * 200 + ":53/UDP"
    state = DatapathState()
    backends = {70000 + i: BackendEntry(f"10.1.{i}.{i + 1}", 8000 + i, 17 if i % 2 else 6,
                                        BE_F_TERMINATING if i == 3 else 0, 65000 + i % 3) for i in range(6)}
    backends |= {70100 + i: BackendEntry(f"10.2.0.{i + 1}", 9090, 6, 0, 65003) for i in range(5)}  # one run
    fronts = {
        FrontendKey("10.96.1.1", 53, 17, SVC_SCOPE_EXT): FrontendEntry(65000, long_name, 0, 0, (70001, 70003, 70005)),
        FrontendKey("10.96.1.1", 53, 17, SVC_SCOPE_INT): FrontendEntry(65001, "ns/a:53/UDP", 0, 0, (70001,)),
        FrontendKey("10.96.1.2", 443, 6, 0): FrontendEntry(65002, "ns/b:443/TCP", SVC_F_AFFINITY, 10800,
                                                           (70000, 70002, 70004, 70000)),
        FrontendKey("10.96.1.3", 80, 6, 0): FrontendEntry(65003, "ns/c:80/TCP", 0, 0, tuple(range(70100, 70105))),
    }
    for ident, be in backends.items():
        state.backend_id_alloc.reserve(ident)
        state.add_backend(ident, be)
    for key, entry in fronts.items():
        state.svc_id_alloc.reserve(entry.svc_id)
        state.add_frontend(key, entry)
    state.addresses |= {"10.96.1.1", "10.96.1.2", "10.96.1.3"}
    w = MapsWriter(maps)
    applied = w.read_applied()
    w.apply(diff(applied, state))
    for ident, be in backends.items():
        want = Backend(addr=ip_to_be32(be.addr), port=socket.htons(be.port), proto=be.proto, flags=be.flags,
                       svc_id=be.svc_id)
        assert bytes(maps.backend.get(ct.c_uint32(ident))) == bytes(want), ident
    for key, entry in fronts.items():
        slot0 = SvcVal(count=len(entry.backend_ids), svc_id=entry.svc_id, affinity_timeout=entry.affinity_timeout,
                       flags=entry.flags)
        assert bytes(maps.svc.get(svc_key(key, 0))) == bytes(slot0), key
        for slot, be_id in enumerate(entry.backend_ids, start=1):
            assert bytes(maps.svc.get(svc_key(key, slot))) == bytes(SvcVal(backend_id=be_id, svc_id=entry.svc_id))
        name = bytes(maps.svcname.get(ct.c_uint32(entry.svc_id)).name)
        assert name == entry.name.encode()[: SVC_NAME_LEN - 1]
    for addr in state.addresses:
        assert bytes(maps.svc.get(address_key(addr))) == bytes(SvcVal(flags=SVC_F_ADDR))
    back = w.read_applied()
    assert back.backends == state.backends and back.addresses == state.addresses
    assert {k: (e.svc_id, e.backend_ids, e.flags, e.affinity_timeout) for k, e in back.frontends.items()} == {
        k: (e.svc_id, e.backend_ids, e.flags, e.affinity_timeout) for k, e in fronts.items()}
    assert back.frontends[next(iter(fronts))].name == long_name.encode()[: SVC_NAME_LEN - 1].decode()


def test_memo_calls_once_per_key() -> None:
    """_memo answers a repeated key from its cache and a new key from fn, falsy answers included."""
    from bpfproxy.controller.sync import _memo

    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        return x % 2

    get = _memo(fn)
    assert [get(x) for x in (4, 5, 4, 5, 4, 6)] == [0, 1, 0, 1, 0, 0]
    assert calls == [4, 5, 6]


def test_cold_start_on_empty_maps_reads_each_map_once(maps: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_applied + the first apply (foreign-prefix and quiet-port rebuild) on empty maps: one batch
    lookup per read map (svcname, svc, backend, conntrack), no key-by-key walk of a hash map, no element
    lookup; the writes are batches, whose count does not grow with the plan (one per phase and map chunk)."""
    from bpfproxy.loader import bpfsys

    calls: dict[str, int] = {}

    def counting(name: str) -> Any:
        real = getattr(bpfsys, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        return call

    maps.set_service_cidrs([])  # the session's maps may hold an earlier test's service CIDRs
    for name in ("lookup_batch", "next_key", "lookup", "update", "update_batch", "delete_batch", "delete"):
        monkeypatch.setattr(bpfsys, name, counting(name))
    w = MapsWriter(maps)
    assert w.read_applied() == DatapathState()
    w.apply(diff(DatapathState(), DatapathState()))  # the first apply rebuilds the bitmaps even when empty
    assert calls.get("lookup_batch") == 4, calls
    assert calls.get("next_key", 0) <= 1, calls  # the service-CIDR trie (empty: one call) is walked key by key
    assert "lookup" not in calls and "update" not in calls and "delete" not in calls, calls
    calls.clear()
    fronts = [fe(f"default/s{i}", f"10.96.0.{i + 1}", 80, [(f"10.0.{i}.{j + 1}", 8080) for j in range(20)])
              for i in range(100)]
    applied = w.read_applied()
    w.apply(diff(applied, plan(fronts, applied, LIMITS)))
    # one batch per phase (stat resets, backends, slots, address entries, frontends, names): not per element
    assert calls.get("update_batch") == 6, calls
    assert calls.get("lookup_batch") == 3, calls  # the read_applied before it
