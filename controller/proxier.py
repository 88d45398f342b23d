"""The proxier: source events -> trackers -> bounded-frequency sync -> translate/plan/diff -> writer.

Place in the data flow: the hub. `Proxier` implements source.SourceHandler (events only update
the change trackers and request a sync), owns the BoundedFrequencyRunner, and its sync is the
only caller of the writer. Nothing is written until both Services and EndpointSlices reported
their first complete list. A sync is partial (only the services changed since the last one)
unless a full resync is due: at start, every max_sync_period, and after any failure, when the
maps are read back first so the in-memory applied state is the truth again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from bpfproxy.controller.diff import WritePlan, diff
from bpfproxy.controller.plan import DatapathState, Limits, plan
from bpfproxy.controller.runner import BoundedFrequencyRunner, Clock, MonotonicClock
from bpfproxy.controller.source import KIND_ENDPOINT_SLICE, KIND_NODE, KIND_SERVICE
from bpfproxy.controller.tracker import EndpointSliceChangeTracker, ServiceChangeTracker
from bpfproxy.controller.translate import Frontend, NodeConfig, programmed_frontends

log = logging.getLogger(__name__)


class Writer(Protocol):
    """What the proxier writes through (sync.MapsWriter, or an in-memory fake in tests)."""

    def read_applied(self) -> DatapathState:
        """The state the datapath holds now."""

    def apply(self, plan: WritePlan) -> None:
        """Execute a write plan in order; raise on failure."""


@dataclass
class ProxierCounters:
    """Counters for metrics."""

    syncs: int = 0
    """syncs that wrote (or found nothing to write) successfully"""
    full_syncs: int = 0
    """of which full resyncs"""
    failures: int = 0
    """syncs that failed (a full resync follows)"""
    last_sync_seconds: float = 0.0
    """duration of the last sync"""
    last_writes: int = 0
    """map writes of the last sync"""
    skipped_services: int = 0
    """services the last full plan could not fit in the maps"""


class Proxier:
    """Turns Services and EndpointSlices into map writes, at a bounded frequency."""

    def __init__(
        self,
        writer: Writer,
        *,
        node: NodeConfig | None = None,
        limits: Limits | None = None,
        min_sync_period: float = 1.0,
        max_sync_period: float = 30.0,
        retry_period: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.writer = writer
        self.node = node or NodeConfig()
        self.limits = limits or Limits()
        self.max_sync_period = max_sync_period
        self.clock: Clock = clock or MonotonicClock()
        self.services = ServiceChangeTracker()
        self.slices = EndpointSliceChangeTracker()
        self.nodes: dict[str, dict[str, Any]] = {}
        """Node objects by name, as the source gave them (for later use)"""
        self.counters = ProxierCounters()
        self.runner = BoundedFrequencyRunner(
            self.sync,
            min_interval=min_sync_period,
            max_interval=max_sync_period,
            retry_interval=retry_period,
            clock=self.clock,
        )
        self._lock = threading.Lock()
        self._synced: set[str] = set()
        self._applied: DatapathState | None = None
        self._need_full = True
        self._need_read = True
        self._last_full = -float("inf")
        self._pending: set[str] = set()
        self._orphans: set[tuple[str, str]] = set()

    # SourceHandler

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        """Record a source event and request a sync when something changed."""
        with self._lock:
            if kind == KIND_SERVICE:
                changed = self.services.update(key, obj)
            elif kind == KIND_ENDPOINT_SLICE:
                changed = self.slices.update(key, obj)
            elif kind == KIND_NODE:
                if obj is None:
                    self.nodes.pop(key, None)
                else:
                    self.nodes[key] = obj
                changed = False
            else:
                log.warning("ignoring object of unknown kind kind=%s key=%s", kind, key)
                changed = False
        if changed and self.is_initialized:
            self.runner.run()

    def on_synced(self, kind: str) -> None:
        """Note that a kind is fully listed; the first sync happens once Services and slices are."""
        with self._lock:
            self._synced.add(kind)
        log.info("source synced kind=%s", kind)
        if self.is_initialized:
            self.runner.run()

    # state

    @property
    def is_initialized(self) -> bool:
        """True once Services and EndpointSlices have both been listed."""
        return {KIND_SERVICE, KIND_ENDPOINT_SLICE} <= self._synced

    @property
    def bad_objects(self) -> int:
        """Objects skipped because they did not parse."""
        return int(self.services.bad_objects + self.slices.bad_objects)

    @property
    def applied(self) -> DatapathState | None:
        """What the proxier believes the maps hold (None before the first sync)."""
        return self._applied

    def request_full_sync(self) -> None:
        """Make the next sync a full one and request it."""
        with self._lock:
            self._need_full = True
        self.runner.run()

    def run(self, stop: threading.Event) -> None:
        """Run syncs (via the runner) until stop is set."""
        self.runner.loop(stop)

    # the sync

    def _frontends(self, keys: set[str]) -> list[Frontend]:
        out: list[Frontend] = []
        for key in sorted(keys):
            svc = self.services.services.get(key)
            if svc is not None:
                out.extend(programmed_frontends(svc, self.slices.slices_for(key), self.node))
        return out

    def _report_orphan_slices(self, keys: set[str]) -> None:
        """Log once each EndpointSlice whose Service does not exist (it is ignored until it does)."""
        for key in keys:
            if key in self.services.services:
                self._orphans -= {k for k in self._orphans if k[0] == key}
                continue
            for orphan in self.slices.slices_for(key):
                if (key, orphan.key) not in self._orphans:
                    self._orphans.add((key, orphan.key))
                    log.warning("EndpointSlice %s ignored: its Service %s does not exist", orphan.key, key)

    def sync(self) -> bool:
        """One sync; False (after logging) when it failed and a full resync must follow."""
        with self._lock:
            if not self.is_initialized:
                log.debug("sync skipped: sources not synced yet synced=%s", sorted(self._synced))
                return True
            start = self.clock.now()
            self._pending |= set(self.services.take_changes()) | self.slices.take_changes()
            self._report_orphan_slices(self._pending)
            full = self._need_full or start - self._last_full >= self.max_sync_period
            try:
                if self._need_read or self._applied is None:
                    self._applied = self.writer.read_applied()
                    self._need_read = False
                applied = self._applied
                keys: set[str] | None
                if full:
                    keys = None
                    frontends = self._frontends(set(self.services.services))
                else:
                    keys = self._pending
                    frontends = self._frontends(keys)
                desired = plan(frontends, applied, self.limits, services=keys)
                wp = diff(applied, desired, services=keys)
                if not wp.empty:
                    self.writer.apply(wp)
            except Exception:
                self.counters.failures += 1
                self._need_full = True
                self._need_read = True
                log.exception("sync failed; a full resync follows full=%s", full)
                return False
            self._applied = desired
            changed = len(self._pending) if keys is not None else len(self.services.services)
            self._pending = set()
            if full:
                self._need_full = False
                self._last_full = start
                self.counters.full_syncs += 1
                self.counters.skipped_services = len(desired.skipped)
            duration = self.clock.now() - start
            self.counters.syncs += 1
            self.counters.last_sync_seconds = duration
            self.counters.last_writes = wp.writes()
            nonzero = " ".join(f"{k}={v}" for k, v in wp.counts().items() if v)
            log.info(
                "sync done full=%s services=%d frontends=%d writes=%d duration_ms=%.1f %s",
                full,
                changed,
                len(desired.frontends),
                wp.writes(),
                duration * 1000,
                nonzero,
            )
            return True
