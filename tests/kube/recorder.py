"""Test helpers of the Kubernetes source tests: a recording SourceHandler and a KubeSource in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from bpfproxy.controller.source_kube import KubeSource

#: back-off of the tests: short, so a reconnect takes milliseconds
FAST_BACKOFF = (0.05, 0.1)


class Recorder:
    """A SourceHandler that keeps the current view, every call, and the order of syncs; thread-safe."""

    def __init__(self, hook: Callable[[str, str], None] | None = None) -> None:
        self.cond = threading.Condition()
        self.view: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str, str | None]] = []
        """(kind, key, resourceVersion or None for a deletion)"""
        self.synced: list[str] = []
        self.synced_at: dict[str, int] = {}
        """kind -> len(calls) when it was announced synced"""
        self.hook = hook
        """called with (kind, key) before each object is recorded (in the source's thread)"""

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        with self.cond:
            if self.hook is not None:
                self.hook(kind, key)
            objects = self.view.setdefault(kind, {})
            if obj is None:
                objects.pop(key, None)
                self.calls.append((kind, key, None))
            else:
                objects[key] = obj
                self.calls.append((kind, key, obj["metadata"].get("resourceVersion")))
            self.cond.notify_all()

    def on_synced(self, kind: str) -> None:
        with self.cond:
            self.synced.append(kind)
            self.synced_at[kind] = len(self.calls)
            self.cond.notify_all()

    def keys(self, kind: str) -> set[str]:
        """Keys of kind in the current view."""
        with self.cond:
            return set(self.view.get(kind, {}))

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Wait until check() holds (evaluated under the lock); fail naming what did not happen."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{what} did not happen within {timeout} s; calls={self.calls[-20:]}")
                self.cond.wait(min(left, 0.05))

    def wait_keys(self, kind: str, keys: set[str], timeout: float = 10.0) -> None:
        """Wait until the view of kind holds exactly keys."""
        self.wait(lambda: set(self.view.get(kind, {})) == keys, f"{kind} keys == {sorted(keys)}", timeout)


class Running:
    """A KubeSource running in a thread; stop() ends it."""

    def __init__(self, source: KubeSource) -> None:
        self.source = source
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(self.stop_event,), name="kube-source", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Set stop and wait for run() to return."""
        self.stop_event.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "KubeSource.run did not return after stop"

    def counters(self, kind: str) -> dict[str, int]:
        """The source's counters of kind."""
        return self.source.counters()[kind]
