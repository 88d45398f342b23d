"""Shared pieces of the benchmarks: the result row, statistics, the machine, the C tools, cleanup.

Place in the data flow: beside the benchmarks. Each benchmark script (b1_packet, b2_e2e,
b4_memory, and later b3) returns a list of `Row`s; `run.py` writes them to
bench/results/<date>-<benchmark>.json, plots them and rewrites the results section of
bench/README.md. Nothing here touches the network, except `timed_load`, which runs a rule loader
inside a namespace its caller made.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

#: the bench/ folder
BENCH_DIR = Path(__file__).resolve().parent
#: where results (JSON, PNG) are written
RESULTS_DIR = BENCH_DIR / "results"
#: where the C tools are built (not committed)
BUILD_DIR = BENCH_DIR / "build"
#: the keys of every result row, in order
ROW_KEYS = ("benchmark", "contender", "services", "endpoints", "metric", "value", "unit")

#: first ClusterIP of the benchmark services (service i is SERVICE_BASE + i)
SERVICE_BASE = ipaddress.IPv4Address("10.96.0.1")
#: the service port of every benchmark service
SERVICE_PORT = 80
#: the port every backend listens on
BACKEND_PORT = 8080
#: the pod CIDR of the benchmark node (the agent's --cluster-cidr, kube-proxy's --cluster-cidr)
CLUSTER_CIDR = "10.244.0.0/16"
#: endpoints per service in every benchmark
ENDPOINTS_PER_SERVICE = 10


@dataclass(frozen=True)
class Row:
    """One measured figure; the JSON results are lists of these."""

    benchmark: str
    """b1, b2, b3 or b4"""
    contender: str
    """what was measured: bpfproxy, iptables, nftables, no-lb, empty-tc"""
    services: int
    """number of services programmed"""
    endpoints: int
    """number of endpoints (service, backend pairs) programmed"""
    metric: str
    """what the value is, e.g. "new_flow.hot.p50" or "conn_rate.uniform" """
    value: float
    """the figure"""
    unit: str
    """its unit: ns, us, per_s, MiB, ratio, s"""


def validate_row(obj: Any) -> Row:
    """A Row from a decoded JSON object; ValueError naming the problem when it has the wrong shape."""
    if not isinstance(obj, dict):
        raise ValueError(f"result row {obj!r}: not an object")
    if tuple(sorted(obj)) != tuple(sorted(ROW_KEYS)):
        raise ValueError(f"result row {obj!r}: keys must be exactly {', '.join(ROW_KEYS)}")
    for key in ("benchmark", "contender", "metric", "unit"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise ValueError(f"result row {obj!r}: {key} must be a non-empty string")
    for key in ("services", "endpoints"):
        if not isinstance(obj[key], int) or isinstance(obj[key], bool) or obj[key] < 0:
            raise ValueError(f"result row {obj!r}: {key} must be a non-negative integer")
    if not isinstance(obj["value"], (int, float)) or isinstance(obj["value"], bool):
        raise ValueError(f"result row {obj!r}: value must be a number")
    return Row(**obj)


def write_rows(rows: Sequence[Row], path: Path) -> None:
    """Write rows as the JSON list the results use (validated first)."""
    data = [asdict(r) for r in rows]
    for obj in data:
        validate_row(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def read_rows(path: Path) -> list[Row]:
    """The rows of one results JSON file (validated)."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: results must be a JSON list of rows")
    return [validate_row(obj) for obj in data]


def median(values: Sequence[float]) -> float:
    """The median (0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) by the nearest-rank method (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return float(ordered[rank])


def service_ip(index: int) -> str:
    """The ClusterIP of benchmark service index (0-based)."""
    return str(SERVICE_BASE + index)


def sizes_need(services: int, endpoints_per_service: int = ENDPOINTS_PER_SERVICE) -> dict[str, int]:
    """Map capacities (agent flags / DatapathSettings fields) that hold `services` services with margin."""
    endpoints = services * endpoints_per_service
    lb = services * 2 + endpoints  # slot 0 + address entry per frontend, one slot per endpoint
    return {
        "lb_map_max": max(65536, int(lb * 1.25)),
        "backend_map_max": max(65536, int(endpoints * 1.25) + 1),
        "svc_id_max": max(65536, int(services * 1.25) + 1),
    }


@dataclass
class Machine:
    """What the figures were measured on."""

    cpus: int
    """online CPUs"""
    cpu_model: str
    """/proc/cpuinfo model name"""
    ram_gib: float
    """MemTotal"""
    kernel: str
    """uname -r"""
    os: str
    """PRETTY_NAME of /etc/os-release"""

    @classmethod
    def here(cls) -> Machine:
        """This machine."""
        model = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        ram = 0.0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) / 1024 / 1024
        pretty = platform.system()
        if os.path.exists("/etc/os-release"):
            for line in Path("/etc/os-release").read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    pretty = line.split("=", 1)[1].strip('"')
        return cls(os.cpu_count() or 1, model, round(ram, 1), platform.release(), pretty)


# -- the C tools ---------------------------------------------------------------------------------

#: tool name -> its C source under bench/c
C_TOOLS = {"bench-loadgen": "loadgen.c", "bench-server": "server.c", "bench-testrun": "testrun.c"}


def build_tool(name: str) -> Path:
    """Compile one C tool with gcc -O2 when its binary is missing or older than its source; its path."""
    src = BENCH_DIR / "c" / C_TOOLS[name]
    out = BUILD_DIR / name
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD_DIR.mkdir(exist_ok=True)
        proc = subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(src)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gcc failed for {src}:\n{proc.stderr}")
    return out


# -- cleanup -------------------------------------------------------------------------------------


@dataclass
class Cleanup:
    """Undo actions run last-in first-out on normal exit, on an exception, and on SIGTERM/SIGINT/SIGHUP."""

    actions: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    """(description, action) in the order they were pushed"""

    def push(self, what: str, action: Callable[[], object]) -> None:
        """Register an undo action."""
        self.actions.append((what, action))

    def run(self) -> None:
        """Run every action (newest first), each once; a failing one is reported and the rest still run."""
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as e:
                log(f"cleanup failed what={what!r} error={e}")


#: the process-wide cleanup stack
CLEANUP = Cleanup()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Run CLEANUP at exit and turn SIGTERM/SIGHUP into SystemExit so try/finally blocks run."""
    atexit.register(CLEANUP.run)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def end_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM one process we started (by its Popen), SIGKILL after timeout, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log(msg: str) -> None:
    """Progress line on stderr (stdout carries the tables)."""
    print(f"{time.strftime('%H:%M:%S')} bench: {msg}", file=sys.stderr, flush=True)


def timed_load(argv: list[str], ns: str, stdin: str = "", *, timeout: float) -> float:
    """Seconds a rule loader (iptables-restore, nft -f) takes inside network namespace ns; raises on failure."""
    from bpfproxy.lab import netns

    started = time.monotonic()
    proc = subprocess.run([*netns.ns_prefix(ns), *argv], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {ns}: {proc.stderr.strip()[:2000]}")
    return time.monotonic() - started
