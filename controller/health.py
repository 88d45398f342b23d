"""Proxier health as kube-proxy reports it: /healthz and /livez on --healthz-bind-address.

Place in the data flow: beside the sync. The proxier calls `queued_update()` whenever an event
asks for a sync and `updated()` after every successful sync (and once when its loop starts).
Like kube-proxy's ProxyHealthServer, the proxier is unhealthy when a queued update has waited
longer than health_timeout (kube-proxy: 2 x its sync period; here 2 x the full-sync period)
without a successful sync; it is healthy while starting up and whenever nothing is pending.
/healthz is also unhealthy when this node is being deleted (deletionTimestamp set, or the cluster
autoscaler's ToBeDeletedByClusterAutoscaler taint); /livez ignores the node. Both answer JSON
{"lastUpdated": ..., "currentTime": ...} (RFC 3339 times), /healthz with "nodeEligible" too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bpfproxy.controller.metrics import Counter, HttpServer, ProxierMetrics, Route, metrics_routes

log = logging.getLogger(__name__)

#: taint the cluster autoscaler puts on a node before deleting it
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"


def rfc3339(seconds: float) -> str:
    """A wall-clock time as RFC 3339 with nanosecond-style fraction, UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProxierHealth:
    """Timestamps of queued and completed syncs, and whether the node is eligible."""

    def __init__(self, health_timeout: float, *, clock: Callable[[], float] = time.time) -> None:
        self.health_timeout = health_timeout
        """seconds a queued update may wait for a successful sync"""
        self.clock = clock
        """wall clock in seconds (injectable for tests)"""
        self._lock = threading.Lock()
        self._last_updated: float | None = None
        self._oldest_pending: float | None = None
        self._node_eligible = True
        self.healthz_total = Counter("kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status",
                                     ["code"])
        """/healthz answers by status code"""
        self.livez_total = Counter("kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", ["code"])
        """/livez answers by status code"""

    def updated(self) -> None:
        """The maps reflect every change queued so far (a sync succeeded)."""
        with self._lock:
            self._oldest_pending = None
            self._last_updated = self.clock()

    def queued_update(self) -> None:
        """A change arrived that a sync must write; starts the timeout unless one is running."""
        with self._lock:
            if self._oldest_pending is None:
                self._oldest_pending = self.clock()

    def sync_node(self, node: Mapping[str, Any] | None) -> None:
        """Track this node's Node object: ineligible while being deleted or once deleted (None)."""
        with self._lock:
            self._node_eligible = _node_eligible(node)

    @property
    def node_eligible(self) -> bool:
        """False when this node is being deleted."""
        return self._node_eligible

    def is_healthy(self) -> tuple[bool, float | None]:
        """(healthy, last successful sync time), ignoring the node."""
        with self._lock:
            last, pending = self._last_updated, self._oldest_pending
        if last is None or pending is None:
            # starting up, or fully synced
            return True, last
        return self.clock() - pending < self.health_timeout, last

    def _answer(self, *, with_node: bool) -> tuple[int, str, str]:
        healthy, last = self.is_healthy()
        now = self.clock()
        eligible = self.node_eligible
        if with_node:
            healthy = healthy and eligible
        # as kube-proxy: a healthy answer reports lastUpdated = now
        body: dict[str, Any] = {
            "lastUpdated": rfc3339(now if healthy or last is None else last),
            "currentTime": rfc3339(now),
        }
        if with_node:
            body["nodeEligible"] = eligible
        code = 200 if healthy else 503
        (self.healthz_total if with_node else self.livez_total).inc(labels=(str(code),))
        return code, "application/json", json.dumps(body)

    def healthz(self) -> tuple[int, str, str]:
        """(status, content type, body) of /healthz."""
        return self._answer(with_node=True)

    def livez(self) -> tuple[int, str, str]:
        """(status, content type, body) of /livez."""
        return self._answer(with_node=False)

    def routes(self) -> dict[str, Route]:
        """/healthz and /livez for metrics.HttpServer."""
        return {"/healthz": self.healthz, "/livez": self.livez}


def _node_eligible(node: Mapping[str, Any] | None) -> bool:
    if node is None:
        return False
    meta = node.get("metadata") or {}
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return False
    spec = node.get("spec") or {}
    taints = spec.get("taints") if isinstance(spec, Mapping) else None
    if isinstance(taints, list):
        return not any(isinstance(t, Mapping) and t.get("key") == TO_BE_DELETED_TAINT for t in taints)
    return True


def serve_endpoints(
    *, metrics: ProxierMetrics, health: ProxierHealth, metrics_bind: str, healthz_bind: str
) -> list[HttpServer]:
    """Start the metrics server (/metrics, /proxyMode) and the health server (/healthz, /livez).

    An empty bind address disables that server (as in kube-proxy). A server that cannot bind is
    logged as an error and left out: the agent keeps programming the datapath without it.
    """
    metrics.registry.register(health.healthz_total)
    metrics.registry.register(health.livez_total)
    servers = []
    for bind, routes, name in ((metrics_bind, metrics_routes(metrics), "metrics"),
                               (healthz_bind, health.routes(), "healthz")):
        if not bind:
            continue
        try:
            servers.append(HttpServer(bind, routes, name=name))
        except (OSError, ValueError) as e:
            log.error("cannot serve %s address=%s error=%s; continuing without it", name, bind, e)
    return servers
