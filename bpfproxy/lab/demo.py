"""`bpfproxy lab up|demo|down`: one ClusterIP service over three backend pods, shown working live.

Place in the data flow: drives all of it from the outside. The demo writes YAML, the real agent
programs the kernel, real packets go from the client pod's namespace through the tc programs to
the backend pods, and what the backends answer is tallied and printed.
"""

from __future__ import annotations

import signal
import sys
import time

from bpfproxy.lab.client import Tally
from bpfproxy.lab.manifests import Endpoint, Port, endpoint_slice, service
from bpfproxy.lab.topology import Lab

#: the demo service's ClusterIP
CLUSTER_IP = "10.96.0.10"
#: the demo service's ports: HTTP by target port name, UDP echo by number
PORTS = (
    Port("http", 80, "TCP", target_port="http", endpoint_port=8080),
    Port("echo", 9000, "UDP", target_port=9000),
)
BACKENDS = ("web-1", "web-2", "web-3")


def say(text: str = "") -> None:
    """Print a demo line at once."""
    print(text, flush=True)


def write_web(lab: Lab, backends: tuple[str, ...]) -> None:
    """Write the demo Service and its EndpointSlice with the given backend pods."""
    lab.write_manifest("web-service.yaml", [service("web", CLUSTER_IP, PORTS)])
    endpoints = [Endpoint(lab.pods[b].ip, pod=b) for b in backends]
    lab.write_manifest("web-endpointslice.yaml", [endpoint_slice("web", PORTS, endpoints)])


def show_tally(lab: Lab, tally: Tally, wanted: tuple[str, ...] = BACKENDS) -> None:
    """Print answers per backend as a bar chart, then the client addresses they saw."""
    total = sum(tally.answers.values())
    for name in wanted:
        n = tally.answers.get(name, 0)
        say(f"     {name:6} {lab.pods[name].ip:12} {n:4}  {'#' * n}")
    lost = tally.refused + tally.timeouts + tally.errors
    say(f"     {total} answered, {lost} failed, in {tally.seconds:.2f} s")


def up() -> int:
    """Build a lab with the demo service and a running agent; print how to use and remove it."""
    lab = Lab.create()
    try:
        write_web(lab, BACKENDS)
        lab.start_agent()
        lab.wait_agent_ready()
    except BaseException:
        lab.destroy()
        raise
    client = lab.pods["client"]
    say(f"lab {lab.rid} is up: node namespace {lab.node_ns}, agent pid {lab.agent_pid}, pins {lab.pin_dir}")
    say(f"  client pod:   nsenter --net=/run/netns/{client.ns} curl -s http://{CLUSTER_IP}/")
    say(f"  datapath:     nsenter --net=/run/netns/{lab.node_ns} bpfproxy services --pin-dir {lab.pin_dir}")
    say(f"  manifests:    {lab.manifests} (edit them: the agent picks changes up within a second)")
    say(f"  remove it:    bpfproxy lab down {lab.rid}")
    return 0


def down(rid: str, *, everything: bool = False) -> int:
    """Remove one recorded lab, or every one."""
    rids = Lab.recorded() if everything else [rid]
    for r in rids:
        Lab.load(r).destroy()
        say(f"lab {r} removed")
    if not rids:
        say("no lab to remove")
    return 0


def run_demo() -> int:
    """Build the lab, show load balancing, a backend removal and an agent kill, tear it all down."""
    started = time.monotonic()
    lab = Lab.create()
    try:
        return _demo(lab, started)
    finally:
        lab.destroy()
        say(f"\nlab {lab.rid} removed (namespaces, programs, pins)")


def _demo(lab: Lab, started: float) -> int:
    client = lab.pods["client"]
    say(f"bpfproxy lab {lab.rid}: node namespace {lab.node_ns}")
    say(f"  client pod  {client.ip}")
    for name in BACKENDS:
        say(f"  {name:10}  {lab.pods[name].ip}  (HTTP :8080 named 'http', UDP :9000)")
    write_web(lab, BACKENDS)
    say(f"  service demo/web  ClusterIP {CLUSTER_IP}  80/TCP -> targetPort http, 9000/UDP -> 9000")
    lab.start_agent()
    lab.wait_agent_ready()
    say(f"  agent pid {lab.agent_pid} in the node namespace, maps pinned at {lab.pin_dir}")
    say(f"  ready {time.monotonic() - started:.1f} s after start")

    say("\n$ bpfproxy services")
    say(lab.bpfproxy(["services"]).rstrip())

    say(f"\n1. 60 HTTP requests from the client pod to http://{CLUSTER_IP}/, a new connection each:")
    tally = lab.client("http", CLUSTER_IP, 80, count=60)
    show_tally(lab, tally)
    say(f"     client addresses the backends saw: {', '.join(tally.clients)} (the client pod's own)")

    say(f"\n2. 30 UDP datagrams to {CLUSTER_IP}:9000, a new source port each:")
    show_tally(lab, lab.client("udp", CLUSTER_IP, 9000, count=30))

    say("\n3. web-3 removed from the EndpointSlice YAML:")
    write_web(lab, BACKENDS[:2])
    removed_at = time.monotonic()
    while True:
        probe = lab.client("http", CLUSTER_IP, 80, count=10)
        if "web-3" not in probe.answers:
            break
        if time.monotonic() - removed_at > 5:
            say("     web-3 still answers after 5 s: FAILED")
            return 1
    say(f"     web-3 gets no new connections {time.monotonic() - removed_at:.2f} s after the file changed")
    show_tally(lab, lab.client("http", CLUSTER_IP, 80, count=60))

    say(f"\n4. the agent killed with SIGKILL (pid {lab.agent_pid}); traffic keeps flowing:")
    lab.stop_agent(signal.SIGKILL)
    tally = lab.client("http", CLUSTER_IP, 80, count=60)
    show_tally(lab, tally, BACKENDS[:2])
    ok = tally.answers.get("web-1", 0) > 0 and tally.answers.get("web-2", 0) > 0 and not tally.timeouts

    say("\n5. a port the ClusterIP does not serve is refused at once, as kube-proxy does:")
    refused = lab.client("http", CLUSTER_IP, 8081, count=1)
    say(f"     http://{CLUSTER_IP}:8081/ -> {'connection refused' if refused.refused else 'NOT refused'}")

    say("\n$ bpfproxy counters")
    say(lab.bpfproxy(["counters"]).rstrip())
    say(f"\ndemo {'passed' if ok and refused.refused else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok and refused.refused else 1


if __name__ == "__main__":
    sys.exit(run_demo())
