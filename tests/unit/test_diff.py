"""diff(): ordered make-before-break write plans, full and partial."""

from __future__ import annotations

from bpfproxy.controller.diff import WritePlan, diff
from bpfproxy.controller.plan import DatapathState, FrontendKey, Limits, plan
from bpfproxy.loader.structs import SVC_F_AFFINITY
from planhelp import fe

LIMITS = Limits()
KEY = FrontendKey("10.96.0.10", 80, 6, 0)


def nonzero(wp: WritePlan) -> dict[str, int]:
    return {k: v for k, v in wp.counts().items() if v}


def test_phase_order_is_make_before_break() -> None:
    assert list(WritePlan().counts()) == [
        "stat_resets", "backend_puts", "slot_puts", "address_puts", "frontend_puts", "name_puts",
        "frontend_deletes", "slot_deletes", "address_deletes", "backend_deletes", "name_deletes",
        "affinity_purges",
    ]


def test_new_frontend_writes_everything() -> None:
    desired = plan([fe(backends=["10.0.0.1:80", "10.0.0.2:80"])], DatapathState(), LIMITS)
    wp = diff(DatapathState(), desired)
    assert nonzero(wp) == {"stat_resets": 1, "backend_puts": 2, "slot_puts": 2, "address_puts": 1,
                           "frontend_puts": 1, "name_puts": 1}
    assert wp.address_puts == ["10.96.0.10"] and wp.name_puts == [(1, "default/web:80/TCP")]
    assert diff(desired, desired).empty


def test_grow() -> None:
    s1 = plan([fe(backends=["10.0.0.1:80"])], DatapathState(), LIMITS)
    s2 = plan([fe(backends=["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])], s1, LIMITS)
    wp = diff(s1, s2)
    assert nonzero(wp) == {"backend_puts": 2, "slot_puts": 2, "frontend_puts": 1}
    assert [s.slot for s in wp.slot_puts] == [2, 3]
    assert wp.frontend_puts[0][1].backend_ids == s2.frontends[KEY].backend_ids


def test_shrink_writes_count_before_deleting_slots() -> None:
    s1 = plan([fe(backends=["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])], DatapathState(), LIMITS)
    s2 = plan([fe(backends=["10.0.0.3:80"])], s1, LIMITS)
    wp = diff(s1, s2)
    # slot 1 now names 10.0.0.3's (unchanged) backend id, the count drops to 1, slots 2-3 go
    assert nonzero(wp) == {"slot_puts": 1, "frontend_puts": 1, "slot_deletes": 2, "backend_deletes": 2}
    assert wp.slot_deletes == [(KEY, 2), (KEY, 3)]
    assert len(wp.frontend_puts[0][1].backend_ids) == 1


def test_terminating_backend_leaves_slots_but_stays() -> None:
    s1 = plan([fe(backends=["10.0.0.1:80", "10.0.0.2:80"])], DatapathState(), LIMITS)
    s2 = plan([fe(backends=["10.0.0.1:80"], terminating=["10.0.0.2:80"])], s1, LIMITS)
    wp = diff(s1, s2)
    assert nonzero(wp) == {"backend_puts": 1, "frontend_puts": 1, "slot_deletes": 1}


def test_remove_frontend_and_affinity() -> None:
    s1 = plan([fe(backends=["10.0.0.1:80"], affinity=30), fe("default/b", "10.96.0.2")], DatapathState(),
              LIMITS)
    s2 = plan([fe(backends=["10.0.0.1:80"])], s1, LIMITS)
    wp = diff(s1, s2)
    b_id = s1.frontends[FrontendKey("10.96.0.2", 80, 6, 0)].svc_id
    web_id = s1.frontends[KEY].svc_id
    assert s1.frontends[KEY].flags & SVC_F_AFFINITY
    assert wp.frontend_deletes == [FrontendKey("10.96.0.2", 80, 6, 0)]
    assert wp.address_deletes == ["10.96.0.2"] and wp.name_deletes == [b_id]
    assert wp.affinity_purges == sorted([b_id, web_id])


def test_partial_diff_touches_only_given_services() -> None:
    s1 = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.1:80"]), fe("default/b", "10.96.0.2")],
              DatapathState(), LIMITS)
    # b changed too, but only a is synced: b's change must not appear
    s2 = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.2:80"])], s1, LIMITS, services={"default/a"})
    wp = diff(s1, s2, services={"default/a"})
    assert nonzero(wp) == {"backend_puts": 1, "slot_puts": 1, "backend_deletes": 1}
    assert all(b.addr == "10.0.0.2" for _, b in wp.backend_puts)
    # shared address: removing one of two frontends on it keeps the address entry
    s3 = plan([fe("default/a", "10.96.0.1", backends=["10.0.0.2:80"]),
               fe("default/a", "10.96.0.1", 81), fe("default/b", "10.96.0.2")], s2, LIMITS)
    s4 = plan([fe("default/a", "10.96.0.1", 81)], s3, LIMITS, services={"default/a"})
    wp = diff(s3, s4, services={"default/a"})
    assert wp.address_deletes == [] and len(wp.frontend_deletes) == 1


def test_stray_slots_deleted_on_full_diff() -> None:
    desired = plan([fe(backends=["10.0.0.1:80"])], DatapathState(), LIMITS)
    applied = desired.copy()
    applied.stray_slots = {(KEY, 1), (KEY, 5), (FrontendKey("10.96.0.99", 1, 6, 0), 1)}
    wp = diff(applied, desired)
    assert wp.slot_deletes == [(KEY, 5), (FrontendKey("10.96.0.99", 1, 6, 0), 1)]
