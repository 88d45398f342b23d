"""The agent with --source kube: watch-driven programming of real traffic, and an API server outage.

A fake API server (tests/kube/fakeapi.py) runs in this test process, its listening socket made
inside the lab's node namespace, so the agent (nsenter'd there) reaches it at 127.0.0.1 while the
test drives it through plain method calls. Nothing listens or routes in the root namespace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from kube.fakeapi import FakeApiServer

from bpfproxy.lab.manifests import Endpoint, Port, endpoint_slice, service
from bpfproxy.lab.topology import NODE_NAME, Lab

WEB_IP = "10.96.0.10"
OTHER_IP = "10.96.0.11"
WEB_PORTS = (Port("http", 80, "TCP", target_port="http", endpoint_port=8080),)
BACKENDS = ("web-1", "web-2", "web-3")


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll check until it holds; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout} s")


def frontend_backends(lab: Lab, frontend: str) -> list[str] | None:
    """Backend addresses the maps hold for frontend IP:port/proto; None when the frontend is absent."""
    for row in json.loads(lab.bpfproxy(["services", "--json"])):
        if row["frontend"] == frontend:
            return sorted(b["address"] for b in row["backends"] if not b["terminating"])
    return None


def web_slice(lab: Lab, name: str, backends: tuple[str, ...]) -> dict[str, object]:
    """The EndpointSlice of service name with the given backend pods."""
    return endpoint_slice(name, WEB_PORTS, [Endpoint(lab.pods[b].ip, pod=b) for b in backends])


@pytest.fixture(scope="module")
def kube_lab() -> Iterator[tuple[Lab, FakeApiServer]]:
    """A lab whose agent watches a fake API server (web and other services, three backends each)."""
    lab = Lab.create(("client", *BACKENDS))
    fake: FakeApiServer | None = None
    try:
        fake = FakeApiServer(netns=f"/run/netns/{lab.node_ns}", bookmark_interval=2.0).start()
        fake.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": {}}})
        for name, ip in (("web", WEB_IP), ("other", OTHER_IP)):
            fake.apply(service(name, ip, WEB_PORTS))
            fake.apply(web_slice(lab, name, BACKENDS))
        kubeconfig = fake.write_kubeconfig(str(lab.dir / "kubeconfig"))
        # the last --source wins: the lab's default file source is replaced by the API
        lab.start_agent(["--source", "kube", "--kubeconfig", kubeconfig, "--min-sync-period", "0.2"])
        lab.wait_agent_ready()
        yield lab, fake
    finally:
        if fake is not None:
            fake.stop()
        lab.destroy()


def test_watch_driven_agent_programs_real_traffic(kube_lab: tuple[Lab, FakeApiServer]) -> None:
    """The listed services forward: new connections to the ClusterIP spread over every backend."""
    lab, fake = kube_lab
    assert "kube source started" in lab.agent_log.read_text()
    tally = lab.client("http", WEB_IP, 80, count=45)
    assert sum(tally.answers.values()) == 45 and set(tally.answers) == set(BACKENDS), tally
    assert lab.client("http", OTHER_IP, 80, count=6).refused == 0
    # the agent lists with the proxy label selector and watches the Node by name
    assert fake.watch_requests("Node")[0].params["fieldSelector"] == f"metadata.name={NODE_NAME}"


def test_endpoint_removed_through_the_api_reaches_the_datapath(kube_lab: tuple[Lab, FakeApiServer]) -> None:
    """An EndpointSlice update through the watch takes a backend out of the maps and of new traffic."""
    lab, fake = kube_lab
    fake.apply(web_slice(lab, "web", BACKENDS[:2]))
    want = sorted(f"{lab.pods[b].ip}:8080" for b in BACKENDS[:2])
    wait_until(lambda: frontend_backends(lab, f"{WEB_IP}:80/TCP") == want, what="web-3 removed from the maps")
    tally = lab.client("http", WEB_IP, 80, count=30)
    assert sum(tally.answers.values()) == 30 and "web-3" not in tally.answers, tally
    fake.apply(web_slice(lab, "web", BACKENDS))
    wait_until(lambda: len(frontend_backends(lab, f"{WEB_IP}:80/TCP") or []) == 3, what="web-3 back")


@pytest.mark.parametrize("compacted", [False, True], ids=["history-kept", "history-compacted"])
def test_api_server_restart_traffic_flows_and_agent_converges(
    kube_lab: tuple[Lab, FakeApiServer], compacted: bool
) -> None:
    """Outage: connections cut, a service deleted and a backend removed while down; traffic flows
    meanwhile; after the restart (with or without a 410 relist) the agent converges."""
    lab, fake = kube_lab
    name = f"gone{int(compacted)}"
    gone_ip = f"10.96.0.{20 + int(compacted)}"
    fake.apply(service(name, gone_ip, WEB_PORTS))
    fake.apply(web_slice(lab, name, BACKENDS))
    wait_until(lambda: frontend_backends(lab, f"{gone_ip}:80/TCP") is not None, what=f"{name} programmed")
    offset = len(lab.agent_log.read_text())

    fake.stop()  # every watch is cut; the API server is unreachable
    fake.delete("Service", "demo", name)
    fake.delete("EndpointSlice", "demo", f"{name}-abcde")
    fake.apply(web_slice(lab, "other", BACKENDS[1:]))
    if compacted:
        fake.compact()
    during = lab.client("http", WEB_IP, 80, count=30)  # the datapath keeps forwarding the last state
    assert sum(during.answers.values()) == 30 and set(during.answers) == set(BACKENDS), during
    wait_until(lambda: "watch reconnect" in lab.agent_log.read_text()[offset:], what="agent noticed the outage")
    assert frontend_backends(lab, f"{gone_ip}:80/TCP") is not None  # nothing removed while blind

    fake.start()
    wait_until(lambda: frontend_backends(lab, f"{gone_ip}:80/TCP") is None, what="deleted service removed")
    other = sorted(f"{lab.pods[b].ip}:8080" for b in BACKENDS[1:])
    wait_until(lambda: frontend_backends(lab, f"{OTHER_IP}:80/TCP") == other, what="other at two backends")
    after = lab.client("http", WEB_IP, 80, count=30)
    assert sum(after.answers.values()) == 30 and set(after.answers) == set(BACKENDS), after
    assert lab.client("http", gone_ip, 80, count=3).answers == {}
    log = lab.agent_log.read_text()[offset:]
    assert ("relist after 410" in log) == compacted, log
    fake.apply(web_slice(lab, "other", BACKENDS))
    wait_until(lambda: len(frontend_backends(lab, f"{OTHER_IP}:80/TCP") or []) == 3, what="other restored")
