"""Fixtures of the Kubernetes source tests: a fake API server, a kubeconfig for it, a recording handler."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bpfproxy.controller.source_kube import KubeSource
from kube.fakeapi import FakeApiServer
from kube.recorder import FAST_BACKOFF, Running


@pytest.fixture()
def fake() -> Iterator[FakeApiServer]:
    """A fake API server on 127.0.0.1, stopped after the test."""
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture()
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> str:
    """A kubeconfig file pointing at the fake server."""
    return fake.write_kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture()
def start(kubeconfig: str) -> Iterator[Callable[..., Running]]:
    """start(handler, **KubeSource options) runs a KubeSource; every one is stopped after the test."""
    running: list[Running] = []

    def _start(handler: Any, **kwargs: Any) -> Running:
        kwargs.setdefault("backoff", FAST_BACKOFF)
        kwargs.setdefault("server_timeout", 30)
        r = Running(KubeSource(handler, kubeconfig=kubeconfig, **kwargs))
        running.append(r)
        return r

    yield _start
    for r in running:
        r.stop()
