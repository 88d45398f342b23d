"""A fake Kubernetes API server speaking the REST list/watch wire protocol, for tests and benchmarks.

Place in the data flow: stands in for kube-apiserver in front of `controller.source_kube.KubeSource`
(through the real `kubernetes` client). Pure stdlib: a ThreadingHTTPServer on 127.0.0.1, serving

- GET /api/v1/services, /apis/discovery.k8s.io/v1/endpointslices, /api/v1/nodes: cluster-wide lists
  with labelSelector (`k`, `!k`, `k=v`, `k==v`, `k!=v`), fieldSelector (metadata.name/namespace,
  = / !=), limit + continue pagination and metadata.resourceVersion;
- the same with ?watch=true&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=T]: a
  chunked stream of newline-delimited JSON events ADDED/MODIFIED/DELETED/BOOKMARK/ERROR.

One global, monotonically increasing resourceVersion; an event history with a compaction point:
watching (or continuing a list) from before it answers 410 Gone, as an HTTP 410 Status or, when
asked, as an in-stream ERROR event. Objects are serialized to JSON once, when applied, so a list of
10,000 services and 10,000 slices is a byte join. The control API (apply, delete, compact,
drop_connections, stop/start on the same port, fail_requests, inject_error_event, load) is plain
Python; `python -m kube.fakeapi` (from tests/) runs one standalone for benchmarks.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import ctypes
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: URL path of each kind's cluster-wide collection
PATHS: dict[str, str] = {
    "/api/v1/services": "Service",
    "/apis/discovery.k8s.io/v1/endpointslices": "EndpointSlice",
    "/api/v1/nodes": "Node",
}
#: apiVersion of each kind
API_VERSIONS: dict[str, str] = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1", "Node": "v1"}
#: kinds without a namespace
CLUSTER_SCOPED = frozenset({"Node"})


@dataclass
class Stored:
    """One object as the server holds it: pre-serialized, with what selectors look at."""

    kind: str
    namespace: str
    name: str
    labels: dict[str, str]
    rv: int
    item: bytes
    """JSON of the object without kind/apiVersion (as list items are sent)"""

    def event_object(self) -> bytes:
        """JSON of the object with kind and apiVersion (as watch events carry it)."""
        head = f'{{"kind":"{self.kind}","apiVersion":"{API_VERSIONS[self.kind]}",'.encode()
        return head + self.item[1:] if self.item != b"{}" else head[:-1] + b"}"

    @property
    def key(self) -> str:
        """ns/name (name for cluster-scoped kinds)."""
        return self.name if self.kind in CLUSTER_SCOPED else f"{self.namespace}/{self.name}"


@dataclass
class Event:
    """One entry of the history."""

    rv: int
    type: str
    stored: Stored
    prev: Stored | None = None
    """the version it replaced (MODIFIED), for selectors that matched before but not now"""

    def seen_as(self, wanted: Callable[[Stored], bool]) -> str:
        """The event type a watcher selecting `wanted` gets ("" = none), as the apiserver's cacher does."""
        now = wanted(self.stored)
        before = self.prev is not None and wanted(self.prev)
        if self.type != "MODIFIED" or now == before:
            return self.type if now else ""
        return "ADDED" if now else "DELETED"


@dataclass
class Request:
    """One request the server answered (for tests to assert on)."""

    kind: str
    watch: bool
    params: dict[str, str]
    status: int = 200


@dataclass
class _Failure:
    """Requests to answer with an HTTP error instead."""

    status: int
    remaining: int
    watch_only: bool
    kind: str
    """only requests for this kind ("" = any)"""


class Selector:
    """A parsed labelSelector or fieldSelector (equality-based terms and existence)."""

    def __init__(self, text: str) -> None:
        self.terms: list[tuple[str, str, str]] = []  # (op, key, value): op in = != exists !exists
        for raw in (t.strip() for t in text.split(",")):
            if not raw:
                continue
            if "!=" in raw:
                k, v = raw.split("!=", 1)
                self.terms.append(("!=", k.strip(), v.strip()))
            elif "==" in raw:
                k, v = raw.split("==", 1)
                self.terms.append(("=", k.strip(), v.strip()))
            elif "=" in raw:
                k, v = raw.split("=", 1)
                self.terms.append(("=", k.strip(), v.strip()))
            elif raw.startswith("!"):
                self.terms.append(("!exists", raw[1:].strip(), ""))
            else:
                self.terms.append(("exists", raw, ""))

    def matches(self, values: dict[str, str]) -> bool:
        """True when every term holds for values."""
        for op, k, v in self.terms:
            have = values.get(k)
            if (
                (op == "=" and have != v)
                or (op == "!=" and have == v)
                or (op == "exists" and have is None)
                or (op == "!exists" and have is not None)
            ):
                return False
        return True


def _fields(s: Stored) -> dict[str, str]:
    return {"metadata.name": s.name, "metadata.namespace": s.namespace}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


def _enter_netns_and(path: str, make: Callable[[], socket.socket]) -> socket.socket:
    """make() run in a thread that entered the network namespace at path (the socket stays there)."""
    out: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns {path}")
            finally:
                os.close(fd)
            out.append(make())
        except BaseException as e:  # handed to the caller
            out.append(e)

    t = threading.Thread(target=work, name="fakeapi-netns")
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, fake: FakeApiServer, addr: tuple[str, int], sock: socket.socket | None) -> None:
        self.fake = fake
        super().__init__(addr, _Handler, bind_and_activate=sock is None)
        if sock is not None:
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()


class FakeApiServer:
    """The fake API server: state, history, control methods, and the HTTP front end."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        netns: str | None = None,
        bookmark_interval: float = 0.0,
        gone_as: str = "http",
        max_page: int = 0,
        max_history: int = 1_000_000,
    ) -> None:
        self.host = host
        self.port = port
        self.netns = netns
        """/run/netns/NAME: the listening socket is made inside that network namespace"""
        self.bookmark_interval = bookmark_interval
        """seconds between BOOKMARK events on a watch that asked for them (0: only on bookmark())"""
        self.gone_as = gone_as
        """how a watch from a compacted resourceVersion is refused: "http" (410 status) or "event" """
        self.max_page = max_page
        """if > 0, pages never hold more than this many items whatever limit asks"""
        self.max_history = max_history
        """events kept; older ones are compacted away"""
        self.cond = threading.Condition()
        self.rv = 1
        self.objects: dict[str, dict[str, Stored]] = {k: {} for k in API_VERSIONS}
        self._sorted: dict[str, list[Stored] | None] = {k: None for k in API_VERSIONS}
        """per kind, the objects sorted by key (None: re-sort at the next list; setting None is always safe)"""
        self._positions: dict[str, dict[str, int]] = {k: {} for k in API_VERSIONS}
        """per kind, key -> index in _sorted[kind] (valid while _sorted[kind] is not None)"""
        self.history: list[Event] = []
        self.compacted_rv = 1
        """watches from a resourceVersion below this get 410"""
        self.requests: list[Request] = []
        self.failures: list[_Failure] = []
        self.error_events: list[dict[str, Any]] = []
        self._error_gen = 0
        self._drop_gen = 0
        self._bookmark_gen = 0
        self.open_watches = 0
        self._conns: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeApiServer:
        """Listen (on the same port after a stop) and serve in a thread."""
        sock = None
        if self.netns:
            sock = _enter_netns_and(self.netns, self._listen_socket)
        self._server = _HTTPServer(self, (self.host, self.port), sock)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fakeapi", daemon=True)
        self._thread.start()
        return self

    def _listen_socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        return s

    def stop(self) -> None:
        """Stop listening and cut every connection (state and history are kept, as etcd keeps them)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart(self) -> None:
        """stop() then start() on the same port."""
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        """http://HOST:PORT"""
        return f"http://{self.host}:{self.port}"

    def write_kubeconfig(self, path: str) -> str:
        """A kubeconfig pointing at this server (plain http, a dummy token); returns path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)  # JSON is YAML
        return path

    # control API

    def apply(self, obj: dict[str, Any]) -> int:
        """Create or replace obj (kind decides the collection); returns its new resourceVersion."""
        with self.cond:
            rv = self._apply(obj)
            self.cond.notify_all()
            return rv

    def load(self, objs: Iterable[dict[str, Any]]) -> int:
        """apply() many objects under one lock (bulk load); returns the last resourceVersion."""
        with self.cond:
            for obj in objs:
                self._apply(obj)
            self.cond.notify_all()
            return self.rv

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False when it does not exist."""
        key = name if kind in CLUSTER_SCOPED else f"{namespace}/{name}"
        with self.cond:
            old = self.objects[kind].pop(key, None)
            if old is None:
                return False
            self._sorted[kind] = None
            self.rv += 1
            gone = Stored(old.kind, old.namespace, old.name, old.labels, self.rv, _with_rv(old.item, self.rv))
            self._record(Event(self.rv, "DELETED", gone))
            self.cond.notify_all()
            return True

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stored object (kind/apiVersion included), or None."""
        with self.cond:
            s = self.objects[kind].get(key)
            return None if s is None else json.loads(s.event_object())

    def compact(self) -> None:
        """Forget the history: the next watch from an older resourceVersion gets 410."""
        with self.cond:
            self.history.clear()
            self.compacted_rv = self.rv
            self.cond.notify_all()

    def drop_connections(self) -> None:
        """Cut every open connection abruptly (watch streams end without their last chunk)."""
        with self.cond:
            self._drop_gen += 1
            conns = list(self._conns)
            self.cond.notify_all()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion on every watch that allows them."""
        with self.cond:
            self._bookmark_gen += 1
            self.cond.notify_all()

    def fail_requests(self, status: int = 500, count: int = 1, *, watch_only: bool = False, kind: str = "") -> None:
        """Answer the next count requests (only watches if watch_only; only of kind if set) with an HTTP error."""
        with self.cond:
            self.failures.append(_Failure(status, count, watch_only, kind))

    def set_error_mode(self, *, gone_as: str | None = None, status: int | None = None, count: int = 1) -> None:
        """gone_as: "http" | "event" for 410 on too-old watches; status: fail the next count requests."""
        if gone_as is not None:
            if gone_as not in ("http", "event"):
                raise ValueError(f"gone_as {gone_as!r}: expected http or event")
            self.gone_as = gone_as
        if status is not None:
            self.fail_requests(status, count)

    def inject_error_event(self, code: int = 410, message: str = "") -> None:
        """Send an ERROR event with a Status of this code on every open watch, which then ends."""
        reason = "Expired" if code == 410 else "InternalError"
        with self.cond:
            self.error_events = [_status(code, reason, message or f"injected error {code}")]
            self._error_gen += 1
            self.cond.notify_all()

    def watch_requests(self, kind: str) -> list[Request]:
        """The watch requests answered for kind, oldest first."""
        with self.cond:
            return [r for r in self.requests if r.kind == kind and r.watch]

    def list_requests(self, kind: str) -> list[Request]:
        """The list requests answered for kind (one per page), oldest first."""
        with self.cond:
            return [r for r in self.requests if r.kind == kind and not r.watch]

    def wait_watching(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least count watch streams are open."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.open_watches < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    # internals (self.cond held)

    def _apply(self, obj: dict[str, Any]) -> int:
        kind = obj.get("kind")
        if kind not in API_VERSIONS:
            raise ValueError(f"fakeapi: unknown kind {kind!r}")
        body = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}  # serialized at once: no deep copy
        meta = body["metadata"] = dict(body.get("metadata") or {})
        name = meta.get("name")
        if not name:
            raise ValueError("fakeapi: metadata.name is required")
        namespace = "" if kind in CLUSTER_SCOPED else (meta.get("namespace") or "default")
        if namespace:
            meta["namespace"] = namespace
        key = name if kind in CLUSTER_SCOPED else f"{namespace}/{name}"
        old = self.objects[kind].get(key)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{kind.lower()}-{key.replace('/', '-')}")
        stored = Stored(
            kind, namespace, name, dict(meta.get("labels") or {}), self.rv,
            json.dumps(body, separators=(",", ":")).encode(),
        )  # fmt: skip
        self.objects[kind][key] = stored
        if old is None:
            self._sorted[kind] = None
        else:
            cached = self._sorted[kind]
            if cached is not None:  # an update keeps the key: replace in place, O(1)
                cached[self._positions[kind][key]] = stored
        self._record(Event(self.rv, "MODIFIED" if old else "ADDED", stored, old))
        return self.rv

    def _record(self, event: Event) -> None:
        self.history.append(event)
        if len(self.history) > self.max_history:
            cut = len(self.history) - self.max_history
            self.compacted_rv = self.history[cut - 1].rv
            del self.history[:cut]

    def _history_after(self, rv: int) -> list[Event]:
        return self.history[bisect.bisect_right(self.history, rv, key=lambda e: e.rv) :]

    def _sorted_objects(self, kind: str) -> list[Stored]:
        cached = self._sorted[kind]
        if cached is None:
            cached = sorted(self.objects[kind].values(), key=lambda s: s.key)
            self._sorted[kind] = cached
            self._positions[kind] = {s.key: i for i, s in enumerate(cached)}
        return cached

    def _take_failure(self, kind: str, watch: bool) -> int:
        for f in self.failures:
            if f.remaining > 0 and (watch or not f.watch_only) and f.kind in ("", kind):
                f.remaining -= 1
                status = f.status
                self.failures = [x for x in self.failures if x.remaining > 0]
                return status
        return 0


def _with_rv(item: bytes, rv: int) -> bytes:
    body = json.loads(item)
    body.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return json.dumps(body, separators=(",", ":")).encode()


def _encode_continue(rv: int, after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": rv, "after": after}).encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    d = json.loads(base64.urlsafe_b64decode(token.encode()))
    return int(d["rv"]), str(d["after"])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        fake = self.server.fake
        with fake.cond:
            fake._conns.add(self.connection)

    def finish(self) -> None:
        fake = self.server.fake
        with fake.cond:
            fake._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        kind = PATHS.get(url.path.rstrip("/"))
        watch = params.get("watch") in ("true", "1")
        if kind is None:
            message = f"the server could not find the requested resource {url.path}"
            self._send_json(404, _status(404, "NotFound", message))
            return
        with fake.cond:
            req = Request(kind, watch, params)
            fake.requests.append(req)
            failure = fake._take_failure(kind, watch)
        if failure:
            req.status = failure
            self._send_json(failure, _status(failure, "InternalError", f"injected failure {failure}"))
            return
        try:
            labels = Selector(params.get("labelSelector", ""))
            fields = Selector(params.get("fieldSelector", ""))
            if watch:
                self._watch(kind, params, labels, fields, req)
            else:
                self._list(kind, params, labels, fields, req)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # list

    def _list(self, kind: str, params: dict[str, str], labels: Selector, fields: Selector, req: Request) -> None:
        fake = self.server.fake
        limit = int(params.get("limit") or 0)
        if fake.max_page > 0:
            limit = min(limit, fake.max_page) if limit > 0 else fake.max_page
        token = params.get("continue", "")
        with fake.cond:
            if token:
                try:
                    snapshot_rv, after = _decode_continue(token)
                except (ValueError, KeyError):
                    req.status = 400
                    self._send_json(400, _status(400, "BadRequest", "invalid continue token"))
                    return
                if snapshot_rv < fake.compacted_rv:
                    req.status = 410
                    self._send_json(410, _status(410, "Expired", "The provided continue parameter is too old"))
                    return
            else:
                snapshot_rv, after = fake.rv, ""
            items: list[bytes] = []
            more = False
            last_key = ""
            for s in fake._sorted_objects(kind):
                if after and s.key <= after:
                    continue
                if not labels.matches(s.labels) or not fields.matches(_fields(s)):
                    continue
                if limit and len(items) == limit:
                    more = True
                    break
                items.append(s.item)
                last_key = s.key
        meta: dict[str, str] = {"resourceVersion": str(snapshot_rv)}
        if more:
            meta["continue"] = _encode_continue(snapshot_rv, last_key)
        head = json.dumps({"kind": f"{kind}List", "apiVersion": API_VERSIONS[kind], "metadata": meta})
        body = head[:-1].encode() + b',"items":[' + b",".join(items) + b"]}"
        self._send_bytes(200, body)

    # watch

    def _watch(self, kind: str, params: dict[str, str], labels: Selector, fields: Selector, req: Request) -> None:
        fake = self.server.fake
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(params.get("timeoutSeconds") or 1800)
        rv_text = params.get("resourceVersion", "")
        try:
            from_rv = int(rv_text) if rv_text not in ("", "0") else -1
        except ValueError:
            req.status = 400
            self._send_json(400, _status(400, "BadRequest", f"invalid resourceVersion {rv_text!r}"))
            return
        with fake.cond:
            too_old = 0 <= from_rv < fake.compacted_rv
            if too_old and fake.gone_as == "http":
                req.status = 410
                message = f"too old resource version: {from_rv} ({fake.compacted_rv})"
                self._send_json(410, _status(410, "Expired", message))
                return
            drop_gen, error_gen, bookmark_gen = fake._drop_gen, fake._error_gen, fake._bookmark_gen
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if too_old:
            msg = f"too old resource version: {from_rv} ({fake.compacted_rv})"
            self._chunk(b'{"type":"ERROR","object":' + json.dumps(_status(410, "Expired", msg)).encode() + b"}\n")
            self._end_stream()
            return

        def wanted(s: Stored) -> bool:
            return s.kind == kind and labels.matches(s.labels) and fields.matches(_fields(s))

        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + fake.bookmark_interval if fake.bookmark_interval > 0 else float("inf")
        with fake.cond:
            fake.open_watches += 1
            fake.cond.notify_all()
            if from_rv < 0:  # "any": the current state first, as synthetic ADDED events
                pending = [("ADDED", s) for s in fake._sorted_objects(kind) if wanted(s)]
                sent_rv = fake.rv
            else:
                pending = [(t, e.stored) for e in fake._history_after(from_rv) if (t := e.seen_as(wanted))]
                sent_rv = max(from_rv, fake.rv)
        try:
            while True:
                out = b"".join(
                    b'{"type":"' + t.encode() + b'","object":' + st.event_object() + b"}\n" for t, st in pending
                )
                if out:
                    self._chunk(out)
                pending = []
                with fake.cond:
                    while True:
                        now = time.monotonic()
                        if fake._drop_gen != drop_gen:
                            self._cut()
                            return
                        if fake._error_gen != error_gen:
                            errors = list(fake.error_events)
                            break
                        new = fake._history_after(sent_rv)
                        if new:
                            pending = [(t, e.stored) for e in new if (t := e.seen_as(wanted))]
                            sent_rv = new[-1].rv
                            if pending:
                                break
                        if bookmarks and (fake._bookmark_gen != bookmark_gen or now >= next_bookmark):
                            bookmark_gen = fake._bookmark_gen
                            next_bookmark = now + fake.bookmark_interval if fake.bookmark_interval > 0 else float("inf")
                            bookmark_rv = fake.rv
                            errors = []
                            break
                        if now >= deadline:
                            self._end_stream()
                            return
                        fake.cond.wait(min(deadline, next_bookmark) - now)
                    if fake._error_gen != error_gen:
                        error_gen = fake._error_gen
                        for err in errors:
                            self._chunk(b'{"type":"ERROR","object":' + json.dumps(err).encode() + b"}\n")
                        self._end_stream()
                        return
                if not pending:
                    meta = {"resourceVersion": str(bookmark_rv)}
                    ref = {"kind": kind, "apiVersion": API_VERSIONS[kind], "metadata": meta}
                    self._chunk(b'{"type":"BOOKMARK","object":' + json.dumps(ref).encode() + b"}\n")
                    sent_rv = max(sent_rv, bookmark_rv)
        finally:
            with fake.cond:
                fake.open_watches -= 1
                fake.cond.notify_all()

    # wire helpers

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_json(self, code: int, obj: dict[str, Any]) -> None:
        self._send_bytes(code, json.dumps(obj).encode())

    def _send_bytes(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


def main(argv: list[str] | None = None) -> int:
    """Run a fake API server until interrupted: python -m kube.fakeapi [--port N] [--kubeconfig PATH]."""
    import argparse

    p = argparse.ArgumentParser(prog="fakeapi", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--kubeconfig", default="", help="write a kubeconfig pointing at the server here")
    p.add_argument("--load", default="", help="a JSON file holding a list of objects to load first")
    p.add_argument("--scale", default="", help="SERVICES:ENDPOINTS: load kube.scale.build(SERVICES, ENDPOINTS)")
    args = p.parse_args(argv)
    fake = FakeApiServer(host=args.host, port=args.port).start()
    if args.load:
        with open(args.load, encoding="utf-8") as f:
            fake.load(json.load(f))
    if args.scale:
        from kube.scale import build

        services, endpoints = (int(x) for x in args.scale.split(":"))
        fake.load(build(services, endpoints))
    if args.kubeconfig:
        fake.write_kubeconfig(args.kubeconfig)
    print(f"fakeapi listening url={fake.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
