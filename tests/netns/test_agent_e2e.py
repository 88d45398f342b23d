"""End to end: the real agent in a lab node namespace, real packets from pod namespaces.

One lab and one agent serve the module (a compile per agent start); every test restores the
manifests it changes. Each test names the numbered point of the ClusterIP issue it proves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bpfproxy.lab import netns
from bpfproxy.lab.client import Tally
from bpfproxy.lab.manifests import Endpoint, Port, endpoint_slice, service
from bpfproxy.lab.topology import Lab

WEB_IP = "10.96.0.10"
WEB_PORTS = (Port("http", 80, "TCP", target_port="http", endpoint_port=8080), Port("echo", 9000, "UDP"))
BACKENDS = ("web-1", "web-2", "web-3")


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll check until it holds; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout} s")


def write_web(lab: Lab, backends: tuple[str, ...] = BACKENDS, *, affinity: bool = False) -> None:
    """The web service with the given backends (and ClientIP affinity if asked)."""
    lab.write_manifest("web-svc.yaml", [service("web", WEB_IP, WEB_PORTS, affinity=affinity)])
    lab.write_manifest(
        "web-eps.yaml", [endpoint_slice("web", WEB_PORTS, [Endpoint(lab.pods[b].ip, pod=b) for b in backends])]
    )


def frontend_backends(lab: Lab, frontend: str) -> list[str]:
    """Backend addresses the maps hold for frontend IP:port/proto (via `bpfproxy services --json`)."""
    rows = json.loads(lab.bpfproxy(["services", "--json"]))
    for row in rows:
        if row["frontend"] == frontend:
            return sorted(b["address"] for b in row["backends"] if not b["terminating"])
    return []


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A lab with a client, three web backends, the web service and a running agent."""
    the_lab = Lab.create(("client", "web-1", "web-2", "web-3"))
    try:
        write_web(the_lab)
        the_lab.start_agent()
        the_lab.wait_agent_ready()
        yield the_lab
    finally:
        the_lab.destroy()


@pytest.fixture()
def web(lab: Lab) -> Iterator[Lab]:
    """The lab with the web service at three backends, restored after the test."""
    write_web(lab)
    wait_until(lambda: len(frontend_backends(lab, f"{WEB_IP}:80/TCP")) == 3, what="web at 3 backends")
    yield lab
    write_web(lab)


def ip_of(lab: Lab, *names: str) -> list[str]:
    """Pod addresses with their HTTP port."""
    return sorted(f"{lab.pods[n].ip}:8080" for n in names)


# 2. datapath ---------------------------------------------------------------------------------


def test_http_spreads_over_all_backends_and_keeps_client_address(web: Lab) -> None:
    """Point 2: new TCP connections to the ClusterIP spread over every backend, source unchanged."""
    tally = web.client("http", WEB_IP, 80, count=60)
    assert sum(tally.answers.values()) == 60, tally
    assert set(tally.answers) == set(BACKENDS), tally
    assert min(tally.answers.values()) >= 5, tally
    assert tally.clients == [web.pods["client"].ip]


def test_udp_spreads_over_all_backends(web: Lab) -> None:
    """Point 2: UDP datagrams from new source ports spread too, replies come from the ClusterIP."""
    tally = web.client("udp", WEB_IP, 9000, count=45)
    assert sum(tally.answers.values()) == 45, tally
    assert set(tally.answers) == set(BACKENDS), tally
    assert tally.clients == [web.pods["client"].ip]


def test_multiport_named_target_port_and_same_number_over_tcp_and_udp(lab: Lab) -> None:
    """Point 2: per-port backend sets, targetPort by name, one port number as two frontends."""
    ports = (
        Port("web", 7000, "TCP", target_port="http", endpoint_port=8080),
        Port("echo", 7000, "UDP", target_port=9000),
    )
    lab.write_manifest("multi-svc.yaml", [service("multi", "10.96.0.20", ports)])
    tcp_slice = endpoint_slice("multi", ports[:1], [Endpoint(lab.pods["web-1"].ip, pod="web-1")], suffix="tcp01")
    udp_slice = endpoint_slice("multi", ports[1:], [Endpoint(lab.pods["web-2"].ip, pod="web-2")], suffix="udp01")
    lab.write_manifest("multi-eps.yaml", [tcp_slice, udp_slice])
    try:
        wait_until(lambda: frontend_backends(lab, "10.96.0.20:7000/UDP") != [], what="multi programmed")
        assert lab.client("http", "10.96.0.20", 7000, count=10).answers == {"web-1": 10}
        assert lab.client("udp", "10.96.0.20", 7000, count=10).answers == {"web-2": 10}
    finally:
        lab.remove_manifest("multi-svc.yaml")
        lab.remove_manifest("multi-eps.yaml")


# 3. backend changes --------------------------------------------------------------------------


def test_removed_backend_gets_no_new_connections_after_a_second(web: Lab) -> None:
    """Point 3 and 8: a backend removed from the YAML gets no new connection one second later."""
    write_web(web, BACKENDS[:2])
    time.sleep(1.0)
    tally = web.client("http", WEB_IP, 80, count=40)
    assert sum(tally.answers.values()) == 40, tally
    assert "web-3" not in tally.answers, tally


def test_udp_flow_with_fixed_source_port_moves_off_a_removed_backend(web: Lab) -> None:
    """Point 3: a UDP client that keeps its source port is answered by a live backend right after the update."""
    first = web.client("udp", WEB_IP, 9000, count=5, source_port=40123)
    assert len(first.answers) == 1, first  # conntrack keeps one source port on one backend
    chosen = next(iter(first.answers))
    write_web(web, tuple(b for b in BACKENDS if b != chosen))
    wait_until(lambda: len(frontend_backends(web, f"{WEB_IP}:9000/UDP")) == 2, what="backend removed from maps")
    after = web.client("udp", WEB_IP, 9000, count=10, source_port=40123)
    assert sum(after.answers.values()) == 10, after  # no datagram lost to the removed backend
    assert chosen not in after.answers and len(after.answers) == 1, after


def test_established_tcp_connection_keeps_its_backend_across_changes_and_restart(web: Lab) -> None:
    """Points 3 and 8: a keep-alive connection stays on its backend while it exists, across an agent restart."""
    with netns.in_netns(web.pods["client"].ns):
        sock = socket.create_connection((WEB_IP, 80), timeout=2)
    try:

        def ask() -> str:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {WEB_IP}\r\n\r\n".encode())
            data = b""
            while b"\n" not in data.split(b"\r\n\r\n", 1)[-1]:
                data += sock.recv(4096)
            return data.split(b"\r\n\r\n", 1)[1].decode().split()[0].split("=")[1]

        backend = ask()
        others = tuple(b for b in BACKENDS if b != backend)
        write_web(web, (backend, others[0]))  # another backend goes away: ours stays
        wait_until(lambda: len(frontend_backends(web, f"{WEB_IP}:80/TCP")) == 2, what="backend removed from maps")
        assert ask() == backend
        offset = web.agent_log_size()
        web.stop_agent()
        assert ask() == backend  # agent down: datapath keeps forwarding
        web.start_agent()
        web.wait_agent_ready(since=offset)
        first_sync = next(line for line in web.agent_log.read_text()[offset:].splitlines() if "sync done" in line)
        assert " writes=0 " in first_sync, first_sync  # the restart read the maps as applied: nothing rewritten
        assert ask() == backend  # restarted agent broke nothing
        assert [ask() for _ in range(5)] == [backend] * 5
    finally:
        sock.close()


# 4. reject -----------------------------------------------------------------------------------


def test_service_without_endpoints_refuses_tcp_and_udp_at_once(lab: Lab) -> None:
    """Point 4: no endpoints -> TCP RST and ICMP port unreachable, no timeouts."""
    ports = (Port("http", 80, "TCP"), Port("dns", 53, "UDP"))
    lab.write_manifest("empty-svc.yaml", [service("empty", "10.96.0.30", ports)])
    try:
        wait_until(lambda: any(r["frontend"] == "10.96.0.30:53/UDP" for r in _services(lab)), what="empty programmed")
        tcp = lab.client("http", "10.96.0.30", 80, count=5)
        assert tcp.refused == 5 and tcp.timeouts == 0, tcp
        udp = lab.client("udp", "10.96.0.30", 53, count=5)
        assert udp.refused == 5 and udp.timeouts == 0, udp
    finally:
        lab.remove_manifest("empty-svc.yaml")


def test_port_or_protocol_not_served_by_cluster_ip_is_refused(web: Lab) -> None:
    """Point 4: a port the ClusterIP does not serve, or a protocol it does not serve on a port, is refused."""
    assert web.client("http", WEB_IP, 8081, count=3).refused == 3
    assert web.client("udp", WEB_IP, 80, count=3).refused == 3
    assert web.client("http", WEB_IP, 9000, count=3).refused == 3


# 5. session affinity ---------------------------------------------------------------------------


def test_client_ip_affinity_sticks_and_none_spreads(web: Lab) -> None:
    """Point 5: ClientIP sends every new connection of a client to one backend; None spreads; switching works."""
    write_web(web, affinity=True)
    wait_until(lambda: _affinity(web) == 10800, what="affinity programmed")
    sticky = web.client("http", WEB_IP, 80, count=30)
    assert len(sticky.answers) == 1 and sum(sticky.answers.values()) == 30, sticky
    write_web(web, affinity=False)
    wait_until(lambda: _affinity(web) == 0, what="affinity removed")
    spread = web.client("http", WEB_IP, 80, count=45)
    assert len(spread.answers) == 3, spread
    write_web(web, affinity=True)
    wait_until(lambda: _affinity(web) == 10800, what="affinity back")
    again = web.client("http", WEB_IP, 80, count=30)
    assert len(again.answers) == 1, again


def test_unowned_address_in_service_cidr_is_dropped(web: Lab) -> None:
    """--service-cidr: an address inside it that no service owns is dropped (no answer), and counted."""
    before = json.loads(web.bpfproxy(["counters", "--json"]))["drop_no_service"]
    tally = web.client("http", "10.96.0.99", 80, count=2)
    assert tally.timeouts == 2 and not tally.answers and tally.refused == 0, tally
    after = json.loads(web.bpfproxy(["counters", "--json"]))["drop_no_service"]
    assert after - before >= 2, (before, after)
    assert web.client("http", WEB_IP, 8081, count=1).refused == 1  # an owned address's unserved port: reject


def _services(lab: Lab) -> list[dict[str, object]]:
    return list(json.loads(lab.bpfproxy(["services", "--json"])))


def _affinity(lab: Lab) -> int:
    for row in _services(lab):
        if row["frontend"] == f"{WEB_IP}:80/TCP":
            return int(str(row["affinity_timeout"]))
    return -1


# 6 and 10. counters and inspection ---------------------------------------------------------------


def test_counters_and_inspection_through_the_cli(web: Lab) -> None:
    """Points 6 and 10: per-verdict and per-service counters, conntrack, all readable from the CLI."""
    web.client("http", WEB_IP, 80, count=10)
    web.client("http", WEB_IP, 8081, count=1)
    counters = json.loads(web.bpfproxy(["counters", "--json"]))
    for verdict in ("fwd_new", "revnat", "reject_tcp_rst", "pass"):
        assert counters[verdict] > 0, (verdict, counters)
    rows = {r["frontend"]: r for r in _services(web)}
    assert rows[f"{WEB_IP}:80/TCP"]["name"] == "demo/web:http/TCP"
    assert rows[f"{WEB_IP}:80/TCP"]["packets"] > 0
    entries = json.loads(web.bpfproxy(["conntrack", "--json"]))
    assert {e["direction"] for e in entries} == {"forward", "reply"}
    assert any(e["destination"] == f"{WEB_IP}:80" for e in entries)


# 7. devices that appear later --------------------------------------------------------------------


def test_pod_created_after_the_agent_reaches_the_service(web: Lab) -> None:
    """Point 7: a pod device that appears later gets the programs within a second."""
    web.add_pod("late", server=False)
    try:
        time.sleep(1.0)
        tally = web.client("http", WEB_IP, 80, count=15, pod="late")
        assert sum(tally.answers.values()) == 15, tally
        assert tally.clients == [web.pods["late"].ip]
    finally:
        web.remove_pod("late")


# 8. agent lifecycle ----------------------------------------------------------------------------


def test_kill_9_and_sigterm_leave_traffic_flowing(web: Lab) -> None:
    """Point 8: with the agent killed or stopped, the datapath keeps load balancing; a restart resumes."""
    offset = web.agent_log_size()
    web.stop_agent(signal.SIGKILL)
    tally = web.client("http", WEB_IP, 80, count=30)
    assert sum(tally.answers.values()) == 30 and len(tally.answers) == 3, tally
    # 10: inspection works with the agent stopped
    assert len(frontend_backends(web, f"{WEB_IP}:80/TCP")) == 3
    web.start_agent()
    web.wait_agent_ready(since=offset)
    offset = web.agent_log_size()
    assert web.stop_agent() == 0  # SIGTERM: clean exit
    assert "from_pod" in netns.sh(
        ["tc", "filter", "show", "dev", web.pods["client"].host_dev, "ingress"], ns=web.node_ns
    )
    tally = web.client("http", WEB_IP, 80, count=30)
    assert sum(tally.answers.values()) == 30, tally
    web.start_agent()
    web.wait_agent_ready(since=offset)


def test_backend_churn_under_traffic_loses_nothing(web: Lab) -> None:
    """Point 8: make-before-break: while backend sets are rewritten under load, no new connection is
    refused, times out or hits an empty slot. A connection in flight to a backend that was just removed
    is re-balanced to a live one (which resets it): each such failure must match a counted re-balance."""
    results: list[Tally] = []
    stop = threading.Event()
    before = json.loads(web.bpfproxy(["counters", "--json"]))

    def load() -> None:
        while not stop.is_set():
            results.append(web.client("http", WEB_IP, 80, count=20))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        for backends in [("web-1",), ("web-1", "web-2"), ("web-2", "web-3"), BACKENDS, ("web-3",), BACKENDS] * 2:
            write_web(web, backends)
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    after = json.loads(web.bpfproxy(["counters", "--json"]))
    grew = {k: after[k] - before[k] for k in after}
    answered = sum(sum(t.answers.values()) for t in results)
    refused = sum(t.refused for t in results)
    timeouts = sum(t.timeouts for t in results)
    resets = sum(t.errors for t in results)
    assert answered > 0 and refused == 0 and timeouts == 0, (answered, refused, timeouts, grew)
    assert grew["drop_bad_slot"] == 0 and grew["reject_tcp_rst"] == 0 and grew["drop_no_ep"] == 0, grew
    assert resets <= grew["fwd_rebalanced"], (resets, grew)


# 9. bad input --------------------------------------------------------------------------------


def test_bad_objects_are_named_skipped_and_the_rest_keeps_working(web: Lab) -> None:
    """Point 9: malformed YAML, unknown kinds, invalid addresses and ports, orphan slices: logged, skipped."""
    offset = web.agent_log_size()
    web.write_manifest("broken.yaml", "kind: Service\nmetadata: {name: broken\n  namespace: [\n")
    web.write_manifest(
        "unknown.yaml", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "namespace": "demo"}}]
    )
    bad_ip = service("badip", "10.96.0.300", (Port("http", 80),))
    bad_port = service("badport", "10.96.0.51", (Port("http", 70000),))
    orphan = endpoint_slice("ghost", (Port("http", 80),), [Endpoint("10.244.9.9")])
    good = service("good", "10.96.0.52", (Port("http", 80, target_port=8080),))
    good_eps = endpoint_slice("good", (Port("http", 80, target_port=8080),), [Endpoint(web.pods["web-1"].ip)])
    web.write_manifest("mixed.yaml", [bad_ip, bad_port, orphan, good, good_eps])
    try:
        wait_until(lambda: frontend_backends(web, "10.96.0.52:80/TCP") != [], what="good service programmed")
        assert web.client("http", "10.96.0.52", 80, count=5).answers == {"web-1": 5}
        assert web.client("http", WEB_IP, 80, count=9).answers != {}
        log = web.agent_log.read_text()[offset:]
        for name in ("broken.yaml", "ConfigMap", "demo/badip", "demo/badport", "ghost"):
            assert name in log, (name, log)
        assert web.agent_pid and _running(web.agent_pid)
    finally:
        for f in ("broken.yaml", "unknown.yaml", "mixed.yaml"):
            web.remove_manifest(f)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# 7. cleanup (last: it takes the datapath away) -----------------------------------------------------


def test_zz_cleanup_removes_programs_and_pins_only(lab: Lab) -> None:
    """Point 7: `bpfproxy cleanup` removes every filter and pin of ours and leaves foreign ones."""
    dev = lab.pods["client"].host_dev
    netns.sh(
        ["tc", "filter", "add", "dev", dev, "ingress", "pref", "7", "u32", "match", "u32", "0", "0"], ns=lab.node_ns
    )
    lab.stop_agent()
    lab.bpfproxy(["cleanup"])
    shown = netns.sh(["tc", "filter", "show", "dev", dev, "ingress"], ns=lab.node_ns)
    assert "from_pod" not in shown and "u32" in shown, shown
    assert not os.path.exists(lab.pin_dir + "/bpx_svc_v1")
