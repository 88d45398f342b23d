"""Health: kube-proxy's /healthz and /livez semantics, over real HTTP, and as the proxier drives it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from bpfproxy.controller.health import ProxierHealth
from bpfproxy.controller.metrics import HttpServer
from bpfproxy.controller.proxier import Proxier
from kobj import service, slice_
from test_metrics import Wall
from test_proxier import FakeClock, FakeWriter, apply_and_track

TIMEOUT = 60.0


def status(h: ProxierHealth) -> tuple[int, int]:
    return h.healthz()[0], h.livez()[0]


def test_semantics_table() -> None:
    wall = Wall()
    h = ProxierHealth(TIMEOUT, clock=wall)
    # starting up: healthy even with an update queued and nothing synced yet
    h.queued_update()
    wall.t += 1000
    assert status(h) == (200, 200)
    h.updated()
    assert status(h) == (200, 200)
    # queued, not yet late
    h.queued_update()
    wall.t += TIMEOUT - 1
    assert status(h) == (200, 200)
    # a later queued update does not restart the timeout
    h.queued_update()
    wall.t += 1
    assert status(h) == (503, 503)
    _, ctype, body = h.livez()
    doc = json.loads(body)
    assert ctype == "application/json" and doc["lastUpdated"] < doc["currentTime"] and "nodeEligible" not in doc
    # a successful sync clears it
    h.updated()
    assert status(h) == (200, 200)
    # nothing queued: healthy however long since the last sync
    wall.t += 10 * TIMEOUT
    assert status(h) == (200, 200)
    doc = json.loads(h.healthz()[2])
    assert doc["lastUpdated"] == doc["currentTime"] and doc["nodeEligible"] is True
    # the node is being deleted: /healthz fails, /livez does not
    h.sync_node({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler"}]}})
    assert status(h) == (503, 200) and json.loads(h.healthz()[2])["nodeEligible"] is False
    h.sync_node({"metadata": {"name": "n1"}, "spec": {}})
    assert status(h) == (200, 200)
    h.sync_node({"metadata": {"name": "n1", "deletionTimestamp": "2024-01-01T00:00:00Z"}})
    assert status(h) == (503, 200)
    assert h.healthz_total.value(("503",)) == 4 and h.livez_total.value(("200",)) >= 1


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_endpoints() -> None:
    wall = Wall()
    h = ProxierHealth(TIMEOUT, clock=wall)
    server = HttpServer("127.0.0.1:0", h.routes(), name="healthz")
    try:
        host, port = server.address
        base = f"http://{host}:{port}"
        h.updated()
        code, doc = get(base + "/healthz")
        assert code == 200 and set(doc) == {"lastUpdated", "currentTime", "nodeEligible"}
        h.queued_update()
        wall.t += TIMEOUT
        assert get(base + "/healthz")[0] == 503 and get(base + "/livez")[0] == 503
    finally:
        server.close()


def test_proxier_drives_health() -> None:
    w, c, wall = FakeWriter(), FakeClock(), Wall()
    h = ProxierHealth(TIMEOUT, clock=wall)
    p = Proxier(w, min_sync_period=1.0, max_sync_period=30.0, clock=c, wall=wall, health=h,
                node=None)
    h.updated()  # what run() does when the loop starts
    p.on_object("Service", "default/web", service())
    p.on_object("EndpointSlice", "default/web-abc", slice_())
    wall.t += TIMEOUT  # sources never synced: the queued change is late
    assert h.is_healthy()[0] is False
    p.on_synced("Service")
    p.on_synced("EndpointSlice")
    apply_and_track(p, w)
    assert h.is_healthy()[0] is True
    # writes keep failing: unhealthy once the change waited health_timeout
    c.t += 2
    p.on_object("Service", "default/api", service("api", ip="10.96.0.11"))
    for _ in range(3):
        w.fail_next = True
        c.t += 1
        wall.t += TIMEOUT / 2
        p.runner.tick()
    assert p.counters.failures >= 2 and h.is_healthy()[0] is False
    c.t += 1
    p.runner.tick()
    assert h.is_healthy()[0] is True


def test_serve_endpoints_both_servers_and_a_bad_address_is_left_out() -> None:
    from bpfproxy.controller.health import serve_endpoints
    from bpfproxy.controller.metrics import ProxierMetrics

    m, h = ProxierMetrics(), ProxierHealth(TIMEOUT)
    servers = serve_endpoints(metrics=m, health=h, metrics_bind="127.0.0.1:0", healthz_bind="127.0.0.1:0")
    try:
        assert [s.name for s in servers] == ["metrics", "healthz"]
        host, port = servers[1].address
        assert get(f"http://{host}:{port}/livez")[0] == 200
        host, port = servers[0].address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            assert 'kubeproxy_proxy_livez_total{code="200"} 1' in resp.read().decode()
    finally:
        for s in servers:
            s.close()
    m2, h2 = ProxierMetrics(), ProxierHealth(TIMEOUT)
    assert serve_endpoints(metrics=m2, health=h2, metrics_bind="nonsense", healthz_bind="") == []
