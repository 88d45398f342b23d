"""KubeSource through the real `kubernetes` client against the fake API server: list, watch, 410, outages."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest
from bpfproxy.controller.source import KIND_ENDPOINT_SLICE, KIND_NODE, KIND_SERVICE
from bpfproxy.controller.source_kube import PROXY_LABEL_SELECTOR, list_objects
from kube.fakeapi import FakeApiServer
from kube.recorder import Recorder, Running
from unit.kobj import endpoint, service, slice_

Start = Callable[..., Running]


def node(name: str, zone: str = "z1") -> dict[str, Any]:
    """A v1 Node dict with a zone label."""
    labels = {"topology.kubernetes.io/zone": zone}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def labelled(obj: dict[str, Any], **labels: str) -> dict[str, Any]:
    """obj with extra metadata.labels (keys given with _ for / and - unchanged)."""
    obj["metadata"].setdefault("labels", {}).update(labels)
    return obj


def web(fake: FakeApiServer, *names: str) -> None:
    """A service and one slice (svc-1) per name."""
    for i, name in enumerate(names):
        fake.apply(service(name, ip=f"10.96.0.{10 + i}"))
        fake.apply(slice_(f"{name}-1", svc=name, endpoints=[endpoint(f"10.0.{i}.1"), endpoint(f"10.0.{i}.2")]))


def keys(*names: str) -> set[str]:
    """default/NAME keys."""
    return {f"default/{n}" for n in names}


# initial list, events, selectors


def test_initial_list_reports_every_object_then_synced(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a", "b")
    rec = Recorder()
    start(rec)
    rec.wait(lambda: {KIND_SERVICE, KIND_ENDPOINT_SLICE} <= set(rec.synced), "both kinds synced")
    assert rec.keys(KIND_SERVICE) == keys("a", "b")
    assert rec.keys(KIND_ENDPOINT_SLICE) == keys("a-1", "b-1")
    # each kind is announced synced only after its listed objects were reported
    for kind in (KIND_SERVICE, KIND_ENDPOINT_SLICE):
        reported = [i for i, c in enumerate(rec.calls) if c[0] == kind]
        assert max(reported) < rec.synced_at[kind]
    # the list items lack kind/apiVersion on the wire: the source sets them, as in YAML
    svc = rec.view[KIND_SERVICE]["default/a"]
    assert (svc["kind"], svc["apiVersion"]) == ("Service", "v1")
    eps = rec.view[KIND_ENDPOINT_SLICE]["default/a-1"]
    assert (eps["kind"], eps["apiVersion"]) == ("EndpointSlice", "discovery.k8s.io/v1")
    assert [e["addresses"] for e in eps["endpoints"]] == [["10.0.0.1"], ["10.0.0.2"]]
    # no node name: the Node kind is complete with nothing in it, and never asked for
    assert KIND_NODE in rec.synced
    assert fake.list_requests(KIND_NODE) == []


def test_add_modify_delete_propagate(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a")
    rec = Recorder()
    start(rec)
    rec.wait_keys(KIND_SERVICE, keys("a"))
    fake.wait_watching(2)

    rv = fake.apply(service("b", ip="10.96.0.99"))
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))
    assert rec.view[KIND_SERVICE]["default/b"]["metadata"]["resourceVersion"] == str(rv)
    assert rec.view[KIND_SERVICE]["default/b"]["kind"] == "Service"

    fake.apply(slice_("a-1", svc="a", endpoints=[endpoint("10.0.0.7")]))
    rec.wait(
        lambda: [e["addresses"][0] for e in rec.view[KIND_ENDPOINT_SLICE]["default/a-1"]["endpoints"]] == ["10.0.0.7"],
        "endpoint change",
    )
    fake.delete(KIND_SERVICE, "default", "a")
    rec.wait_keys(KIND_SERVICE, keys("b"))
    assert rec.calls[-1] == (KIND_SERVICE, "default/a", None)


def test_label_selector_excludes_other_proxies_and_headless(fake: FakeApiServer, start: Start) -> None:
    web(fake, "plain")
    fake.apply(labelled(service("other", ip="10.96.1.1"), **{"service.kubernetes.io/service-proxy-name": "x"}))
    fake.apply(labelled(service("headless", ip=None), **{"service.kubernetes.io/headless": ""}))
    fake.apply(labelled(slice_("headless-1", svc="headless"), **{"service.kubernetes.io/headless": ""}))
    fake.apply(labelled(slice_("other-1", svc="other"), **{"service.kubernetes.io/service-proxy-name": "x"}))
    rec = Recorder()
    run = start(rec)
    rec.wait(lambda: {KIND_SERVICE, KIND_ENDPOINT_SLICE} <= set(rec.synced), "synced")
    fake.wait_watching(2)
    # a label added later makes an object leave the selection (the watch says DELETED), removed: come back
    fake.apply(service("late", ip="10.96.1.2"))
    rec.wait_keys(KIND_SERVICE, keys("plain", "late"))
    fake.apply(labelled(service("late", ip="10.96.1.2"), **{"service.kubernetes.io/headless": ""}))
    rec.wait_keys(KIND_SERVICE, keys("plain"))
    fake.apply(service("other", ip="10.96.1.1"))
    rec.wait_keys(KIND_SERVICE, keys("plain", "other"))
    assert rec.keys(KIND_ENDPOINT_SLICE) == keys("plain-1")
    for kind in (KIND_SERVICE, KIND_ENDPOINT_SLICE):
        for req in fake.list_requests(kind) + fake.watch_requests(kind):
            assert req.params["labelSelector"] == PROXY_LABEL_SELECTOR
    assert PROXY_LABEL_SELECTOR == "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    watch = fake.watch_requests(KIND_SERVICE)[0].params
    assert watch["allowWatchBookmarks"] == "true"
    assert int(watch["timeoutSeconds"]) == run.source.server_timeout


def test_node_object_only_for_node_name(fake: FakeApiServer, start: Start) -> None:
    fake.apply(node("n1", "zone-a"))
    fake.apply(node("n2", "zone-b"))
    rec = Recorder()
    start(rec, node_name="n1")
    rec.wait(lambda: KIND_NODE in rec.synced, "node synced")
    assert rec.keys(KIND_NODE) == {"n1"}
    fake.wait_watching(3)
    fake.apply(node("n1", "zone-c"))
    fake.apply(node("n2", "zone-d"))
    rec.wait(
        lambda: rec.view[KIND_NODE]["n1"]["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-c",
        "zone label change",
    )
    assert rec.keys(KIND_NODE) == {"n1"}
    assert rec.view[KIND_NODE]["n1"]["kind"] == "Node"
    assert all(r.params["fieldSelector"] == "metadata.name=n1" for r in fake.watch_requests(KIND_NODE))


def test_list_is_paginated(fake: FakeApiServer, start: Start) -> None:
    fake.max_page = 3
    web(fake, *(f"s{i}" for i in range(10)))
    rec = Recorder()
    start(rec)
    rec.wait(lambda: KIND_SERVICE in rec.synced, "synced")
    assert rec.keys(KIND_SERVICE) == keys(*(f"s{i}" for i in range(10)))
    pages = fake.list_requests(KIND_SERVICE)
    assert len(pages) == 4
    assert "continue" not in pages[0].params and all("continue" in p.params for p in pages[1:])


def test_fake_updates_after_a_list_keep_the_list_sorted_and_current(fake: FakeApiServer, start: Start) -> None:
    # the fake replaces an updated object in its sorted list cache in place (by a key -> index map)
    web(fake, "b", "a", "c")
    rec = Recorder()
    start(rec, node_name="")
    rec.wait(lambda: KIND_SERVICE in rec.synced, "synced")
    fake.apply(service("b", ip="10.96.1.1"))
    fake.apply(service("d", ip="10.96.1.2"))
    fake.apply(service("a", ip="10.96.1.3"))
    rec2 = Recorder()
    start(rec2, node_name="")
    rec2.wait(lambda: KIND_SERVICE in rec2.synced, "synced")
    listed = [key for kind, key, _ in rec2.calls[: rec2.synced_at[KIND_SERVICE]] if kind == KIND_SERVICE]
    assert listed == ["default/a", "default/b", "default/c", "default/d"]
    assert gc.isenabled()  # lists pause the collector (and freeze what they built), never leave it off
    ips = {key: obj["spec"]["clusterIP"] for key, obj in rec2.view[KIND_SERVICE].items()}
    assert ips == {"default/a": "10.96.1.3", "default/b": "10.96.1.1", "default/c": "10.96.0.12",
                   "default/d": "10.96.1.2"}


def test_expired_continue_token_restarts_the_list(fake: FakeApiServer, start: Start) -> None:
    fake.max_page = 3
    web(fake, *(f"s{i}" for i in range(7)))

    done = []

    def compact_while_listing(kind: str, key: str) -> None:
        # runs in the source's thread after page 1 arrived: its continue token is now too old
        if kind == KIND_SERVICE and not done:
            done.append(key)
            fake.delete(KIND_SERVICE, "default", "s6")
            fake.compact()

    rec = Recorder(hook=compact_while_listing)
    start(rec, node_name="")
    rec.wait(lambda: {KIND_SERVICE, KIND_ENDPOINT_SLICE} <= set(rec.synced), "synced")
    assert rec.keys(KIND_SERVICE) == keys(*(f"s{i}" for i in range(6)))
    assert any(r.status == 410 for r in fake.list_requests(KIND_SERVICE))


def test_one_shot_list_objects(fake: FakeApiServer, kubeconfig: str) -> None:
    web(fake, "a")
    fake.apply(node("n1"))
    rec = Recorder()
    list_objects(rec, kubeconfig=kubeconfig, node_name="n1")
    assert set(rec.synced) == {KIND_SERVICE, KIND_ENDPOINT_SLICE, KIND_NODE}
    assert rec.keys(KIND_SERVICE) == keys("a") and rec.keys(KIND_NODE) == {"n1"}
    assert fake.watch_requests(KIND_SERVICE) == []


def test_one_shot_list_objects_fails_clearly(fake: FakeApiServer, kubeconfig: str) -> None:
    fake.fail_requests(403, count=10)
    with pytest.raises(RuntimeError, match="cannot list Service: HTTP 403"):
        list_objects(Recorder(), kubeconfig=kubeconfig)


# bookmarks, timeouts, reconnects


def test_bookmark_advances_resource_version_so_no_relist(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a")
    rec = Recorder()
    run = start(rec)
    rec.wait(lambda: KIND_ENDPOINT_SLICE in rec.synced, "synced")
    fake.wait_watching(2)
    for i in range(5):  # Services move the global resourceVersion; the slice watch sees none of it
        fake.apply(service(f"x{i}", ip=f"10.96.2.{i}"))
    rec.wait(lambda: len(rec.keys(KIND_SERVICE)) == 6, "services")
    current = fake.rv
    fake.bookmark()
    rec.wait(lambda: run.counters(KIND_ENDPOINT_SLICE)["bookmarks"] >= 1, "bookmark received")
    # history is gone: a watch from the listed RV would get 410; from the bookmark's RV it does not
    fake.compact()
    fake.drop_connections()
    rec.wait(lambda: len(fake.watch_requests(KIND_ENDPOINT_SLICE)) >= 2, "slice re-watch")
    fake.wait_watching(2)
    fake.apply(slice_("a-1", svc="a", endpoints=[endpoint("10.0.0.9")]))
    rec.wait(lambda: rec.view[KIND_ENDPOINT_SLICE]["default/a-1"]["endpoints"][0]["addresses"] == ["10.0.0.9"], "ev")
    assert fake.watch_requests(KIND_ENDPOINT_SLICE)[1].params["resourceVersion"] == str(current)
    assert len(fake.list_requests(KIND_ENDPOINT_SLICE)) == 1
    assert run.counters(KIND_ENDPOINT_SLICE)["relists"] == 0


def test_server_timeout_rewatches_from_last_version(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a")
    rec = Recorder()
    run = start(rec, server_timeout=1)
    rec.wait(lambda: len(fake.watch_requests(KIND_SERVICE)) >= 3, "three watches of 1 s", timeout=15)
    fake.apply(service("b", ip="10.96.0.50"))
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))
    assert len(fake.list_requests(KIND_SERVICE)) == 1
    counters = run.counters(KIND_SERVICE)
    assert counters["errors"] == 0 and counters["relists"] == 0
    versions = [int(r.params["resourceVersion"]) for r in fake.watch_requests(KIND_SERVICE)]
    assert versions == sorted(versions)


def test_dropped_connections_reconnect_and_converge(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a", "b")
    rec = Recorder()
    run = start(rec)
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))
    fake.wait_watching(2)
    fake.drop_connections()
    fake.delete(KIND_SERVICE, "default", "a")
    fake.apply(service("c", ip="10.96.0.60"))
    rec.wait_keys(KIND_SERVICE, keys("b", "c"))
    assert run.counters(KIND_SERVICE)["errors"] >= 1
    assert len(fake.list_requests(KIND_SERVICE)) == 1  # history intact: resumed, not relisted


def test_server_errors_back_off_and_recover(fake: FakeApiServer, start: Start) -> None:
    fake.fail_requests(500, count=2)  # the first lists fail too
    web(fake, "a")
    rec = Recorder()
    run = start(rec)
    rec.wait(lambda: {KIND_SERVICE, KIND_ENDPOINT_SLICE} <= set(rec.synced), "synced after 500s")
    fake.wait_watching(2)
    fake.fail_requests(503, count=4, watch_only=True)
    fake.drop_connections()
    fake.apply(service("b", ip="10.96.0.70"))
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))
    statuses = [r.status for r in fake.requests]
    assert statuses.count(500) == 2 and statuses.count(503) == 4
    total_errors = run.counters(KIND_SERVICE)["errors"] + run.counters(KIND_ENDPOINT_SLICE)["errors"]
    assert total_errors >= 2 + 4 + 2


def test_in_stream_error_other_than_410_resumes_without_relist(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a")
    rec = Recorder()
    run = start(rec)
    rec.wait(lambda: KIND_SERVICE in rec.synced, "synced")
    fake.wait_watching(2)
    fake.inject_error_event(500)
    rec.wait(lambda: len(fake.watch_requests(KIND_SERVICE)) >= 2, "re-watch")
    fake.apply(service("b", ip="10.96.0.80"))
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))
    assert len(fake.list_requests(KIND_SERVICE)) == 1
    assert run.counters(KIND_SERVICE)["errors"] >= 1


# 410 Gone and outages


@pytest.mark.parametrize("gone_as", ["http", "event"])
def test_410_relists_and_reports_objects_deleted_while_down(fake: FakeApiServer, start: Start, gone_as: str) -> None:
    fake.set_error_mode(gone_as=gone_as)
    web(fake, "keep", "gone", "changed")
    rec = Recorder()
    run = start(rec)
    rec.wait_keys(KIND_SERVICE, keys("keep", "gone", "changed"))
    fake.wait_watching(2)
    fake.stop()  # the API server goes away
    fake.delete(KIND_SERVICE, "default", "gone")
    fake.delete(KIND_ENDPOINT_SLICE, "default", "gone-1")
    fake.apply(service("changed", ip="10.96.9.9"))
    fake.apply(service("new", ip="10.96.9.10"))
    fake.compact()  # ... and comes back with the history compacted past our resourceVersion
    calls_before = len(rec.calls)
    fake.start()
    rec.wait_keys(KIND_SERVICE, keys("keep", "changed", "new"))
    rec.wait_keys(KIND_ENDPOINT_SLICE, keys("keep-1", "changed-1"))
    assert rec.view[KIND_SERVICE]["default/changed"]["spec"]["clusterIP"] == "10.96.9.9"
    assert run.counters(KIND_SERVICE)["relists"] == 1
    assert len(fake.list_requests(KIND_SERVICE)) == 2
    refused = [r for r in fake.watch_requests(KIND_SERVICE) if r.params.get("resourceVersion")]
    if gone_as == "http":
        assert any(r.status == 410 for r in refused)
    # only what changed is reported again: unchanged objects are skipped by resourceVersion
    after = rec.calls[calls_before:]
    assert sorted((k, key) for k, key, _ in after if k == KIND_SERVICE) == [
        (KIND_SERVICE, "default/changed"), (KIND_SERVICE, "default/gone"), (KIND_SERVICE, "default/new"),
    ]  # fmt: skip
    assert (KIND_SERVICE, "default/gone", None) in after


def test_410_error_event_on_an_open_watch_relists(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a")
    rec = Recorder()
    run = start(rec)
    rec.wait(lambda: KIND_SERVICE in rec.synced, "synced")
    fake.wait_watching(2)
    fake.inject_error_event(410)
    rec.wait(lambda: run.counters(KIND_SERVICE)["relists"] == 1, "relist")
    rec.wait(lambda: len(fake.list_requests(KIND_SERVICE)) == 2, "second list")
    fake.apply(service("b", ip="10.96.0.90"))
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))


def test_api_server_restart_without_compaction_converges_by_watch(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a", "b")
    rec = Recorder()
    run = start(rec)
    rec.wait_keys(KIND_SERVICE, keys("a", "b"))
    fake.wait_watching(2)
    fake.stop()
    fake.delete(KIND_SERVICE, "default", "a")
    fake.apply(service("c", ip="10.96.0.61"))
    fake.start()
    rec.wait_keys(KIND_SERVICE, keys("b", "c"))
    assert run.counters(KIND_SERVICE)["relists"] == 0
    assert len(fake.list_requests(KIND_SERVICE)) == 1
    assert (KIND_SERVICE, "default/a", None) in rec.calls


def test_stop_returns_while_a_long_watch_is_open(fake: FakeApiServer, start: Start) -> None:
    web(fake, "a")
    rec = Recorder()
    run = start(rec, server_timeout=300, node_name="")
    rec.wait(lambda: KIND_SERVICE in rec.synced, "synced")
    fake.wait_watching(2)
    run.stop()  # fails if run() has not returned within its join timeout
    assert not any(t.name.startswith("kube-") and t.is_alive() for t in threading.enumerate())
