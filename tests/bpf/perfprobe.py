"""Per-packet cost of from_pod / to_pod measured with BPF_PROG_TEST_RUN: a script, not a test.

Place: beside the BPF tests (it reuses their packet builders); pytest does not collect it (its name
does not start with test_). Run as root from the checkout:

    .venv/bin/python tests/bpf/perfprobe.py [--runs 7] [--repeat 100000] [--scale 100000] [--json]

Method. BPF_PROG_TEST_RUN builds one skb from the input packet and runs the program `repeat` times
on that same skb; the kernel reports the mean time per run. A program that rewrites the packet
would therefore time another path from the second run on. So every rewriting case is set up so
that each repetition is a genuine instance of the path it names:

- established: frontend A (10.96.0.10:80) has one backend whose address and port are frontend B
  (10.96.0.11:8080), and B's one backend is A. Run 1 DNATs client->A to B, run 2 DNATs client->B
  to A, and so on: after a warm-up call that creates both conntrack entries, every repetition is a
  conntrack hit with a real address+port rewrite and incremental checksums.
- new: the same ping-pong on a second build whose conntrack lifetimes are 0 (-DCT_LIFETIME_*=0),
  so every repetition finds its entry expired: backend choice, two conntrack writes, DNAT.
- revnat: to_pod with two reply entries (B:8080 -> A:80 and A:80 -> B:8080): every repetition
  restores a frontend address and port.
- to_pod_pass: a packet entering a pod from a port no backend uses (a request to the pod);
  to_pod_pass_full_path: the same with the quiet-port bitmap all zero (one conntrack miss).
- pass (foreign TCP; pass_full_path: the same with the foreign-prefix bitmap all zero, so the
  frontend, address-entry and service-CIDR lookups all happen), drop_no_service (TCP to an unowned
  address inside the service CIDR) and empty do not change the packet.
- reject turns the packet into a reset going the other way: it is timed with repeat=1 calls
  (median of many) and reported next to the empty program timed the same way; that figure carries
  the kernel's per-call timer overhead, so compare it with empty_single, not with empty.
- new_single: the honest insert. Every repeat=1 call gets a SYN from another source port, so both
  conntrack entries are inserted into the table (no expired entry replaced, unlike `new`); compare
  it with established_single, timed the same way (single calls run with colder caches).
Before timing, each case is run once more with the verdict counters zeroed and must produce only
its verdict (so a typo in the setup cannot time the wrong path). Cases are interleaved round by
round; each figure is the median of --runs rounds. The process is pinned to one CPU.

Scale: a third build with room for --scale services (1 backend each) times pass / established / new
with only the ping-pong pair loaded and again with --scale services loaded: t(N)/t(1).
"""

from __future__ import annotations

import argparse
import ctypes as ct
import json
import os
import shutil
import socket
import statistics
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bpfproxy.loader import bpfsys
from bpfproxy.loader.build import PROG_FROM_POD, PROG_TO_POD, Datapath, DatapathSettings, load_datapath
from bpfproxy.loader.maps import DatapathMaps
from bpfproxy.loader.structs import (
    CT_DIR_REPLY,
    SVC_F_ADDR,
    Backend,
    CtEntry,
    SvcKey,
    SvcVal,
    Verdict,
)
from bpfproxy.loader.testrun import run_tc
from packets import CLIENT, IPPROTO_TCP, OTHER, Svc, ct_key, n16, n32, seed, svc_key, tcp

#: the two frontends of the ping-pong
FE_A, PORT_A = "10.96.0.10", 80
FE_B, PORT_B = "10.96.0.11", 8080
#: the service CIDR configured during the measurement
SERVICE_CIDR = "10.96.0.0/12"
#: an address inside the service CIDR that no service owns
UNOWNED = "10.96.200.200"

EMPTY_PROG = b"""
#include <uapi/linux/pkt_cls.h>
int empty(struct __sk_buff *skb) { return TC_ACT_OK; }
"""


@dataclass
class Case:
    """One timed path."""

    name: str
    fd: int
    packet: bytes
    verdict: Verdict | None
    """the only verdict every repetition must give (None: the empty program)"""
    maps: DatapathMaps | None
    single: bool = False
    """timed with repeat=1 calls (the program changes the packet in a way no setup can undo)"""
    fresh: Iterator[bytes] | None = None
    """single calls take their packets from here (new_single: a new source port, so a new flow, each)"""


def _pin_dir(tag: str) -> str:
    return f"/sys/fs/bpf/bpxperf-{tag}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@contextmanager
def _datapath(tag: str, settings: DatapathSettings) -> Iterator[tuple[Datapath, DatapathMaps]]:
    pin = _pin_dir(tag)
    try:
        dp = load_datapath(pin, settings)
        with DatapathMaps(pin) as maps:
            yield dp, maps
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def _zero_verdicts(maps: DatapathMaps) -> None:
    zero = (maps.verdict.value_type * bpfsys.possible_cpus())()
    for i in range(maps.verdict.max_entries):
        bpfsys.update(maps.verdict.fd, ct.c_uint32(i), zero)


def _verdicts(maps: DatapathMaps) -> dict[str, int]:
    out = {}
    for v in Verdict:
        total = sum(c.packets for c in maps.verdict.get_percpu(ct.c_uint32(v)))
        if total:
            out[v.name] = total
    return out


def _set_cidr(maps: DatapathMaps) -> None:
    setter: Callable[[list[str]], None] | None = getattr(maps, "set_service_cidrs", None)
    if setter is not None:
        setter([SERVICE_CIDR])


def _seed_pingpong(maps: DatapathMaps) -> None:
    """A -> backend B, B -> backend A (svc ids 1 and 2, backend ids 11 and 12)."""
    seed(maps, Svc(addr=FE_A, port=PORT_A, svc_id=1, backends=[(11, FE_B, PORT_B)]))
    seed(maps, Svc(addr=FE_B, port=PORT_B, svc_id=2, backends=[(12, FE_A, PORT_A)]))
    _set_cidr(maps)
    quiet = getattr(maps, "rebuild_quiet_ports", None)
    if quiet is not None:
        quiet()


def _seed_replies(maps: DatapathMaps) -> None:
    """Reply entries: B:8080 -> client restored to A:80, A:80 -> client restored to B:8080."""
    far = 1 << 62
    for (src, sport), (fe, fport) in (((FE_B, PORT_B), (FE_A, PORT_A)), ((FE_A, PORT_A), (FE_B, PORT_B))):
        maps.ct.put(
            ct_key(src, CLIENT, sport, 40000, IPPROTO_TCP, CT_DIR_REPLY),
            CtEntry(expires=far, backend_id=11, svc_id=1, nat_addr=n32(fe), nat_port=n16(fport)),
        )


def _seed_many(maps: DatapathMaps, count: int) -> None:
    """count more frontends (svc ids 3.., 1 backend each, address entries) around the ping-pong pair."""
    keys: list[tuple[SvcKey, SvcVal]] = []
    backends: list[tuple[ct.c_uint32, Backend]] = []
    start = struct.unpack("!I", socket.inet_aton("10.97.0.0"))[0]
    for i in range(count):
        addr = socket.inet_ntoa(struct.pack("!I", start + i))
        sid, bid = 3 + i, 100 + i
        backends.append((ct.c_uint32(bid), Backend(addr=n32("10.244.5.5"), port=n16(8080), proto=IPPROTO_TCP,
                                                    svc_id=sid)))
        keys.append((svc_key(addr, 80, IPPROTO_TCP, 1), SvcVal(backend_id=bid, svc_id=sid)))
        keys.append((svc_key(addr, 80, IPPROTO_TCP), SvcVal(count=1, svc_id=sid)))
        keys.append((SvcKey(addr=n32(addr)), SvcVal(flags=SVC_F_ADDR)))
    maps.backend.put_many(backends)
    mark = getattr(maps, "mark_service_addresses", None)
    if mark is not None:
        mark([socket.inet_ntoa(struct.pack("!I", start + i)) for i in range(count)])
    maps.svc.put_many(keys)


def _check(case: Case, repeat: int) -> None:
    """Run case once with counters zeroed: every repetition must give its verdict."""
    if case.maps is None or case.verdict is None:
        return
    _zero_verdicts(case.maps)
    reps = 1 if case.single else repeat
    run_tc(case.fd, next(case.fresh) if case.fresh is not None else case.packet, repeat=reps)
    got = _verdicts(case.maps)
    if got != {case.verdict.name: reps}:
        raise SystemExit(f"case {case.name}: expected {reps} x {case.verdict.name}, got {got}")


def _time(case: Case, repeat: int, single_calls: int) -> float:
    if case.single:
        src = case.fresh
        return statistics.median(
            run_tc(case.fd, next(src) if src is not None else case.packet).duration_ns for _ in range(single_calls)
        )
    return float(run_tc(case.fd, case.packet, repeat=repeat).duration_ns)


def _measure(cases: list[Case], runs: int, repeat: int, single_calls: int) -> dict[str, float]:
    for c in cases:
        _check(c, min(repeat, 1000))
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    for _ in range(runs):
        for c in cases:
            samples[c.name].append(_time(c, repeat, single_calls))
    return {name: statistics.median(vals) for name, vals in samples.items()} | {
        f"{name}:min": min(vals) for name, vals in samples.items()
    }


def _new_flows(packet: bytes, first_sport: int) -> Iterator[bytes]:
    """packet (Ethernet/IPv4 without options/TCP) with source ports first_sport, first_sport+1, ...: checksum fixed."""
    check = int.from_bytes(packet[50:52], "big")
    old = int.from_bytes(packet[34:36], "big")
    sport = first_sport
    while True:
        s = (~check & 0xFFFF) + (~old & 0xFFFF) + sport
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        yield packet[:34] + sport.to_bytes(2, "big") + packet[36:50] + (~s & 0xFFFF).to_bytes(2, "big") + packet[52:]
        sport = 1024 + (sport - 1024 + 1) % 64000


def _map_memory(maps: DatapathMaps) -> dict[str, int]:
    """memlock bytes of every map, from /proc/self/fdinfo (what the kernel charges for it)."""
    out = {}
    for m in maps._all:
        with open(f"/proc/self/fdinfo/{m.fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    out[m.spec.name] = int(line.split()[1])
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print the per-packet figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds; each figure is the median")
    ap.add_argument("--repeat", type=int, default=100_000, help="BPF_PROG_TEST_RUN repeat per round")
    ap.add_argument("--single-calls", type=int, default=2000, help="repeat=1 calls per round (reject)")
    ap.add_argument("--scale", type=int, default=100_000, help="services loaded for the scale ratio (0: skip)")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    from bcc import BPF

    empty_bpf = BPF(text=EMPTY_PROG)
    empty_fd = int(empty_bpf.load_func(b"empty", BPF.SCHED_CLS).fd)
    est_a = bytes(tcp(dst=FE_A, dport=PORT_A, flags="A", seq=1001, ack=1, payload=b"x" * 32))
    syn_a = bytes(tcp(dst=FE_A, dport=PORT_A, flags="S"))
    reply_b = bytes(tcp(src=FE_B, dst=CLIENT, sport=PORT_B, dport=40000, flags="A", seq=9000, ack=1001,
                        payload=b"y" * 32))
    results: dict[str, object] = {"cpu": cpu, "runs": args.runs, "repeat": args.repeat}

    zero_life = ("-DCT_LIFETIME_TCP_NS=0ULL", "-DCT_LIFETIME_TCP_CLOSING_NS=0ULL", "-DCT_LIFETIME_NONTCP_NS=0ULL")
    with _datapath("def", DatapathSettings()) as (dp, maps), \
            _datapath("new", DatapathSettings(extra_cflags=zero_life)) as (dp_new, maps_new):
        results["map_memlock_bytes"] = _map_memory(maps)
        _seed_pingpong(maps)
        _seed_replies(maps)
        _seed_pingpong(maps_new)
        reset = getattr(maps_new, "reset_foreign", None)
        if reset is not None:
            reset()  # pass_full_path: no foreign prefix known, every lookup is made
        run_tc(dp.prog_fds[PROG_FROM_POD], est_a, repeat=2)  # creates both forward entries
        from_pod, to_pod = dp.prog_fds[PROG_FROM_POD], dp.prog_fds[PROG_TO_POD]
        noep = Svc(addr="10.96.0.12", port=80, svc_id=3, backends=[])
        seed(maps, noep)
        cases = [
            Case("empty", empty_fd, est_a, None, None),
            Case("pass", from_pod, bytes(tcp(dst=OTHER, flags="A", payload=b"x" * 32)), Verdict.PASS, maps),
            Case("pass_full_path", dp_new.prog_fds[PROG_FROM_POD], bytes(tcp(dst=OTHER, flags="A", payload=b"x" * 32)),
                 Verdict.PASS, maps_new),
            Case("established", from_pod, est_a, Verdict.FWD_ESTABLISHED, maps),
            Case("new", dp_new.prog_fds[PROG_FROM_POD], syn_a, Verdict.FWD_NEW, maps_new),
            Case("revnat", to_pod, reply_b, Verdict.REVNAT, maps),
            Case("to_pod_pass", to_pod, bytes(tcp(src=OTHER, dst=CLIENT, sport=5000, dport=40000, flags="A")),
                 Verdict.PASS, maps),
            Case("to_pod_pass_full_path", dp_new.prog_fds[PROG_TO_POD],
                 bytes(tcp(src=OTHER, dst=CLIENT, sport=5000, dport=40000, flags="A")), Verdict.PASS, maps_new),
            Case("empty_single", empty_fd, est_a, None, None, single=True),
            Case("established_single", from_pod, est_a, Verdict.FWD_ESTABLISHED, maps, single=True),
            Case("new_single", from_pod, syn_a, Verdict.FWD_NEW, maps, single=True, fresh=_new_flows(syn_a, 1024)),
            Case("reject_single", from_pod, bytes(tcp(dst="10.96.0.12", flags="S")), Verdict.REJECT_TCP_RST, maps,
                 single=True),
        ]
        drop = getattr(Verdict, "DROP_NO_SERVICE", None)
        if drop is not None:
            cases.append(Case("drop_no_service", from_pod, bytes(tcp(dst=UNOWNED, flags="S")), drop, maps))
        results["ns"] = _measure(cases, args.runs, args.repeat, args.single_calls)

    if args.scale:
        n = args.scale
        sizes = {"lb_map_max": 1 << (3 * n + 16).bit_length(), "backend_map_max": 1 << (n + 16).bit_length(),
                 "svc_id_max": 1 << (n + 16).bit_length()}
        with _datapath("one", DatapathSettings(**sizes)) as (dp1, m1), \
                _datapath("onenew", DatapathSettings(**sizes, extra_cflags=zero_life)) as (dp1n, m1n), \
                _datapath("many", DatapathSettings(**sizes)) as (dpm, mm), \
                _datapath("manynew", DatapathSettings(**sizes, extra_cflags=zero_life)) as (
                    dpmn, mmn):
            for m in (m1, m1n, mm, mmn):
                _seed_pingpong(m)
            for m in (mm, mmn):
                _seed_many(m, n)
            for dpx in (dp1, dpm):
                run_tc(dpx.prog_fds[PROG_FROM_POD], est_a, repeat=2)
            pass_pkt = bytes(tcp(dst=OTHER, flags="A"))
            scale_cases = []
            for tag, (d, m), (dn, mn) in (("1", (dp1, m1), (dp1n, m1n)), ("n", (dpm, mm), (dpmn, mmn))):
                scale_cases += [
                    Case(f"pass@{tag}", d.prog_fds[PROG_FROM_POD], pass_pkt, Verdict.PASS, m),
                    Case(f"established@{tag}", d.prog_fds[PROG_FROM_POD], est_a, Verdict.FWD_ESTABLISHED, m),
                    Case(f"new@{tag}", dn.prog_fds[PROG_FROM_POD], syn_a, Verdict.FWD_NEW, mn),
                ]
            got = _measure(scale_cases, args.runs, args.repeat, args.single_calls)
            one = {k.split("@")[0]: v for k, v in got.items() if k.endswith("@1")}
            many = {k.split("@")[0]: v for k, v in got.items() if k.endswith("@n")}
            results["scale_min"] = {k.replace(":min", ""): v for k, v in got.items() if k.endswith(":min")}
            results["scale"] = {"services": n, "one": one, "many": many,
                                "ratio": {k: round(many[k] / one[k], 3) for k in one}}

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        ns = results["ns"]
        assert isinstance(ns, dict)
        print(f"per-packet ns, median of {args.runs} x {args.repeat} repeats, cpu {cpu}")
        print(f"  {'case':18} {'median':>7} {'min':>7}")
        for k, v in ns.items():
            if not k.endswith(":min"):
                print(f"  {k:18} {v:7.1f} {ns[k + ':min']:7.1f}")
        if "scale" in results:
            sc = results["scale"]
            assert isinstance(sc, dict)
            print(f"scale: 1 vs {sc['services']} services")
            for k in sc["one"]:
                print(f"  {k:18} {sc['one'][k]:7.1f} {sc['many'][k]:7.1f}  ratio {sc['ratio'][k]}")
        mem = results["map_memlock_bytes"]
        assert isinstance(mem, dict)
        print("map memlock at default sizes (bytes):")
        for k, v in mem.items():
            print(f"  {k:18} {v:>12,}")
        print(f"  {'total':18} {sum(mem.values()):>12,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
