"""Network-namespace fixtures: a "node" namespace wired to "pod" namespaces by veth pairs.

Every namespace is named uniquely per run and deleted at teardown, also when the test fails.
Pods use the Calico-style wiring: pod address /32 on eth0, a link-local gateway reached through a
static neighbor entry (the host veth's MAC), /32 routes to each pod in the node, ip_forward on in
the node. No address, route or neighbor is ever added in the root namespace.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from bpfproxy.lab import netns


@dataclass(frozen=True)
class Pod:
    """One pod namespace and its veth pair."""

    ns: str
    """pod namespace name"""
    ip: str
    """pod address (a /32 on eth0)"""
    ifname: str
    """device inside the pod ("eth0")"""
    host_ifname: str
    """the peer in the node namespace (what the agent attaches to)"""
    mac: str
    """MAC of the pod's eth0"""
    host_mac: str
    """MAC of the host-side veth"""


@dataclass(frozen=True)
class Node:
    """A node namespace with pods attached."""

    ns: str
    """node namespace name"""
    pods: tuple[Pod, ...]
    """the pods, in creation order"""
    rid: str
    """the run id in every name"""


def add_pod(node_ns: str, pod_ns: str, *, host_ifname: str, ip: str) -> Pod:
    """Create pod namespace pod_ns wired to node_ns by a veth (host_ifname in the node, eth0 in the pod)."""
    mac, host_mac = netns.wire_pod(node_ns, pod_ns, host_dev=host_ifname, ip=ip)
    return Pod(pod_ns, ip, "eth0", host_ifname, mac, host_mac)


@pytest.fixture()
def make_node() -> Iterator[Callable[..., Node]]:
    """Factory: make_node(n_pods, host_prefix="veth") -> Node; everything it made is deleted afterwards.

    Pod i gets 10.244.0.(10+i) and host device f"{host_prefix}{i}" in the node namespace.
    """
    if os.geteuid() != 0:
        pytest.fail("network-namespace tests need root (make test runs as root)")
    made: list[str] = []

    def make(n_pods: int = 2, *, host_prefix: str = "veth") -> Node:
        rid = netns.run_id()
        node_ns = f"bpxnode-{rid}"
        made.append(node_ns)
        netns.create(node_ns)
        netns.sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=node_ns)
        pods = []
        for i in range(n_pods):
            made.append(f"bpxpod{i}-{rid}")
            pods.append(add_pod(node_ns, f"bpxpod{i}-{rid}", host_ifname=f"{host_prefix}{i}", ip=f"10.244.0.{10 + i}"))
        return Node(node_ns, tuple(pods), rid)

    try:
        yield make
    finally:
        for name in reversed(made):
            netns.delete(name)


@pytest.fixture()
def tmp_pin_dir() -> Iterator[str]:
    """An empty directory on bpffs unique to this test, removed afterwards (pins inside included)."""
    path = f"/sys/fs/bpf/bpxtmp-{netns.run_id()}"
    os.mkdir(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def node(make_node: Callable[..., Node]) -> Node:
    """A node namespace with two pods (host devices veth0, veth1)."""
    return make_node(2)
