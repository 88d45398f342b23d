"""Measure what attaching the tc programs to one pod device costs, at 1 to 300 devices per node.

Place in the data flow: a measurement script next to the attach tests (not collected by pytest).
It loads the datapath into a unique pin dir under /sys/fs/bpf, makes a private network namespace
per device count with that many veth pairs, and times Attacher.attach_pod_device for every device
(wall time and this thread's CPU time, which is what competes for the GIL with the first sync).
The namespaces and the pin dir are removed at exit, also on failure or SIGTERM.

Usage (root): .venv/bin/python tests/netns/attachprobe.py [--counts 1,10,100,300] [--by name|index|both]
                 [--baseline OLD_ATTACH_PY]
--baseline also times the Attacher of another version of loader/attach.py, e.g.
`git show a9474a1~1:loader/attach.py > /tmp/attach_old.py` (the version before the shared socket).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bpfproxy.loader.attach import Attacher
from bpfproxy.loader.build import load_datapath

from bpfproxy.lab import netns
from bpfproxy.lab.netns import in_netns

_SEQ = itertools.count()  # one namespace name per probe of a run
#: pause after deleting a namespace: the kernel tears its devices down in the background under the
#: rtnl lock, which would otherwise show up as waiting time in the next probe's first attaches
SETTLE_S = 2.0


def make_pairs(ns: str, rid: str, count: int) -> list[str]:
    """count veth pairs inside ns in one `ip -batch`; the names of the host ends, in order."""
    hosts = [f"h{rid}{i:03d}" for i in range(count)]
    batch = "".join(f"link add {h} type veth peer name p{h[1:]}\n" for h in hosts)
    path = f"/tmp/attachprobe-{rid}-{count}.batch"
    with open(path, "w") as f:
        f.write(batch)
    try:
        netns.sh(["ip", "-batch", path], ns=ns, timeout=120)
    finally:
        os.unlink(path)
    return hosts


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_attacher(path: str) -> Any:
    """The Attacher class of the attach.py at path (another version, for a before/after comparison)."""
    spec = importlib.util.spec_from_file_location("attachprobe_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Attacher


def probe(
    prog_fds: dict[str, int], rid: str, count: int, by: str, made: list[str], attacher_class: Any = Attacher
) -> dict[str, Any]:
    """Attach to count fresh devices in a fresh namespace; per-device wall and CPU milliseconds.

    {} when by is "index" and this Attacher cannot attach by ifindex (the version before).
    """
    if by == "index" and "ifindex" not in inspect.signature(attacher_class.attach_pod_device).parameters:
        return {}
    ns = f"bpxprobe-{rid}-{next(_SEQ)}-{count}-{by}"
    made.append(ns)
    netns.create(ns)
    hosts = make_pairs(ns, rid, count)
    wall: list[float] = []
    cpu: list[float] = []
    with in_netns(ns):
        indexes = {h: socket.if_nametoindex(h) for h in hosts}
        attacher = attacher_class(prog_fds)
        start = time.perf_counter()
        for h in hosts:
            t0, c0 = time.perf_counter(), time.thread_time()
            if by == "index":
                attacher.attach_pod_device(h, ifindex=indexes[h])
            else:
                attacher.attach_pod_device(h)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time() - c0) * 1000)
        total = time.perf_counter() - start
        # every device carries both programs, and re-attaching (idempotent) costs what it costs
        re0 = time.perf_counter()
        for h in hosts[: min(count, 50)]:
            attacher.attach_pod_device(h)
        reattach = (time.perf_counter() - re0) * 1000 / min(count, 50)
        assert sorted(attacher.attached()) == sorted(hosts)
        close = getattr(attacher, "close", None)
        if close is not None:
            close()
    netns.delete(ns)
    made.remove(ns)
    time.sleep(SETTLE_S)
    return {
        "devices": count,
        "by": by,
        "median_ms": round(statistics.median(wall), 3),
        "p99_ms": round(_pct(wall, 0.99), 3),
        "max_ms": round(max(wall), 3),
        "cpu_median_ms": round(statistics.median(cpu), 3),
        "total_s": round(total, 3),
        "reattach_ms": round(reattach, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe; prints one JSON line per (device count, mode) and a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--counts", default="1,10,100,300", help="device counts, comma separated")
    p.add_argument("--by", choices=("name", "index", "both"), default="both", help="attach by name, ifindex or both")
    p.add_argument("--baseline", metavar="ATTACH_PY", help="also time the Attacher of this attach.py (before)")
    p.add_argument("--json", action="store_true", help="JSON lines only")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("attachprobe needs root", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    modes = ["name", "index"] if args.by == "both" else [args.by]
    rid = netns.run_id()
    pin_dir = f"/sys/fs/bpf/bpxprobe-{rid}"
    made: list[str] = []

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    variants: list[tuple[str, Any]] = [("current", Attacher)]
    if args.baseline:
        variants.insert(0, ("baseline", load_attacher(args.baseline)))
    results = []
    try:
        datapath = load_datapath(pin_dir)
        for version, attacher_class in variants:
            for by in modes:
                for count in counts:
                    r = probe(datapath.prog_fds, rid, count, by, made, attacher_class)
                    if not r:
                        continue  # this version cannot attach by ifindex
                    r["version"] = version
                    results.append(r)
                    if args.json:
                        print(json.dumps(r), flush=True)
    finally:
        for ns in made:
            netns.delete(ns)
        shutil.rmtree(pin_dir, ignore_errors=True)
    if not args.json:
        columns = ("version", "by", "devices", "median_ms", "p99_ms", "max_ms", "cpu_median_ms", "total_s",
                   "reattach_ms")
        print(" ".join(f"{c:>13}" for c in columns))
        for r in results:
            print(" ".join(f"{r[c]:>13}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
