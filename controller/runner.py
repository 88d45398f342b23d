"""BoundedFrequencyRunner: runs the sync function coalesced, rate-limited and retried.

Place in the data flow: between the change trackers and the sync. Event handlers call `run()`
(cheap, never blocks on the sync); the runner's loop calls the function at most once per
min_interval (a request after an idle period runs at once), at least once per max_interval, and
again after retry_interval when it failed (raised or returned False). Like kube-proxy's
async.BoundedFrequencyRunner; the clock is injectable so tests drive it with `tick()` and no sleeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    """A monotonic clock in seconds."""

    def now(self) -> float:
        """Seconds since an arbitrary fixed point."""


class MonotonicClock:
    """The real clock: time.monotonic()."""

    def now(self) -> float:
        """time.monotonic()."""
        return time.monotonic()


class BoundedFrequencyRunner:
    """Calls fn when requested, no more often than min_interval, at least every max_interval."""

    def __init__(
        self,
        fn: Callable[[], bool | None],
        *,
        min_interval: float,
        max_interval: float,
        retry_interval: float = 1.0,
        clock: Clock | None = None,
        name: str = "sync",
    ) -> None:
        if min_interval < 0 or max_interval < min_interval:
            raise ValueError(f"need 0 <= min_interval <= max_interval, got {min_interval}, {max_interval}")
        self.fn = fn
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.retry_interval = retry_interval
        self.clock: Clock = clock or MonotonicClock()
        self.name = name
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._requested = False
        self._last_run: float | None = None
        self._retry_at: float | None = None
        self._started = self.clock.now()
        self.runs = 0
        """calls of fn so far"""
        self.failures = 0
        """calls that raised or returned False"""

    def run(self) -> None:
        """Request a run: coalesced with other requests, honouring min_interval."""
        with self._lock:
            self._requested = True
        self._wake.set()

    def next_due(self) -> float:
        """Clock time at which fn should run next."""
        with self._lock:
            return self._next_due_locked()

    def _next_due_locked(self) -> float:
        base = self._started if self._last_run is None else self._last_run
        due = base + self.max_interval
        # a request after an idle period runs at once; otherwise min_interval after the last run
        earliest = base if self._last_run is None else self._last_run + self.min_interval
        if self._requested:
            due = min(due, earliest)
        if self._retry_at is not None:
            due = min(due, max(self._retry_at, earliest))
        return due

    def tick(self) -> float:
        """Run fn when due; returns the seconds until the next due time (0 when already due)."""
        now = self.clock.now()
        with self._lock:
            if self._next_due_locked() > now:
                return self._next_due_locked() - now
            self._requested = False
            self._retry_at = None
            self._last_run = now
        ok = False
        try:
            ok = self.fn() is not False
        except Exception:
            log.exception("%s failed with an exception; retrying in %ss", self.name, self.retry_interval)
        self.runs += 1
        if not ok:
            self.failures += 1
            with self._lock:
                self._retry_at = now + self.retry_interval
        with self._lock:
            return max(0.0, self._next_due_locked() - self.clock.now())

    def loop(self, stop: threading.Event) -> None:
        """Call tick() until stop is set, sleeping until the next due time or a request."""
        while not stop.is_set():
            delay = self.tick()
            if delay > 0:
                self._wake.wait(min(delay, 1.0))
                self._wake.clear()
