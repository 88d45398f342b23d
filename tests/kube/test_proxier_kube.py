"""KubeSource feeding the real Proxier (in-memory writer): no write before both lists, then the watch drives it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bpfproxy.controller.diff import WritePlan
from bpfproxy.controller.plan import DatapathState
from bpfproxy.controller.proxier import Proxier
from bpfproxy.controller.source_kube import KubeSource
from kube.fakeapi import FakeApiServer
from kube.recorder import FAST_BACKOFF
from unit.kobj import endpoint, service, slice_


class Writer:
    """An in-memory writer noting which kinds were synced when each plan was applied."""

    def __init__(self) -> None:
        self.synced: list[str] = []
        self.applied_with: list[list[str]] = []

    def read_applied(self) -> DatapathState:
        return DatapathState()

    def apply(self, plan: WritePlan) -> None:
        self.applied_with.append(list(self.synced))


class Tap:
    """Forwards to the proxier, noting each sync announcement for the writer."""

    def __init__(self, proxier: Proxier, writer: Writer) -> None:
        self.proxier, self.writer = proxier, writer

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        self.proxier.on_object(kind, key, obj)

    def on_synced(self, kind: str) -> None:
        self.writer.synced.append(kind)
        self.proxier.on_synced(kind)


def wait(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


@pytest.fixture()
def wired(fake: FakeApiServer, kubeconfig: str) -> Iterator[tuple[Proxier, Writer]]:
    writer = Writer()
    proxier = Proxier(writer, min_sync_period=0.05, max_sync_period=30.0, retry_period=0.05)
    source = KubeSource(Tap(proxier, writer), kubeconfig=kubeconfig, backoff=FAST_BACKOFF)
    stop = threading.Event()
    threads = [threading.Thread(target=t, args=(stop,), daemon=True) for t in (proxier.run, source.run)]
    fake.fail_requests(503, count=5, kind="EndpointSlice")  # the slices list fails for a while
    for t in threads:
        t.start()
    yield proxier, writer
    stop.set()
    for t in threads:
        t.join(10)


def frontends(proxier: Proxier) -> set[str]:
    applied = proxier.applied
    return {f"{k.addr}:{k.port}" for k in applied.frontends} if applied is not None else set()


def test_nothing_written_before_both_lists_then_watch_changes_apply(
    fake: FakeApiServer, wired: tuple[Proxier, Writer]
) -> None:
    fake.apply(service("web", ip="10.96.0.10"))
    fake.apply(slice_("web-1", svc="web", endpoints=[endpoint("10.0.0.1")]))
    proxier, writer = wired
    wait(lambda: frontends(proxier) == {"10.96.0.10:80"}, "web programmed")
    assert [r.status for r in fake.list_requests("EndpointSlice")][:5] == [503] * 5
    assert writer.applied_with and all({"Service", "EndpointSlice"} <= set(s) for s in writer.applied_with)
    fake.wait_watching(2)
    fake.apply(service("api", ip="10.96.0.11"))
    wait(lambda: frontends(proxier) == {"10.96.0.10:80", "10.96.0.11:80"}, "api programmed")
    fake.delete("Service", "default", "web")
    wait(lambda: frontends(proxier) == {"10.96.0.11:80"}, "web removed")
