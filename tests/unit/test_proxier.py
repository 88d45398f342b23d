"""Proxier with an in-memory writer and a fake clock: gating, partial syncs, failures, restart."""

from __future__ import annotations

from pathlib import Path

from bpfproxy.controller.diff import WritePlan
from bpfproxy.controller.plan import DatapathState, FrontendKey
from bpfproxy.controller.proxier import Proxier
from bpfproxy.controller.translate import NodeConfig
from kobj import endpoint, service, slice_


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class FakeWriter:
    """Keeps the 'maps' as a DatapathState by replaying diffs onto a copy of the desired state."""

    def __init__(self) -> None:
        self.state = DatapathState()
        self.plans: list[WritePlan] = []
        self.reads = 0
        self.fail_next = False
        self.last_desired: DatapathState | None = None

    def read_applied(self) -> DatapathState:
        self.reads += 1
        return self.state.copy()

    def apply(self, plan: WritePlan) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("injected map write failure")
        self.plans.append(plan)


def apply_and_track(p: Proxier, w: FakeWriter) -> None:
    """Run the runner once and mirror the proxier's applied state into the fake maps."""
    p.runner.run()
    p.runner.tick()
    if p.applied is not None:
        w.state = p.applied.copy()


def make() -> tuple[Proxier, FakeWriter, FakeClock]:
    w, c = FakeWriter(), FakeClock()
    return Proxier(w, min_sync_period=1.0, max_sync_period=30.0, clock=c), w, c


def test_nothing_written_before_both_kinds_synced() -> None:
    p, w, c = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    p.on_synced("Service")
    apply_and_track(p, w)
    assert w.plans == [] and w.reads == 0 and p.applied is None
    c.t += 1
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)
    assert len(w.plans) == 1 and w.reads == 1
    assert p.counters.full_syncs == 1 and p.counters.last_writes == w.plans[0].writes()
    key = FrontendKey("10.96.0.10", 80, 6, 0)
    assert p.applied is not None and len(p.applied.frontends[key].backend_ids) == 2


def synced(p: Proxier, w: FakeWriter) -> None:
    p.on_synced("Service")
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)


def test_partial_sync_only_changed_service() -> None:
    p, w, c = make()
    p.on_object("Service", "default/web", service())
    p.on_object("Service", "default/api", service("api", ip="10.96.0.11"))
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    synced(p, w)
    c.t += 2
    p.on_object("EndpointSlice", "default/web-abc", slice_(endpoints=[endpoint("10.0.0.1")]))
    apply_and_track(p, w)
    wp = w.plans[-1]
    assert p.counters.syncs == 2 and p.counters.full_syncs == 1
    assert wp.counts()["slot_deletes"] == 1 and wp.counts()["backend_deletes"] == 1
    assert wp.frontend_puts and all(k.addr == "10.96.0.10" for k, _ in wp.frontend_puts)


def test_min_sync_period_coalesces_events() -> None:
    p, w, c = make()
    synced(p, w)
    n = len(w.plans)
    c.t += 0.1
    p.on_object("Service", "default/a", service("a", ip="10.96.0.1"))
    p.on_object("Service", "default/b", service("b", ip="10.96.0.2"))
    assert p.runner.tick() > 0 and len(w.plans) == n
    c.t += 1
    p.runner.tick()
    assert len(w.plans) == n + 1 and len(w.plans[-1].frontend_puts) == 2


def test_failure_then_full_resync_from_maps() -> None:
    p, w, c = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    synced(p, w)
    assert w.reads == 1
    c.t += 2
    w.fail_next = True
    p.on_object("Service", "default/api", service("api", ip="10.96.0.11"))
    apply_and_track(p, w)
    assert p.counters.failures == 1
    c.t += 1.0  # retry_interval
    p.runner.tick()
    assert w.reads == 2 and p.counters.full_syncs == 2
    assert p.applied is not None and p.applied.services() == {"default/web", "default/api"}


def test_restart_reads_applied_and_writes_nothing_when_unchanged() -> None:
    p, w, c = make()
    p.on_object("Service", "default/web", service(sessionAffinity="ClientIP"))
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    synced(p, w)
    maps = w.state
    # a new agent over the same maps
    w2 = FakeWriter()
    w2.state = maps
    p2 = Proxier(w2, clock=c)
    p2.on_object("Service", "default/web", service(sessionAffinity="ClientIP"))
    p2.on_object("EndpointSlice", "default/web-abc", slice_())
    p2.on_synced("Service")
    p2.on_synced("EndpointSlice")
    p2.runner.tick()
    assert w2.reads == 1 and w2.plans == [] and p2.counters.syncs == 1
    assert p2.applied == maps


def test_periodic_full_resync_and_bad_objects_counted() -> None:
    p, w, c = make()
    synced(p, w)
    p.on_object("Service", "default/bad", service("bad", ip="300.1.1.1"))
    assert p.bad_objects == 1
    c.t += 30
    p.runner.tick()
    assert p.counters.full_syncs == 2


def test_threads_file_source_to_writer(tmp_path: Path) -> None:
    import threading
    import time

    import yaml
    from bpfproxy.controller.source_file import FileSource

    (tmp_path / "a.yaml").write_text(yaml.safe_dump_all([service(), slice_()]))
    w = FakeWriter()
    p = Proxier(w, min_sync_period=0.05, max_sync_period=5.0)
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(stop,)),
               threading.Thread(target=FileSource(str(tmp_path), p, poll_interval=0.05).run, args=(stop,))]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 2
        while not w.plans and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.plans and p.applied is not None and p.applied.services() == {"default/web"}
        (tmp_path / "a.yaml").write_text(yaml.safe_dump_all([service(), slice_(endpoints=[])]))
        deadline = time.monotonic() + 2
        while len(w.plans) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(w.plans) == 2 and w.plans[1].counts()["backend_deletes"] == 2
    finally:
        stop.set()
        p.runner.run()
        for t in threads:
            t.join()


def test_node_zone_label_changes_node_config_and_forces_full_sync() -> None:
    w, c = FakeWriter(), FakeClock()
    p = Proxier(w, node=NodeConfig(node_name="n1"), clock=c)
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    synced(p, w)
    assert p.counters.full_syncs == 1
    node = {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}
    c.t += 2
    p.on_object("Node", "n1", node)
    assert p.node.zone == "zone-a" and p.node.node_name == "n1"
    apply_and_track(p, w)
    assert p.counters.full_syncs == 2
    # same zone again, or another node: no full sync
    c.t += 2
    p.on_object("Node", "n1", node)
    p.on_object("Node", "n2", {"metadata": {"name": "n2", "labels": {"topology.kubernetes.io/zone": "b"}}})
    apply_and_track(p, w)
    assert p.counters.full_syncs == 2 and p.node.zone == "zone-a" and set(p.nodes) == {"n1", "n2"}


def test_partial_sync_is_in_place_and_a_failed_write_reads_the_maps_back() -> None:
    p, w, c = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    synced(p, w)
    state = p.applied
    c.t += 2
    p.on_object("EndpointSlice", "default/web-abc", slice_(endpoints=[endpoint("10.0.0.1")]))
    apply_and_track(p, w)
    assert p.applied is state  # no copy per partial sync
    c.t += 2
    w.fail_next = True
    p.on_object("EndpointSlice", "default/web-abc", slice_(endpoints=[endpoint("10.0.0.3")]))
    apply_and_track(p, w)
    assert p.counters.failures == 1 and w.reads == 1
    c.t += 1
    p.runner.tick()
    assert w.reads == 2 and p.applied is not state
    key = FrontendKey("10.96.0.10", 80, 6, 0)
    be = p.applied.backends[p.applied.frontends[key].backend_ids[0]]
    assert be.addr == "10.0.0.3"


def test_initial_list_is_kept_untracked_and_all_programmed_by_the_first_full_sync() -> None:
    p, w, c = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    p.on_object("EndpointSlice", "default/web-abc", slice_(endpoints=[endpoint("10.0.0.7")]))  # relisted
    p.on_object("Service", "default/gone", service("gone", ip="10.96.0.99"))
    p.on_object("Service", "default/gone", None)
    assert not p.services.pending and not p.slices.pending  # no change bookkeeping before the first sync
    p.on_synced("Service")
    p.on_object("Service", "default/api", service("api", ip="10.96.0.11"))  # slices not listed yet
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)
    assert p.counters.full_syncs == 1 and p.applied is not None
    assert {k.addr for k in p.applied.frontends} == {"10.96.0.10", "10.96.0.11"}
    web = p.applied.frontends[FrontendKey("10.96.0.10", 80, 6, 0)]
    assert [p.applied.backends[b].addr for b in web.backend_ids] == ["10.0.0.7"]
    # from now on changes are tracked and synced partially
    c.t += 2
    p.on_object("EndpointSlice", "default/web-abc", slice_(endpoints=[endpoint("10.0.0.8")]))
    assert p.slices.pending
    apply_and_track(p, w)
    assert p.counters.syncs == 2 and p.counters.full_syncs == 1
    web = p.applied.frontends[FrontendKey("10.96.0.10", 80, 6, 0)]
    assert [p.applied.backends[b].addr for b in web.backend_ids] == ["10.0.0.8"]


def test_full_sync_freezes_what_it_built_and_leaves_the_collector_on() -> None:
    import gc

    p, w, _ = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    before = gc.get_freeze_count()
    try:
        synced(p, w)
        assert p.counters.full_syncs == 1
        assert gc.isenabled() and gc.get_freeze_count() > before  # the applied state is out of the collector's scans
    finally:
        gc.unfreeze()


def test_cluster_ip_service_turned_external_name_disappears_from_the_maps() -> None:
    """kube-proxy: an ExternalName service is never programmed, so the change removes every entry."""
    p, w, c = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    synced(p, w)
    assert p.applied is not None and p.applied.services() == {"default/web"}
    c.t += 2
    p.on_object("Service", "default/web", service(ip=None, type="ExternalName", externalName="db.example"))
    apply_and_track(p, w)
    assert p.applied.services() == set() and not p.applied.backends and not p.applied.addresses
    last = w.plans[-1]
    assert last.frontend_deletes and last.backend_deletes and last.address_deletes
