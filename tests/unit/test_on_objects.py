"""Proxier.on_objects (a list page in one call) leaves exactly what a loop of on_object leaves.

Two proxiers get the same random pages of Services and EndpointSlices (new, changed, unchanged,
repeated in one page, bad, Nodes), one page per on_objects call and one object per on_object call,
before and after both kinds are synced: same tracked objects, same pending changes, same bad-object
counts, same change counters, same health, same programmed state. report_objects uses on_objects
when the handler has it and on_object otherwise.
"""

from __future__ import annotations

import random
from typing import Any

from bpfproxy.controller.health import ProxierHealth
from bpfproxy.controller.metrics import ProxierMetrics
from bpfproxy.controller.proxier import Proxier
from bpfproxy.controller.source import report_objects
from kobj import endpoint, service, slice_
from test_proxier import FakeClock, FakeWriter, apply_and_track


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _make(wall: Wall) -> tuple[Proxier, FakeWriter, ProxierMetrics, ProxierHealth]:
    w, m, h = FakeWriter(), ProxierMetrics(), ProxierHealth(60.0, clock=wall)
    p = Proxier(w, min_sync_period=1.0, max_sync_period=30.0, clock=FakeClock(), wall=wall, metrics=m, health=h)
    return p, w, m, h


def _random_page(rng: random.Random, kind: str) -> list[tuple[str, dict[str, Any]]]:
    page: list[tuple[str, dict[str, Any]]] = []
    for _ in range(rng.randrange(0, 12)):
        i = rng.randrange(8)
        if kind == "Service":
            obj = service(f"s{i}", ip=f"10.96.0.{i + 1}",
                          ports=[{"name": "http", "port": rng.choice([80, 81]), "protocol": "TCP"}])
            if rng.random() < 0.1:
                obj["spec"]["ports"][0]["port"] = 0  # bad
            page.append((f"default/s{i}", obj))
        elif kind == "EndpointSlice":
            eps = [endpoint(f"10.0.{i}.{j}", ready=rng.choice([True, False])) for j in range(rng.randrange(1, 4))]
            obj = slice_(f"s{i}-abc", svc=f"s{i}", endpoints=eps)
            if rng.random() < 0.1:
                obj["addressType"] = "bogus"
            page.append((f"default/s{i}-abc", obj))
        else:
            page.append((f"n{i}", {"metadata": {"name": f"n{i}", "labels": {"z": str(rng.randrange(2))}}}))
    return page


def _state(p: Proxier, m: ProxierMetrics, h: ProxierHealth) -> tuple[Any, ...]:
    return (
        dict(p.services.services), {k: p.slices.slices_for(k) for k in sorted(p.slices.service_keys)},
        p.services.pending_count, p.slices.pending_count, p.services.bad_objects, p.slices.bad_objects,
        m.service_changes.value(), m.endpoint_changes.value(), h._oldest_pending, dict(p.nodes),
    )  # fmt: skip


def test_on_objects_equals_a_loop_of_on_object() -> None:
    rng = random.Random(5)
    wall = Wall()
    batch, bw, bm, bh = _make(wall)
    single, sw, sm, sh = _make(wall)
    for step in range(60):
        kind = rng.choice(["Service", "EndpointSlice", "EndpointSlice", "Node"])
        page = _random_page(rng, kind)
        batch.on_objects(kind, page)
        for key, obj in page:
            single.on_object(kind, key, obj)
        wall.t += 1
        assert _state(batch, bm, bh) == _state(single, sm, sh), step
        if step == 20:
            for p in (batch, single):
                p.on_synced("Service")
                p.on_synced("EndpointSlice")
        if step >= 20 and step % 5 == 0:
            apply_and_track(batch, bw)
            apply_and_track(single, sw)
            assert batch.applied == single.applied and batch.applied is not None
            assert [pl.writes() for pl in bw.plans] == [pl.writes() for pl in sw.plans]
    assert batch.services.bad_objects > 0 and batch.slices.bad_objects > 0
    assert bm.service_changes.value() > 0 and bm.endpoint_changes.value() > 0


class _Loop:
    """A handler without on_objects."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        self.calls.append((kind, key, obj))

    def on_synced(self, kind: str) -> None:
        raise AssertionError(kind)


class _Batch(_Loop):
    """A handler with on_objects."""

    def on_objects(self, kind: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls.append((kind, "batch", list(items)))


def test_report_objects_uses_on_objects_when_there() -> None:
    items = [("default/a", {"x": 1}), ("default/b", {"x": 2})]
    loop, batch = _Loop(), _Batch()
    report_objects(loop, "Service", items)
    report_objects(batch, "Service", items)
    assert loop.calls == [("Service", "default/a", {"x": 1}), ("Service", "default/b", {"x": 2})]
    assert batch.calls == [("Service", "batch", items)]
