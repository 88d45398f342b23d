"""plan_in_place + Journal: the O(changed) partial plan gives exactly what the copying plan gives.

Property style: random sequences of partial and full syncs over a small universe of services,
with the writes replayed onto model maps. After every step the in-place state equals the copying
plan's state (ids included), the write plans are identical, the model maps equal the state, and
the state equals a fresh full plan up to id numbering.
"""

from __future__ import annotations

import random
from typing import Any

from bpfproxy.controller.diff import WritePlan, diff
from bpfproxy.controller.plan import DatapathState, IdAllocator, Limits, plan, plan_in_place
from bpfproxy.controller.translate import Frontend
from planhelp import fe

SERVICES = [f"default/s{i}" for i in range(8)]


def random_frontends(rng: random.Random, svc: str) -> list[Frontend]:
    """0-2 ports of svc, sometimes sharing an address with another service, random backends."""
    i = SERVICES.index(svc)
    addr = f"10.96.0.{i % 5 + 1}"  # s0/s5, s1/s6, s2/s7 share addresses on different ports
    out = []
    for port in rng.sample([80 + i * 10, 81 + i * 10], rng.randint(0, 2)):
        pool = [f"10.0.{i}.{n}:8080" for n in range(1, 7)]
        ready = rng.sample(pool, rng.randint(0, 4))
        term = rng.sample([b for b in pool if b not in ready], rng.randint(0, 1))
        out.append(fe(svc, addr, port, backends=ready, terminating=term, affinity=rng.choice([0, 0, 30])))
    return out


class ModelMaps:
    """The four maps as dicts, changed only by replaying write plans."""

    def __init__(self) -> None:
        self.svc: dict[tuple[Any, int], tuple[int, ...]] = {}
        self.addresses: set[str] = set()
        self.backends: dict[int, Any] = {}
        self.names: dict[int, str] = {}

    def apply(self, wp: WritePlan) -> None:
        for ident, be in wp.backend_puts:
            self.backends[ident] = be
        for s in wp.slot_puts:
            self.svc[(s.key, s.slot)] = (s.svc_id, s.backend_id)
        self.addresses |= set(wp.address_puts)
        for key, e in wp.frontend_puts:
            self.svc[(key, 0)] = (e.svc_id, len(e.backend_ids), e.flags, e.affinity_timeout)
        for ident, name in wp.name_puts:
            self.names[ident] = name
        for key in wp.frontend_deletes:
            del self.svc[(key, 0)]
        for key, slot in wp.slot_deletes:
            del self.svc[(key, slot)]
        self.addresses -= set(wp.address_deletes)
        for ident in wp.backend_deletes:
            del self.backends[ident]
        for ident in wp.name_deletes:
            self.names.pop(ident, None)

    def matches(self, state: DatapathState) -> bool:
        svc: dict[tuple[Any, int], tuple[int, ...]] = {}
        for key, e in state.frontends.items():
            svc[(key, 0)] = (e.svc_id, len(e.backend_ids), e.flags, e.affinity_timeout)
            for slot, be_id in enumerate(e.backend_ids, start=1):
                svc[(key, slot)] = (e.svc_id, be_id)
        names = {e.svc_id: e.name for e in state.frontends.values()}
        return (self.svc, self.addresses, self.backends, self.names) == (svc, state.addresses, state.backends, names)


def canonical(state: DatapathState) -> dict[Any, Any]:
    """The state without ids: what a packet sees."""
    out = {}
    for key, e in state.frontends.items():
        slots = tuple((state.backends[b].addr, state.backends[b].port) for b in e.backend_ids)
        term = sorted((b.addr, b.port) for i, b in state.backends.items()
                      if b.svc_id == e.svc_id and i not in e.backend_ids)
        out[key] = (e.name, e.flags, e.affinity_timeout, slots, tuple(term))
    return out


def check_indexes(state: DatapathState) -> None:
    """Allocators and indexes agree with the entries."""
    assert state.svc_id_alloc.in_use == len(state.frontends)
    assert state.backend_id_alloc.in_use == len(state.backends)
    assert set(state.svc_ids()) == {e.svc_id for e in state.frontends.values()}
    for e in state.frontends.values():
        assert set(e.backend_ids) <= state.svc_backends(e.svc_id)
    assert state.addresses == {k.addr for k in state.frontends}


def run_sequence(seed: int, limits: Limits) -> None:
    rng = random.Random(seed)
    current = {svc: random_frontends(rng, svc) for svc in SERVICES}
    copying = plan([f for fs in current.values() for f in fs], DatapathState(), limits)
    inplace = copying.copy()
    maps = ModelMaps()
    maps.apply(diff(DatapathState(), copying))
    for _ in range(40):
        changed = set(rng.sample(SERVICES, rng.randint(1, 3)))
        for svc in changed:
            current[svc] = random_frontends(rng, svc)
        services: set[str] | None = None if rng.random() < 0.2 else changed
        wanted = [f for s, fs in current.items() if services is None or s in services for f in fs]
        desired = plan(wanted, copying, limits, services=services)
        wp_copy = diff(copying, desired, services=services)
        if services is None:
            wp_in = diff(inplace.copy(), desired, services=None)
            inplace = desired.copy()
        else:
            journal = plan_in_place(wanted, inplace, limits, services=services)
            wp_in = diff(journal.applied_view(inplace), inplace, services=services)
        assert inplace == desired and inplace.frontends == desired.frontends
        assert inplace.skipped == desired.skipped
        assert wp_in == wp_copy
        maps.apply(wp_in)
        assert maps.matches(inplace)
        check_indexes(inplace)
        copying = desired
        everything = [f for fs in current.values() for f in fs]
        if not desired.skipped:
            assert canonical(inplace) == canonical(plan(everything, DatapathState(), limits))


def test_in_place_partial_plans_equal_copying_plans() -> None:
    for seed in range(60):
        run_sequence(seed, Limits())


def test_in_place_with_tight_capacity_keeps_skips_equal() -> None:
    for seed in range(60):
        run_sequence(seed, Limits(lb_entries=40, backends=30, svc_ids=12))


def test_journal_view_holds_only_touched_entries() -> None:
    state = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.1:80"]),
                  fe("default/b", "10.96.0.2", backends=["10.0.0.2:80"])], DatapathState(), Limits())
    journal = plan_in_place([fe("default/a", "10.96.0.1", backends=["10.0.0.3:80"])], state, Limits(),
                            services={"default/a"})
    view = journal.applied_view(state)
    assert view.services() == {"default/a"} and len(view.backends) == 1
    assert [b.addr for b in view.backends.values()] == ["10.0.0.1"]
    assert [b.addr for b in state.backends.values() if b.svc_id == state.frontends[
        next(iter(state.service_frontends("default/a")))].svc_id] == ["10.0.0.3"]


def test_id_allocator_reserve_of_a_free_id_is_lazy_and_exact() -> None:
    a = IdAllocator(10)
    a.reserve(5)  # 1..4 free
    a.reserve(2)
    a.release(5)
    a.reserve(5)
    a.release(5)
    got = [a.allocate() for _ in range(7)]
    assert got == [1, 3, 4, 5, 6, 7, 8] and a.in_use == 8
