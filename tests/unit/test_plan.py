"""plan(): desired map contents with stable ids, id reuse and capacity limits."""

from __future__ import annotations

import logging

import pytest
from bpfproxy.controller.plan import DatapathState, FrontendKey, IdAllocator, Limits, plan
from bpfproxy.loader.structs import BE_F_TERMINATING, SVC_F_AFFINITY
from planhelp import fe

LIMITS = Limits()
KEY = FrontendKey("10.96.0.10", 80, 6, 0)


def backend_map(state: DatapathState, key: FrontendKey) -> dict[str, int]:
    entry = state.frontends[key]
    return {f"{state.backends[i].addr}:{state.backends[i].port}": i for i in state.svc_backends(entry.svc_id)}


def test_plan_basic() -> None:
    s = plan([fe(backends=["10.0.0.2:8080", "10.0.0.1:8080"], terminating=["10.0.0.3:8080"], affinity=60)],
             DatapathState(), LIMITS)
    entry = s.frontends[KEY]
    assert entry.svc_id == 1 and entry.name == "default/web:80/TCP" and entry.service == "default/web"
    assert entry.flags == SVC_F_AFFINITY and entry.affinity_timeout == 60
    slots = [f"{s.backends[i].addr}:{s.backends[i].port}" for i in entry.backend_ids]
    assert slots == ["10.0.0.1:8080", "10.0.0.2:8080"]
    term = [b for b in s.backends.values() if b.flags & BE_F_TERMINATING]
    assert [(b.addr, b.svc_id, b.proto) for b in term] == [("10.0.0.3", 1, 6)]
    assert s.addresses == {"10.96.0.10"}
    assert s.lb_usage() == 1 + 2 + 1


def test_ids_stable_across_replans() -> None:
    s1 = plan([fe(backends=["10.0.0.1:80", "10.0.0.2:80"]), fe("default/api", "10.96.0.11")], DatapathState(),
              LIMITS)
    before = backend_map(s1, KEY)
    s2 = plan([fe(backends=["10.0.0.0:80", "10.0.0.2:80", "10.0.0.3:80"]), fe("default/api", "10.96.0.11")],
              s1, LIMITS)
    after = backend_map(s2, KEY)
    assert s2.frontends[KEY].svc_id == s1.frontends[KEY].svc_id
    assert after["10.0.0.2:80"] == before["10.0.0.2:80"]
    # 10.0.0.1's id is freed in this plan, so it is not handed out again within it
    assert before["10.0.0.1:80"] not in after.values()
    # unchanged replan: identical state
    assert plan([fe(backends=["10.0.0.0:80", "10.0.0.2:80", "10.0.0.3:80"]), fe("default/api", "10.96.0.11")],
                s2, LIMITS) == s2


def test_freed_ids_reused_lowest_first_in_next_plan() -> None:
    s1 = plan([fe("default/a", "10.96.0.1"), fe("default/b", "10.96.0.2"), fe("default/c", "10.96.0.3")],
              DatapathState(), LIMITS)
    assert sorted(e.svc_id for e in s1.frontends.values()) == [1, 2, 3]
    s2 = plan([fe("default/c", "10.96.0.3")], s1, LIMITS)
    s3 = plan([fe("default/c", "10.96.0.3"), fe("default/d", "10.96.0.4"), fe("default/e", "10.96.0.5")],
              s2, LIMITS)
    ids = {e.service: e.svc_id for e in s3.frontends.values()}
    assert ids == {"default/c": 3, "default/d": 1, "default/e": 2}


def test_partial_plan_touches_only_listed_services() -> None:
    s1 = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.1:80"]), fe("default/b", "10.96.0.2")],
              DatapathState(), LIMITS)
    # b is not listed: carried over even though it is absent from the frontends given
    s2 = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.9:80"])], s1, LIMITS, services={"default/a"})
    assert s2.services() == {"default/a", "default/b"}
    s3 = plan([], s2, LIMITS, services={"default/b"})
    assert s3.services() == {"default/a"} and s3.addresses == {"10.96.0.1"}


def test_capacity_skip_names_service_and_keeps_others(caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(lb_entries=10, backends=100, svc_ids=100)
    big = fe("default/big", "10.96.0.9", backends=[f"10.0.1.{i}:80" for i in range(1, 20)])
    with caplog.at_level(logging.ERROR):
        s = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.1:80"]), big], DatapathState(), limits)
    assert s.services() == {"default/a"}
    assert s.skipped == {"default/big": "too large for the maps: needs 21 service map entries, 7 free"}
    assert any("default/big" in r.getMessage() and "too large" in r.getMessage() for r in caplog.records)
    # the ids it tried to take are free again
    assert len(s.backends) == 1


def test_capacity_growth_keeps_previous_version() -> None:
    limits = Limits(lb_entries=8, backends=100, svc_ids=100)
    s1 = plan([fe(backends=["10.0.0.1:80", "10.0.0.2:80"])], DatapathState(), limits)
    s2 = plan([fe(backends=[f"10.0.0.{i}:80" for i in range(1, 10)])], s1, limits)
    assert s2 == s1 and "default/web" in s2.skipped


def test_svc_id_and_backend_limits() -> None:
    s = plan([fe("default/a", "10.96.0.1"), fe("default/b", "10.96.0.2")], DatapathState(),
             Limits(svc_ids=2))
    assert s.services() == {"default/a"} and "frontend ids" in s.skipped["default/b"]
    s = plan([fe(backends=["10.0.0.1:1", "10.0.0.2:1"])], DatapathState(), Limits(backends=1))
    assert s.skipped["default/web"] == "too large for the maps: needs 2 backend map entries, 1 free"


def test_full_plan_removes_absent_services() -> None:
    s1 = plan([fe("default/a", "10.96.0.1"), fe("default/b", "10.96.0.2")], DatapathState(), LIMITS)
    s2 = plan([fe("default/b", "10.96.0.2")], s1, LIMITS)
    assert s2.services() == {"default/b"} and s2.addresses == {"10.96.0.2"}


def test_id_allocator() -> None:
    a = IdAllocator(5)
    assert [a.allocate() for _ in range(5)] == [1, 2, 3, 4, None]
    a.release(3)
    a.release(1)
    assert a.allocate() == 1 and a.allocate() == 3
    b = IdAllocator(100)
    b.reserve(2)
    b.reserve(5)
    assert [b.allocate() for _ in range(4)] == [1, 3, 4, 6]
