"""The cluster source: Services, EndpointSlices and this node's Node from the Kubernetes API (list + watch).

Place in the data flow: the first stage on a real node. `KubeSource` lists each kind (paginated),
reports every object to a `SourceHandler` and announces `on_synced`, then watches from the list's
resourceVersion with bookmarks on, forever: a watch the server ends (its timeout) is resumed at
once from the last resourceVersion seen; a 410 Gone (HTTP status or in-stream ERROR event) lists
again and reports the objects that vanished meanwhile as deletions; any other error backs off
(1, 1, 2, 3, 5, 8, 10 … s) and resumes from the last resourceVersion. Objects are handed on as
the plain camelCase dicts of the wire (kind and apiVersion set, as in YAML): the official
`kubernetes` client does the HTTP, its model classes are never built (they cost ~50x the parse).
Only key -> resourceVersion is remembered per kind.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bpfproxy.controller.source import (
    API_VERSIONS,
    KIND_ENDPOINT_SLICE,
    KIND_NODE,
    KIND_SERVICE,
    SourceHandler,
    object_key,
    report_objects,
)

log = logging.getLogger(__name__)

#: the objects a service proxy must ignore, exactly as kube-proxy selects them
PROXY_LABEL_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"

#: seconds to wait before reconnecting after the n-th consecutive failure (the last one repeats)
DEFAULT_BACKOFF: tuple[float, ...] = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)

#: objects per list page
DEFAULT_PAGE_SIZE = 1000


class Gone(Exception):
    """410 Gone: the resourceVersion is too old (compacted); a fresh list is needed."""


class WatchError(Exception):
    """A watch failed in a way that is retried after a back-off (reason in the message)."""


@dataclass(frozen=True)
class KindSpec:
    """How one kind is listed and watched."""

    kind: str
    """KIND_SERVICE, KIND_ENDPOINT_SLICE or KIND_NODE"""
    label_selector: str
    """labelSelector of list and watch ("" = none)"""
    field_selector: str
    """fieldSelector of list and watch ("" = none)"""


def kind_specs(node_name: str) -> list[KindSpec]:
    """The kinds a proxy watches: Services and EndpointSlices always, the Node only when node_name is set."""
    specs = [
        KindSpec(KIND_SERVICE, PROXY_LABEL_SELECTOR, ""),
        KindSpec(KIND_ENDPOINT_SLICE, PROXY_LABEL_SELECTOR, ""),
    ]
    if node_name:
        specs.append(KindSpec(KIND_NODE, "", f"metadata.name={node_name}"))
    return specs


def new_api_client(kubeconfig: str | None) -> Any:
    """An ApiClient for a kubeconfig file, or for the in-cluster service account when kubeconfig is None.

    urllib3's own retries are off: the watch loop backs off and reconnects itself.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.retries = False
    return client.ApiClient(cfg)


#: collection path of each kind (list and watch)
_PATHS = {
    KIND_SERVICE: "/api/v1/services",
    KIND_ENDPOINT_SLICE: "/apis/discovery.k8s.io/v1/endpointslices",
    KIND_NODE: "/api/v1/nodes",
}
#: query parameter name of each keyword argument of _Api.call
_QUERY_NAMES = {
    "limit": "limit", "_continue": "continue", "watch": "watch", "allow_watch_bookmarks": "allowWatchBookmarks",
    "resource_version": "resourceVersion", "timeout_seconds": "timeoutSeconds",
    "label_selector": "labelSelector", "field_selector": "fieldSelector",
}


class _Api:
    """The list/watch GETs through the kubernetes client's ApiClient (its auth, TLS and proxy settings),
    returning raw urllib3 responses.

    The generated CoreV1Api/DiscoveryV1Api are not used: importing them loads every model of their
    groups (pydantic classes), ~0.5 s and ~22 MiB of the agent for three GETs.
    """

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def call(self, spec: KindSpec, timeout: tuple[float, float], **params: Any) -> Any:
        """GET the collection of spec.kind with params; raises Gone on 410, WatchError on any other failure."""
        from kubernetes.client.exceptions import ApiException

        if spec.label_selector:
            params["label_selector"] = spec.label_selector
        if spec.field_selector:
            params["field_selector"] = spec.field_selector
        query = [(_QUERY_NAMES[k], v) for k, v in params.items() if v is not None]
        try:
            request = self.api_client.param_serialize(
                method="GET", resource_path=_PATHS[spec.kind], query_params=query,
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            )
            resp = self.api_client.call_api(*request, _request_timeout=timeout)
        except ApiException as e:
            raise WatchError(f"HTTP {e.status} {_status_message(e.body)}") from None
        except Exception as e:  # urllib3: refused, reset, timeouts
            raise WatchError(f"{type(e).__name__}: {e}") from None
        if not 200 <= resp.status <= 299:
            body = resp.response.data
            if resp.status == 410:
                raise Gone(f"HTTP 410 {_status_message(body)}")
            raise WatchError(f"HTTP {resp.status} {_status_message(body)}")
        return resp.response


def _status_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        status = json.loads(body) if isinstance(body, str) and body else {}
    except ValueError:
        return str(body)[:200]
    return str(status.get("message") or status.get("reason") or "") if isinstance(status, dict) else ""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside, and what it allocated is frozen (gc.freeze) on the way out.

    A list page makes ~1M dicts and its parse as many long-lived model objects; merely pausing the
    collector only defers the scans (the first collection after it walks them all, then again in
    each older generation), so they cost as much as the work itself. Frozen objects are never
    scanned; all of these are acyclic, so refcounting still frees the ones that die (the raw pages).
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def _parse(body: bytes) -> Any:
    """json.loads with the cyclic GC paused."""
    with _gc_paused():
        return json.loads(body)


def _read_lines(resp: Any, stop: threading.Event) -> Iterator[bytes]:
    """The newline-delimited lines of a watch response as they arrive; ends with the stream."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        if stop.is_set():
            return
        pending += chunk
        if b"\n" not in pending:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _wake(resp: Any) -> None:
    """Wake a thread blocked reading resp (called from another thread): shut the socket's read side."""
    try:
        resp.shutdown()  # urllib3 >= 2.3
        return
    except Exception:  # older urllib3, or already closed: try the socket itself
        pass
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _close(resp: Any, *, reusable: bool) -> None:
    """Give a finished response's connection back to the pool, closed first unless it ended cleanly."""
    with contextlib.suppress(Exception):
        if not reusable:
            resp.close()
        resp.release_conn()


class _KindWatcher:
    """List + watch of one kind; reports to the handler under the source's lock."""

    def __init__(self, source: KubeSource, spec: KindSpec) -> None:
        self.source = source
        self.spec = spec
        self.api_version = API_VERSIONS[spec.kind]
        self.known: dict[str, str] = {}
        """key -> resourceVersion of every object reported and not deleted"""
        self.rv = ""
        """resourceVersion to watch from (last list, event or bookmark)"""
        self.synced = False
        self.failures = 0
        """consecutive failed requests (sets the back-off)"""
        self.gone_in_row = 0
        """410s with no event in between (a repeated one backs off too)"""
        self.current: Any = None
        """the open watch response (closed from stop())"""
        self.counters = {"lists": 0, "relists": 0, "watches": 0, "events": 0, "bookmarks": 0, "errors": 0}

    # the loop

    def run(self, stop: threading.Event) -> None:
        need_list = True
        while not stop.is_set():
            try:
                if need_list:
                    self.list_all(stop)
                    need_list = False
                    if stop.is_set():
                        return
                self.watch(stop)
            except Gone as e:
                log.info("relist after 410 kind=%s rv=%s reason=%s", self.spec.kind, self.rv, e)
                self.counters["relists"] += 1
                need_list = True
                self.gone_in_row += 1
                if self.gone_in_row > 1:  # 410 again before any event: a server in trouble, do not hammer it
                    stop.wait(self.source.backoff[min(self.gone_in_row - 2, len(self.source.backoff) - 1)])
            except Exception as e:  # WatchError, or a bug: never let the thread die
                if stop.is_set():
                    return
                if not isinstance(e, WatchError):
                    log.exception("unexpected error in the watch loop kind=%s", self.spec.kind)
                self.counters["errors"] += 1
                delay = self.source.backoff[min(self.failures, len(self.source.backoff) - 1)]
                self.failures += 1
                log.warning(
                    "watch reconnect kind=%s reason=%s rv=%s attempt=%d backoff_seconds=%.2f relist=%s",
                    self.spec.kind, e, self.rv, self.failures, delay, need_list,
                )  # fmt: skip
                stop.wait(delay)

    # list

    def list_all(self, stop: threading.Event) -> None:
        """List every page, report new and changed objects, then the ones gone since the last list."""
        started = time.monotonic()
        seen: dict[str, str] = {}
        token = ""
        rv = ""
        while True:
            params: dict[str, Any] = {"limit": self.source.page_size}
            if token:
                params["_continue"] = token
            try:
                resp = self.source.api.call(self.spec, self.source.list_timeout, **params)
            except Gone as e:
                if not token:
                    raise WatchError(f"list answered 410 without a continue token: {e}") from None
                log.info("list restarted: continue token expired kind=%s", self.spec.kind)
                token, rv = "", ""
                seen.clear()
                continue
            try:
                data = resp.data
            except Exception as e:  # urllib3: reset or read timeout in the middle of the body
                raise WatchError(f"list read failed: {type(e).__name__}: {e}") from None
            finally:
                resp.release_conn()
            try:
                body = _parse(data)
            except ValueError as e:
                raise WatchError(f"list response is not JSON: {e}") from None
            if stop.is_set():
                return
            if body.get("kind") == "Status":
                code = body.get("code")
                if code == 410 and token:  # continue token expired: start the list over
                    token, rv = "", ""
                    seen.clear()
                    continue
                raise WatchError(f"list Status code={code} {body.get('message', '')}")
            self._report_items(body.get("items") or (), seen)
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            rv = rv or str(meta.get("resourceVersion") or "")
            if not token:
                rv = str(meta.get("resourceVersion") or rv)
                break
        gone = [key for key in self.known if key not in seen]
        with self.source.lock:
            for key in gone:
                self.source.handler.on_object(self.spec.kind, key, None)
        self.known = seen
        self.rv = rv
        self.failures = 0
        self.counters["lists"] += 1
        log.info(
            "list done kind=%s objects=%d deleted=%d rv=%s seconds=%.3f",
            self.spec.kind, len(seen), len(gone), rv, time.monotonic() - started,
        )  # fmt: skip
        if not self.synced:
            self.synced = True
            with self.source.lock:
                self.source.handler.on_synced(self.spec.kind)

    def _report_items(self, items: Any, seen: dict[str, str]) -> None:
        """One list page: note each object's key and resourceVersion in seen, and hand the new or
        changed ones to the handler in one batch (source.report_objects)."""
        kind, api_version, known = self.spec.kind, self.api_version, self.known
        batch: list[tuple[str, dict[str, Any]]] = []
        with self.source.lock, _gc_paused():
            for obj in items:
                if not isinstance(obj, dict):
                    continue
                obj["kind"] = kind
                obj["apiVersion"] = api_version
                key = object_key(obj)
                if key is None:
                    log.error("skipping listed object without metadata.name kind=%s", kind)
                    continue
                rv = str(obj["metadata"].get("resourceVersion") or "")
                seen[key] = rv
                if rv and known.get(key) == rv:
                    continue
                batch.append((key, obj))
            if batch:
                report_objects(self.source.handler, kind, batch)

    # watch

    def watch(self, stop: threading.Event) -> None:
        """One watch request from self.rv until the server ends it; raises Gone or WatchError."""
        server_timeout = self.source.server_timeout
        resp = self.source.api.call(
            self.spec,
            (self.source.connect_timeout, server_timeout + self.source.read_slack),
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.rv,
            timeout_seconds=server_timeout,
        )
        self.counters["watches"] += 1
        self.failures = 0  # the server answered: the next failure starts the back-off over
        self.current = resp
        clean = False
        try:
            if stop.is_set():
                return
            for line in _read_lines(resp, stop):
                self._event(line)
                if stop.is_set():
                    return
            clean = True
        except (Gone, WatchError):
            raise
        except Exception as e:  # urllib3: reset, read timeout, broken chunking
            if stop.is_set():
                return
            raise WatchError(f"{type(e).__name__}: {e}") from None
        finally:
            self.current = None
            _close(resp, reusable=clean)
        log.debug("watch ended by the server kind=%s rv=%s", self.spec.kind, self.rv)

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            etype = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError) as e:
            raise WatchError(f"undecodable watch event: {e}") from None
        if etype == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            message = obj.get("message", "") if isinstance(obj, dict) else ""
            if code == 410:
                raise Gone(f"ERROR event 410 {message}")
            raise WatchError(f"ERROR event code={code} {message}")
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            raise WatchError(f"watch event {etype} without metadata")
        rv = str(meta.get("resourceVersion") or "")
        self.gone_in_row = 0
        if etype == "BOOKMARK":
            self.counters["bookmarks"] += 1
            if rv:
                self.rv = rv
            return
        self.counters["events"] += 1
        obj["kind"] = self.spec.kind
        obj["apiVersion"] = self.api_version
        key = object_key(obj)
        if key is None:
            log.error("skipping watched object without metadata.name kind=%s", self.spec.kind)
        elif etype == "DELETED":
            if self.known.pop(key, None) is not None:
                with self.source.lock:
                    self.source.handler.on_object(self.spec.kind, key, None)
        elif etype in ("ADDED", "MODIFIED"):
            if not rv or self.known.get(key) != rv:
                self.known[key] = rv
                with self.source.lock:
                    self.source.handler.on_object(self.spec.kind, key, obj)
        else:
            log.warning("ignoring watch event of unknown type kind=%s type=%s", self.spec.kind, etype)
        if rv:
            self.rv = rv


class KubeSource:
    """Lists then watches Services, EndpointSlices and (with node_name) this node's Node, reporting to a handler.

    One thread per kind; the handler is called under one lock, so it sees one call at a time.
    """

    def __init__(
        self,
        handler: SourceHandler,
        *,
        kubeconfig: str | None = None,
        node_name: str = "",
        server_timeout: int = 300,
        read_slack: float = 5.0,
        connect_timeout: float = 5.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        api_client: Any = None,
    ) -> None:
        self.handler = handler
        self.node_name = node_name
        self.server_timeout = server_timeout
        """timeoutSeconds asked of the server for each watch"""
        self.read_slack = read_slack
        """the client read timeout is server_timeout + read_slack"""
        self.connect_timeout = connect_timeout
        self.page_size = page_size
        self.backoff = tuple(backoff) or DEFAULT_BACKOFF
        self.list_timeout = (connect_timeout, 60.0)
        """(connect, read) timeout of a list page"""
        self.api = _Api(api_client if api_client is not None else new_api_client(kubeconfig))
        self.lock = threading.Lock()
        """serializes handler calls across the per-kind threads"""
        self.watchers = [_KindWatcher(self, spec) for spec in kind_specs(node_name)]

    def run(self, stop: threading.Event) -> None:
        """List and watch every kind until stop is set; returns within about a second of it."""
        log.info(
            "kube source started kinds=%s node=%s server_timeout=%d",
            ",".join(w.spec.kind for w in self.watchers), self.node_name or "-", self.server_timeout,
        )  # fmt: skip
        if not self.node_name:
            self.handler.on_synced(KIND_NODE)  # nothing to list: vacuously complete
        threads = [
            threading.Thread(target=w.run, args=(stop,), name=f"kube-{w.spec.kind}", daemon=True) for w in self.watchers
        ]
        for t in threads:
            t.start()
        stop.wait()
        for w in self.watchers:
            resp = w.current
            if resp is not None:
                _wake(resp)
        for t in threads:
            t.join(timeout=2)
        log.info("kube source stopped")

    def counters(self) -> dict[str, dict[str, int]]:
        """Per kind: lists, relists, watches, events, bookmarks, errors."""
        return {w.spec.kind: dict(w.counters) for w in self.watchers}


def list_objects(handler: SourceHandler, *, kubeconfig: str | None = None, node_name: str = "") -> None:
    """List every kind once (no watch): on_object for each object, on_synced per kind; raises on failure."""
    source = KubeSource(handler, kubeconfig=kubeconfig, node_name=node_name)
    never = threading.Event()
    for w in source.watchers:
        try:
            w.list_all(never)
        except (Gone, WatchError) as e:
            raise RuntimeError(f"cannot list {w.spec.kind}: {e}") from None
    if not node_name:
        handler.on_synced(KIND_NODE)
