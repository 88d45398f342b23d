"""B1: per-packet cost of the programs the agent loads, with BPF_PROG_TEST_RUN, against an empty tc program.

Place in the data flow: a benchmark. It compiles the real datapath (load_datapath) with maps big
enough for 100k services x 10 backends, fills the maps through the real controller (Proxier ->
plan -> diff -> MapsWriter) at each size, and times five cases with the C driver bench-testrun:

- pass:        a pod talks to another pod (no frontend): from_pod passes it;
- new_flow:    SYN to a service: backend choice + conntrack insert + DNAT;
- established: the same flows' next packet: conntrack hit + DNAT;
- reply:       the backend's answer: to_pod reverse-translates it from the conntrack entry;
- reject:      SYN to a service address on a port it does not serve: TCP RST built and redirected.

Each case runs once per packet (repeat=1) because the program rewrites the packet the kernel
would reuse across repeats; the kernel's timer (one ktime read per call) is subtracted as the
difference between the empty program at repeat=1 and at repeat=REPEAT_FLOOR. Every sample's verdict
is checked through the verdict counters, so each sample is the case it claims.
"""

from __future__ import annotations

import ctypes as ct
import os
import random
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common import (
    CLEANUP,
    ENDPOINTS_PER_SERVICE,
    SERVICE_PORT,
    Row,
    build_tool,
    log,
    median,
    percentile,
    service_ip,
    sizes_need,
)
from pktgen import ACK, SYN, read_records, tcp_frame, tcp_tuple, write_records
from workload import SELF_SERVICE, bench_services, feed

#: repeat count of the in-kernel loops (floor and pass-through cross-check)
REPEAT_FLOOR = 200_000
#: services in the hot set
HOT_SET = 16
#: the empty tc program: the floor
EMPTY_PROG = "#include <uapi/linux/pkt_cls.h>\nint empty(struct __sk_buff *skb) { return TC_ACT_OK; }\n"
#: tc return codes
TC_ACT_OK, TC_ACT_REDIRECT = 0, 7


@dataclass(frozen=True)
class B1Config:
    """Sizes and sample counts of one B1 run."""

    sizes: tuple[int, ...]
    """numbers of services (each with 10 backends)"""
    samples: int
    """packets per case, pattern and round"""
    rounds: int
    """rounds per case (the reported p50 is the median of the round medians)"""


class _Driver:
    """Runs bench-testrun on a program fd with a packet list; returns (retvals, durations, out frames)."""

    def __init__(self, workdir: Path) -> None:
        self.tool = build_tool("bench-testrun")
        self.workdir = workdir

    def run(self, fd: int, frames: list[bytes], repeat: int = 1, *, want_out: bool = False) -> tuple[
            list[int], list[int], list[bytes]]:
        inp = self.workdir / "in.bin"
        out = self.workdir / "out.bin"
        inp.write_bytes(write_records(frames))
        argv = [str(self.tool), str(fd), str(inp), str(repeat)] + ([str(out)] if want_out else [])
        proc = subprocess.run(argv, pass_fds=(fd,), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bench-testrun failed ({proc.returncode}): {proc.stderr.strip()}")
        rets, durs = [], []
        for line in proc.stdout.split("\n"):
            if line:
                r, d = line.split()
                rets.append(int(r))
                durs.append(int(d))
        outs = list(read_records(out.read_bytes())) if want_out else []
        return rets, durs, outs


def _verdicts(maps: object) -> Counter[str]:
    from bpfproxy.loader.structs import Verdict

    counts: Counter[str] = Counter()
    for v in Verdict:
        counts[v.name] = sum(c.packets for c in maps.verdict.get_percpu(ct.c_uint32(v)))  # type: ignore[attr-defined]
    return counts


class _Flows:
    """Unique client tuples (source address and port) across the whole run."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> tuple[str, int]:
        i = self.n
        self.n += 1
        return f"10.244.{100 + (i // 50000) // 250}.{1 + (i // 50000) % 250}", 10000 + i % 50000


def run(cfg: B1Config) -> list[Row]:
    """Measure every case at every size; rows of ns per packet (p50 and p99) and the floor."""
    from bcc import BPF
    from bpfproxy.controller.plan import Limits
    from bpfproxy.controller.proxier import Proxier
    from bpfproxy.controller.sync import MapsWriter
    from bpfproxy.loader.build import PROG_FROM_POD, PROG_TO_POD, DatapathSettings, load_datapath
    from bpfproxy.loader.maps import DatapathMaps

    pin_dir = f"/sys/fs/bpf/bench-{os.getpid()}-b1"
    CLEANUP.push(f"remove {pin_dir}", lambda: shutil.rmtree(pin_dir, ignore_errors=True))
    workdir = Path(tempfile.mkdtemp(prefix="bench-b1-"))
    CLEANUP.push(f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    need = sizes_need(max(cfg.sizes))
    flows_per_size = 2 * cfg.rounds * cfg.samples * 2
    settings = DatapathSettings(
        lb_map_max=need["lb_map_max"], backend_map_max=need["backend_map_max"], svc_id_max=need["svc_id_max"],
        ct_map_max=max(262144, 4 * flows_per_size),
    )  # fmt: skip
    log(f"b1 compiling datapath pin_dir={pin_dir} sizes={settings.size_defines()}")
    dp = load_datapath(pin_dir, settings)
    empty = BPF(text=EMPTY_PROG.encode())
    empty_fd = int(empty.load_func(b"empty", BPF.SCHED_CLS).fd)
    from_pod, to_pod = dp.prog_fds[PROG_FROM_POD], dp.prog_fds[PROG_TO_POD]
    maps = DatapathMaps(pin_dir, settings.size_defines())
    CLEANUP.push("close b1 maps", maps.close)
    writer = MapsWriter(maps)
    limits = Limits(lb_entries=settings.lb_map_max, backends=settings.backend_map_max, svc_ids=settings.svc_id_max)
    driver = _Driver(workdir)
    flows = _Flows()
    rng = random.Random(4)
    rows: list[Row] = []

    def timed(fd: int, frames: list[bytes], expect_ret: int, expect_verdict: str, *, want_out: bool = False) -> tuple[
            list[int], list[bytes]]:
        before = _verdicts(maps)
        rets, durs, outs = driver.run(fd, frames, want_out=want_out)
        got = _verdicts(maps) - before
        bad = [r for r in rets if r != expect_ret]
        if bad or got != Counter({expect_verdict: len(frames)}):
            raise RuntimeError(
                f"b1 case is not what it claims: expected {len(frames)}x {expect_verdict} (ret {expect_ret}), "
                f"got verdicts {dict(got)} and {len(bad)} other return values"
            )
        return durs, outs

    # the floor and the timer overhead: the empty program at repeat=1 and in a long in-kernel loop
    probe = tcp_frame("10.244.1.10", "10.244.3.3", 40000, 8080, ACK)
    _, floor_loop, _ = driver.run(empty_fd, [probe] * 5, REPEAT_FLOOR)
    floor = median(floor_loop)
    _, floor_one, _ = driver.run(empty_fd, [probe] * cfg.samples, 1)
    overhead = median(floor_one) - floor
    log(f"b1 floor ns={floor:.1f} repeat1_ns={median(floor_one):.1f} timer_overhead_ns={overhead:.1f}")

    for n in sorted(cfg.sizes):
        services = bench_services(n)
        log(f"b1 programming services={n} endpoints={n * ENDPOINTS_PER_SERVICE} (real Proxier + MapsWriter)")
        proxier = Proxier(writer, limits=limits, max_sync_period=1e9)
        feed(proxier, [*services, SELF_SERVICE])
        if not proxier.sync():
            raise RuntimeError(f"b1: the controller failed to program {n} services (see the log)")
        if proxier.counters.skipped_services:
            raise RuntimeError(f"b1: {proxier.counters.skipped_services} services did not fit the maps")
        del proxier
        maps.ct.delete_many(list(maps.ct.keys()))
        eps = n * ENDPOINTS_PER_SERVICE
        hot = rng.sample(range(n), min(HOT_SET, n))

        def emit(contender: str, metric: str, value: float, unit: str = "ns", n: int = n, eps: int = eps) -> None:
            rows.append(Row("b1", contender, n, eps, metric, round(value, 2), unit))

        emit("empty-tc", "floor", floor)
        emit("empty-tc", "timer_overhead", overhead)
        for pattern in ("hot", "uniform"):
            per_case: dict[str, list[tuple[float, float]]] = {}
            for _ in range(cfg.rounds):
                targets = [rng.choice(hot) if pattern == "hot" else rng.randrange(n) for _ in range(cfg.samples)]
                tuples = [(*flows.next(), service_ip(t)) for t in targets]
                syn = [tcp_frame(s, d, sp, SERVICE_PORT, SYN) for s, sp, d in tuples]
                durs, outs = timed(from_pod, syn, TC_ACT_OK, "FWD_NEW", want_out=True)
                per_case.setdefault("new_flow", []).append(_stats(durs, overhead))
                ack = [tcp_frame(s, d, sp, SERVICE_PORT, ACK) for s, sp, d in tuples]
                durs, _ = timed(from_pod, ack, TC_ACT_OK, "FWD_ESTABLISHED")
                per_case.setdefault("established", []).append(_stats(durs, overhead))
                replies = []
                for (s, sp, _d), out in zip(tuples, outs, strict=True):
                    _, be_addr, _, be_port, _ = tcp_tuple(out)
                    replies.append(tcp_frame(be_addr, s, be_port, sp, ACK))
                durs, _ = timed(to_pod, replies, TC_ACT_OK, "REVNAT")
                per_case.setdefault("reply", []).append(_stats(durs, overhead))
                # foreign traffic: pod to pod, destination a pod address (hot: 16 of them)
                dst = [f"10.244.3.{1 + (t % HOT_SET if pattern == 'hot' else t % 250)}" for t in targets]
                other = [tcp_frame(s, d, sp, 8080, ACK) for (s, sp, _), d in zip(tuples, dst, strict=True)]
                durs, _ = timed(from_pod, other, TC_ACT_OK, "PASS")
                per_case.setdefault("pass", []).append(_stats(durs, overhead))
                rej = [tcp_frame(s, d, sp, SERVICE_PORT + 1, SYN) for s, sp, d in tuples]
                durs, _ = timed(from_pod, rej, TC_ACT_REDIRECT, "REJECT_TCP_RST")
                per_case.setdefault("reject", []).append(_stats(durs, overhead))
            for case, stats in per_case.items():
                emit("bpfproxy", f"{case}.{pattern}.p50", median([s[0] for s in stats]))
                emit("bpfproxy", f"{case}.{pattern}.p99", median([s[1] for s in stats]))
        # in-kernel loops on packets the programs leave unchanged (warm caches): pass-through, and an
        # established flow and its reply through the self-addressed service
        _, loop, _ = driver.run(from_pod, [probe] * 5, REPEAT_FLOOR)
        emit("bpfproxy", "pass.loop", median(loop))
        saddr, sport = flows.next()
        timed(from_pod, [tcp_frame(saddr, SELF_SERVICE.ip, sport, SELF_SERVICE.port, SYN)], TC_ACT_OK, "FWD_NEW")
        est = tcp_frame(saddr, SELF_SERVICE.ip, sport, SELF_SERVICE.port, ACK)
        _, loop, outs = driver.run(from_pod, [est] * 5, REPEAT_FLOOR, want_out=True)
        if outs[0] != est:
            raise RuntimeError("b1: the self-addressed service rewrote its packet; the loop would time another case")
        emit("bpfproxy", "established.loop", median(loop))
        rep = tcp_frame(SELF_SERVICE.ip, saddr, SELF_SERVICE.port, sport, ACK)
        _, loop, _ = driver.run(to_pod, [rep] * 5, REPEAT_FLOOR)
        emit("bpfproxy", "reply.loop", median(loop))
        maps.ct.delete_many(list(maps.ct.keys()))
        log(f"b1 done services={n}")
    return rows


def _stats(durations: list[int], overhead: float) -> tuple[float, float]:
    """(p50, p99) of per-call durations with the timer overhead taken off."""
    return median(durations) - overhead, percentile(durations, 0.99) - overhead


def config(quick: bool) -> B1Config:
    """The B1 settings of `make bench-quick` (quick) or `make bench`."""
    if quick:
        return B1Config(sizes=(1, 1000, 10000), samples=1500, rounds=3)
    return B1Config(sizes=(1, 1000, 10000, 100000), samples=5000, rounds=5)
