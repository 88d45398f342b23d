"""B4: memory of the real agent and of its BPF maps at 1k, 10k and 100k endpoints.

Place in the data flow: a benchmark. For each size and each source it starts `bpfproxy agent` in a
fresh namespace on N/10 services x 10 distinct endpoints (b3_control.services_with; map sizes from
common.sizes_need, as an operator would set them):

- contender "bpfproxy-kube": `--source kube` against tests/kube/fakeapi.FakeApiServer, whose
  listening socket is made inside that namespace (as B3 does; the fake serves from a thread of this
  process, so its memory is not the agent's). The issue's memory target is about this agent.
- contender "bpfproxy-file": `--source file:` on one JSON `kind: List` file of the same objects.

It waits for "agent ready", then 1 s later reads the agent's VmRSS / VmHWM from /proc/<pid>/status
and the memlock of every BPF map it holds from /proc/<pid>/fdinfo (the kernel's own accounting of
the map's memory), with each map's max_entries, so one sees that map memory follows the settings
(maps are preallocated) rather than the number of services. The device glob matches nothing: no
program is attached anywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from b3_control import node_object, services_with
from common import CLEANUP, CLUSTER_CIDR, ENDPOINTS_PER_SERVICE, Row, end_process, log, sizes_need
from workload import NODE_NAME, BenchService, objects, write_source

from bpfproxy.lab import netns


@dataclass(frozen=True)
class B4Config:
    """Sizes of one B4 run."""

    endpoints: tuple[int, ...]
    """numbers of endpoints (services = endpoints / 10)"""
    sources: tuple[str, ...] = ("kube", "file")
    """the agent's sources measured at each size (contender bpfproxy-<source>)"""


def status_kib(pid: int, field: str) -> int:
    """A kB field (VmRSS, VmHWM) of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def bpf_maps_of(pid: int) -> dict[int, dict[str, int | str]]:
    """Every BPF map pid holds an fd of, by map id: memlock bytes, max_entries, key/value size, name."""
    maps: dict[int, dict[str, int | str]] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(fd_dir / fd) != "anon_inode:bpf-map":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(\w+):\s+(\S+)", info, re.M))
        map_id = int(fields.get("map_id", "-1"))
        maps[map_id] = {
            "memlock": int(fields.get("memlock", "0")),
            "max_entries": int(fields.get("max_entries", "0")),
            "no_prealloc": int(fields.get("map_flags", "0"), 16) & 1,  # BPF_F_NO_PREALLOC
            "key_size": int(fields.get("key_size", "0")),
            "value_size": int(fields.get("value_size", "0")),
            "name": _map_name(map_id),
        }
    return maps


def _map_name(map_id: int) -> str:
    """The name bpftool would show, through BPF_MAP_GET_FD_BY_ID + info (empty when unavailable)."""
    try:
        from bpfproxy.loader import bpfsys

        fd = bpfsys.map_get_fd_by_id(map_id)
        try:
            return bytes(bpfsys.map_info(fd).name).decode(errors="replace")
        finally:
            os.close(fd)
    except Exception:
        return f"id{map_id}"


def run(cfg: B4Config) -> list[Row]:
    """Start the agent at each size on each source; rows of RSS, peak RSS, map memory and time to ready."""
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-b4-"))
    CLEANUP.push(f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    for eps in cfg.endpoints:
        services = services_with(max(1, eps // ENDPOINTS_PER_SERVICE))
        for source in cfg.sources:
            rows += measure(source, services, eps, workdir)
    return rows


def measure(source: str, services: list[BenchService], eps: int, workdir: Path) -> list[Row]:
    """One agent start on source ("kube" or "file") holding services; its rows (contender bpfproxy-<source>)."""
    from kube.fakeapi import FakeApiServer  # b3_control put tests/ on the path

    rid = netns.run_id()
    ns = f"bench-{os.getpid()}-{rid}-mem"
    pin_dir = f"/sys/fs/bpf/bench-{os.getpid()}-{rid}-mem"
    need = sizes_need(len(services))
    netns.create(ns)
    CLEANUP.push(f"delete {ns}", partial(netns.delete, ns))
    CLEANUP.push(f"remove {pin_dir}", partial(shutil.rmtree, pin_dir, ignore_errors=True))
    fake: FakeApiServer | None = None
    text_mib = 0.0
    if source == "kube":
        fake = FakeApiServer(netns=f"/run/netns/{ns}").start()
        CLEANUP.push("stop b4 fake API server", fake.stop)
        fake.apply(node_object())
        fake.load(objects(services))
        source_args = ["--source", "kube", "--kubeconfig", fake.write_kubeconfig(str(workdir / f"{rid}.kubeconfig"))]
    else:
        path = workdir / f"{rid}.json"
        write_source(path, services)
        source_args = ["--source", f"file:{path}"]
        text_mib = path.stat().st_size / 2**20
    argv = [
        sys.executable, "-m", "bpfproxy", "agent", *source_args, "--pin-dir", pin_dir,
        "--pod-devices", f"bn{rid}*", "--node-name", NODE_NAME, "--cluster-cidr", CLUSTER_CIDR,
        "--metrics-bind-address", "", "--healthz-bind-address", "",
        "--lb-map-max", str(need["lb_map_max"]), "--backend-map-max", str(need["backend_map_max"]),
        "--svc-id-max", str(need["svc_id_max"]),
    ]  # fmt: skip
    logfile = workdir / f"{rid}.log"
    started = time.monotonic()
    with open(logfile, "wb") as out:
        proc: subprocess.Popen[Any] = subprocess.Popen(
            [*netns.ns_prefix(ns), *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    CLEANUP.push("stop b4 agent", partial(end_process, proc, timeout=10))
    try:
        while "agent ready" not in logfile.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"b4: agent ({source} source) exited early:\n{logfile.read_text()[-3000:]}")
            if time.monotonic() - started > 600:
                raise TimeoutError(f"b4: agent ({source} source) not ready after 600 s at {eps} endpoints")
            time.sleep(0.05)
        ready = time.monotonic() - started
        time.sleep(1.0)  # let the sync threads settle
        rss = status_kib(proc.pid, "VmRSS") / 1024
        hwm = status_kib(proc.pid, "VmHWM") / 1024
        maps = bpf_maps_of(proc.pid)
    finally:
        end_process(proc, timeout=10)
        if fake is not None:
            fake.stop()
        netns.sh([sys.executable, "-m", "bpfproxy", "cleanup", "--pin-dir", pin_dir], ns=ns, check=False)
        shutil.rmtree(pin_dir, ignore_errors=True)
        netns.delete(ns)
    total = sum(int(m["memlock"]) for m in maps.values()) / 2**20
    rows: list[Row] = []

    def emit(metric: str, value: float, unit: str) -> None:
        rows.append(Row("b4", f"bpfproxy-{source}", len(services), eps, metric, round(value, 3), unit))

    emit("agent_rss", rss, "MiB")
    emit("agent_rss_peak", hwm, "MiB")
    emit("bpf_map_memory", total, "MiB")
    emit("ready_s", ready, "s")
    if source == "file":
        emit("source_text", text_mib, "MiB")  # the file source keeps this text between scans
    for m in sorted(maps.values(), key=lambda m: str(m["name"])):
        emit(f"map.{m['name']}.memlock", int(m["memlock"]) / 2**20, "MiB")
        emit(f"map.{m['name']}.max_entries", int(m["max_entries"]), "entries")
        emit(f"map.{m['name']}.no_prealloc", int(m["no_prealloc"]), "bool")
    log(f"b4 source={source} endpoints={eps} rss_mib={rss:.1f} peak_mib={hwm:.1f} maps_mib={total:.1f} "
        f"ready_s={ready:.1f}")  # fmt: skip
    return rows


def config(quick: bool) -> B4Config:
    """The B4 settings (the same in both modes: the agent starts in seconds)."""
    return B4Config(endpoints=(1000, 10000, 100000))
