"""Diff: the ordered, make-before-break writes that turn the applied state into the desired one.

Place in the data flow: pure, between plan and the sync writer. `diff()` compares two
`DatapathState`s, either completely (full sync) or only for a set of changed services (partial
sync: the work is proportional to those services, found through the states' indexes), and
returns a `WritePlan` whose phases the writer executes in order: counters of new ids zeroed,
backends, slots, address entries, frontends (slot 0, new count), names; then deletions of removed
frontends, stale slots, unused addresses, stale backends and names; then affinity purges. A
packet never meets a slot whose backend is not yet written, nor a count beyond written slots.
A full diff against empty maps (the cold start) writes everything without comparing entries.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields
from itertools import count, repeat
from typing import NamedTuple

from bpfproxy.controller.plan import BackendEntry, DatapathState, FrontendEntry, FrontendKey
from bpfproxy.loader.structs import SVC_F_AFFINITY


class SlotWrite(NamedTuple):
    """A backend slot of a frontend (struct svc_key slot >= 1); a named tuple: a cold start builds 100k."""

    key: FrontendKey
    """the frontend"""
    slot: int
    """slot number, 1..count"""
    svc_id: int
    """frontend id, written into the slot value"""
    backend_id: int
    """backend the slot names"""


@dataclass
class WritePlan:
    """Map writes in execution order, one list per phase."""

    stat_resets: list[int] = field(default_factory=list)
    """newly allocated frontend ids: zero their bpx_svcstat_v1 counters first"""
    backend_puts: list[tuple[int, BackendEntry]] = field(default_factory=list)
    """backends to write (new or changed)"""
    slot_puts: list[SlotWrite] = field(default_factory=list)
    """backend slots to write"""
    address_puts: list[str] = field(default_factory=list)
    """address entries (SVC_F_ADDR) to add"""
    frontend_puts: list[tuple[FrontendKey, FrontendEntry]] = field(default_factory=list)
    """slot 0 entries to write (new frontend, or new count/flags/timeout)"""
    name_puts: list[tuple[int, str]] = field(default_factory=list)
    """bpx_svcname_v1 entries to write"""
    frontend_deletes: list[FrontendKey] = field(default_factory=list)
    """slot 0 of removed frontends"""
    slot_deletes: list[tuple[FrontendKey, int]] = field(default_factory=list)
    """slots of removed frontends, slots beyond a shrunk count, strays"""
    address_deletes: list[str] = field(default_factory=list)
    """address entries no frontend uses any more"""
    backend_deletes: list[int] = field(default_factory=list)
    """backends no longer used"""
    name_deletes: list[int] = field(default_factory=list)
    """names of freed frontend ids"""
    affinity_purges: list[int] = field(default_factory=list)
    """frontend ids whose affinity entries must go (affinity turned off, or id freed)"""

    def counts(self) -> dict[str, int]:
        """Entries per phase, in execution order."""
        return {f.name: len(getattr(self, f.name)) for f in fields(self)}

    def writes(self) -> int:
        """Map writes in total (a purge counts as one)."""
        return sum(self.counts().values())

    @property
    def empty(self) -> bool:
        """True when nothing is to be written."""
        return self.writes() == 0


def _slot0(entry: FrontendEntry) -> tuple[int, int, int, int]:
    """What slot 0 holds of a frontend entry."""
    return entry.svc_id, len(entry.backend_ids), entry.flags, entry.affinity_timeout


def _scope(
    applied: DatapathState, desired: DatapathState, services: Collection[str] | None
) -> tuple[set[FrontendKey], set[int]]:
    """Frontend keys and backend ids the diff looks at."""
    if services is None:
        return set(applied.frontends) | set(desired.frontends), set(applied.backends) | set(desired.backends)
    keys: set[FrontendKey] = set()
    for svc in services:
        keys |= applied.service_frontends(svc)
        keys |= desired.service_frontends(svc)
    backend_ids: set[int] = set()
    for key in keys:
        for state in (applied, desired):
            entry = state.frontends.get(key)
            if entry is not None:
                backend_ids |= applied.svc_backends(entry.svc_id) | desired.svc_backends(entry.svc_id)
    return keys, backend_ids


def diff(
    applied: DatapathState, desired: DatapathState, *, services: Collection[str] | None = None
) -> WritePlan:
    """The writes from applied to desired: everything (services=None) or only those services."""
    if services is None and not (
        applied.frontends or applied.backends or applied.addresses or applied.names or applied.stray_slots
    ):
        return _diff_from_empty(desired)
    return _diff_general(applied, desired, services)


def _diff_general(applied: DatapathState, desired: DatapathState, services: Collection[str] | None) -> WritePlan:
    """diff() entry by entry: every applied state, full or partial."""
    wp = WritePlan()
    keys, backend_ids = _scope(applied, desired, services)
    ordered = sorted(keys)

    for ident in sorted(backend_ids):
        want_be, have_be = desired.backends.get(ident), applied.backends.get(ident)
        if want_be is not None and want_be != have_be:
            wp.backend_puts.append((ident, want_be))
        elif want_be is None and have_be is not None:
            wp.backend_deletes.append(ident)

    desired_ids = desired.svc_ids()
    applied_ids = applied.svc_ids()
    purges: set[int] = set()
    put_slots: set[tuple[FrontendKey, int]] = set()
    track_puts = services is None and bool(applied.stray_slots)  # only strays need the slots put
    slot_puts = wp.slot_puts
    for key in ordered:
        want, have = desired.frontends.get(key), applied.frontends.get(key)
        if want is not None:
            same_id = have is not None and have.svc_id == want.svc_id
            if have is None:  # a new frontend (every one at a cold start): all its slots
                svc_id = want.svc_id
                slot_puts.extend([SlotWrite(key, slot, svc_id, be_id)
                                  for slot, be_id in enumerate(want.backend_ids, start=1)])  # fmt: skip
                if track_puts:
                    put_slots.update((key, slot) for slot in range(1, len(want.backend_ids) + 1))
            else:
                for slot, be_id in enumerate(want.backend_ids, start=1):
                    if not (same_id and slot <= len(have.backend_ids) and have.backend_ids[slot - 1] == be_id):
                        slot_puts.append(SlotWrite(key, slot, want.svc_id, be_id))
                        if track_puts:
                            put_slots.add((key, slot))
            if have is None or _slot0(have) != _slot0(want):
                wp.frontend_puts.append((key, want))
            if have is None or not same_id or have.name != want.name:
                wp.name_puts.append((want.svc_id, want.name))
            if want.svc_id not in applied_ids:
                wp.stat_resets.append(want.svc_id)
            if have is not None and have.flags & SVC_F_AFFINITY and not want.flags & SVC_F_AFFINITY:
                purges.add(have.svc_id)
        if have is not None:
            if want is None:
                wp.frontend_deletes.append(key)
            keep = len(want.backend_ids) if want is not None else 0
            wp.slot_deletes.extend((key, slot) for slot in range(keep + 1, len(have.backend_ids) + 1))
            if have.svc_id not in desired_ids:
                purges.add(have.svc_id)
                wp.name_deletes.append(have.svc_id)

    if services is None:
        addrs = applied.addresses | desired.addresses
        strays = applied.stray_slots - desired.stray_slots - put_slots
        wp.slot_deletes.extend(sorted(
            (k, s) for k, s in strays
            if not (k in desired.frontends and s <= len(desired.frontends[k].backend_ids))
        ))
        named = {i for i in applied.names if i not in desired_ids} - set(wp.name_deletes)
        wp.name_deletes.extend(sorted(named))
    else:
        addrs = {k.addr for k in keys}
    for addr in sorted(addrs):
        if addr in desired.addresses and addr not in applied.addresses:
            wp.address_puts.append(addr)
        elif addr in applied.addresses and addr not in desired.addresses:
            wp.address_deletes.append(addr)
    wp.stat_resets = sorted(set(wp.stat_resets))
    wp.name_deletes = sorted(set(wp.name_deletes))
    wp.affinity_purges = sorted(purges)
    return wp


_new_tuple = tuple.__new__


def _diff_from_empty(desired: DatapathState) -> WritePlan:
    """The full diff against empty maps (the cold start): write everything, nothing to compare or delete.
    The same write plan `diff` builds entry by entry."""
    ordered = sorted(desired.frontends.items())
    slot_puts: list[SlotWrite] = []
    for key, entry in ordered:
        # SlotWrite(key, slot, svc_id, backend_id) for slots 1..n, built in C (as SlotWrite._make does)
        slot_puts.extend(map(_new_tuple, repeat(SlotWrite),
                             zip(repeat(key), count(1), repeat(entry.svc_id), entry.backend_ids)))
    return WritePlan(
        stat_resets=sorted({entry.svc_id for _, entry in ordered}),
        backend_puts=sorted(desired.backends.items()),
        slot_puts=slot_puts,
        address_puts=sorted(desired.addresses),
        frontend_puts=ordered,
        name_puts=[(entry.svc_id, entry.name) for _, entry in ordered],
    )
