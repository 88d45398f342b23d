"""Change trackers: what changed since the last sync, per Service and per EndpointSlice.

Place in the data flow: between the sources and the bounded-frequency sync. Source events are
parsed here (model.parse_*); an object that does not parse is logged once, counted and skipped,
and an invalid update of a valid object keeps the last valid version. Each tracker keeps the
current valid objects and, as kube-proxy does, a {previous, current} record per changed object
so that a change undone before the next sync (a no-op) is dropped. `take_changes()` hands the
service keys ("ns/name") to re-sync to the proxier and starts a new round. The EndpointSlice
tracker also keeps, per service, the endpoints.kubernetes.io/last-change-trigger-time of each
pending change (as kube-proxy does) for the network programming latency metric. Every event
costs O(that object + the slices of its service), never O(all services); with `tracking` off
(the proxier's initial list, before its first, full, sync) only the current objects are kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from bpfproxy.controller.model import (
    BadObject,
    EndpointSlice,
    Service,
    parse_endpoint_slice,
    parse_service,
)

log = logging.getLogger(__name__)

#: annotation the EndpointSlice controller sets to the time of the change that caused an update
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def trigger_time(sl: EndpointSlice) -> float | None:
    """The slice's last-change-trigger-time as Unix seconds (None: absent or unparsable)."""
    raw = sl.annotations.get(TRIGGER_TIME_ANNOTATION)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class ServiceChange:
    """A Service before the first event of this round and now."""

    previous: Service | None
    """the valid object at the last sync (None: did not exist)"""
    current: Service | None
    """the valid object now (None: deleted)"""


class _BadObject:
    """Marker returned for an object that did not parse (already logged and counted)."""


_BAD = _BadObject()
T = TypeVar("T")


class _ParsingTracker:
    """What both trackers share: parsing an event's object, counting and logging bad ones."""

    def __init__(self) -> None:
        self.bad_objects: int = 0
        """objects skipped because they did not parse (cumulative)"""
        self.tracking = True
        """False: keep the current objects only, record no changes (before the first sync, which is
        full anyway: the initial list of 10k objects then costs no previous/current bookkeeping)"""

    def _parse(self, parse: Callable[[Mapping[str, Any]], T], obj: Mapping[str, Any], *, known: bool) -> T | _BadObject:
        """parse(obj), or _BAD after one log line naming the object (a known one keeps its last valid version)."""
        try:
            return parse(obj)
        except BadObject as e:
            self.bad_objects += 1
            log.error("bad object: %s; %s", e, "keeping the last valid version" if known else "skipped")
            return _BAD


class ServiceChangeTracker(_ParsingTracker):
    """Current valid Services and the changes pending for the next sync."""

    def __init__(self) -> None:
        super().__init__()
        self._services: dict[str, Service] = {}
        self._changes: dict[str, ServiceChange] = {}

    @property
    def services(self) -> Mapping[str, Service]:
        """Every valid Service by "ns/name"."""
        return self._services

    def update(self, key: str, obj: Mapping[str, Any] | None) -> bool:
        """Record the new state of Service `key` (None = deleted); True when a change is pending for it."""
        current = None if obj is None else self._parse(parse_service, obj, known=key in self._services)
        if isinstance(current, _BadObject):
            return key in self._changes
        previous = self._services.get(key)
        if not self.tracking:
            if current is None:
                self._services.pop(key, None)
            else:
                self._services[key] = current
            return previous != current
        change = self._changes.get(key)
        if change is None:
            if previous == current:
                return False
            change = self._changes[key] = ServiceChange(previous, current)
        change.current = current
        if current is None:
            self._services.pop(key, None)
        else:
            self._services[key] = current
        if change.previous == change.current:
            del self._changes[key]
            return False
        return True

    @property
    def pending(self) -> bool:
        """True when some service changed since the last take_changes()."""
        return bool(self._changes)

    @property
    def pending_count(self) -> int:
        """Services changed since the last take_changes()."""
        return len(self._changes)

    def take_changes(self) -> dict[str, ServiceChange]:
        """The pending changes by service key; starts a new round."""
        changes, self._changes = self._changes, {}
        return changes


class EndpointSliceChangeTracker(_ParsingTracker):
    """Current valid EndpointSlices by slice and by service, and the services pending a sync."""

    def __init__(self, *, start_time: float | None = None) -> None:
        super().__init__()
        self.start_time = time.time() if start_time is None else start_time
        """wall-clock start: trigger times before it are not measured (they predate this agent)"""
        self._trigger_times: dict[str, list[float]] = {}
        self._slices: dict[str, EndpointSlice] = {}
        self._by_service: dict[str, dict[str, EndpointSlice]] = {}
        self._previous: dict[str, dict[str, EndpointSlice]] = {}

    def slices_for(self, service_key: str) -> list[EndpointSlice]:
        """The valid slices of a service, ordered by slice name."""
        by_name = self._by_service.get(service_key, {})
        return [by_name[k] for k in sorted(by_name)]

    @property
    def service_keys(self) -> set[str]:
        """Every service that has at least one slice."""
        return set(self._by_service)

    def _snapshot(self, service_key: str) -> dict[str, EndpointSlice]:
        return dict(self._by_service.get(service_key, {}))

    def update(self, key: str, obj: Mapping[str, Any] | None) -> bool:
        """Record the new state of slice `key` (None = deleted); True when a service now has a pending change."""
        new = None if obj is None else self._parse(parse_endpoint_slice, obj, known=key in self._slices)
        if isinstance(new, _BadObject):
            return False
        old = self._slices.get(key)
        if old == new:
            return False
        if not self.tracking:
            self._replace(key, old, new)
            return True
        touched = {s.service_key for s in (old, new) if s is not None and s.service_key}
        for svc in touched:
            if svc not in self._previous:
                self._previous[svc] = self._snapshot(svc)
        self._replace(key, old, new)
        pending = False
        for svc in touched:
            if self._previous[svc] == self._snapshot(svc):
                del self._previous[svc]
                self._trigger_times.pop(svc, None)
            else:
                pending = True
        if new is None:
            # a deletion's annotation is the time of the last update, not of this change
            if old is not None:
                self._trigger_times.pop(old.service_key, None)
        elif new.service_key in self._previous:
            when = trigger_time(new)
            if when is not None and when > self.start_time:
                self._trigger_times.setdefault(new.service_key, []).append(when)
        return pending

    def _replace(self, key: str, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        """Slice key is now new (None: gone) instead of old, in both indexes."""
        if old is not None and old.service_key:
            group = self._by_service[old.service_key]
            group.pop(key, None)
            if not group:
                del self._by_service[old.service_key]
        if new is None:
            self._slices.pop(key, None)
        else:
            self._slices[key] = new
            if new.service_key:
                self._by_service.setdefault(new.service_key, {})[key] = new

    @property
    def pending(self) -> bool:
        """True when some service's slices changed since the last take_changes()."""
        return bool(self._previous)

    @property
    def pending_count(self) -> int:
        """Services whose slices changed since the last take_changes()."""
        return len(self._previous)

    def take_changes(self) -> set[str]:
        """The service keys whose slices changed; starts a new round (call take_trigger_times first)."""
        changed = set(self._previous)
        self._previous = {}
        return changed

    def take_trigger_times(self) -> dict[str, list[float]]:
        """Trigger times (Unix seconds) of the pending changes, per service; forgets them."""
        times, self._trigger_times = self._trigger_times, {}
        return times
