"""The `bpfproxy` command line (contract in DESIGN.md §3): agent, services, conntrack, counters, plan, cleanup, lab.

Place in the data flow: the entry point. `agent` wires source -> controller -> loader; the
inspection commands read the pinned maps; `plan` runs translate and plan with no kernel.
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import logging
import os
import sys
from dataclasses import asdict
from typing import Any

from bpfproxy.loader.bpfsys import BpfError
from bpfproxy.loader.build import DatapathBuildError
from bpfproxy.loader.maps import DEFAULT_PIN_DIR, MapShapeError


def _split_csv(values: list[str]) -> tuple[str, ...]:
    return tuple(part for value in values for part in value.split(",") if part)


def _add_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="run the node agent: watch services, program the datapath")
    _add_node_flags(p)
    p.add_argument(
        "--pod-devices", action="append", default=[], help="globs of pod devices, comma-separated (default: lxc*,veth*)"
    )
    p.add_argument(
        "--pin-dir", default=DEFAULT_PIN_DIR, help=f"bpffs directory of the maps (default {DEFAULT_PIN_DIR})"
    )
    p.add_argument("--min-sync-period", type=float, default=1.0, help="seconds between syncs at most once (default 1)")
    p.add_argument("--full-sync-period", type=float, default=60.0, help="seconds between full resyncs (default 60)")
    p.add_argument("--lb-map-max", type=int, default=262144, help="service map entries (frontends + backend slots)")
    p.add_argument("--backend-map-max", type=int, default=262144, help="backend map entries")
    p.add_argument("--svc-id-max", type=int, default=65536, help="frontend ids")
    p.add_argument("--ct-map-max", type=int, default=262144, help="conntrack entries (two per flow)")
    p.add_argument("--affinity-map-max", type=int, default=65536, help="session-affinity entries")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10249",
                   help="HOST:PORT of the Prometheus /metrics endpoint, '' to disable (default 127.0.0.1:10249)")
    p.add_argument("--healthz-bind-address", default="0.0.0.0:10256",
                   help="HOST:PORT of /healthz and /livez, '' to disable (default 0.0.0.0:10256)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _add_readers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (
        ("services", "frontends, backends and per-service counters the maps hold now"),
        ("conntrack", "conntrack entries the maps hold now"),
        ("counters", "packets per datapath verdict"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--pin-dir", default=DEFAULT_PIN_DIR)
        p.add_argument("--json", action="store_true")


def _add_node_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="file:PATH (a YAML file or a directory of them) or kube")
    p.add_argument(
        "--kubeconfig", default=None, help="with --source kube: kubeconfig file (default: in-cluster service account)"
    )
    p.add_argument("--node-name", default="", help="this node's name (local endpoints, its Node's zone label)")
    p.add_argument("--node-ip", action="append", default=[], help="this node's address (repeatable)")
    p.add_argument("--cluster-cidr", action="append", default=[], help="pod CIDR (repeatable)")
    p.add_argument("--service-cidr", action="append", default=[], help="service CIDR: unowned addresses drop")
    p.add_argument(
        "--nodeport-addresses", action="append", default=[],
        help="CIDRs of node IPs that answer NodePorts, comma-separated (default: every node IP)",
    )


def _add_plan_explain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="dry run: the datapath the source would program (no kernel)")
    _add_node_flags(p)
    p.add_argument("--json", action="store_true", help="JSON (the only output format of plan)")

    p = sub.add_parser("explain", help="what happens to one packet: verdict, backends, masquerade")
    _add_node_flags(p)
    p.add_argument("--proto", default="tcp", choices=["tcp", "udp", "sctp"])
    p.add_argument("src", metavar="SRC", help="source IPv4 address")
    p.add_argument("dst", metavar="DST:PORT", help="destination IPv4 address and port")
    p.add_argument("--json", action="store_true", help='{"verdict", "backends", "masquerade", "service"}')
    p.add_argument("--live", action="store_true",
                   help="also run a crafted packet through the attached program (BPF_PROG_TEST_RUN)")
    p.add_argument(
        "--pin-dir", default=DEFAULT_PIN_DIR, help=f"with --live: the pinned maps (default {DEFAULT_PIN_DIR})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="bpfproxy", description="eBPF service load balancer for Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_agent(sub)
    _add_readers(sub)

    _add_plan_explain(sub)

    p = sub.add_parser("cleanup", help="detach every program of ours in this network namespace and remove the pins")
    p.add_argument("--pin-dir", default=DEFAULT_PIN_DIR)

    p = sub.add_parser("lab", help="the self-contained network-namespace lab")
    p.add_argument("action", choices=["up", "demo", "down"])
    p.add_argument("rid", nargs="?", default="", help="down: the lab's run id (default: every lab)")
    p.add_argument("--all", action="store_true", help="down: every lab on this machine")
    return parser


def _source_spec(source: str) -> tuple[str, str]:
    """("file", PATH) or ("kube", ""); exits with the accepted forms otherwise."""
    from bpfproxy.controller.source import parse_source_spec

    try:
        return parse_source_spec(source)
    except ValueError as e:
        raise SystemExit(f"bpfproxy: {e}") from None


def _source_path(source: str) -> str:
    kind, path = _source_spec(source)
    if kind != "file":
        raise SystemExit(f"bpfproxy: --source {source!r}: this command reads file:PATH only")
    return path


def _print(rows: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print(text, end="")


def cmd_services(args: argparse.Namespace) -> int:
    """Print frontends, their backends and counters."""
    from bpfproxy.inspect import frontends
    from bpfproxy.loader.maps import DatapathMaps

    with DatapathMaps(args.pin_dir) as maps:
        rows = frontends(maps)
    lines = []
    for r in rows:
        extra = f" affinity={r.affinity_timeout}s" if r.affinity_timeout else ""
        lines.append(
            f"{r.name:40} {r.frontend:24} id={r.svc_id} backends={len(r.backends)} "
            f"packets={r.packets} bytes={r.bytes} no-endpoints={r.no_endpoints}{extra}\n"
        )
        for b in r.backends:
            lines.append(f"    {b.id:>6}  {b.address}{'  (terminating)' if b.terminating else ''}\n")
    _print([asdict(r) for r in rows], args.json, "".join(lines) or "no frontends\n")
    return 0


def cmd_conntrack(args: argparse.Namespace) -> int:
    """Print conntrack entries."""
    from bpfproxy.inspect import conntrack
    from bpfproxy.loader.maps import DatapathMaps

    with DatapathMaps(args.pin_dir) as maps:
        rows = conntrack(maps)
    text = "".join(
        f"{r.direction:8} {r.proto:4} {r.source:22} -> {r.destination:22} nat={r.nat:22} "
        f"backend={r.backend_id} svc={r.svc_id} expires_in={r.expires_in}s{' closing' if r.closing else ''}\n"
        for r in rows
    )
    _print([asdict(r) for r in rows], args.json, text or "no entries\n")
    return 0


def cmd_counters(args: argparse.Namespace) -> int:
    """Print packets per verdict."""
    from bpfproxy.inspect import verdicts
    from bpfproxy.loader.maps import DatapathMaps

    with DatapathMaps(args.pin_dir) as maps:
        counts = verdicts(maps)
    _print(counts, args.json, "".join(f"{k:20} {v}\n" for k, v in counts.items()))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Detach our programs in this network namespace and remove our pins."""
    from bpfproxy.loader.cleanup import cleanup

    report = cleanup(args.pin_dir)
    print(report.summary())
    return 0


def _node_config(args: argparse.Namespace) -> Any:
    from bpfproxy.controller.translate import NodeConfig

    return NodeConfig(
        node_name=args.node_name,
        node_ips=_split_csv(args.node_ip),
        cluster_cidrs=_split_csv(args.cluster_cidr),
        service_cidrs=_split_csv(args.service_cidr),
        nodeport_addresses=_split_csv(args.nodeport_addresses),
    )


def _load(args: argparse.Namespace) -> Any:
    """The listing of --source, or None after printing why it cannot be read."""
    from bpfproxy.controller.snapshot import load_source
    from bpfproxy.controller.source import parse_source_spec

    try:
        kind, path = parse_source_spec(args.source)
        if kind == "file" and not os.path.exists(path):
            raise OSError(f"--source {args.source}: no such file or directory")
        return load_source(args.source, kubeconfig=args.kubeconfig, node_name=args.node_name)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"bpfproxy {args.command}: {e}", file=sys.stderr)
        return None


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the desired datapath for a source, computed with no kernel."""
    from bpfproxy.controller.snapshot import collected_plan_json

    got = _load(args)
    if got is None:
        return 1
    print(json.dumps(collected_plan_json(got, _node_config(args)), indent=1, sort_keys=True))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print what happens to one packet (and, with --live, what the attached program does with it)."""
    from bpfproxy.controller.explain import explain

    dst, sep, port_s = args.dst.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        print(f"bpfproxy explain: {args.dst!r}: expected DST:PORT", file=sys.stderr)
        return 2
    got = _load(args)
    if got is None:
        return 1
    node = got.node_config(_node_config(args))
    try:
        answer = explain(got.services.services, got.slices.slices_for, node, args.src, dst, int(port_s), args.proto)
    except ValueError as e:
        print(f"bpfproxy explain: {e} (IPv4 addresses only)", file=sys.stderr)
        return 2
    live = None
    if args.live:
        from bpfproxy.explain_live import LiveError, run_live

        try:
            live = run_live(args.pin_dir, args.src, dst, int(port_s), args.proto)
        except LiveError as e:
            print(f"bpfproxy explain --live: {e}", file=sys.stderr)
            return 1
    if args.json:
        out = answer.to_json()
        if live is not None:
            out["live"] = live.to_json()
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.src} -> {dst}:{port_s}/{args.proto.upper()}  (source: {answer.source})")
    print(f"  verdict:    {answer.verdict}")
    print(f"  service:    {answer.service or '-'}{f' ({answer.kind})' if answer.kind else ''}")
    print(f"  backends:   {', '.join(answer.backends) or '-'}")
    print(f"  masquerade: {'yes' if answer.masquerade else 'no'}")
    print(f"  why:        {answer.reason}")
    if live is not None:
        print(live.text())
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT; the datapath stays in place after it."""
    from bpfproxy.loader.build import DatapathSettings, start_compile

    settings = DatapathSettings(
        lb_map_max=args.lb_map_max,
        backend_map_max=args.backend_map_max,
        svc_id_max=args.svc_id_max,
        ct_map_max=args.ct_map_max,
        affinity_map_max=args.affinity_map_max,
    )
    source_kind, source_path = _source_spec(args.source)
    if args.kubeconfig and source_kind != "kube":
        raise SystemExit("bpfproxy: --kubeconfig goes with --source kube")
    # the bcc compile (~0.8 s in its own process) starts before the agent's imports (~0.5 s with the
    # kubernetes client) so that it is off the cold start's critical path
    compiling = start_compile(args.pin_dir, settings)
    gc.disable()  # until the agent's modules are loaded (run_agent freezes them and enables it again)
    try:
        from bpfproxy.agent import AgentConfig, run_agent

        config = AgentConfig(
            source_path=source_path,
            source_kind=source_kind,
            kubeconfig=args.kubeconfig,
            node_name=args.node_name,
            node_ips=tuple(args.node_ip),
            cluster_cidrs=tuple(args.cluster_cidr),
            service_cidrs=_split_csv(args.service_cidr),
            nodeport_addresses=_split_csv(args.nodeport_addresses),
            pod_devices=_split_csv(args.pod_devices) or ("lxc*", "veth*"),
            pin_dir=args.pin_dir,
            min_sync_period=args.min_sync_period,
            full_sync_period=args.full_sync_period,
            settings=settings,
            metrics_bind_address=args.metrics_bind_address,
            healthz_bind_address=args.healthz_bind_address,
        )
    except BaseException:
        compiling.cancel()
        gc.enable()
        raise
    return run_agent(config, compiling)


def cmd_lab(args: argparse.Namespace) -> int:
    """Build, demonstrate or remove the network-namespace lab."""
    from bpfproxy.lab import demo

    if args.action == "up":
        return demo.up()
    if args.action == "demo":
        return demo.run_demo()
    return demo.down(args.rid, everything=args.all or not args.rid)


COMMANDS = {
    "agent": cmd_agent,
    "services": cmd_services,
    "conntrack": cmd_conntrack,
    "counters": cmd_counters,
    "cleanup": cmd_cleanup,
    "plan": cmd_plan,
    "explain": cmd_explain,
    "lab": cmd_lab,
}


def main(argv: list[str] | None = None) -> int:
    """Parse argv and run the subcommand."""
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except BpfError as e:
        if e.errno == errno.ENOENT and hasattr(args, "pin_dir"):
            print(f"bpfproxy {args.command}: no bpfproxy maps pinned in {args.pin_dir} ({e})", file=sys.stderr)
        else:
            print(f"bpfproxy {args.command}: {e}", file=sys.stderr)
        return 1
    except (MapShapeError, DatapathBuildError) as e:  # pinned maps of another build, a compile error
        print(f"bpfproxy {args.command}: {e}", file=sys.stderr)
        return 1
