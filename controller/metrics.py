"""Prometheus metrics of the proxier, kube-proxy names where kube-proxy has one, served over HTTP.

Place in the data flow: beside the sync. The proxier records into `ProxierMetrics` (sync
durations, network programming latency, changes, failures); gauges of what is programmed and
how full the maps are, and per-frontend packet/byte counters from bpx_svcstat_v1, are computed
when scraped. `serve_http()` runs the small threaded HTTP server that both the metrics endpoint
(--metrics-bind-address, /metrics) and the health endpoints (health.py) use. A tiny registry of
our own renders the text exposition format 0.0.4; no client library is needed.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

#: Content-Type of the text exposition format
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]
"""label values in the order of the family's label names"""


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """count upper bounds start, start*factor, ... (prometheus.ExponentialBuckets)."""
    return tuple(start * factor**i for i in range(count))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Family:
    """One metric family: name, help, type and label names; subclasses hold the values."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def samples(self) -> Iterable[tuple[str, str, float]]:
        """(sample name, rendered labels, value) rows."""
        return ()

    def render(self) -> str:
        """The family in text exposition format."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{name}{labels} {_fmt(value)}" for name, labels, value in self.samples()]
        return "\n".join(lines) + "\n"


class _Valued(Family):
    """A family holding one float per label set (what counters and gauges share)."""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {} if labelnames else {(): 0.0}

    def value(self, labels: Labels = ()) -> float:
        """The current value of labels (0 when never set)."""
        return self._values.get(labels, 0.0)

    def samples(self) -> Iterable[tuple[str, str, float]]:
        with self._lock:
            items = sorted(self._values.items())
        return [(self.name, _labels(self.labelnames, k), v) for k, v in items]


class Counter(_Valued):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def inc(self, amount: float = 1.0, labels: Labels = ()) -> None:
        """Add amount (>= 0) to the value of labels."""
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount


class Gauge(_Valued):
    """A value that goes up and down, per label set."""

    kind = "gauge"

    def set(self, value: float, labels: Labels = ()) -> None:
        """Set the value of labels."""
        with self._lock:
            self._values[labels] = value


class Histogram(Family):
    """Observations counted into cumulative buckets (no labels)."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * len(self.buckets)
        self.count = 0
        """observations so far"""
        self.sum = 0.0
        """sum of the observations"""

    def observe(self, value: float) -> None:
        """Count one observation."""
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
                    break
            self.count += 1
            self.sum += value

    def samples(self) -> Iterable[tuple[str, str, float]]:
        with self._lock:
            counts, total, count = list(self._counts), self.sum, self.count
        out = []
        cumulative = 0
        for bound, n in zip(self.buckets, counts, strict=True):
            cumulative += n
            out.append((f"{self.name}_bucket", f'{{le="{_fmt(bound)}"}}', float(cumulative)))
        out.append((f"{self.name}_bucket", '{le="+Inf"}', float(count)))
        out.append((f"{self.name}_sum", "", total))
        out.append((f"{self.name}_count", "", float(count)))
        return out


class Collected(Family):
    """Values computed by a function at scrape time: fn() -> {label values: value}."""

    def __init__(
        self, name: str, help: str, kind: str, fn: Callable[[], Mapping[Labels, float]], labelnames: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help, labelnames)
        self.kind = kind
        self.fn = fn

    def samples(self) -> Iterable[tuple[str, str, float]]:
        try:
            values = self.fn()
        except Exception:
            log.exception("metric collection failed metric=%s", self.name)
            return []
        return [(self.name, _labels(self.labelnames, k), v) for k, v in sorted(values.items())]


class _Rows(Family):
    """Integer samples with pre-rendered label text, computed at scrape time: fn() -> [(labels text, value)]."""

    def __init__(self, name: str, help: str, kind: str, fn: Callable[[], Sequence[tuple[str, int]]]) -> None:
        super().__init__(name, help)
        self.kind = kind
        self.fn = fn

    def _rows(self) -> Sequence[tuple[str, int]]:
        try:
            return self.fn()
        except Exception:
            log.exception("metric collection failed metric=%s", self.name)
            return []

    def samples(self) -> Iterable[tuple[str, str, float]]:
        name = self.name
        return [(name, text, float(value)) for text, value in self._rows()]

    def render(self) -> str:
        name = self.name
        lines = [f"# HELP {name} {self.help}", f"# TYPE {name} {self.kind}"]
        lines += [f"{name}{text} {value}" for text, value in self._rows()]
        return "\n".join(lines) + "\n"


class FrontendLabels:
    """The {service_name="…",frontend="…"} text of each frontend, built once and kept (a few MB at 10k).

    Entries of frontends that went away are dropped when the cache grows past twice what one
    scrape used, so it never holds more than about two generations of names.
    """

    def __init__(self) -> None:
        self._text: dict[tuple[str, str], str] = {}
        self._used = 0

    def text(self, name: str, frontend: str) -> str:
        """The label text of (service name, frontend)."""
        key = (name, frontend)
        found = self._text.get(key)
        if found is None:
            if len(self._text) > 2 * max(self._used, 1024):
                self._text.clear()
            found = self._text[key] = _labels(("service_name", "frontend"), key)
        return found

    def used(self, count: int) -> None:
        """Note how many frontends one scrape rendered (bounds the cache)."""
        self._used = count


class Registry:
    """An ordered set of families rendered together."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def register(self, family: Family) -> Family:
        """Add a family (names must be unique); returns it."""
        if family.name in self._families:
            raise ValueError(f"metric {family.name} registered twice")
        self._families[family.name] = family
        return family

    def get(self, name: str) -> Family:
        """The family called name."""
        return self._families[name]

    def render(self) -> str:
        """Every family in text exposition format."""
        return "".join(f.render() for f in self._families.values())


#: kube-proxy's sync duration buckets (1 ms .. ~16 s)
SYNC_BUCKETS = exponential_buckets(0.001, 2, 15)
#: kube-proxy's network programming latency buckets (1 ms .. ~17 min)
PROGRAMMING_BUCKETS = exponential_buckets(0.001, 2, 20)


@dataclass(frozen=True)
class FrontendStat:
    """Packets and bytes a frontend forwarded (all CPUs)."""

    name: str
    """ "ns/name:port/proto" """
    frontend: str
    """ "IP:port/proto" """
    packets: int
    """packets (new and established flows)"""
    bytes: int
    """bytes"""


class ProxierMetrics:
    """Every metric of the agent; the proxier records into it, gauges are read from callbacks."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", SYNC_BUCKETS)
        self.full_sync_duration = Histogram(
            "kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs",
            SYNC_BUCKETS)
        self.partial_sync_duration = Histogram(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs", SYNC_BUCKETS)
        self.programming_latency = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds (from the EndpointSlice "
            "endpoints.kubernetes.io/last-change-trigger-time annotation to the end of the map writes)",
            PROGRAMMING_BUCKETS)
        self.last_sync = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced")
        self.last_queued = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued")
        self.endpoint_changes = Counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total", "Cumulative proxy rules Endpoint changes")
        self.service_changes = Counter(
            "kubeproxy_sync_proxy_rules_service_changes_total", "Cumulative proxy rules Service changes")
        self.sync_failures = Counter(
            "bpfproxy_sync_failures_total", "Syncs whose map writes failed (a full resync from the maps follows)")
        self.map_writes = Counter("bpfproxy_map_writes_total", "Map entries written or deleted by syncs")
        for family in (self.sync_duration, self.full_sync_duration, self.partial_sync_duration,
                       self.programming_latency, self.last_sync, self.last_queued, self.endpoint_changes,
                       self.service_changes, self.sync_failures, self.map_writes):
            r.register(family)

    def collect(self, name: str, help: str, kind: str, fn: Callable[[], Mapping[Labels, float]],
                labelnames: Sequence[str] = ()) -> None:
        """Register a family computed at scrape time."""
        self.registry.register(Collected(name, help, kind, fn, labelnames))

    def add_frontend_stats(self, read: Callable[[], Iterable[FrontendStat]]) -> None:
        """Per-frontend packet and byte counters, read (e.g. from bpx_svcstat_v1) once per scrape.

        At 10k frontends these are most of a scrape: the label text of each frontend is built once
        and kept (FrontendLabels), and the packets family reads the map while bytes reuses that read.
        """
        cache: dict[str, list[FrontendStat]] = {}
        lock = threading.Lock()
        labels = FrontendLabels()

        def rows(field: str) -> list[tuple[str, int]]:
            with lock:
                if field == "packets" or "rows" not in cache:
                    cache["rows"] = list(read())
                stats = cache["rows"]
            labels.used(len(stats))
            text = labels.text
            if field == "packets":
                return [(text(s.name, s.frontend), s.packets) for s in stats]
            return [(text(s.name, s.frontend), s.bytes) for s in stats]

        self.registry.register(_Rows("bpfproxy_service_packets_total", "Packets forwarded to a frontend's backends",
                                     "counter", lambda: rows("packets")))
        self.registry.register(_Rows("bpfproxy_service_bytes_total", "Bytes forwarded to a frontend's backends",
                                     "counter", lambda: rows("bytes")))

    def render(self) -> str:
        """The exposition text of every metric."""
        return self.registry.render()


Route = Callable[[], tuple[int, str, str]]
"""an HTTP GET handler: () -> (status, content type, body)"""


class HttpServer:
    """A threaded HTTP server answering GET for a fixed set of paths, in a daemon thread."""

    def __init__(self, bind: str, routes: Mapping[str, Route], *, name: str) -> None:
        host, port = parse_bind_address(bind)
        table = dict(routes)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = table.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, "text/plain; charset=utf-8", "404 page not found\n"
                else:
                    try:
                        status, ctype, body = route()
                    except Exception:
                        log.exception("http handler failed server=%s path=%s", name, self.path)
                        status, ctype, body = 500, "text/plain; charset=utf-8", "internal error\n"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http request server=%s %s", name, format % args)

        self.name = name
        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"http-{name}", daemon=True)
        self._thread.start()
        log.info("http server listening server=%s address=%s:%d paths=%s",
                 name, self.address[0], self.address[1], ",".join(sorted(table)))

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 in the bind address picks a free one)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def parse_bind_address(bind: str) -> tuple[str, int]:
    """ "HOST:PORT" ("[v6]:PORT"; empty host = every address) as (host, port); ValueError when malformed."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bind address {bind!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def metrics_routes(metrics: ProxierMetrics) -> dict[str, Route]:
    """/metrics, plus /proxyMode as kube-proxy serves it."""
    return {
        "/metrics": lambda: (200, CONTENT_TYPE, metrics.render()),
        "/proxyMode": lambda: (200, "text/plain; charset=utf-8", "ebpf"),
    }


def svcstat_reader(maps: Any) -> Callable[[int], tuple[int, int]]:
    """read(svc_id) -> (packets, bytes) summed over CPUs from bpx_svcstat_v1 of a DatapathMaps.

    One lookup syscall per call into buffers allocated once (a scrape reads every frontend: 10k calls).
    """
    import ctypes as ct

    from bpfproxy.loader import bpfsys

    svcstat = maps.svcstat
    values = (svcstat.value_type * bpfsys.possible_cpus())()
    key = ct.c_uint32()

    def read(svc_id: int) -> tuple[int, int]:
        key.value = svc_id
        if not bpfsys.lookup(svcstat.fd, key, values):
            return 0, 0
        packets = nbytes = 0
        for stat in values:
            packets += stat.packets
            nbytes += stat.bytes
        return packets, nbytes

    return read
