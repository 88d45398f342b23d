"""Network namespaces and commands inside them, named uniquely per run and always removed.

Place in the data flow: test and lab scaffolding. Namespaces are entered with
`nsenter --net=/run/netns/NAME` (never `ip netns exec`, which remounts /sys and hides bpffs), so
every process shares the root mount namespace and its pinned maps.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence

NETNS_DIR = "/run/netns"


def run_id() -> str:
    """A short id unique to this run, used in namespace and device names (IFNAMSIZ is 16)."""
    return secrets.token_hex(3)


def ns_prefix(ns: str | None) -> list[str]:
    """The argv prefix that runs a command inside namespace ns (nothing for the current one)."""
    return [] if ns is None else ["nsenter", f"--net={NETNS_DIR}/{ns}"]


def sh(argv: Sequence[str], *, ns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run argv (inside ns), return its stdout; raise with stderr on failure when check."""
    proc = subprocess.run([*ns_prefix(ns), *argv], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join([*ns_prefix(ns), *argv])} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def create(name: str) -> None:
    """Create namespace name with loopback up."""
    sh(["ip", "netns", "add", name])
    sh(["ip", "link", "set", "lo", "up"], ns=name)


def delete(name: str) -> None:
    """Delete namespace name if it exists (its veths go with it)."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        sh(["ip", "netns", "del", name], check=False)


#: the pods' gateway: a link-local address that exists only as a static neighbour entry in each pod
POD_GATEWAY = "169.254.1.1"


def link_mac(dev: str, ns: str) -> str:
    """MAC address of a device inside a namespace."""
    return str(json.loads(sh(["ip", "-j", "link", "show", "dev", dev], ns=ns))[0]["address"])


def wire_pod(node_ns: str, pod_ns: str, *, host_dev: str, ip: str) -> tuple[str, str]:
    """Create pod_ns wired to node_ns by a veth (host_dev in the node, eth0 in the pod), Calico style.

    The pod gets ip/32 on eth0 and a default route through POD_GATEWAY, resolved by a static
    neighbour entry to the host veth's MAC; the node gets a /32 route and a static neighbour entry
    to the pod. Nothing is configured outside the two namespaces. Returns (pod MAC, host MAC).
    """
    create(pod_ns)
    sh(["ip", "link", "add", host_dev, "type", "veth", "peer", "name", "eth0", "netns", pod_ns], ns=node_ns)
    sh(["ip", "link", "set", host_dev, "up"], ns=node_ns)
    sh(["ip", "link", "set", "eth0", "up"], ns=pod_ns)
    sh(["ip", "addr", "add", f"{ip}/32", "dev", "eth0"], ns=pod_ns)
    host_mac = link_mac(host_dev, node_ns)
    pod_mac = link_mac("eth0", pod_ns)
    sh(["ip", "route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"], ns=pod_ns)
    sh(["ip", "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"], ns=pod_ns)
    sh(["ip", "neigh", "replace", POD_GATEWAY, "lladdr", host_mac, "dev", "eth0", "nud", "permanent"], ns=pod_ns)
    sh(["ip", "route", "add", f"{ip}/32", "dev", host_dev], ns=node_ns)
    sh(["ip", "neigh", "replace", ip, "lladdr", pod_mac, "dev", host_dev, "nud", "permanent"], ns=node_ns)
    return pod_mac, host_mac


def exists(name: str) -> bool:
    """True when namespace name exists."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Switch the calling thread into namespace name and back on exit (libc setns).

    Sockets opened inside (netlink included) stay bound to that namespace after the switch back;
    other threads and every fd of this process (BPF programs, pinned maps) are unaffected.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into netns {name}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(original, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                # a thread stuck in a lab namespace would act on the wrong network: never continue
                raise OSError(err, f"setns back to the original netns: {os.strerror(err)}")
    finally:
        os.close(original)
