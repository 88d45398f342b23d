"""Attaching the tc programs on a real kernel, inside namespaces made for each test.

Covers loader.attach (our filter slot, atomic replace, foreign filters untouched), real traffic
through the attached programs, loader.devices (devices appearing, vanishing, renamed) and
loader.cleanup (ours removed, everything else kept, idempotent).
"""

from __future__ import annotations

import ctypes as ct
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from bpfproxy.loader import bpfsys
from bpfproxy.loader.attach import (
    TC_HANDLE,
    TC_PREF,
    Attacher,
    AttachError,
    DeviceGone,
    attach,
    detach,
    filters,
    list_attached,
)
from bpfproxy.loader.build import PROG_FROM_POD, PROG_TO_POD
from bpfproxy.loader.cleanup import any_attached, cleanup
from bpfproxy.loader.devices import DeviceWatcher
from bpfproxy.loader.maps import ALL_MAPS
from bpfproxy.loader.structs import Verdict

from bpfproxy.lab import netns
from bpfproxy.lab.netns import in_netns

if TYPE_CHECKING:
    from conftest import Node, Pod

_BPF_ENABLE_STATS = 32  # bpf() command; BPF_STATS_RUN_TIME = 0


def tc_show(node: Node, dev: str, direction: str) -> str:
    """`tc filter show` of one hook, run in the node namespace."""
    return netns.sh(["tc", "filter", "show", "dev", dev, direction], ns=node.ns)


def our_lines(text: str) -> list[str]:
    """The lines of tc output that describe our filter (pref and handle)."""
    return [ln for ln in text.splitlines() if f"pref {TC_PREF} " in ln and f"handle {TC_HANDLE:#x} " in ln]


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll cond until it holds or timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture()
def bpf_stats() -> Iterator[None]:
    """BPF run statistics on for the duration of a test (released when the fd closes)."""

    class Attr(ct.Structure):
        _fields_ = [("type", ct.c_uint32)]

    fd = bpfsys.bpf(_BPF_ENABLE_STATS, Attr(0), "enable bpf stats")
    try:
        yield
    finally:
        os.close(fd)


def test_attach_shows_in_tc_and_reattach_replaces_in_place(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    dev = node.pods[0].host_ifname
    fds = datapath.prog_fds
    with in_netns(node.ns):
        first = attach(dev, "ingress", prog_fd=fds[PROG_FROM_POD], name=PROG_FROM_POD)
        attach(dev, "egress", prog_fd=fds[PROG_TO_POD], name=PROG_TO_POD)
    ingress, egress = tc_show(node, dev, "ingress"), tc_show(node, dev, "egress")
    assert len(our_lines(ingress)) == 1 and "from_pod" in our_lines(ingress)[0], ingress
    assert len(our_lines(egress)) == 1 and "to_pod" in our_lines(egress)[0], egress
    assert "direct-action" in our_lines(ingress)[0]
    assert first.prog_id == bpfsys.prog_info(fds[PROG_FROM_POD]).prog_id
    assert f"id {first.prog_id} " in our_lines(ingress)[0]

    with in_netns(node.ns):
        again = attach(dev, "ingress", prog_fd=fds[PROG_FROM_POD], name=PROG_FROM_POD)
        # another program into the same slot: replaced in place, still one filter of ours
        swapped = attach(dev, "ingress", prog_fd=fds[PROG_TO_POD], name=PROG_TO_POD)
        listed = sorted((a.ifname, a.direction, a.name) for a in list_attached())
        hook = filters(dev, "ingress")
    assert again.prog_id is not None and first.prog_id is not None and again.prog_id >= first.prog_id
    assert swapped.prog_id == bpfsys.prog_info(fds[PROG_TO_POD]).prog_id
    assert [f.name for f in hook if f.ours] == [PROG_TO_POD]
    assert len(our_lines(tc_show(node, dev, "ingress"))) == 1
    assert listed == [(dev, "egress", PROG_TO_POD), (dev, "ingress", PROG_TO_POD)]


def test_replace_never_leaves_the_hook_without_our_program(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    dev = node.pods[0].host_ifname
    fds = datapath.prog_fds
    with in_netns(node.ns):
        attach(dev, "ingress", prog_fd=fds[PROG_FROM_POD], name=PROG_FROM_POD)
    stop = threading.Event()
    gaps: list[int] = []
    seen = [0]

    def observe() -> None:
        with in_netns(node.ns):
            while not stop.is_set():
                ours = [f for f in filters(dev, "ingress") if f.ours]
                seen[0] += 1
                if len(ours) != 1:
                    gaps.append(len(ours))

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        with in_netns(node.ns):
            for i in range(40):
                prog = (PROG_FROM_POD, PROG_TO_POD)[i % 2]
                attach(dev, "ingress", prog_fd=fds[prog], name=prog)
    finally:
        stop.set()
        watcher.join()
    assert seen[0] > 5
    assert gaps == []


def test_foreign_filters_and_qdisc_survive_attach_detach_cleanup(
    datapath, node: Node, tmp_pin_dir: str
) -> None:  # type: ignore[no-untyped-def]
    dev = node.pods[0].host_ifname
    fds = datapath.prog_fds
    # a foreign clsact with a u32 filter (this kernel has no matchall) and a foreign bpf program
    # (our handle, another pref)
    foreign_pin = os.path.join(tmp_pin_dir, "foreign_prog")
    bpfsys.obj_pin(fds[PROG_TO_POD], foreign_pin)
    netns.sh(["tc", "qdisc", "add", "dev", dev, "clsact"], ns=node.ns)
    netns.sh(["tc", "filter", "add", "dev", dev, "ingress", "pref", "100", "u32", "match", "u32", "0", "0"], ns=node.ns)
    netns.sh(
        ["tc", "filter", "add", "dev", dev, "egress", "pref", "200", "handle", hex(TC_HANDLE), "bpf", "da",
         "object-pinned", foreign_pin],
        ns=node.ns,
    )

    def foreign_intact() -> None:
        ingress, egress = tc_show(node, dev, "ingress"), tc_show(node, dev, "egress")
        assert "pref 100 u32" in ingress, ingress
        assert f"pref 200 bpf chain 0 handle {TC_HANDLE:#x}" in egress, egress

    with in_netns(node.ns):
        Attacher(fds).attach_pod_device(dev)
        foreign_intact()
        Attacher(fds).attach_pod_device(dev)
        foreign_intact()
        assert {(f.direction, f.pref, f.ours) for f in filters(dev, "egress") + filters(dev, "ingress")} == {
            ("ingress", 100, False), ("ingress", TC_PREF, True), ("egress", 200, False), ("egress", TC_PREF, True)
        }
        assert detach(dev, "ingress") is True
        assert detach(dev, "ingress") is False
        foreign_intact()
        report = cleanup(os.path.join(tmp_pin_dir, "absent"))
        assert report.detached == [(dev, "egress")]
        assert report.qdiscs_removed == []  # foreign filters remain on it
        foreign_intact()
        assert not any_attached()


def udp_round_trips(client: Pod, server: Pod, *, count: int) -> int:
    """Send count UDP datagrams from client to server and echo each back; the number answered."""
    with in_netns(server.ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with in_netns(client.ns):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answered = 0
    with srv, cli:
        srv.bind((server.ip, 0))
        srv.settimeout(1.0)
        cli.settimeout(1.0)
        for i in range(count):
            payload = f"probe {i}".encode()
            cli.sendto(payload, srv.getsockname())
            data, peer = srv.recvfrom(100)
            assert peer[0] == client.ip
            srv.sendto(data, peer)
            if cli.recv(100) == payload:
                answered += 1
    return answered


def test_traffic_goes_through_the_attached_programs(datapath, maps, node: Node, bpf_stats: None) -> None:  # type: ignore[no-untyped-def]
    pod0, pod1 = node.pods
    fds = datapath.prog_fds
    attacher = Attacher(fds)
    with in_netns(node.ns):
        for pod in node.pods:
            attacher.attach_pod_device(pod.host_ifname)
    assert sorted(attacher.attached()) == [pod0.host_ifname, pod1.host_ifname]
    runs_before = {p: bpfsys.prog_info(fds[p]).run_cnt for p in (PROG_FROM_POD, PROG_TO_POD)}
    pass_before = sum(c.packets for c in maps.verdict.get_percpu(ct.c_uint32(Verdict.PASS)))

    assert udp_round_trips(pod0, pod1, count=3) == 3

    runs = {p: bpfsys.prog_info(fds[p]).run_cnt - runs_before[p] for p in (PROG_FROM_POD, PROG_TO_POD)}
    # 3 requests + 3 replies leave a pod (from_pod) and enter one (to_pod)
    assert runs[PROG_FROM_POD] >= 6 and runs[PROG_TO_POD] >= 6, runs
    verdict_map_id = bpfsys.map_info(maps.verdict.fd).id
    if verdict_map_id in bpfsys.prog_info(fds[PROG_FROM_POD]).map_ids:
        passed = sum(c.packets for c in maps.verdict.get_percpu(ct.c_uint32(Verdict.PASS))) - pass_before
        assert passed >= 6, passed
    # (the placeholder datapath counts no verdicts; the run counts above prove the path either way)


def test_device_watcher_follows_devices(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    attacher = Attacher(datapath.prog_fds)
    added: list[tuple[str, int]] = []
    removed: list[tuple[str, int]] = []

    def on_add(ifname: str, ifindex: int) -> None:
        added.append((ifname, ifindex))
        if ifname == "lxcbroken":
            raise RuntimeError("simulated attach failure")
        attacher.attach_pod_device(ifname, ifindex)  # as the agent does: by the index the watcher saw

    def on_remove(ifname: str, ifindex: int) -> None:
        removed.append((ifname, ifindex))
        attacher.forget(ifname)

    def attached_devs() -> set[str]:
        with in_netns(node.ns):
            return {a.ifname for a in list_attached()}

    def ns(*argv: str) -> None:
        netns.sh(list(argv), ns=node.ns)

    with in_netns(node.ns):
        watcher = DeviceWatcher(["veth*", "lxc*"], on_add, on_remove)
    watcher.start()
    try:
        assert watcher.synced.wait(10)
        assert sorted(n for n, _ in added) == ["veth0", "veth1"]
        assert attached_devs() == {"veth0", "veth1"}

        ns("ip", "link", "add", "lxcbroken", "type", "veth", "peer", "name", "peerbroken")
        ns("ip", "link", "add", "veth7", "type", "veth", "peer", "name", "peer7")
        ns("ip", "link", "add", "other0", "type", "veth", "peer", "name", "other0p")
        assert wait_for(lambda: "veth7" in attached_devs(), 10.0), added
        veth7_index = next(i for n, i in added if n == "veth7")
        # known() records a device once its on_add callback has returned (the attach is seen a moment earlier)
        assert wait_for(lambda: watcher.known().get(veth7_index) == "veth7", 10.0), watcher.known()
        assert {n for n, _ in added} == {"veth0", "veth1", "veth7", "lxcbroken"}  # not other0 nor peer7

        # link up and down on a known device: no new callback
        count = len(added)
        ns("ip", "link", "set", "veth7", "up")
        ns("ip", "link", "set", "veth0", "down")
        ns("ip", "link", "set", "veth0", "up")
        time.sleep(0.4)
        assert [n for n, _ in added[count:] if n != "lxcbroken"] == []

        ns("ip", "link", "del", "veth7")
        assert wait_for(lambda: any(n == "veth7" for n, _ in removed), 10.0)
        assert wait_for(lambda: "veth7" not in attacher.attached(), 10.0)  # on_remove records, then forgets
        ns("ip", "link", "add", "veth7", "type", "veth", "peer", "name", "peer7")
        assert wait_for(lambda: sum(n == "veth7" for n, _ in added) == 2, 10.0)
        indexes = [i for n, i in added if n == "veth7"]
        assert indexes[0] != indexes[1]
        assert wait_for(lambda: "veth7" in attached_devs(), 10.0)

        # rename away from the globs and back: remove, then add
        ns("ip", "link", "set", "veth1", "down")
        ns("ip", "link", "set", "veth1", "name", "renamed1")
        assert wait_for(lambda: any(n == "veth1" for n, _ in removed), 10.0)
        ns("ip", "link", "set", "renamed1", "name", "lxc1")
        assert wait_for(lambda: "lxc1" in attached_devs(), 10.0)
        assert "veth0" in attacher.attached()  # the failing device never disturbed the others
    finally:
        watcher.stop()


def test_cleanup_removes_only_ours_and_is_idempotent(datapath, node: Node, tmp_pin_dir: str) -> None:  # type: ignore[no-untyped-def]
    pin_dir = os.path.join(tmp_pin_dir, "pins")
    os.mkdir(pin_dir)
    # our map names pinned again in a separate dir (the session's own pins stay), plus a foreign pin
    for spec in ALL_MAPS:
        fd = bpfsys.obj_get(os.path.join(datapath.pin_dir, spec.name))
        try:
            bpfsys.obj_pin(fd, os.path.join(pin_dir, spec.name))
        finally:
            os.close(fd)
    bpfsys.obj_pin(datapath.prog_fds[PROG_TO_POD], os.path.join(pin_dir, "someone_elses"))
    dev0, dev1 = (p.host_ifname for p in node.pods)
    netns.sh(["tc", "qdisc", "add", "dev", dev1, "clsact"], ns=node.ns)
    netns.sh(["tc", "filter", "add", "dev", dev1, "egress", "pref", "7", "u32", "match", "u32", "0", "0"], ns=node.ns)

    with in_netns(node.ns):
        attacher = Attacher(datapath.prog_fds)
        attacher.attach_pod_device(dev0)
        attacher.attach_pod_device(dev1)
        assert any_attached()
        report = cleanup(pin_dir)
        assert sorted(report.detached) == sorted(
            [(dev0, "ingress"), (dev0, "egress"), (dev1, "ingress"), (dev1, "egress")]
        )
        assert report.qdiscs_removed == [dev0]  # dev1 keeps its clsact: the foreign filter is on it
        assert sorted(os.path.basename(p) for p in report.pins_removed) == sorted(s.name for s in ALL_MAPS)
        assert report.left_in_pin_dir == ["someone_elses"] and not report.pin_dir_removed
        assert not any_attached() and list_attached() == []
        assert report.errors == []

        second = cleanup(pin_dir)
        assert not second.changed and second.errors == [] and second.summary() == "nothing to clean up"
    assert "clsact" not in netns.sh(["tc", "qdisc", "show", "dev", dev0], ns=node.ns)
    assert "pref 7 u32" in tc_show(node, dev1, "egress")
    assert os.path.exists(os.path.join(pin_dir, "someone_elses"))
    for spec in ALL_MAPS:  # the session's own pins were not touched
        assert os.path.exists(os.path.join(datapath.pin_dir, spec.name))

    os.unlink(os.path.join(pin_dir, "someone_elses"))
    with in_netns(node.ns):
        assert cleanup(pin_dir).pin_dir_removed
    assert not os.path.exists(pin_dir)


def test_attach_to_missing_device_says_so(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    with in_netns(node.ns), pytest.raises(DeviceGone):
        attach("nosuchdev0", "ingress", prog_fd=datapath.prog_fds[PROG_FROM_POD], name=PROG_FROM_POD)
    with in_netns(node.ns):
        assert detach("nosuchdev0", "ingress") is False


def ifindex_of(node: Node, dev: str) -> int:
    """Index of a device in the node namespace."""
    with in_netns(node.ns):
        return socket.if_nametoindex(dev)


def test_attach_by_ifindex_pins_the_device(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    fds = datapath.prog_fds
    dev0, dev1 = (p.host_ifname for p in node.pods)
    index0 = ifindex_of(node, dev0)
    attacher = Attacher(fds)
    with in_netns(node.ns):
        done = attacher.attach_pod_device(dev0, index0)
    assert [(a.ifname, a.ifindex, a.direction, a.name) for a in done] == [
        (dev0, index0, "ingress", PROG_FROM_POD), (dev0, index0, "egress", PROG_TO_POD)
    ]
    assert [a.prog_id for a in done] == [bpfsys.prog_info(fds[p]).prog_id for p in (PROG_FROM_POD, PROG_TO_POD)]
    assert len(our_lines(tc_show(node, dev0, "ingress"))) == 1 and len(our_lines(tc_show(node, dev0, "egress"))) == 1
    assert attacher.attached() == {dev0: index0}

    # the index wins over the name: a device re-created under the same name is another device
    netns.sh(["ip", "link", "del", dev1], ns=node.ns)
    netns.sh(["ip", "link", "add", dev1, "type", "veth", "peer", "name", f"p{dev1}"], ns=node.ns)
    new1 = ifindex_of(node, dev1)
    with in_netns(node.ns):
        stale = max(index0, new1) + 1000  # no such device
        with pytest.raises(DeviceGone, match=f"ifindex {stale}"):
            attacher.attach_pod_device(dev1, stale)
        attacher.attach_pod_device(dev1, new1)
    assert len(our_lines(tc_show(node, dev1, "egress"))) == 1
    assert attacher.attached() == {dev0: index0, dev1: new1}
    assert attacher.sockets_opened == 1


def test_attacher_reuses_its_socket_after_a_device_vanished(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    dev0, dev1 = (p.host_ifname for p in node.pods)
    index0, index1 = ifindex_of(node, dev0), ifindex_of(node, dev1)
    attacher = Attacher(datapath.prog_fds)
    with in_netns(node.ns):
        attacher.attach_pod_device(dev0, index0)
        netns.sh(["ip", "link", "del", dev0], ns=node.ns)
        with pytest.raises(DeviceGone):
            attacher.attach_pod_device(dev0, index0)  # by the index the watcher reported
        with pytest.raises(DeviceGone):
            attacher.attach_pod_device(dev0)  # by name
        attacher.forget(dev0)
        attacher.attach_pod_device(dev1, index1)  # the same socket carries on
        assert attacher.sockets_opened == 1
        assert {(a.ifname, a.direction) for a in list_attached()} == {(dev1, "ingress"), (dev1, "egress")}

        # a socket that broke under it (not a kernel error answer) is replaced, and the attach still happens
        attacher._ipr.close()  # simulate a dead netlink socket (private on purpose)
        attacher.attach_pod_device(dev1, index1)
        assert attacher.sockets_opened == 2
        attacher.attach_pod_device(dev1, index1)
        assert attacher.sockets_opened == 2
        attacher.close()
    assert len(our_lines(tc_show(node, dev1, "ingress"))) == 1 and len(our_lines(tc_show(node, dev1, "egress"))) == 1
    assert attacher.attached() == {dev1: index1}


def test_ingress_qdisc_is_refused_and_left_alone(datapath, node: Node) -> None:  # type: ignore[no-untyped-def]
    fds = datapath.prog_fds
    dev0, dev1 = (p.host_ifname for p in node.pods)
    netns.sh(["tc", "qdisc", "add", "dev", dev1, "ingress"], ns=node.ns)
    netns.sh(["tc", "filter", "add", "dev", dev1, "parent", "ffff:", "pref", "5", "u32", "match", "u32", "0", "0"],
             ns=node.ns)
    before = netns.sh(["tc", "filter", "show", "dev", dev1, "parent", "ffff:"], ns=node.ns)
    attacher = Attacher(fds)
    with in_netns(node.ns):
        for call in (
            lambda: attacher.attach_pod_device(dev1, ifindex_of(node, dev1)),  # the fast path: create, EEXIST
            lambda: attacher.attach_pod_device(dev1),
            lambda: attach(dev1, "egress", prog_fd=fds[PROG_TO_POD], name=PROG_TO_POD),
        ):
            with pytest.raises(AttachError, match=f"device {dev1} .* ingress qdisc where clsact is needed") as err:
                call()
            assert not isinstance(err.value, DeviceGone)
        attacher.attach_pod_device(dev0)  # the others still attach, through the same socket
        assert attacher.sockets_opened == 1
        assert {a.ifname for a in list_attached()} == {dev0}
    qdiscs = netns.sh(["tc", "qdisc", "show", "dev", dev1], ns=node.ns)
    assert "qdisc ingress ffff:" in qdiscs and "clsact" not in qdiscs, qdiscs
    assert netns.sh(["tc", "filter", "show", "dev", dev1, "parent", "ffff:"], ns=node.ns) == before
    assert "pref 5 u32" in before
    assert attacher.attached() == {dev0: ifindex_of(node, dev0)}


def test_attacher_follows_the_callers_namespace_and_thread(datapath, make_node) -> None:  # type: ignore[no-untyped-def]
    a, b = make_node(1), make_node(1)
    dev = a.pods[0].host_ifname  # both nodes call their device veth0
    attacher = Attacher(datapath.prog_fds)
    with in_netns(a.ns):
        attacher.attach_pod_device(dev)
        attacher.attach_pod_device(dev)
    assert attacher.sockets_opened == 1
    assert our_lines(tc_show(b, dev, "ingress")) == []
    with in_netns(b.ns):
        attacher.attach_pod_device(dev, socket.if_nametoindex(dev))
    assert attacher.sockets_opened == 2
    assert len(our_lines(tc_show(b, dev, "egress"))) == 1

    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with in_netns(a.ns):
                attacher.attach_pod_device(dev)
        except BaseException as e:  # reported to the test thread
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors == []
    assert attacher.sockets_opened == 3
    for n in (a, b):
        assert len(our_lines(tc_show(n, dev, "ingress"))) == 1 and len(our_lines(tc_show(n, dev, "egress"))) == 1
    attacher.close()


def test_in_netns_switches_and_restores(node: Node) -> None:
    here = os.stat("/proc/thread-self/ns/net").st_ino
    with in_netns(node.ns):
        assert os.stat("/proc/thread-self/ns/net").st_ino == os.stat(f"/run/netns/{node.ns}").st_ino
    assert os.stat("/proc/thread-self/ns/net").st_ino == here
    with pytest.raises(OSError), in_netns(f"absent-{node.rid}"):
        pass
    assert os.stat("/proc/thread-self/ns/net").st_ino == here
