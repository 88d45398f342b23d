"""Metrics: the exposition format, what the proxier records after syncs, and the HTTP endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from bpfproxy.controller.metrics import (
    CONTENT_TYPE,
    Counter,
    FrontendStat,
    Gauge,
    Histogram,
    HttpServer,
    ProxierMetrics,
    Registry,
    metrics_routes,
    parse_bind_address,
)
from bpfproxy.controller.proxier import Proxier
from bpfproxy.controller.tracker import TRIGGER_TIME_ANNOTATION
from kobj import endpoint, service, slice_
from test_proxier import FakeClock, FakeWriter, apply_and_track


def parse(text: str) -> dict[str, float]:
    """Sample lines as {"name{labels}": value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_exposition_format() -> None:
    r = Registry()
    c = r.register(Counter("x_total", "an x", ["kind"]))
    g = r.register(Gauge("y", "a y"))
    h = r.register(Histogram("z_seconds", "a z", [0.1, 1.0]))
    assert isinstance(c, Counter) and isinstance(g, Gauge) and isinstance(h, Histogram)
    c.inc(labels=('a"b\\c\n',))
    c.inc(2, labels=("plain",))
    g.set(0.5)
    for v in (0.05, 0.5, 0.5, 7):
        h.observe(v)
    text = r.render()
    assert "# HELP x_total an x\n# TYPE x_total counter\n" in text
    assert '# TYPE z_seconds histogram' in text
    samples = parse(text)
    assert samples['x_total{kind="a\\"b\\\\c\\n"}'] == 1 and samples['x_total{kind="plain"}'] == 2
    assert samples["y"] == 0.5
    assert samples['z_seconds_bucket{le="0.1"}'] == 1 and samples['z_seconds_bucket{le="1"}'] == 3
    assert samples['z_seconds_bucket{le="+Inf"}'] == 4 and samples["z_seconds_count"] == 4
    assert samples["z_seconds_sum"] == pytest.approx(8.05)
    with pytest.raises(ValueError, match="twice"):
        r.register(Gauge("y", "again"))


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def make() -> tuple[Proxier, FakeWriter, FakeClock, Wall, ProxierMetrics]:
    w, c, wall, m = FakeWriter(), FakeClock(), Wall(), ProxierMetrics()
    p = Proxier(w, min_sync_period=1.0, max_sync_period=30.0, clock=c, wall=wall, metrics=m)
    return p, w, c, wall, m


def annotated(when: str, **kw: Any) -> dict[str, Any]:
    obj = slice_(**kw)
    obj["metadata"]["annotations"] = {TRIGGER_TIME_ANNOTATION: when}
    return obj


def test_proxier_metrics_after_syncs() -> None:
    p, w, c, wall, m = make()
    p.on_object("Service", "default/web", service())
    p.on_object("Service", "default/api", service("api", ip="10.96.0.11"))
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    p.on_object("Service", "default/bad", service("bad", ip="300.1.1.1"))
    p.on_object("EndpointSlice", "default/bad", slice_("bad", address_type="Nonsense"))
    p.on_object("EndpointSlice", "default/bad2", slice_("bad2", address_type="Nonsense"))
    p.on_synced("Service")
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)
    s = parse(m.render())
    assert s["bpfproxy_services_programmed"] == 2 and s["bpfproxy_frontends_programmed"] == 2
    assert s["bpfproxy_backends_programmed"] == 2
    assert s['bpfproxy_map_entries{map="bpx_svc_v1"}'] == 2 + 2 + 2  # slot 0s, slots, addresses
    assert s['bpfproxy_map_fill_ratio{map="bpx_backend_v1"}'] == 2 / 65536
    assert s['bpfproxy_bad_objects_total{kind="Service"}'] == 1
    assert s['bpfproxy_bad_objects_total{kind="EndpointSlice"}'] == 2
    assert s["kubeproxy_sync_proxy_rules_service_changes_total"] == 2
    assert s["kubeproxy_sync_proxy_rules_endpoint_changes_total"] == 1
    assert s["kubeproxy_sync_proxy_rules_duration_seconds_count"] == 1
    assert s["kubeproxy_sync_full_proxy_rules_duration_seconds_count"] == 1
    assert s["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] == wall.t
    assert s["kubeproxy_network_programming_duration_seconds_count"] == 0  # listed before start: not measured
    assert s["bpfproxy_map_writes_total"] == w.plans[0].writes()

    # an endpoint change triggered 2.5 s before the sync finishes writing
    c.t += 2
    wall.t += 10
    p.on_object("EndpointSlice", "default/web-abc",
                annotated("2023-11-14T22:13:27.5Z", endpoints=[endpoint("10.0.0.1")]))
    assert parse(m.render())["kubeproxy_sync_proxy_rules_endpoint_changes_pending"] == 1
    wall.t = 1_700_000_010.0  # 2023-11-14T22:13:30Z
    apply_and_track(p, w)
    s = parse(m.render())
    assert s["kubeproxy_network_programming_duration_seconds_count"] == 1
    assert s["kubeproxy_network_programming_duration_seconds_sum"] == pytest.approx(2.5)
    assert s['kubeproxy_network_programming_duration_seconds_bucket{le="2.048"}'] == 0
    assert s['kubeproxy_network_programming_duration_seconds_bucket{le="4.096"}'] == 1
    assert s["kubeproxy_sync_partial_proxy_rules_duration_seconds_count"] == 1
    assert s["kubeproxy_sync_proxy_rules_endpoint_changes_pending"] == 0
    assert s["bpfproxy_backends_programmed"] == 1

    # a failed write is counted; the latency of its change is observed when a later sync succeeds
    c.t += 2
    p.on_object("EndpointSlice", "default/web-abc", annotated("2023-11-14T22:13:29Z"))
    w.fail_next = True
    apply_and_track(p, w)
    assert parse(m.render())["bpfproxy_sync_failures_total"] == 1
    assert parse(m.render())["kubeproxy_network_programming_duration_seconds_count"] == 1
    c.t += 1
    wall.t += 1
    p.runner.tick()
    s = parse(m.render())
    assert s["kubeproxy_network_programming_duration_seconds_count"] == 2
    assert s["kubeproxy_network_programming_duration_seconds_sum"] == pytest.approx(2.5 + 2.0)


def test_frontend_stats_labels() -> None:
    p, w, _, _, m = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    p.on_synced("Service")
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)
    reads: list[int] = []

    def counters(svc_id: int) -> tuple[int, int]:
        reads.append(svc_id)
        return 7 * svc_id, 700 * svc_id

    m.add_frontend_stats(lambda: p.frontend_stats(counters))
    s = parse(m.render())
    assert s['bpfproxy_service_packets_total{service_name="default/web:http/TCP",frontend="10.96.0.10:80/TCP"}'] == 7
    assert s['bpfproxy_service_bytes_total{service_name="default/web:http/TCP",frontend="10.96.0.10:80/TCP"}'] == 700
    assert reads == [1]  # one map read per scrape for both families
    assert FrontendStat("a", "b", 1, 2).bytes == 2


def test_frontend_stats_read_outside_the_sync_lock_and_follow_changes() -> None:
    p, w, c, _, m = make()
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    p.on_synced("Service")
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)
    lock_free: list[bool] = []

    def counters(svc_id: int) -> tuple[int, int]:
        free = p.locked().acquire(blocking=False)  # a sync could run while the map is read
        if free:
            p.locked().release()
        lock_free.append(free)
        return 1, 2

    m.add_frontend_stats(lambda: p.frontend_stats(counters))
    assert 'frontend="10.96.0.10:80/TCP"' in m.render()
    assert lock_free == [True]
    # the service moves to another address: the old frontend's row goes, the new one appears
    p.on_object("Service", "default/web", service(ip="10.96.0.20"))
    c.t += 5
    apply_and_track(p, w)
    text = m.render()
    assert 'frontend="10.96.0.20:80/TCP"} 1' in text and "10.96.0.10" not in text
    # label values are escaped once and kept
    p.on_object("Service", 'default/we"b', service('we"b', ip="10.96.0.30"))
    c.t += 5
    apply_and_track(p, w)
    assert 'service_name="default/we\\"b:http/TCP"' in m.render()


def test_metrics_over_http() -> None:
    m = ProxierMetrics()
    m.sync_failures.inc()
    server = HttpServer("127.0.0.1:0", metrics_routes(m), name="metrics")
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == CONTENT_TYPE
            assert parse(resp.read().decode())["bpfproxy_sync_failures_total"] == 1
        with urllib.request.urlopen(f"http://{host}:{port}/proxyMode", timeout=5) as resp:
            assert resp.read() == b"ebpf"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{host}:{port}/nope", timeout=5)
        assert err.value.code == 404
    finally:
        server.close()


def test_parse_bind_address() -> None:
    assert parse_bind_address("127.0.0.1:10249") == ("127.0.0.1", 10249)
    assert parse_bind_address(":10256") == ("0.0.0.0", 10256)
    assert parse_bind_address("[::1]:9") == ("::1", 9)
    for bad in ("10249", "host:", "h:99999"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_bind_address(bad)
