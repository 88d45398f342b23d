"""Measure what attaching the tc programs to one pod device costs, at 1 to 300 devices per node.

Place in the data flow: a measurement script next to the attach tests (not collected by pytest).
It loads the datapath into a unique pin dir under /sys/fs/bpf, makes a private network namespace
per device count with that many veth pairs, and times Attacher.attach_pod_device for every device
(wall time and this thread's CPU time, which is what competes for the GIL with the first sync).
The namespaces and the pin dir are removed at exit, also on failure or SIGTERM.

Usage (root): .venv/bin/python tests/netns/attachprobe.py [--counts 1,10,100,300] [--by name|index|both]
"""

from __future__ import annotations

import argparse
import inspect
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


def probe(prog_fds: dict[str, int], rid: str, count: int, by: str, made: list[str]) -> dict[str, Any]:
    """Attach to count fresh devices in a fresh namespace; per-device wall and CPU milliseconds."""
    ns = f"bpxprobe-{rid}-{count}-{by}"
    made.append(ns)
    netns.create(ns)
    hosts = make_pairs(ns, rid, count)
    wall: list[float] = []
    cpu: list[float] = []
    with in_netns(ns):
        indexes = {h: socket.if_nametoindex(h) for h in hosts}
        attacher = Attacher(prog_fds)
        takes_index = "ifindex" in inspect.signature(attacher.attach_pod_device).parameters
        if by == "index" and not takes_index:
            raise SystemExit("this Attacher cannot attach by ifindex")
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
    results = []
    try:
        datapath = load_datapath(pin_dir)
        for by in modes:
            for count in counts:
                r = probe(datapath.prog_fds, rid, count, by, made)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        for ns in made:
            netns.delete(ns)
        shutil.rmtree(pin_dir, ignore_errors=True)
    if not args.json:
        print(f"{'by':>6} {'devices':>7} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'cpu med ms':>10} "
              f"{'total s':>8} {'reattach ms':>11}")
        for r in results:
            print(f"{r['by']:>6} {r['devices']:>7} {r['median_ms']:>10.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f} "
                  f"{r['cpu_median_ms']:>10.3f} {r['total_s']:>8.3f} {r['reattach_ms']:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
