"""The proxier: source events -> trackers -> bounded-frequency sync -> translate/plan/diff -> writer.

Place in the data flow: the hub. `Proxier` implements source.SourceHandler (events only update
the change trackers and request a sync), owns the BoundedFrequencyRunner, and its sync is the
only caller of the writer. Nothing is written until both Services and EndpointSlices reported
their first complete list. A sync is partial (only the services changed since the last one)
unless a full resync is due: at start, every max_sync_period, after any failure (when the maps
are read back first so the in-memory applied state is the truth again) and when this node's
zone label changes. A partial sync costs O(changed services): it plans in place into the applied
state (plan.plan_in_place) and diffs against the journal of what it touched. Metrics
(metrics.ProxierMetrics) and health (health.ProxierHealth) are recorded here when given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bpfproxy.controller.diff import WritePlan, diff
from bpfproxy.controller.health import ProxierHealth
from bpfproxy.controller.metrics import FrontendStat, ProxierMetrics
from bpfproxy.controller.plan import DatapathState, FrontendKey, Limits, plan, plan_in_place
from bpfproxy.controller.runner import BoundedFrequencyRunner, Clock, MonotonicClock
from bpfproxy.controller.source import KIND_ENDPOINT_SLICE, KIND_NODE, KIND_SERVICE
from bpfproxy.controller.tracker import EndpointSliceChangeTracker, ServiceChangeTracker
from bpfproxy.controller.translate import PROTO_NAMES, Frontend, NodeConfig, programmed_frontends

log = logging.getLogger(__name__)

#: Node label holding the node's zone
ZONE_LABEL = "topology.kubernetes.io/zone"


#: gc thresholds for an agent process: young collections every 50k allocations, not 700
AGENT_GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Set the agent process's gc thresholds (call once at start).

    Parsing a 10k-service initial list allocates ~1M long-lived objects; with Python's default
    thresholds the collector rescans them over and over and more than doubles the parse time.
    """
    gc.set_threshold(*AGENT_GC_THRESHOLDS)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (a full sync allocates ~1M acyclic objects at 10k
    services, plan and the writer's ctypes records; collections triggered by them rescan the whole
    heap and double its time). The full sync freezes what it built before leaving."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def release_free_memory() -> None:
    """Hand the heap that a full sync freed back to the OS (glibc malloc_trim; a no-op elsewhere).

    A cold start allocates transient list pages, parsed dicts and plan copies; freed, they stay
    in the process's RSS until trimmed. One call costs a few milliseconds.
    """
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes

        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


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
        wall: Callable[[], float] = time.time,
        metrics: ProxierMetrics | None = None,
        health: ProxierHealth | None = None,
    ) -> None:
        self.writer = writer
        self.node = node or NodeConfig()
        self.limits = limits or Limits()
        self.max_sync_period = max_sync_period
        self.clock: Clock = clock or MonotonicClock()
        self.wall = wall
        """wall clock (Unix seconds): trigger-time latencies and timestamps"""
        self.metrics = metrics
        """metrics to record into (None: none)"""
        self.health = health
        """health to report to (None: none)"""
        self.services = ServiceChangeTracker()
        self.slices = EndpointSliceChangeTracker(start_time=wall())
        # until both kinds are listed, keep the objects only: the first sync is a full one anyway
        self.services.tracking = self.slices.tracking = False
        self.nodes: dict[str, dict[str, Any]] = {}
        """Node objects by name, as the source gave them"""
        self.counters = ProxierCounters()
        self.runner = BoundedFrequencyRunner(
            self.sync,
            min_interval=min_sync_period,
            max_interval=max_sync_period,
            retry_interval=retry_period,
            clock=self.clock,
        )
        self._lock = threading.Lock()
        self.first_synced = threading.Event()
        """set once the first sync is written (the agent's "ready" waits for it)"""
        self._synced: set[str] = set()
        self._applied: DatapathState | None = None
        self._need_full = True
        self._need_read = True
        self._last_full = -float("inf")
        self._pending: set[str] = set()
        self._trigger_times: dict[str, list[float]] = {}
        self._orphans: dict[str, set[str]] = {}
        self._frontend_text: dict[FrontendKey, str] = {}
        """"IP:port/proto" of frontends, kept across scrapes"""
        if metrics is not None:
            self._register_gauges(metrics)

    # SourceHandler

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        """Record a source event and request a sync when something changed."""
        if kind in (KIND_SERVICE, KIND_ENDPOINT_SLICE):
            self.on_objects(kind, ((key, obj),))
            return
        if kind != KIND_NODE:
            log.warning("ignoring object of unknown kind kind=%s key=%s", kind, key)
            return
        with self._lock:
            full = self._on_node(key, obj)
        if full:
            self.request_full_sync()

    def on_objects(self, kind: str, items: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
        """on_object for each (key, obj) of one kind (a list page), with the lock taken, the change
        counter incremented and a sync requested once for the whole batch."""
        if kind == KIND_SERVICE:
            update, counter = self.services.update, self.metrics.service_changes if self.metrics else None
        elif kind == KIND_ENDPOINT_SLICE:
            update, counter = self.slices.update, self.metrics.endpoint_changes if self.metrics else None
        else:
            for key, obj in items:
                self.on_object(kind, key, obj)
            return
        changed = 0
        with self._lock:
            for key, obj in items:
                if update(key, obj):
                    changed += 1
            if changed and counter is not None:
                counter.inc(changed)
        if changed:
            self._queue()

    def on_synced(self, kind: str) -> None:
        """Note that a kind is fully listed; the first sync happens once Services and slices are."""
        with self._lock:
            self._synced.add(kind)
            if self.is_initialized:
                self.services.tracking = self.slices.tracking = True
        log.info("source synced kind=%s", kind)
        if self.is_initialized:
            self._queue()

    def _queue(self) -> None:
        """Ask for a sync (kube-proxy's Sync(): health's queued update, then the runner)."""
        if self.health is not None:
            self.health.queued_update()
        if self.metrics is not None:
            self.metrics.last_queued.set(self.wall())
        if self.is_initialized:
            self.runner.run()

    def _on_node(self, name: str, obj: dict[str, Any] | None) -> bool:
        """Keep a Node; for this node, track eligibility and zone. True when a full sync is needed."""
        if obj is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = obj
        if not self.node.node_name or name != self.node.node_name:
            return False
        if self.health is not None:
            self.health.sync_node(obj)
        if obj is None:
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        zone = str(labels.get(ZONE_LABEL, "")) if isinstance(labels, dict) else ""
        if zone == self.node.zone:
            return False
        log.info("node zone changed node=%s zone=%s previous=%s; full resync", name, zone, self.node.zone)
        self.node = dataclasses.replace(self.node, zone=zone)
        return True

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
        """What the proxier believes the maps hold (None before the first sync).

        A partial sync changes this object in place: read it only from the sync thread or under
        `locked()` (metrics do).
        """
        return self._applied

    def locked(self) -> threading.Lock:
        """The lock syncs hold: `with proxier.locked(): ...` reads a consistent applied state."""
        return self._lock

    def request_full_sync(self) -> None:
        """Make the next sync a full one and request it."""
        with self._lock:
            self._need_full = True
        self._queue()

    def run(self, stop: threading.Event) -> None:
        """Run syncs (via the runner) until stop is set; healthy from the start, as kube-proxy."""
        if self.health is not None:
            self.health.updated()
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
                self._orphans.pop(key, None)
                continue
            seen = self._orphans.setdefault(key, set())
            for orphan in self.slices.slices_for(key):
                if orphan.key not in seen:
                    seen.add(orphan.key)
                    log.warning("EndpointSlice %s ignored: its Service %s does not exist", orphan.key, key)
            if not seen:
                del self._orphans[key]

    def sync(self) -> bool:
        """One sync; False (after logging) when it failed and a full resync must follow."""
        with self._lock:
            if not self.is_initialized:
                log.debug("sync skipped: sources not synced yet synced=%s", sorted(self._synced))
                return True
            start = self.clock.now()
            for svc, times in self.slices.take_trigger_times().items():
                self._trigger_times.setdefault(svc, []).extend(times)
            self._pending |= set(self.services.take_changes()) | self.slices.take_changes()
            self._report_orphan_slices(self._pending)
            full = self._need_full or start - self._last_full >= self.max_sync_period
            keys: set[str] | None = None if full else self._pending
            try:
                if self._need_read or self._applied is None:
                    self._applied = self.writer.read_applied()
                    self._need_read = False
                applied = self._applied
                if keys is None:
                    with _gc_paused():
                        desired = plan(self._frontends(set(self.services.services)), applied, self.limits)
                        wp = diff(applied, desired)
                        if not wp.empty:
                            self.writer.apply(wp)
                        # the state is long-lived: frozen, no later collection rescans it
                        gc.freeze()
                else:
                    # in place: if the write fails, the state is dirty and is read back (need_read)
                    self._need_read = True
                    journal = plan_in_place(self._frontends(keys), applied, self.limits, services=keys)
                    wp = diff(journal.applied_view(applied), applied, services=keys)
                    desired = applied
                    if not wp.empty:
                        self.writer.apply(wp)
            except Exception:
                self.counters.failures += 1
                self._need_full = True
                self._need_read = True
                if self.metrics is not None:
                    self.metrics.sync_failures.inc()
                log.exception("sync failed; a full resync follows full=%s", full)
                return False
            self._need_read = False
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
            self.first_synced.set()
            self.counters.last_sync_seconds = duration
            self.counters.last_writes = wp.writes()
            self._observe(full=full, duration=duration, writes=wp.writes())
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
            if full:
                del applied, wp  # the state before this sync and the write plan go before the trim
                release_free_memory()
            return True

    # observability

    def _observe(self, *, full: bool, duration: float, writes: int) -> None:
        """After a successful sync: health updated, durations and programming latencies observed."""
        if self.health is not None:
            self.health.updated()
        m = self.metrics
        times, self._trigger_times = self._trigger_times, {}
        if m is None:
            return
        now = self.wall()
        m.sync_duration.observe(duration)
        (m.full_sync_duration if full else m.partial_sync_duration).observe(duration)
        m.last_sync.set(now)
        m.map_writes.inc(writes)
        for svc_times in times.values():
            for when in svc_times:
                m.programming_latency.observe(max(0.0, now - when))

    def _register_gauges(self, m: ProxierMetrics) -> None:
        """Gauges computed at scrape time from the applied state and the trackers."""

        def applied_counts() -> dict[str, float]:
            with self._lock:
                st = self._applied
                if st is None:
                    return {}
                return {
                    "services": st.service_count(),
                    "frontends": len(st.frontends),
                    "backends": len(st.backends),
                    "lb": st.lb_usage(),
                    "svc_ids": len(st.frontends),
                    "skipped": len(st.skipped),
                }

        def one(field: str) -> dict[tuple[str, ...], float]:
            counts = applied_counts()
            return {(): counts[field]} if field in counts else {}

        def fill() -> dict[tuple[str, ...], float]:
            counts = applied_counts()
            if not counts:
                return {}
            lim = self.limits
            return {
                ("bpx_svc_v1",): counts["lb"] / lim.lb_entries,
                ("bpx_backend_v1",): counts["backends"] / lim.backends,
                ("bpx_svcname_v1",): counts["svc_ids"] / max(1, lim.svc_ids - 1),
            }

        def entries() -> dict[tuple[str, ...], float]:
            counts = applied_counts()
            if not counts:
                return {}
            return {("bpx_svc_v1",): counts["lb"], ("bpx_backend_v1",): counts["backends"],
                    ("bpx_svcname_v1",): counts["svc_ids"]}

        m.collect("bpfproxy_services_programmed", "Services with at least one frontend in the maps", "gauge",
                  lambda: one("services"))
        m.collect("bpfproxy_frontends_programmed", "Frontends (address, port, protocol) in the maps", "gauge",
                  lambda: one("frontends"))
        m.collect("bpfproxy_backends_programmed", "Backends in the backend map", "gauge", lambda: one("backends"))
        m.collect("bpfproxy_services_skipped", "Services too large for the maps (kept at their previous entries)",
                  "gauge", lambda: one("skipped"))
        m.collect("bpfproxy_map_entries", "Entries the agent keeps in a map", "gauge", entries, ["map"])
        m.collect("bpfproxy_map_fill_ratio", "Entries the agent keeps in a map / its capacity", "gauge", fill,
                  ["map"])
        m.collect("kubeproxy_sync_proxy_rules_service_changes_pending", "Pending proxy rules Service changes",
                  "gauge", lambda: {(): float(self.services.pending_count)})
        m.collect("kubeproxy_sync_proxy_rules_endpoint_changes_pending", "Pending proxy rules Endpoint changes",
                  "gauge", lambda: {(): float(self.slices.pending_count)})
        m.collect("bpfproxy_bad_objects_total", "Objects skipped because they could not be used, by kind",
                  "counter", lambda: {(KIND_SERVICE,): float(self.services.bad_objects),
                                      (KIND_ENDPOINT_SLICE,): float(self.slices.bad_objects)}, ["kind"])

    def frontend_ids(self) -> list[tuple[int, str, str]]:
        """(svc_id, name, "IP:port/proto") of every applied frontend.

        Only the copy of the frontend table is taken under the sync lock (10k frontends: well under a
        millisecond); the entries are immutable, so the rest is done outside it and a scrape never
        delays a sync by more than that copy.
        """
        with self._lock:
            st = self._applied
            if st is None:
                return []
            items = list(st.frontends.items())
        text = self._frontend_text
        out = []
        for k, e in items:
            label = text.get(k)
            if label is None:
                if len(text) > 2 * len(items) + 1024:
                    text.clear()
                label = text[k] = f"{k.addr}:{k.port}/{PROTO_NAMES.get(k.proto, str(k.proto))}"
            out.append((e.svc_id, e.name, label))
        return out

    def frontend_stats(self, read_counters: Callable[[int], tuple[int, int]]) -> list[FrontendStat]:
        """Per-frontend (packets, bytes) using read_counters(svc_id) (e.g. from bpx_svcstat_v1), outside the lock."""
        out = []
        for svc_id, name, frontend in self.frontend_ids():
            packets, nbytes = read_counters(svc_id)
            out.append(FrontendStat(name, frontend, packets, nbytes))
        return out
