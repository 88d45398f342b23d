"""Change trackers: no-op changes dropped, slices moving between services, invalid updates."""

from __future__ import annotations

import logging

import pytest
from bpfproxy.controller.tracker import TRIGGER_TIME_ANNOTATION, EndpointSliceChangeTracker, ServiceChangeTracker
from kobj import endpoint, service, slice_


def test_service_changes_and_noop_dropped() -> None:
    t = ServiceChangeTracker()
    assert t.update("default/web", service("web"))
    assert t.update("default/web", service("web", ip="10.96.0.11"))
    changes = t.take_changes()
    assert set(changes) == {"default/web"}
    assert changes["default/web"].previous is None
    cur = changes["default/web"].current
    assert cur is not None and cur.cluster_ips == ("10.96.0.11",)
    # change and change back before the sync: nothing pending
    assert t.update("default/web", service("web", ip="10.96.0.12"))
    assert not t.update("default/web", service("web", ip="10.96.0.11"))
    assert not t.pending and t.take_changes() == {}
    # identical update: no-op
    assert not t.update("default/web", service("web", ip="10.96.0.11"))
    # create then delete before a sync: no-op
    assert t.update("default/tmp", service("tmp"))
    assert not t.update("default/tmp", None)
    assert not t.pending
    assert t.update("default/web", None)
    assert "default/web" not in t.services


def test_invalid_update_keeps_last_valid(caplog: pytest.LogCaptureFixture) -> None:
    t = ServiceChangeTracker()
    t.update("default/web", service("web"))
    t.take_changes()
    with caplog.at_level(logging.ERROR):
        assert not t.update("default/web", service("web", ip="10.96.0.999"))
        assert not t.update("default/bad", service("bad", ports=[{"port": 0}]))
    assert t.services["default/web"].cluster_ips == ("10.96.0.10",)
    assert "default/bad" not in t.services
    assert t.bad_objects == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert "Service default/web" in msgs[0] and "keeping the last valid version" in msgs[0]
    assert "Service default/bad" in msgs[1] and "skipped" in msgs[1]


def test_slices_per_service_and_moving() -> None:
    t = EndpointSliceChangeTracker()
    assert t.update("default/s1", slice_("s1", svc="web"))
    assert t.update("default/s2", slice_("s2", svc="web", endpoints=[endpoint("10.0.0.9")]))
    assert t.take_changes() == {"default/web"}
    assert [s.name for s in t.slices_for("default/web")] == ["s1", "s2"]
    # s2 moves to another service: both are changed
    assert t.update("default/s2", slice_("s2", svc="api", endpoints=[endpoint("10.0.0.9")]))
    assert t.take_changes() == {"default/web", "default/api"}
    assert [s.name for s in t.slices_for("default/web")] == ["s1"]
    assert [s.name for s in t.slices_for("default/api")] == ["s2"]
    # no-op update and change-then-revert
    assert not t.update("default/s1", slice_("s1", svc="web"))
    assert t.update("default/s1", slice_("s1", svc="web", endpoints=[]))
    assert not t.update("default/s1", slice_("s1", svc="web"))
    assert not t.pending
    assert t.update("default/s1", None)
    assert t.take_changes() == {"default/web"}
    assert t.slices_for("default/web") == [] and t.service_keys == {"default/api"}


def test_slice_invalid_update_keeps_old() -> None:
    t = EndpointSliceChangeTracker()
    t.update("default/s1", slice_("s1"))
    t.take_changes()
    assert not t.update("default/s1", slice_("s1", endpoints=[endpoint("300.0.0.1")]))
    assert t.bad_objects == 1
    assert t.slices_for("default/web")[0].endpoints[0].addresses == ("10.0.0.1",)


def test_slice_without_service_label_is_ignored() -> None:
    t = EndpointSliceChangeTracker()
    assert not t.update("default/s1", slice_("s1", svc=None))
    assert t.service_keys == set()


def _annotated(when: str, **kw: object) -> dict[str, object]:
    obj = slice_(**kw)  # type: ignore[arg-type]
    obj["metadata"]["annotations"] = {TRIGGER_TIME_ANNOTATION: when}
    return obj


def test_trigger_times_of_pending_changes() -> None:
    start = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    t = EndpointSliceChangeTracker(start_time=start)
    # before the tracker started: not measured
    assert t.update("default/s1", _annotated("2023-11-14T22:13:00Z", name="s1"))
    assert t.take_trigger_times() == {}
    t.take_changes()
    assert t.update("default/s1", _annotated("2023-11-14T22:13:25.5Z", name="s1", endpoints=[]))
    assert t.update("default/s2", _annotated("2023-11-14T22:13:26Z", name="s2"))
    assert t.take_trigger_times() == {"default/web": [start + 5.5, start + 6]}
    t.take_changes()
    # a change undone before the sync drops its trigger time; a deletion records none
    assert t.update("default/s1", _annotated("2023-11-14T22:13:30Z", name="s1"))
    assert not t.update("default/s1", _annotated("2023-11-14T22:13:25.5Z", name="s1", endpoints=[]))
    assert t.take_trigger_times() == {}
    assert t.update("default/s2", None)
    assert t.take_trigger_times() == {} and t.pending_count == 1
    # unparsable annotations are ignored
    assert t.update("default/s3", _annotated("yesterday", name="s3"))
    assert t.take_trigger_times() == {}


def test_untracked_updates_keep_objects_and_record_no_changes() -> None:
    # the proxier's initial list: objects kept and indexed, no change bookkeeping (its first sync is full)
    st, et = ServiceChangeTracker(), EndpointSliceChangeTracker(start_time=0)
    st.tracking = et.tracking = False
    assert st.update("default/web", service()) is True
    assert st.update("default/web", service()) is False  # the same again: no change
    assert st.update("default/api", service("api", ip="10.96.0.11")) is True
    assert st.update("default/api", None) is True
    ann = slice_("web-a", endpoints=[endpoint("10.0.0.1")])
    ann["metadata"]["annotations"] = {TRIGGER_TIME_ANNOTATION: "2030-01-01T00:00:00Z"}
    assert et.update("default/web-a", ann) is True
    assert et.update("default/web-b", slice_("web-b", endpoints=[endpoint("10.0.0.2")])) is True
    assert et.update("default/web-b", slice_("web-b", svc="api", endpoints=[endpoint("10.0.0.2")])) is True
    assert set(st.services) == {"default/web"} and not st.pending and st.take_changes() == {}
    assert [s.name for s in et.slices_for("default/web")] == ["web-a"]
    assert [s.name for s in et.slices_for("default/api")] == ["web-b"]
    assert not et.pending and et.take_changes() == set() and et.take_trigger_times() == {}
    # tracking on: changes are recorded from the state reached so far
    st.tracking = et.tracking = True
    assert st.update("default/web", service(ip="10.96.0.99")) is True
    assert et.update("default/web-a", None) is True
    assert set(st.take_changes()) == {"default/web"} and et.take_changes() == {"default/web"}
    assert et.slices_for("default/web") == []
