"""B2: end to end through veths and namespaces: bpfproxy against kube-proxy's iptables and nftables rules.

Place in the data flow: a benchmark. Each contender gets its own topology, built at once so the
runs can be interleaved (repeat r of every contender runs before repeat r+1 of any): a node
namespace, a client pod and ten backend pods wired to it Calico-style (bpfproxy.lab.netns.wire_pod),
a C echo server in each backend. The contenders:

- bpfproxy: the real agent (`bpfproxy agent --source file:...`) in the node namespace, attached to
  the pod veths; services are written to the file it reads;
- iptables: kube-proxy's iptables-mode rules (rules.iptables_restore) loaded with iptables-restore;
- nftables: kube-proxy's nftables-mode ruleset (rules.nft_ruleset) loaded with nft -f;
- no-lb: nothing in the node; the client connects to backend addresses directly.

The C load generator (bench-loadgen) in the client pod measures the new-connection rate with 16
parallel connections, the connect() latency with one connection at a time, and the
request/response rate on 16 persistent connections; targets are services picked uniformly at
random among the N programmed (no-lb: the ten backends), or always the first one (hot).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BACKEND_PORT,
    CLEANUP,
    CLUSTER_CIDR,
    ENDPOINTS_PER_SERVICE,
    SERVICE_PORT,
    Row,
    build_tool,
    end_process,
    log,
    median,
    service_ip,
    sizes_need,
    timed_load,
)
from rules import iptables_restore, nft_ruleset
from workload import NODE_NAME, backend_ips, bench_services, write_source

from bpfproxy.lab import netns

#: the client pod's address
CLIENT_IP = "10.244.1.10"
#: parallel connections of the rate phases
CONCURRENCY = 16
#: seconds a contender may take to program one size before it is given up at that size and above
PROGRAM_TIMEOUT = 300.0
#: sizes at or above this run only when every contender programmed the size before in OPTIONAL_BUDGET s
OPTIONAL_FROM = 100000
#: see OPTIONAL_FROM
OPTIONAL_BUDGET = 120.0


@dataclass(frozen=True)
class B2Config:
    """Sizes, phase lengths and repeats of one B2 run."""

    sizes: tuple[int, ...]
    """numbers of services"""
    seconds: float
    """measured seconds per phase"""
    repeats: int
    """repeats of every phase (medians reported)"""
    hot: bool
    """also run the phases against one hot service"""
    contenders: tuple[str, ...] = ("bpfproxy", "iptables", "nftables", "no-lb")
    """which contenders run"""


@dataclass
class Topology:
    """One contender's namespaces: node, client, backends; every name carries the run id."""

    rid: str
    """run id"""
    node: str = ""
    """node namespace"""
    client: str = ""
    """client pod namespace"""
    backends: list[str] = field(default_factory=list)
    """backend pod namespaces"""
    servers: list[subprocess.Popen[Any]] = field(default_factory=list)
    """echo servers we started"""

    @property
    def dev_glob(self) -> str:
        """Glob of every pod veth of this topology (node side)."""
        return f"bn{self.rid}*"

    def build(self, server: Path) -> None:
        """Create the namespaces, veths and servers (CLEANUP undoes them)."""
        self.node = f"bench-{os.getpid()}-{self.rid}-node"
        CLEANUP.push(f"delete topology {self.rid}", self.destroy)
        netns.create(self.node)
        netns.sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=self.node)
        for key in ("all", "default"):
            netns.sh(["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"], ns=self.node)
        self.client = f"bench-{os.getpid()}-{self.rid}-client"
        netns.wire_pod(self.node, self.client, host_dev=f"bn{self.rid}c", ip=CLIENT_IP)
        netns.sh(["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"], ns=self.client)
        for j, ip in enumerate(backend_ips()):
            ns = f"bench-{os.getpid()}-{self.rid}-be{j}"
            self.backends.append(ns)
            netns.wire_pod(self.node, ns, host_dev=f"bn{self.rid}b{j}", ip=ip)
            proc = subprocess.Popen([*netns.ns_prefix(ns), str(server), str(BACKEND_PORT)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            self.servers.append(proc)
        for ns in self.backends:
            deadline = time.monotonic() + 10
            while f":{BACKEND_PORT}" not in netns.sh(["ss", "-Hltn"], ns=ns):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"echo server in {ns} did not start")
                time.sleep(0.02)

    def destroy(self) -> None:
        """End our servers (by pid) and delete our namespaces."""
        for proc in self.servers:
            end_process(proc)
        self.servers.clear()
        for ns in [self.client, *self.backends, self.node]:
            if ns:
                netns.delete(ns)


class Contender:
    """A service proxy under test in its own topology."""

    name = ""
    """the contender's name in the results"""

    def __init__(self, topo: Topology, workdir: Path) -> None:
        self.topo = topo
        self.workdir = workdir
        self.gave_up = ""
        """why this contender stopped (empty while it runs)"""

    def start(self, max_services: int) -> None:
        """Prepare for sizes up to max_services."""

    def program(self, services: int) -> float | None:
        """Program this many services; seconds it took (None: nothing to program)."""
        return None

    def target(self, services: int) -> tuple[str, int, int]:
        """(first address, count, port) the client connects to."""
        return service_ip(0), services, SERVICE_PORT

    def stop(self) -> None:
        """Undo start."""


class NoLB(Contender):
    """The client talks to the backends directly."""

    name = "no-lb"

    def target(self, services: int) -> tuple[str, int, int]:
        return backend_ips()[0], ENDPOINTS_PER_SERVICE, BACKEND_PORT


class IptablesRules(Contender):
    """kube-proxy's iptables mode, loaded whole with iptables-restore."""

    name = "iptables"

    def program(self, services: int) -> float | None:
        text = iptables_restore(bench_services(services), CLUSTER_CIDR)
        return timed_load(["iptables-restore"], self.topo.node, text, timeout=PROGRAM_TIMEOUT)


class NftRules(Contender):
    """kube-proxy's nftables mode, loaded whole with nft -f."""

    name = "nftables"

    def program(self, services: int) -> float | None:
        text = nft_ruleset(bench_services(services), CLUSTER_CIDR)
        path = self.workdir / f"{self.topo.rid}.nft"
        path.write_text(text)
        return timed_load(["nft", "-f", str(path)], self.topo.node, timeout=PROGRAM_TIMEOUT)


class Bpfproxy(Contender):
    """The real agent on a file source, in the node namespace."""

    name = "bpfproxy"

    def __init__(self, topo: Topology, workdir: Path) -> None:
        super().__init__(topo, workdir)
        self.proc: subprocess.Popen[Any] | None = None
        self.source = workdir / f"{topo.rid}-services.json"
        self.logfile = workdir / f"{topo.rid}-agent.log"
        self.pin_dir = f"/sys/fs/bpf/bench-{os.getpid()}-{topo.rid}"
        self.per_service = 0.0
        self.current = 0

    def start(self, max_services: int) -> None:
        need = sizes_need(max_services)
        write_source(self.source, bench_services(1))
        argv = [
            sys.executable, "-m", "bpfproxy", "agent", "--source", f"file:{self.source}",
            "--pin-dir", self.pin_dir, "--pod-devices", self.topo.dev_glob, "--node-name", NODE_NAME,
            "--cluster-cidr", CLUSTER_CIDR, "--min-sync-period", "0.2", "--full-sync-period", "3600",
            "--lb-map-max", str(need["lb_map_max"]), "--backend-map-max", str(need["backend_map_max"]),
            "--svc-id-max", str(need["svc_id_max"]), "--ct-map-max", "1048576",
        ]  # fmt: skip
        CLEANUP.push(f"remove pins {self.pin_dir}", lambda: shutil.rmtree(self.pin_dir, ignore_errors=True))
        CLEANUP.push(f"bpfproxy cleanup {self.pin_dir}", lambda: netns.sh(
            [sys.executable, "-m", "bpfproxy", "cleanup", "--pin-dir", self.pin_dir], ns=self.topo.node, check=False))
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [*netns.ns_prefix(self.topo.node), *argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        proc = self.proc
        CLEANUP.push("stop agent", lambda: end_process(proc, timeout=10))
        text = self._wait(r"agent ready frontends=(\d+) devices=(\d+)", 0, 120)
        m = re.search(r"agent ready frontends=(\d+) devices=(\d+)", text)
        assert m is not None
        self.per_service = float(m.group(1))
        self.current = 1
        if int(m.group(2)) < 1 + ENDPOINTS_PER_SERVICE:
            raise RuntimeError(f"agent attached {m.group(2)} devices, expected {1 + ENDPOINTS_PER_SERVICE}")

    def program(self, services: int) -> float | None:
        if services == self.current:  # the agent started on this source: programmed before "agent ready"
            return None
        self.current = services
        offset = self.logfile.stat().st_size
        started = time.monotonic()
        write_source(self.source, bench_services(services))
        want = int(self.per_service * services)
        deadline = time.monotonic() + PROGRAM_TIMEOUT
        while time.monotonic() < deadline:
            text = self.logfile.read_text()[offset:]
            if any(int(x) == want for x in re.findall(r"sync done .*? frontends=(\d+)", text)):
                return time.monotonic() - started
            if "sync failed" in text or (self.proc and self.proc.poll() is not None):
                raise RuntimeError(f"agent failed to program {services} services; log {self.logfile}")
            time.sleep(0.05)
        raise TimeoutError(f"agent did not program {services} services in {PROGRAM_TIMEOUT} s")

    def _wait(self, pattern: str, offset: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.logfile.read_text()[offset:] if self.logfile.exists() else ""
            if re.search(pattern, text):
                return text
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"agent exited early:\n{text[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"agent: no {pattern!r} after {timeout} s; log {self.logfile}")

    def stop(self) -> None:
        if self.proc:
            end_process(self.proc, timeout=10)


CONTENDERS: dict[str, type[Contender]] = {"bpfproxy": Bpfproxy, "iptables": IptablesRules, "nftables": NftRules,
                                          "no-lb": NoLB}  # fmt: skip


def loadgen(tool: Path, ns: str, mode: str, target: tuple[str, int, int], *, conc: int, seconds: float,
            hot: bool) -> dict[str, Any]:  # fmt: skip
    """One bench-loadgen run in namespace ns; its JSON result."""
    base, count, port = target
    argv = [str(tool), mode, base, str(count), str(port), "-c", str(conc), "-d", str(seconds), "-w", "0.3",
            "-h" if hot else "-u"]  # fmt: skip
    out = netns.sh(argv, ns=ns, timeout=seconds + 30)
    result: dict[str, Any] = json.loads(out)
    return result


def run(cfg: B2Config) -> list[Row]:
    """Measure every contender at every size (interleaved repeats); rows of rates, latencies, CPU."""
    tool = build_tool("bench-loadgen")
    server = build_tool("bench-server")
    workdir = Path(tempfile.mkdtemp(prefix="bench-b2-"))
    CLEANUP.push(f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    contenders: list[Contender] = []
    for name in cfg.contenders:
        topo = Topology(rid=netns.run_id())
        log(f"b2 building topology contender={name} rid={topo.rid}")
        topo.build(server)
        contenders.append(CONTENDERS[name](topo, workdir))
    for c in contenders:
        c.start(max(cfg.sizes))
        CLEANUP.push(f"stop {c.name}", c.stop)
    rows: list[Row] = []
    patterns = ["uniform", "hot"] if cfg.hot else ["uniform"]
    slowest = 0.0
    for n in sorted(cfg.sizes):
        eps = n * ENDPOINTS_PER_SERVICE
        if n >= OPTIONAL_FROM and slowest > OPTIONAL_BUDGET:
            log(f"b2 skipping services={n}: the slowest contender took {slowest:.0f} s at the size before")
            rows.append(Row("b2", "all", n, eps, "skipped_slowest_program_s", round(slowest, 1), "s"))
            break
        slowest = 0.0
        live = []
        for c in contenders:
            if c.gave_up:
                continue
            try:
                secs = c.program(n)
            except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                c.gave_up = f"could not program {n} services: {e}"
                log(f"b2 contender={c.name} gave up: {c.gave_up}")
                rows.append(Row("b2", c.name, n, eps, "gave_up", 1, "bool"))
                continue
            if secs is not None:
                slowest = max(slowest, secs)
                rows.append(Row("b2", c.name, n, eps, "program_s", round(secs, 3), "s"))
                log(f"b2 programmed contender={c.name} services={n} seconds={secs:.2f}")
            smoke = loadgen(tool, c.topo.client, "conn", c.target(n), conc=1, seconds=0.2, hot=False)
            if smoke["done"] == 0 or smoke["errors"]:
                raise RuntimeError(f"b2: contender {c.name} at {n} services does not carry traffic: {smoke}")
            live.append(c)
        results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        load_before = os.getloadavg()[0]
        for rep in range(cfg.repeats):
            # the same phase runs for every contender back to back (in an order rotated per repeat), so
            # contenders are compared within seconds of each other while other work on the machine drifts
            order = live[rep % len(live):] + live[:rep % len(live)]
            for pattern in patterns:
                hot = pattern == "hot"
                for phase, mode, conc in (("conn", "conn", CONCURRENCY), ("lat", "conn", 1),
                                          ("rr", "rr", CONCURRENCY)):  # fmt: skip
                    for c in order:
                        r = loadgen(tool, c.topo.client, mode, c.target(n), conc=conc, seconds=cfg.seconds, hot=hot)
                        results.setdefault((c.name, pattern, phase), []).append(r)
        rows.append(Row("b2", "machine", n, eps, "loadavg_1m.before", round(load_before, 2), "load"))
        rows.append(Row("b2", "machine", n, eps, "loadavg_1m.after", round(os.getloadavg()[0], 2), "load"))
        for (name, pattern, phase), runs in results.items():

            def emit(metric: str, values: list[float], unit: str, name: str = name, pattern: str = pattern,
                     n: int = n, eps: int = eps) -> None:
                rows.append(Row("b2", name, n, eps, f"{metric}.{pattern}", round(median(values), 3), unit))

            if phase == "conn":
                emit("conn_rate", [r["rate"] for r in runs], "per_s")
                emit("cpu_per_conn", [1e6 * r["cpu_busy_s"] / max(1, r["done"]) for r in runs], "us")
                emit("conn_errors", [r["errors"] for r in runs], "count")
            elif phase == "lat":
                emit("connect_p50", [r["lat_p50_us"] for r in runs], "us")
                emit("connect_p99", [r["lat_p99_us"] for r in runs], "us")
            else:
                emit("rr_rate", [r["rate"] for r in runs], "per_s")
                emit("rr_p99", [r["lat_p99_us"] for r in runs], "us")
        log(f"b2 measured services={n} contenders={','.join(c.name for c in live)}")
    for c in contenders:
        c.stop()
        c.topo.destroy()
    return rows


def config(quick: bool) -> B2Config:
    """The B2 settings of `make bench-quick` (quick) or `make bench`."""
    if quick:
        return B2Config(sizes=(1, 1000, 4000), seconds=0.6, repeats=3, hot=False)
    return B2Config(sizes=(1, 1000, 10000, 30000, 100000), seconds=2.0, repeats=3, hot=True)
