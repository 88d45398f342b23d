"""Attach the tc programs to devices: clsact hooks, our own filter slot, atomic replace, detach.

Place in the data flow: the agent loads the programs (loader.build), then `Attacher` hangs
from_pod on the ingress and to_pod on the egress hook of every pod device that
loader.devices reports; loader.cleanup detaches them again. Everything acts in the network
namespace of the calling thread (the agent runs inside the node's namespace).

Our filter is identified by a fixed priority (tc "pref") and handle: re-attaching replaces the
program of that filter in place (RTM_NEWTFILTER with NLM_F_REPLACE), so the hook is never left
without a program; filters at other priorities or handles belong to somebody else and are never
touched, and an existing clsact qdisc is reused, never replaced.

Cost: `Attacher` keeps one netlink socket (pyroute2 IPRoute) for its whole life and takes the
ifindex from its caller (the device watcher knows it), so a device costs three requests: create
clsact (EEXIST on a device that has one: then one qdisc get checks that it really is a clsact), and
one filter replace per hook. Nothing is dumped, so attaching stays O(1) per device however many
devices the node has; the program id comes from the program fd (once per fd), not from the filter.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

from bpfproxy.loader import bpfsys
from bpfproxy.loader.build import PROG_FROM_POD, PROG_TO_POD
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("bpfproxy.attach")

Direction = Literal["ingress", "egress"]

#: the two clsact hooks, in the order we attach them
DIRECTIONS: tuple[Direction, Direction] = ("ingress", "egress")
#: tc parent of each clsact hook (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS))
HOOK_PARENT: dict[Direction, int] = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
#: parent of a clsact (or ingress) qdisc: TC_H_CLSACT == TC_H_INGRESS
TC_H_CLSACT = 0xFFFFFFF1
#: handle of the clsact qdisc ("ffff:")
CLSACT_HANDLE = 0xFFFF0000
#: our filter priority: below tc's automatic prefs (49152 downwards), away from 1 that most tools pick
TC_PREF = 18000
#: our filter handle ("bpx" in spirit); together with TC_PREF it names our filter slot
TC_HANDLE = 0xB9F0
#: the program attached to each hook of a pod device
POD_PROGRAMS: dict[Direction, str] = {"ingress": PROG_FROM_POD, "egress": PROG_TO_POD}

_TCA_BPF_ID = 11  # netlink attribute: id of the attached program (pyroute2 does not decode it)


class AttachError(RuntimeError):
    """A program could not be attached to or detached from a device."""


class DeviceGone(AttachError):
    """The device does not exist (any more) in this network namespace."""


class TcFilter(NamedTuple):
    """One filter on a clsact hook, ours or not."""

    ifname: str
    """device name"""
    ifindex: int
    """device index"""
    direction: Direction
    """the clsact hook"""
    pref: int
    """priority (tc "pref")"""
    handle: int
    """filter handle"""
    kind: str
    """classifier kind: bpf, matchall, u32, ..."""
    name: str | None
    """for bpf filters the name the kernel reports (our filters carry the program name)"""
    prog_id: int | None
    """for bpf filters the id of the attached program"""

    @property
    def ours(self) -> bool:
        """True when this is the filter slot of bpfproxy."""
        return self.kind == "bpf" and self.pref == TC_PREF and self.handle == TC_HANDLE


class AttachedProgram(NamedTuple):
    """A program of ours on one hook of one device."""

    ifname: str
    """device name"""
    ifindex: int
    """device index"""
    direction: Direction
    """the clsact hook"""
    name: str | None
    """program name (from_pod / to_pod)"""
    prog_id: int | None
    """kernel id of the attached program"""


def _ifindex(ifname: str) -> int:
    """The index of a device of the calling thread's netns (one ioctl, no link dump); DeviceGone when absent."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError as e:
        raise DeviceGone(f"device {ifname} not found in this network namespace") from e


def _index_exists(ifindex: int) -> bool:
    """True when ifindex names a device of the calling thread's netns (one ioctl)."""
    try:
        socket.if_indextoname(ifindex)
    except OSError:
        return False
    return True


def _clsact_state(ipr: Any, ifindex: int) -> str | None:
    """The kind of the qdisc in the ingress/clsact slot of a device ("clsact", "ingress") or None.

    One RTM_GETQDISC for that slot, not a dump of every qdisc of the namespace. The kernel answers
    a qdisc get only to a request flagged NLM_F_ECHO, which pyroute2 sets while status["nlm_echo"]
    is on; the previous setting is restored, so other requests on ipr are unaffected.
    """
    echo = ipr.status["nlm_echo"]
    ipr.status["nlm_echo"] = True
    try:
        msgs = ipr.tc("get", index=ifindex, parent=TC_H_CLSACT)
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.EINVAL):
            return None  # no ingress queue on the device at all
        raise
    finally:
        ipr.status["nlm_echo"] = echo
    for msg in msgs:
        if msg.get("event") == "RTM_NEWQDISC" and msg["index"] == ifindex and msg["parent"] == TC_H_CLSACT:
            return str(msg.get_attr("TCA_KIND"))
    return None  # only the acknowledgement: the slot holds the kernel's built-in placeholder


def ensure_clsact(ipr: Any, ifindex: int, ifname: str | None = None) -> bool:
    """Create the clsact qdisc of a device when absent (never replacing one); True when created.

    The create request comes first (NLM_F_EXCL: it never replaces anything), so a new device costs
    one request; only when the slot is taken (EEXIST) is its kind asked for: a clsact is used as it
    is, anything else (an `ingress` qdisc) is an AttachError and stays untouched. ifname only
    names the device in errors.
    """
    device = f"device {ifname} (ifindex {ifindex})" if ifname else f"ifindex {ifindex}"
    for _ in range(2):  # a second round only when the qdisc vanished between EEXIST and the get
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
            kind = _clsact_state(ipr, ifindex)
            if kind == "clsact":
                return False
            if kind is not None:
                raise AttachError(
                    f"{device} has an {kind} qdisc where clsact is needed; not replacing it"
                ) from e
            continue
        return True
    raise AttachError(f"{device}: the clsact slot is taken but reports no qdisc; not touching it")


def _nla_u32(nla: Any) -> int | None:
    """Value of a u32 attribute pyroute2 left undecoded (it keeps the raw buffer and offset)."""
    try:
        raw = bytes(nla.data[nla.offset + 4 : nla.offset + 8])
        return int(struct.unpack("=I", raw)[0])
    except (AttributeError, TypeError, struct.error):
        return None


def _parse_filter(msg: Any, ifname: str, direction: Direction) -> TcFilter | None:
    """A filter from an RTM_NEWTFILTER message; None for the per-priority header entries."""
    if not msg["handle"]:
        return None  # the chain/priority entry tc prints without a handle
    kind = str(msg.get_attr("TCA_KIND"))
    name: str | None = None
    prog_id: int | None = None
    opts = msg.get_attr("TCA_OPTIONS")
    if kind == "bpf" and opts is not None:
        name = opts.get_attr("TCA_BPF_NAME")
        for nla in opts["attrs"]:
            value = nla[1]
            if nla[0] == "UNKNOWN" and getattr(value, "get", None) and value["header"]["type"] == _TCA_BPF_ID:
                prog_id = _nla_u32(value)
    return TcFilter(
        ifname, int(msg["index"]), direction, int(msg["info"]) >> 16, int(msg["handle"]), kind, name, prog_id
    )


def hook_filters(ipr: Any, ifindex: int, ifname: str, direction: Direction) -> list[TcFilter]:
    """Every filter on one hook of ifindex, through an open IPRoute; [] without clsact."""
    try:
        msgs = ipr.get_filters(index=ifindex, parent=HOOK_PARENT[direction])
    except NetlinkError as e:
        if e.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
            return []  # no clsact on this device, or it just vanished
        raise
    return [f for f in (_parse_filter(m, ifname, direction) for m in msgs) if f is not None]


def filters(ifname: str, direction: Direction) -> list[TcFilter]:
    """Every filter on one clsact hook of a device (ours and foreign ones); [] without clsact."""
    ifindex = _ifindex(ifname)
    with IPRoute() as ipr:
        return hook_filters(ipr, ifindex, ifname, direction)


def replace_filter(ipr: Any, ifindex: int, direction: Direction, *, prog_fd: int, name: str) -> None:
    """Put prog_fd into our filter slot of one hook of ifindex through an open IPRoute (clsact must exist).

    One RTM_NEWTFILTER with NLM_F_REPLACE|NLM_F_CREATE: creates our filter, or swaps the program of
    the existing one in place (the hook is never without a program); other filters stay untouched.
    """
    ipr.tc(
        "replace-filter",
        "bpf",
        ifindex,
        TC_HANDLE,
        prio=TC_PREF,
        parent=HOOK_PARENT[direction],
        fd=prog_fd,
        name=name,
        direct_action=True,
    )


def _attach_error(e: NetlinkError, ifname: str, ifindex: int, what: str) -> AttachError:
    """DeviceGone when the device vanished (ENODEV, or its index is gone), else an AttachError."""
    if e.code == errno.ENODEV or not _index_exists(ifindex):
        return DeviceGone(f"device {ifname} (ifindex {ifindex}) vanished while attaching {what}")
    return AttachError(f"attaching {what} to {ifname} (ifindex {ifindex}) failed: {e}")


def attach(
    ifname: str, direction: Direction, *, prog_fd: int, name: str, ifindex: int | None = None
) -> AttachedProgram:
    """Put the program prog_fd into our filter slot of one hook, creating clsact when absent.

    Idempotent and atomic: an existing filter of ours is replaced in place (no moment without a
    program); other filters and an existing qdisc are left as they are. A convenience that opens
    its own netlink socket: the agent attaches through Attacher, which keeps one. ifindex, when
    given, is used instead of looking ifname up.
    """
    index = _ifindex(ifname) if ifindex is None else ifindex
    with IPRoute() as ipr:
        try:
            if ensure_clsact(ipr, index, ifname):
                log.info("clsact created dev=%s ifindex=%d", ifname, index)
            replace_filter(ipr, index, direction, prog_fd=prog_fd, name=name)
        except NetlinkError as e:
            raise _attach_error(e, ifname, index, name) from e
    prog_id = bpfsys.prog_info(prog_fd).prog_id
    log.debug("attached dev=%s ifindex=%d direction=%s prog=%s id=%s", ifname, index, direction, name, prog_id)
    return AttachedProgram(ifname, index, direction, name, prog_id)


def detach_index(ipr: Any, ifindex: int, direction: Direction) -> bool:
    """Delete our filter from one hook of ifindex through an open IPRoute; False when absent."""
    try:
        ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, prio=TC_PREF, parent=HOOK_PARENT[direction])
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return False  # nothing of ours there (EINVAL: no clsact, or another kind at our pref)
        raise
    return True


def detach(ifname: str, direction: Direction) -> bool:
    """Remove our filter from one hook of a device; True when one was removed, False when none was there."""
    try:
        ifindex = _ifindex(ifname)
    except DeviceGone:
        return False
    with IPRoute() as ipr:
        if not any(f.ours for f in hook_filters(ipr, ifindex, ifname, direction)):
            return False
        try:
            removed = detach_index(ipr, ifindex, direction)
        except NetlinkError as e:
            raise AttachError(f"detaching from {ifname} {direction} failed: {e}") from e
    if removed:
        log.info("detached dev=%s direction=%s", ifname, direction)
    return removed


def clsact_devices(ipr: Any) -> dict[int, str]:
    """ifindex -> ifname of every device of the current netns that has a clsact qdisc."""
    names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
    found = {}
    for msg in ipr.get_qdiscs():
        if msg["parent"] == TC_H_CLSACT and msg.get_attr("TCA_KIND") == "clsact" and msg["index"] in names:
            found[int(msg["index"])] = names[int(msg["index"])]
    return found


def all_filters(ipr: Any) -> list[TcFilter]:
    """Every clsact filter (ours and foreign) on every device of the current netns."""
    out: list[TcFilter] = []
    for ifindex, ifname in sorted(clsact_devices(ipr).items()):
        for direction in DIRECTIONS:
            out.extend(hook_filters(ipr, ifindex, ifname, direction))
    return out


def list_attached() -> list[AttachedProgram]:
    """Every program of ours on every device of the current netns, by ifindex and direction."""
    with IPRoute() as ipr:
        return [
            AttachedProgram(f.ifname, f.ifindex, f.direction, f.name, f.prog_id) for f in all_filters(ipr) if f.ours
        ]


def _netns_id() -> tuple[int, int]:
    """Identity (device, inode) of the calling thread's network namespace."""
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


class Attacher:
    """The agent's attach bookkeeping: from_pod on ingress and to_pod on egress of pod devices.

    Thread-safe: the device watcher attaches from its thread while others ask what is attached.
    Netlink requests go through one IPRoute socket the Attacher owns: opened at the first attach,
    reused for every device after, replaced when it failed (anything but a kernel error answer)
    and when a call comes from another thread or network namespace than the one it was opened
    in (a netlink socket acts in the namespace it was created in; pyroute2's sync API is per
    thread). Requests are serialised by a lock. close() releases it.
    """

    def __init__(self, prog_fds: Mapping[str, int]) -> None:
        missing = [p for p in POD_PROGRAMS.values() if p not in prog_fds]
        if missing:
            raise ValueError(f"program fds missing: {', '.join(missing)}")
        self._prog_fds = dict(prog_fds)
        self._prog_ids: dict[int, int] = {}
        self._lock = threading.Lock()
        self._nl_lock = threading.Lock()
        self._ipr: Any = None
        self._ipr_owner: tuple[int, tuple[int, int]] | None = None
        self._attached: dict[str, int] = {}
        self.sockets_opened = 0
        """how many netlink sockets this Attacher opened (1 in steady state)"""

    def _socket(self) -> Any:
        """The netlink socket for the calling thread and namespace (caller holds _nl_lock)."""
        owner = (threading.get_ident(), _netns_id())
        if self._ipr is not None and self._ipr_owner != owner:
            log.debug("attach socket reopened: another thread or network namespace")
            self._drop_socket()
        if self._ipr is None:
            self._ipr = IPRoute()
            self._ipr_owner = owner
            self.sockets_opened += 1
        return self._ipr

    def _drop_socket(self) -> None:
        """Close and forget the socket (caller holds _nl_lock); errors closing a broken one are ignored."""
        ipr, self._ipr, self._ipr_owner = self._ipr, None, None
        if ipr is not None:
            try:
                ipr.close()
            except Exception as e:  # a socket that failed may fail closing too: it is dropped either way
                log.debug("attach socket close failed error=%s", e)

    def close(self) -> None:
        """Release the netlink socket (the next attach opens a new one)."""
        with self._nl_lock:
            self._drop_socket()

    def _prog_id(self, prog_fd: int) -> int:
        """Kernel id of the program behind one of our fds, asked once per fd."""
        prog_id = self._prog_ids.get(prog_fd)
        if prog_id is None:
            prog_id = self._prog_ids[prog_fd] = bpfsys.prog_info(prog_fd).prog_id
        return prog_id

    def _attach_both(self, ipr: Any, ifname: str, ifindex: int) -> None:
        """clsact, then our program on each hook of ifindex, through ipr."""
        if ensure_clsact(ipr, ifindex, ifname):
            log.info("clsact created dev=%s ifindex=%d", ifname, ifindex)
        for direction, prog in POD_PROGRAMS.items():
            replace_filter(ipr, ifindex, direction, prog_fd=self._prog_fds[prog], name=prog)

    def attach_pod_device(self, ifname: str, ifindex: int | None = None) -> list[AttachedProgram]:
        """Attach both programs to a pod device (idempotent); raises AttachError / DeviceGone.

        ifindex, when the caller knows it (the device watcher does), spares the name lookup and
        pins the attach to that very device: if it vanished, DeviceGone, even when another device
        took its name meanwhile.
        """
        index = _ifindex(ifname) if ifindex is None else ifindex
        with self._nl_lock:
            for attempt in (1, 2):
                try:
                    self._attach_both(self._socket(), ifname, index)
                    break
                except NetlinkError as e:  # the kernel's answer: the socket is fine
                    raise _attach_error(e, ifname, index, "the pod programs") from e
                except AttachError:
                    raise
                except Exception as e:  # the socket itself failed: a fresh one, once (the steps are idempotent)
                    self._drop_socket()
                    if attempt == 2:
                        raise AttachError(f"attaching to {ifname} (ifindex {index}) failed: {e}") from e
                    log.warning("attach socket failed, reopening dev=%s error=%s", ifname, e)
        done = [
            AttachedProgram(ifname, index, direction, prog, self._prog_id(self._prog_fds[prog]))
            for direction, prog in POD_PROGRAMS.items()
        ]
        with self._lock:
            self._attached[ifname] = index
        log.info("pod device attached dev=%s ifindex=%d", ifname, index)
        return done

    def detach_pod_device(self, ifname: str) -> None:
        """Remove our programs from a pod device that stays (both hooks) and forget it."""
        for direction in DIRECTIONS:
            detach(ifname, direction)
        self.forget(ifname)

    def forget(self, ifname: str) -> None:
        """Drop a device from the bookkeeping (it vanished; its filters went with it)."""
        with self._lock:
            self._attached.pop(ifname, None)

    def attached(self) -> dict[str, int]:
        """ifname -> ifindex of every device that carries our programs (as far as we attached them)."""
        with self._lock:
            return dict(self._attached)

    def attach_all(self, ifnames: Iterable[str]) -> dict[str, str]:
        """Attach to several devices; returns ifname -> error text for those that failed."""
        failed = {}
        for ifname in ifnames:
            try:
                self.attach_pod_device(ifname)
            except AttachError as e:
                log.warning("attach failed dev=%s error=%s", ifname, e)
                failed[ifname] = str(e)
        return failed
