"""Plan: the desired contents of the service and backend maps, with stable ids.

Place in the data flow: pure, after translate and before diff. `plan()` turns frontends into a
`DatapathState` (what bpx_svc_v1 / bpx_backend_v1 / bpx_svcname_v1 should hold) starting from the
previous state, so that ids are stable: a frontend keeps its svc_id and a (svc_id, address, port)
keeps its backend id. Freed ids become reusable, lowest first, only in the next plan (never
handed to something else within the write that frees them). A service that does not fit the map
capacities is skipped with an error naming it, and keeps what it had. A full plan into an empty
state (the cold start) is built in one pass (`_plan_cold`) when everything fits; the same state.
"""

from __future__ import annotations

import copy
import heapq
import logging
import operator
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

from bpfproxy.controller.translate import Frontend
from bpfproxy.loader.structs import BE_F_TERMINATING, SVC_F_AFFINITY, SVC_F_DROP_NO_EP

log = logging.getLogger(__name__)


class FrontendKey(NamedTuple):
    """struct svc_key without the slot: one frontend."""

    addr: str
    """frontend IPv4 address, dotted"""
    port: int
    """frontend port"""
    proto: int
    """IP protocol number"""
    scope: int
    """SVC_SCOPE_EXT or SVC_SCOPE_INT"""


@dataclass(frozen=True, slots=True)
class FrontendEntry:
    """Slot 0 of a frontend, its name and its slots."""

    svc_id: int
    """frontend id (1..; 0 reserved)"""
    name: str
    """ "ns/name:port/proto", written to bpx_svcname_v1"""
    flags: int
    """SVC_F_* flags of slot 0"""
    affinity_timeout: int
    """ClientIP affinity timeout in seconds (0 without SVC_F_AFFINITY)"""
    backend_ids: tuple[int, ...]
    """backend id of slots 1..n, in slot order (non-terminating backends only)"""

    @property
    def service(self) -> str:
        """ "ns/name" of the service, from the name."""
        return self.name.rsplit(":", 1)[0]


class BackendEntry(NamedTuple):
    """One element of the backend map (a named tuple: a cold start builds 100k, ~3x cheaper than a
    frozen dataclass)."""

    addr: str
    """endpoint IPv4 address, dotted"""
    port: int
    """endpoint port"""
    proto: int
    """IP protocol number"""
    flags: int
    """BE_F_* flags"""
    svc_id: int
    """the frontend it belongs to"""


@dataclass(frozen=True)
class Limits:
    """Capacities of the maps (the -D sizes the datapath was built with)."""

    lb_entries: int = 65536
    """entries of bpx_svc_v1: frontends + their slots + address entries (LB_MAP_MAX)"""
    backends: int = 65536
    """entries of bpx_backend_v1 (BACKEND_MAP_MAX)"""
    svc_ids: int = 65536
    """SVC_ID_MAX: frontend ids are 1..svc_ids-1"""


class IdAllocator:
    """Ids 1..limit-1, lowest free first; freed ids go to a heap (O(log n) per call).

    A reserved free id is dropped from the heap lazily: the set of free ids is the truth and the
    heap may hold stale entries, skipped when popped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._next = 1
        self._free: list[int] = []
        self._free_set: set[int] = set()

    def copy(self) -> IdAllocator:
        """An independent copy."""
        new = IdAllocator(self.limit)
        new._next = self._next
        new._free = list(self._free)
        new._free_set = set(self._free_set)
        return new

    def reserve(self, ident: int) -> None:
        """Mark ident used (rebuilding from the maps: cheapest in ascending order)."""
        if ident >= self._next:
            for hole in range(self._next, ident):
                heapq.heappush(self._free, hole)
                self._free_set.add(hole)
            self._next = ident + 1
        else:
            self._free_set.discard(ident)

    def allocate(self) -> int | None:
        """The lowest free id, or None when exhausted."""
        while self._free:
            ident = heapq.heappop(self._free)
            if ident in self._free_set:
                self._free_set.discard(ident)
                return ident
        if self._next >= self.limit:
            return None
        self._next += 1
        return self._next - 1

    def allocate_many(self, n: int) -> list[int] | None:
        """The ids n allocate() calls would give, or None (nothing allocated) when fewer than n are free.
        A range at once when no freed id waits."""
        if self.limit - self._next + len(self._free_set) < n:
            return None
        if not self._free:
            start = self._next
            self._next += n
            return list(range(start, start + n))
        out: list[int] = []
        for _ in range(n):
            ident = self.allocate()
            assert ident is not None
            out.append(ident)
        return out

    def release(self, ident: int) -> None:
        """Make ident allocatable again."""
        if ident not in self._free_set and 0 < ident < self._next:
            self._free_set.add(ident)
            heapq.heappush(self._free, ident)

    @property
    def in_use(self) -> int:
        """Ids handed out and not released."""
        return self._next - 1 - len(self._free_set)


@dataclass
class Journal:
    """The value before a plan of every entry that plan changed in place (None: it was absent).

    Only the first change of an entry is recorded, so the journal holds exactly the applied
    version of what a partial plan touched: `applied_view()` rebuilds it for diff.
    """

    frontends: dict[FrontendKey, FrontendEntry | None] = field(default_factory=dict)
    """frontends added, removed or replaced"""
    backends: dict[int, BackendEntry | None] = field(default_factory=dict)
    """backends added, removed or replaced"""
    addresses: dict[str, bool] = field(default_factory=dict)
    """address entries whose presence changed: present before?"""
    svc_backends: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """backend ids of each frontend id whose backend set changed (the set before the plan)"""

    def applied_view(self, state: DatapathState) -> DatapathState:
        """The part of the state before the plan that the plan touched (for a partial diff)."""
        view = DatapathState()
        for key, entry in self.frontends.items():
            if entry is not None:
                view.add_frontend(key, entry)
        for ident, be in self.backends.items():
            if be is not None:
                view.add_backend(ident, be)
        addrs = {k.addr for k in self.frontends}
        view.addresses = {
            a for a in addrs if self.addresses.get(a, a in state.addresses)
        }
        return view


@dataclass(eq=False)
class DatapathState:
    """What the service, backend and name maps hold (applied) or should hold (desired).

    Equality compares frontends, backends and addresses; the rest is indexes and bookkeeping.
    """

    frontends: dict[FrontendKey, FrontendEntry] = field(default_factory=dict)
    """every frontend by key"""
    backends: dict[int, BackendEntry] = field(default_factory=dict)
    """every backend by id"""
    addresses: set[str] = field(default_factory=set)
    """addresses with an address entry (SVC_F_ADDR)"""
    names: dict[int, str] = field(default_factory=dict)
    """bpx_svcname_v1 contents as read back (desired states keep the names in frontends)"""
    stray_slots: set[tuple[FrontendKey, int]] = field(default_factory=set)
    """slots read back that belong to no frontend or lie beyond its count (a full sync deletes them)"""
    skipped: dict[str, str] = field(default_factory=dict)
    """services the plan that produced this state could not fit, with the reason"""
    svc_id_alloc: IdAllocator = field(default_factory=lambda: IdAllocator(1 << 32))
    """frontend ids"""
    backend_id_alloc: IdAllocator = field(default_factory=lambda: IdAllocator(1 << 32))
    """backend ids"""
    _by_service: dict[str, tuple[FrontendKey, ...]] = field(default_factory=dict)
    """frontend keys of each service (tuples: a one-element frozenset costs 216 bytes)"""
    _by_svc_id: dict[int, FrontendKey] = field(default_factory=dict)
    _backends_by_svc: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """backend ids of each frontend id (a tuple: a 10-element frozenset costs ~5x the memory)"""
    _addr_refs: dict[str, int] = field(default_factory=dict)
    _slots: int = 0
    _journal: Journal | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatapathState):
            return NotImplemented
        return (self.frontends, self.backends, self.addresses) == (
            other.frontends, other.backends, other.addresses,
        )

    def copy(self) -> DatapathState:
        """An independent copy (dict copies; values are immutable). O(size): full plans only."""
        new = copy.copy(self)
        for name in ("frontends", "backends", "addresses", "names", "stray_slots", "skipped", "_by_service",
                     "_by_svc_id", "_backends_by_svc", "_addr_refs"):
            setattr(new, name, copy.copy(getattr(self, name)))
        new.svc_id_alloc = self.svc_id_alloc.copy()
        new.backend_id_alloc = self.backend_id_alloc.copy()
        new._journal = None
        return new

    # queries

    def services(self) -> set[str]:
        """Every service with a frontend."""
        return set(self._by_service)

    def service_count(self) -> int:
        """Services with a frontend (len(services()) without the copy)."""
        return len(self._by_service)

    def service_frontends(self, service: str) -> frozenset[FrontendKey]:
        """The frontend keys of one service."""
        return frozenset(self._by_service.get(service, ()))

    def frontend_by_id(self, svc_id: int) -> FrontendKey | None:
        """The frontend holding svc_id."""
        return self._by_svc_id.get(svc_id)

    def svc_ids(self) -> Collection[int]:
        """Every frontend id in use."""
        return self._by_svc_id.keys()

    def svc_backends(self, svc_id: int) -> frozenset[int]:
        """Backend ids that belong to a frontend (slots and terminating ones)."""
        return frozenset(self._backends_by_svc.get(svc_id, ()))

    def backend_id_for(self, svc_id: int, addr: str, port: int) -> int | None:
        """The id of the backend (svc_id, addr, port), when it exists (the lowest if several).

        O(backends of the frontend): no index is kept (at 100k backends it cost ~11 MiB); plan builds
        one frontend's index at a time with backend_index()."""
        return backend_index(self._backends_by_svc.get(svc_id, ()), self.backends.__getitem__).get((addr, port))

    def lb_usage(self) -> int:
        """Entries of the service map: slot 0s, slots, address entries, strays."""
        return len(self.frontends) + self._slots + len(self.addresses) + len(self.stray_slots)

    # updates (keep the indexes)

    def add_frontend(self, key: FrontendKey, entry: FrontendEntry) -> None:
        """Insert a frontend (key must be absent)."""
        assert key not in self.frontends, key
        j = self._journal
        if j is not None:
            j.frontends.setdefault(key, None)
            j.addresses.setdefault(key.addr, key.addr in self.addresses)
        self.frontends[key] = entry
        svc = entry.service
        self._by_service[svc] = (*self._by_service.get(svc, ()), key)
        self._by_svc_id[entry.svc_id] = key
        self._slots += len(entry.backend_ids)
        self._addr_refs[key.addr] = self._addr_refs.get(key.addr, 0) + 1
        self.addresses.add(key.addr)

    def remove_frontend(self, key: FrontendKey) -> FrontendEntry:
        """Remove a frontend (not its backends); returns it."""
        entry = self.frontends.pop(key)
        j = self._journal
        if j is not None:
            j.frontends.setdefault(key, entry)
            j.addresses.setdefault(key.addr, key.addr in self.addresses)
        svc = entry.service
        rest = tuple([k for k in self._by_service[svc] if k != key])
        if rest:
            self._by_service[svc] = rest
        else:
            del self._by_service[svc]
        if self._by_svc_id.get(entry.svc_id) == key:
            del self._by_svc_id[entry.svc_id]
        self._slots -= len(entry.backend_ids)
        refs = self._addr_refs[key.addr] - 1
        if refs:
            self._addr_refs[key.addr] = refs
        else:
            del self._addr_refs[key.addr]
            self.addresses.discard(key.addr)
        return entry

    def add_backend(self, ident: int, entry: BackendEntry) -> None:
        """Insert a backend (id must be absent)."""
        assert ident not in self.backends, ident
        before = self._backends_by_svc.get(entry.svc_id, ())
        j = self._journal
        if j is not None:
            j.backends.setdefault(ident, None)
            j.svc_backends.setdefault(entry.svc_id, before)
        self.backends[ident] = entry
        self._backends_by_svc[entry.svc_id] = (*before, ident)

    def add_backends(self, svc_id: int, entries: Sequence[tuple[int, BackendEntry]]) -> None:
        """add_backend for each (id, entry) of one frontend (every entry.svc_id == svc_id): its backend
        set is rebuilt once, not once per backend (a full plan adds 100k backends)."""
        if not entries:
            return
        j = self._journal
        backends = self.backends
        before = self._backends_by_svc.get(svc_id, ())
        if j is not None:
            j.svc_backends.setdefault(svc_id, before)
        if j is not None:
            for ident, _ in entries:
                j.backends.setdefault(ident, None)
        size = len(backends)
        backends.update(entries)
        # every id was absent (and distinct), every entry is svc_id's
        assert len(backends) == size + len(entries) and {e.svc_id for _, e in entries} == {svc_id}, entries
        self._backends_by_svc[svc_id] = (*before, *[ident for ident, _ in entries])

    def remove_backend(self, ident: int) -> BackendEntry:
        """Remove a backend; returns it."""
        entry = self.backends.pop(ident)
        before = self._backends_by_svc[entry.svc_id]
        j = self._journal
        if j is not None:
            j.backends.setdefault(ident, entry)
            j.svc_backends.setdefault(entry.svc_id, before)
        rest = tuple([b for b in before if b != ident])
        if rest:
            self._backends_by_svc[entry.svc_id] = rest
        else:
            del self._backends_by_svc[entry.svc_id]
        return entry

    def remove_svc_backends(self, svc_id: int) -> tuple[int, ...]:
        """Remove every backend of frontend id svc_id at once; returns their ids."""
        ids = self._backends_by_svc.pop(svc_id, ())
        j = self._journal
        if j is not None:
            j.svc_backends.setdefault(svc_id, ids)
        for ident in ids:
            entry = self.backends.pop(ident)
            if j is not None:
                j.backends.setdefault(ident, entry)
        return ids

    def address_referenced(self, addr: str) -> bool:
        """True when some frontend uses addr."""
        return addr in self._addr_refs


def backend_index(ids: Iterable[int], entry: Callable[[int], BackendEntry]) -> dict[tuple[str, int], int]:
    """(addr, port) -> backend id over ids (the lowest id when two share an address and port)."""
    index: dict[tuple[str, int], int] = {}
    for ident in ids:
        be = entry(ident)
        key = (be.addr, be.port)
        if index.get(key, ident) >= ident:
            index[key] = ident
    return index


def frontend_key(f: Frontend) -> FrontendKey:
    """The key of a translated frontend."""
    return FrontendKey(f.addr, f.port, f.proto, f.scope)


@dataclass
class _Round:
    """Ids freed or allocated during one plan()."""

    freed_svc: set[int] = field(default_factory=set)
    freed_be: set[int] = field(default_factory=set)


def plan(
    frontends: Iterable[Frontend],
    previous: DatapathState,
    limits: Limits,
    *,
    services: Collection[str] | None = None,
) -> DatapathState:
    """The desired state for `frontends`, keeping the ids of `previous` (which is left unchanged).

    services=None: a full plan; `frontends` is everything, services absent from it are removed,
    and strays read back from the maps are dropped. Otherwise a partial plan: only the listed
    services are replanned (their frontends are those of `frontends`; a listed service with none
    is removed) and every other service is carried over untouched. O(size of previous): the copy.
    """
    desired = previous.copy()
    _plan(frontends, desired, limits, services, previous)
    return desired


def plan_in_place(
    frontends: Iterable[Frontend],
    state: DatapathState,
    limits: Limits,
    *,
    services: Collection[str] | None = None,
) -> Journal:
    """Like plan(), but turns `state` itself into the desired state; returns what it changed.

    The work is proportional to the listed services (partial) or to everything (full). The
    returned Journal gives diff the applied version of the touched entries
    (`diff(journal.applied_view(state), state, services=...)`). A caller whose write then fails
    must not trust `state` any more (the proxier re-reads the maps).
    """
    return _plan(frontends, state, limits, services, None)


def _plan(
    frontends: Iterable[Frontend],
    state: DatapathState,
    limits: Limits,
    services: Collection[str] | None,
    previous: DatapathState | None,
) -> Journal:
    """Plan into state; ids of the state before come from previous, or (None) from the journal."""
    by_service: dict[str, list[Frontend]] = {}
    for f in frontends:
        by_service.setdefault(f.service, []).append(f)
    full = services is None
    todo = set(by_service) | state.services() if full else set(services or ())
    journal = Journal()
    state._journal = journal if previous is None else None  # plan() keeps previous: no journal needed
    try:
        state.svc_id_alloc.limit = min(state.svc_id_alloc.limit, limits.svc_ids)
        if full:
            state.skipped = {}
        rnd = _Round()
        if full and previous is not None and _plan_cold(sorted(todo), by_service, state, limits):
            todo = set()  # planned in bulk
        for svc in sorted(todo):
            state.skipped.pop(svc, None)
            _plan_service(svc, by_service.get(svc, []), _Before(journal, state, previous), state, limits, rnd)
        if full:
            state.stray_slots = set()
            state.names = {}
            used = set(state._by_svc_id)
            for svc_id in [s for s in state._backends_by_svc if s not in used]:
                rnd.freed_be.update(state.remove_svc_backends(svc_id))
            for addr in state.addresses - state._addr_refs.keys():
                journal.addresses.setdefault(addr, True)
            state.addresses = set(state._addr_refs)
        for ident in sorted(rnd.freed_svc):
            state.svc_id_alloc.release(ident)
        for ident in sorted(rnd.freed_be):
            state.backend_id_alloc.release(ident)
    finally:
        state._journal = None
    return journal


_is_terminating = operator.attrgetter("terminating")
_addr_port = operator.attrgetter("addr", "port")
_new_tuple = tuple.__new__
_concat = operator.add


def _plan_cold(
    services: list[str], by_service: dict[str, list[Frontend]], state: DatapathState, limits: Limits
) -> bool:
    """A full plan into an empty state with fresh allocators (the cold start) in one pass: ids in the
    order `_plan_service` would allocate them, the same indexes, no per-service bookkeeping. False,
    with state untouched, unless everything fits and no two frontends share a key (then the general
    path decides which service is skipped or which frontend is claimed twice, and logs it)."""
    svc_alloc, be_alloc = state.svc_id_alloc, state.backend_id_alloc
    if (state.frontends or state.backends or state._backends_by_svc or state.addresses or state.stray_slots
            or svc_alloc._next != 1 or svc_alloc._free_set or be_alloc._next != 1 or be_alloc._free_set):
        return False
    ordered = [f for svc in services for f in by_service.get(svc, ())]
    keys = [FrontendKey(f.addr, f.port, f.proto, f.scope) for f in ordered]
    n_backends = sum([len(f.backends) for f in ordered])
    terminating = [sum(map(_is_terminating, f.backends)) for f in ordered]  # they get no slot
    n_slots = n_backends - sum(terminating)
    addr_refs: dict[str, int] = {}
    for key in keys:
        addr_refs[key.addr] = addr_refs.get(key.addr, 0) + 1
    if (
        len(set(keys)) != len(keys)
        or len(keys) >= svc_alloc.limit
        or n_backends >= be_alloc.limit
        or len(keys) + n_slots + len(addr_refs) > limits.lb_entries
        or n_backends > limits.backends
    ):
        return False
    frontends, backends = state.frontends, state.backends
    by_svc: dict[str, tuple[FrontendKey, ...]] = {}
    by_svc_id, backends_by_svc = state._by_svc_id, state._backends_by_svc
    be_next = 1
    for svc_id, (key, f, n_terminating) in enumerate(zip(keys, ordered, terminating, strict=True), start=1):
        refs = f.backends
        ids = tuple(range(be_next, be_next + len(refs)))
        be_next += len(refs)
        proto = f.proto
        slots = ids
        if n_terminating:
            backends.update(zip(ids, [BackendEntry(r.addr, r.port, proto, BE_F_TERMINATING if r.terminating else 0,
                                                   svc_id) for r in refs], strict=True))
            slots = tuple([i for i, r in zip(ids, refs, strict=True) if not r.terminating])
        elif ids:
            # every backend live: BackendEntry(addr, port, proto, 0, svc_id) each, built in C
            tail = (proto, 0, svc_id)
            backends.update(zip(ids, map(_new_tuple, repeat(BackendEntry), map(_concat, map(_addr_port, refs),
                                                                                repeat(tail))), strict=True))
        if ids:
            backends_by_svc[svc_id] = ids
        flags = (SVC_F_AFFINITY if f.affinity_timeout else 0) | (SVC_F_DROP_NO_EP if f.drop_no_ep else 0)
        frontends[key] = FrontendEntry(svc_id, f.name, flags, f.affinity_timeout, slots)
        by_svc_id[svc_id] = key
        svc = f.service
        by_svc[svc] = (*by_svc.get(svc, ()), key)
    state._by_service = by_svc
    state._addr_refs = addr_refs
    state.addresses = set(addr_refs)
    state._slots = n_slots
    svc_alloc._next = len(keys) + 1
    be_alloc._next = be_next
    return True


class _Before:
    """Lookups in the state before this plan: `previous` when the caller kept it, else journal + state."""

    def __init__(self, journal: Journal, state: DatapathState, previous: DatapathState | None) -> None:
        self.journal = journal
        self.state = state
        self.previous = previous

    def frontend(self, key: FrontendKey) -> FrontendEntry | None:
        """The frontend at key before this plan."""
        if self.previous is not None:
            return self.previous.frontends.get(key)
        if key in self.journal.frontends:
            return self.journal.frontends[key]
        return self.state.frontends.get(key)

    def backend_index(self, svc_id: int) -> dict[tuple[str, int], int]:
        """(addr, port) -> id of the backends of frontend svc_id before this plan."""
        if self.previous is not None:
            return backend_index(self.previous._backends_by_svc.get(svc_id, ()), self.previous.backends.__getitem__)
        j, state = self.journal, self.state
        ids = j.svc_backends.get(svc_id)
        if ids is None:
            return backend_index(state._backends_by_svc.get(svc_id, ()), state.backends.__getitem__)

        def entry(ident: int) -> BackendEntry:
            be = j.backends[ident] if ident in j.backends else state.backends[ident]
            assert be is not None, ident
            return be

        return backend_index(ids, entry)


def _plan_service(
    svc: str,
    wanted: list[Frontend],
    before: _Before,
    desired: DatapathState,
    limits: Limits,
    rnd: _Round,
) -> None:
    """Replace the frontends of one service in desired; on overflow keep the old ones."""
    old_fronts = {k: desired.frontends[k] for k in desired.service_frontends(svc)}
    old_backends = {
        b: desired.backends[b] for e in old_fronts.values() for b in desired._backends_by_svc.get(e.svc_id, ())
    }
    for key, entry in old_fronts.items():
        desired.remove_frontend(key)
        desired.remove_svc_backends(entry.svc_id)
    new_svc_ids: list[int] = []
    new_be_ids: list[int] = []
    reused_svc: list[int] = []
    reused_be: list[int] = []
    problem = ""
    for f in wanted:
        key = frontend_key(f)
        if key in desired.frontends:
            other = desired.frontends[key].service
            log.error("frontend claimed by two services service=%s frontend=%s:%s/%s owner=%s; skipped",
                      svc, key.addr, key.port, key.proto, other)
            continue
        prev = before.frontend(key)
        svc_id = prev.svc_id if prev is not None and prev.svc_id not in desired._by_svc_id else None
        if svc_id is None:
            svc_id = desired.svc_id_alloc.allocate()
            if svc_id is None:
                added = len(desired.service_frontends(svc))
                free = limits.svc_ids - 1 - (len(desired.frontends) - added)
                problem = f"needs {len(wanted)} frontend ids, {max(free, 0)} free"
                break
            new_svc_ids.append(svc_id)
        else:
            reused_svc.append(svc_id)
        slots: list[int] = []
        adding: dict[int, BackendEntry] = {}
        if prev is None:
            # a new frontend (every one at a cold start): every backend gets a new id, in order
            fresh = desired.backend_id_alloc.allocate_many(len(f.backends))
            assert fresh is not None
            new_be_ids.extend(fresh)
            proto = f.proto
            entries = [(be_id, BackendEntry(ref.addr, ref.port, proto, BE_F_TERMINATING if ref.terminating else 0,
                                            svc_id)) for be_id, ref in zip(fresh, f.backends, strict=True)]
            slots = [be_id for be_id, ref in zip(fresh, f.backends, strict=True) if not ref.terminating]
            desired.add_backends(svc_id, entries)
        old_index = before.backend_index(svc_id) if prev is not None else {}
        for ref in f.backends if prev is not None else ():
            be_id = old_index.get((ref.addr, ref.port))
            if be_id is not None and (be_id in desired.backends or be_id in adding):
                be_id = None
            if be_id is None:
                be_id = desired.backend_id_alloc.allocate()
                assert be_id is not None
                new_be_ids.append(be_id)
            else:
                reused_be.append(be_id)
            flags = BE_F_TERMINATING if ref.terminating else 0
            adding[be_id] = BackendEntry(ref.addr, ref.port, f.proto, flags, svc_id)
            if not ref.terminating:
                slots.append(be_id)
        if prev is not None:
            desired.add_backends(svc_id, list(adding.items()))
        # usually every backend has a slot: share the frontend's slot tuple with its backend set
        ids = desired._backends_by_svc.get(svc_id, ())
        slot_ids = ids if len(ids) == len(slots) and list(ids) == slots else tuple(slots)
        flags = (SVC_F_AFFINITY if f.affinity_timeout else 0) | (SVC_F_DROP_NO_EP if f.drop_no_ep else 0)
        desired.add_frontend(
            key, FrontendEntry(svc_id, f.name, flags, f.affinity_timeout, slot_ids)
        )
    if not problem:
        problem = _overflow(desired, limits, svc)
    if problem:
        log.error("service too large for the maps service=%s: %s; keeping its previous entries", svc, problem)
        desired.skipped[svc] = f"too large for the maps: {problem}"
        for key in desired.service_frontends(svc):
            entry = desired.remove_frontend(key)
            desired.remove_svc_backends(entry.svc_id)
        for ident in new_svc_ids:
            desired.svc_id_alloc.release(ident)
        for ident in new_be_ids:
            desired.backend_id_alloc.release(ident)
        for key, entry in old_fronts.items():
            desired.add_frontend(key, entry)
        for ident, be in old_backends.items():
            desired.add_backend(ident, be)
        return
    rnd.freed_svc |= {e.svc_id for e in old_fronts.values()}
    rnd.freed_be |= set(old_backends)
    rnd.freed_svc.difference_update(reused_svc)
    rnd.freed_be.difference_update(reused_be)


def _overflow(desired: DatapathState, limits: Limits, svc: str) -> str:
    """"" when desired fits the limits, else "needs N ..., M free" for service svc (just added)."""
    if desired.lb_usage() <= limits.lb_entries and len(desired.backends) <= limits.backends:
        return ""  # the common case: the service's own figures are only needed for the message
    fronts = [(k, desired.frontends[k]) for k in desired.service_frontends(svc)]
    per_addr: dict[str, int] = {}
    for k, _ in fronts:
        per_addr[k.addr] = per_addr.get(k.addr, 0) + 1
    own_addrs = sum(1 for a, n in per_addr.items() if desired._addr_refs.get(a) == n)
    svc_lb = sum(1 + len(e.backend_ids) for _, e in fronts) + own_addrs
    lb = desired.lb_usage()
    if lb > limits.lb_entries:
        free = limits.lb_entries - (lb - svc_lb)
        return f"needs {svc_lb} service map entries, {max(free, 0)} free"
    svc_be = sum(len(desired._backends_by_svc.get(e.svc_id, ())) for _, e in fronts)
    if len(desired.backends) > limits.backends:
        free = limits.backends - (len(desired.backends) - svc_be)
        return f"needs {svc_be} backend map entries, {max(free, 0)} free"
    return ""
