"""Scale probe (not a test): 10k Services x 10 endpoints through the proxier; prints a table.

Place: a measurement tool beside the unit tests (pytest does not collect it: no test_ prefix).
It builds N Services and N EndpointSlices (one per service, E endpoints each) as the dicts a
source hands over, feeds them through Proxier.on_object + on_synced, and times each stage of the
cold start (parse+track, translate, plan, diff, write; CPU time of the process, so that other
jobs on the machine do not inflate it), then one endpoint change end to end
(on_object + the partial sync = agent time to the map write), then memory (tracemalloc peak of
the whole run and the process max RSS). Twice: with an in-memory writer, and (as root, with
--kernel) with the real MapsWriter on real pinned maps in a unique pin dir removed at exit.
Timings are taken without tracemalloc (it slows allocation several-fold); --tracemalloc adds a
separate pass for the Python heap figures. The input dicts are built before measuring and their
memory is not counted (a source holds its own copy anyway).

--agent (root) runs the agent's own path instead: the fake API server (tests/kube/fakeapi.py) in a
child process serving N one-port Services with one E-endpoint slice each, KubeSource -> Proxier
(metrics and health on, runner thread) -> MapsWriter on freshly pinned maps; it prints the wall
and CPU time from the source's start to the first full sync written, each stage's thread CPU
(list per kind, translate, plan, diff, map writes), the RSS growth over it (the bcc compile
excluded: it happens before), with --tracemalloc the Python heap after it / peak, and one
/metrics scrape (CPU).

    .venv/bin/python tests/unit/scale_probe.py [--services 10000] [--endpoints 10] [--kernel] [--tracemalloc]
    .venv/bin/python tests/unit/scale_probe.py --agent [--services 10000] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bpfproxy.controller.diff import WritePlan, diff
from bpfproxy.controller.plan import DatapathState, Limits, plan
from bpfproxy.controller.proxier import Proxier, Writer, tune_gc


def service(i: int) -> dict[str, Any]:
    """Service svc-i with cluster IP 10.96.x.y, one TCP port."""
    ip = f"10.96.{i // 250}.{i % 250 + 1}"
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"svc-{i}", "namespace": "scale", "resourceVersion": "1"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }


def endpoint_slice(i: int, endpoints: int, *, shift: int = 0) -> dict[str, Any]:
    """The slice of svc-i: `endpoints` ready pods 10.(64+i/256).(i%256).n (n shifted by `shift`)."""
    eps = [{"addresses": [f"10.{64 + i // 256}.{i % 256}.{n + 1 + shift}"], "conditions": {"ready": True},
            "nodeName": f"node-{n % 5}"} for n in range(endpoints)]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"svc-{i}-abcde", "namespace": "scale",
                     "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }


class MemoryWriter:
    """An in-memory writer: counts the writes, keeps nothing but the plans' sizes."""

    def __init__(self) -> None:
        self.writes = 0

    def read_applied(self) -> DatapathState:
        return DatapathState()

    def apply(self, wp: WritePlan) -> None:
        self.writes += wp.writes()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(CPU seconds of this process, result): robust when other jobs share the cores."""
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


class NullClock:
    """The proxier's clock: real monotonic (sync durations are measured with it)."""

    def now(self) -> float:
        return time.monotonic()


def rss_mib() -> float:
    """Resident set size of this process now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class TimedWriter:
    """Wraps a writer and records the CPU time of each apply (the map writes of a sync)."""

    def __init__(self, inner: Writer) -> None:
        self.inner = inner
        self.applies: list[float] = []

    def read_applied(self) -> DatapathState:
        return self.inner.read_applied()

    def apply(self, wp: WritePlan) -> None:
        start = time.process_time()
        self.inner.apply(wp)
        self.applies.append(time.process_time() - start)


def inputs(n: int, e: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Services and EndpointSlices as fresh dicts (as a JSON decoder hands them over)."""
    return json.loads(json.dumps([service(i) for i in range(n)])), json.loads(
        json.dumps([endpoint_slice(i, e) for i in range(n)]))


def feed(p: Proxier, services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> None:
    """The initial list of both kinds, then 'synced'."""
    for obj in services:
        p.on_object("Service", f"scale/{obj['metadata']['name']}", obj)
    for obj in slices:
        p.on_object("EndpointSlice", f"scale/{obj['metadata']['name']}", obj)
    p.on_synced("Service")
    p.on_synced("EndpointSlice")


def run(inner: Writer, n: int, e: int, limits: Limits, label: str) -> list[tuple[str, str]]:
    """Cold start and one change through a Proxier; returns (row, value) pairs."""
    rows: list[tuple[str, str]] = []
    services, slices = inputs(n, e)
    writer = TimedWriter(inner)
    p = Proxier(writer, limits=limits, min_sync_period=0.0, max_sync_period=3600.0, clock=NullClock())
    t_track, _ = timed(lambda: feed(p, services, slices))
    # the stages of the first (full) sync, measured separately on the same inputs (GC paused as in sync)
    keys = set(p.services.services)
    gc.disable()
    t_translate, frontends = timed(lambda: p._frontends(keys))
    t_plan, desired = timed(lambda: plan(frontends, DatapathState(), limits))
    t_diff, wp = timed(lambda: diff(DatapathState(), desired))
    gc.enable()
    # the real first sync (translate + plan + diff + write)
    t_sync, ok = timed(p.sync)
    assert ok and p.applied is not None and len(p.applied.backends) == n * e, "cold sync failed"
    rows += [
        (f"{label}: parse+track {n} services + {n} slices", f"{t_track * 1000:8.1f} ms"),
        (f"{label}: first sync: translate (all)", f"{t_translate * 1000:8.1f} ms"),
        (f"{label}: first sync: plan (full)", f"{t_plan * 1000:8.1f} ms"),
        (f"{label}: first sync: diff (full)", f"{t_diff * 1000:8.1f} ms  ({wp.writes()} writes)"),
        (f"{label}: first sync: write (apply)", f"{writer.applies[0] * 1000:8.1f} ms"),
        (f"{label}: first sync total", f"{t_sync * 1000:8.1f} ms"),
        (f"{label}: cold start total (parse+track + first sync)", f"{(t_track + t_sync) * 1000:8.1f} ms"),
    ]
    # one endpoint change -> its map write, repeated; agent time = on_object + sync
    samples = []
    for k in range(25):
        i = (k * 397) % n
        obj = endpoint_slice(i, e, shift=1 + k)
        start = time.process_time()
        p.on_object("EndpointSlice", f"scale/{obj['metadata']['name']}", obj)
        assert p.sync()
        samples.append(time.process_time() - start)
    assert p.counters.full_syncs == 1, "changes must be partial syncs"
    rows.append((f"{label}: one endpoint change -> map write (median / max of 25)",
                 f"{statistics.median(samples) * 1000:8.2f} ms / {max(samples) * 1000:.2f} ms"))
    return rows


def memory(n: int, e: int, limits: Limits, *, trace: bool) -> list[tuple[str, str]]:
    """RSS growth (and with trace, the Python heap) of a cold start alone, input dicts excluded."""
    services, slices = inputs(n, e)
    gc.collect()
    before = rss_mib()
    if trace:
        tracemalloc.start()
    p = Proxier(MemoryWriter(), limits=limits, min_sync_period=0.0, max_sync_period=3600.0, clock=NullClock())
    feed(p, services, slices)
    assert p.sync()
    gc.collect()
    rows = [("agent state: RSS growth over a cold start (trackers + applied state)",
             f"{rss_mib() - before:8.1f} MiB")]
    if trace:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(("agent state: Python heap after cold start / peak (tracemalloc)",
                     f"{current / 2**20:8.1f} MiB / {peak / 2**20:.1f} MiB"))
    return rows


def kernel_writer(n: int, e: int) -> tuple[Writer, Limits, Callable[[], None]]:
    """A MapsWriter on freshly pinned maps sized for n services x e endpoints, and its cleanup."""
    from bpfproxy.controller.sync import MapsWriter
    from bpfproxy.loader.build import DatapathSettings, load_datapath
    from bpfproxy.loader.maps import DatapathMaps

    def pow2(x: int) -> int:
        return 1 << (x - 1).bit_length()

    settings = DatapathSettings(lb_map_max=pow2(n * (e + 2) + 1), backend_map_max=pow2(n * e + 1),
                                svc_id_max=pow2(n + 2))
    pin_dir = f"/sys/fs/bpf/bpx-scale-{os.getpid()}"
    load_datapath(pin_dir, settings)
    maps = DatapathMaps(pin_dir, settings.size_defines())
    limits = Limits(lb_entries=settings.lb_map_max, backends=settings.backend_map_max, svc_ids=settings.svc_id_max)

    def cleanup() -> None:
        maps.close()
        shutil.rmtree(pin_dir, ignore_errors=True)

    return MapsWriter(maps), limits, cleanup


def _agent_objects(n: int, e: int) -> list[dict[str, Any]]:
    """n one-port Services (10.96.0.0/16) and their slices of e endpoints (10.1.0.0/14), plus the Node."""
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "probe-node"}}]
    for i in range(n):
        ip = f"10.96.{i // 250}.{i % 250 + 1}"
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": "scale"},
                    "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        eps = []
        for j in range(e):
            k = i * e + j
            eps.append({"addresses": [f"10.{1 + k // 65536}.{(k // 256) % 256}.{k % 256}"],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": "probe-node", "targetRef": {"kind": "Pod", "name": f"svc-{i}-{j}"}})
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"svc-{i}-abcde", "namespace": "scale",
                                 "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": eps})
    return out


def agent_path(n: int, e: int, *, trace: bool, top: int = 0) -> list[tuple[str, str]]:
    """The agent's path against the fake API server (see the module docstring); returns (row, value) pairs."""
    import subprocess
    import tempfile
    import threading

    import bpfproxy.controller.proxier as proxier_mod
    import bpfproxy.controller.source_kube as source_mod
    from bpfproxy.controller.health import ProxierHealth
    from bpfproxy.controller.metrics import ProxierMetrics, svcstat_reader
    from bpfproxy.controller.source_kube import KubeSource, new_api_client
    from bpfproxy.controller.translate import NodeConfig

    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="bpx-scale-")
    with open(os.path.join(tmp, "objects.json"), "w") as f:
        json.dump(_agent_objects(n, e), f)
    server = subprocess.Popen(
        [sys.executable, "-m", "kube.fakeapi", "--load", os.path.join(tmp, "objects.json"),
         "--kubeconfig", os.path.join(tmp, "kubeconfig")], cwd=tests_dir, stdout=subprocess.PIPE, text=True)
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    try:
        assert server.stdout is not None
        server.stdout.readline()  # listening
        writer, limits, cleanup = kernel_writer(n, e)  # the bcc compile happens here, before measuring
        cpu: dict[str, float] = {}

        def account(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                start = time.thread_time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    cpu[name] = cpu.get(name, 0.0) + time.thread_time() - start
            return run

        originals = {name: getattr(proxier_mod, name) for name in ("plan", "diff", "programmed_frontends")}
        list_all = source_mod._KindWatcher.list_all
        for name, fn in originals.items():
            setattr(proxier_mod, name, account(name, fn))
        source_mod._KindWatcher.list_all = lambda self, stop: account(  # type: ignore[method-assign]
            f"list {self.spec.kind}", list_all)(self, stop)
        try:
            tune_gc()
            gc.collect()
            rss0 = rss_mib()
            if trace:
                tracemalloc.start()
            metrics = ProxierMetrics()
            p = Proxier(writer, node=NodeConfig(node_name="probe-node"), limits=limits, metrics=metrics,
                        health=ProxierHealth(60.0))
            p.writer = TimedWriter(writer)
            metrics.add_frontend_stats(lambda: p.frontend_stats(svcstat_reader(writer.maps)))  # type: ignore[attr-defined]
            source = KubeSource(p, node_name="probe-node", api_client=new_api_client(os.path.join(tmp, "kubeconfig")))
            stop = threading.Event()
            wall, cpu0 = time.perf_counter(), time.process_time()
            threads = [threading.Thread(target=source.run, args=(stop,), daemon=True),
                       threading.Thread(target=p.run, args=(stop,), daemon=True)]
            for t in threads:
                t.start()
            while p.counters.syncs == 0 and time.perf_counter() - wall < 300:
                time.sleep(0.002)
            wall, cpu_all = time.perf_counter() - wall, time.process_time() - cpu0
            rows = [(f"agent path: source start -> first full sync written ({n} services, {n * e} endpoints)",
                     f"{wall:8.2f} s wall, {cpu_all:.2f} s CPU"),
                    ("agent path: first full sync (its own duration)", f"{p.counters.last_sync_seconds:8.2f} s")]
            writes = p.writer.applies[0] if p.writer.applies else 0.0  # type: ignore[attr-defined]
            for name in ("list Service", "list EndpointSlice", "programmed_frontends", "plan", "diff"):
                rows.append((f"agent path: thread CPU {name}", f"{cpu.get(name, 0.0):8.2f} s"))
            rows.append(("agent path: thread CPU map writes (MapsWriter.apply)", f"{writes:8.2f} s"))
            rows.append(("agent path: RSS growth (bcc compile excluded)", f"{rss_mib() - rss0:8.1f} MiB"))
            if trace:
                gc.collect()
                current, peak = tracemalloc.get_traced_memory()
                if top:
                    stats = tracemalloc.take_snapshot().statistics("lineno")
                    for st in stats[:top]:
                        print(f"  heap {st.size / 2**20:7.2f} MiB {st.count:8d} blocks {st.traceback}")
                tracemalloc.stop()
                rows.append(("agent path: Python heap after / peak (tracemalloc)",
                             f"{current / 2**20:8.1f} MiB / {peak / 2**20:.1f} MiB"))
            start = time.process_time()
            metrics.render()
            rows.append((f"agent path: one /metrics render ({len(p.applied.frontends) if p.applied else 0} frontends)",
                         f"{(time.process_time() - start) * 1000:8.1f} ms CPU"))
            stop.set()
            for t in threads:
                t.join(5)
            return rows
        finally:
            for name, fn in originals.items():
                setattr(proxier_mod, name, fn)
            source_mod._KindWatcher.list_all = list_all  # type: ignore[method-assign]
    finally:
        server.terminate()
        server.wait(10)
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the probe and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--kernel", action="store_true", help="also with the real MapsWriter on pinned maps (root)")
    ap.add_argument("--default-gc", action="store_true", help="keep Python's default gc thresholds")
    ap.add_argument("--tracemalloc", action="store_true", help="also a (slow) pass measuring the Python heap")
    ap.add_argument("--top", type=int, default=0, help="--agent --tracemalloc: print the N biggest heap lines")
    ap.add_argument("--agent", action="store_true",
                    help="the agent's path: fake API server -> KubeSource -> Proxier -> MapsWriter (root)")
    args = ap.parse_args(argv)
    n, e = args.services, args.endpoints
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.agent:
        rows = agent_path(n, e, trace=args.tracemalloc, top=args.top)
        width = max(len(r) for r, _ in rows)
        print(f"scale probe (agent path): {n} services x {e} endpoints, python {sys.version.split()[0]}")
        for r, v in rows:
            print(f"  {r:<{width}}  {v}")
        return 0
    limits = Limits(lb_entries=1 << 20, backends=1 << 20, svc_ids=1 << 20)
    if not args.default_gc:
        tune_gc()  # as the agent does
    rows = memory(n, e, limits, trace=args.tracemalloc)
    rows.append(("process RSS now (python + the above, no bcc yet)", f"{rss_mib():8.1f} MiB"))
    rows += run(MemoryWriter(), n, e, limits, "memory writer")
    if args.kernel:
        writer, klimits, cleanup = kernel_writer(n, e)
        rows.append(("process RSS after the bcc compile + load", f"{rss_mib():8.1f} MiB"))
        try:
            rows += run(writer, n, e, klimits, "MapsWriter")
        finally:
            cleanup()
    rows.append(("process max RSS (whole probe, incl. bcc/LLVM when --kernel)",
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MiB"))
    width = max(len(r) for r, _ in rows)
    print(f"scale probe: {n} services x {e} endpoints (one slice each), python {sys.version.split()[0]}")
    for r, v in rows:
        print(f"  {r:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
