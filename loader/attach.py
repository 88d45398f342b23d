"""Attach the tc programs to devices: clsact hooks, our own filter slot, atomic replace, detach.

Place in the data flow: the agent loads the programs (loader.build), then `Attacher` hangs
from_pod on the ingress and to_pod on the egress hook of every pod device that
loader.devices reports; loader.cleanup detaches them again. Everything acts in the network
namespace of the calling thread (the agent runs inside the node's namespace).

Our filter is identified by a fixed priority (tc "pref") and handle: re-attaching replaces the
program of that filter in place (RTM_NEWTFILTER with NLM_F_REPLACE), so the hook is never left
without a program; filters at other priorities or handles belong to somebody else and are never
touched, and an existing clsact qdisc is reused, never replaced.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

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


def _ifindex(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise DeviceGone(f"device {ifname} not found in this network namespace")
    return int(found[0])


def _clsact_state(ipr: Any, ifindex: int) -> str | None:
    """The kind of the qdisc in the ingress/clsact slot of a device ("clsact", "ingress") or None."""
    for msg in ipr.get_qdiscs(index=ifindex):
        if msg["index"] == ifindex and msg["parent"] == TC_H_CLSACT:
            return str(msg.get_attr("TCA_KIND"))
    return None


def ensure_clsact(ipr: Any, ifindex: int) -> bool:
    """Create the clsact qdisc of a device when absent (never replacing one); True when created."""
    kind = _clsact_state(ipr, ifindex)
    if kind == "clsact":
        return False
    if kind is not None:
        raise AttachError(f"ifindex {ifindex} has an {kind} qdisc where clsact is needed; not replacing it")
    try:
        ipr.tc("add", "clsact", ifindex)
    except NetlinkError as e:
        if e.code == errno.EEXIST and _clsact_state(ipr, ifindex) == "clsact":
            return False  # created concurrently by somebody else: use it
        raise
    return True


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
    with IPRoute() as ipr:
        return hook_filters(ipr, _ifindex(ipr, ifname), ifname, direction)


def attach(ifname: str, direction: Direction, *, prog_fd: int, name: str) -> AttachedProgram:
    """Put the program prog_fd into our filter slot of one hook, creating clsact when absent.

    Idempotent and atomic: an existing filter of ours is replaced in place (no moment without a
    program); other filters and an existing qdisc are left as they are.
    """
    with IPRoute() as ipr:
        ifindex = _ifindex(ipr, ifname)
        try:
            if ensure_clsact(ipr, ifindex):
                log.info("clsact created dev=%s ifindex=%d", ifname, ifindex)
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
            mine = [f for f in hook_filters(ipr, ifindex, ifname, direction) if f.ours]
        except NetlinkError as e:
            if e.code == errno.ENODEV or not ipr.link_lookup(ifname=ifname):
                raise DeviceGone(f"device {ifname} vanished while attaching {name}") from e
            raise AttachError(f"attaching {name} to {ifname} {direction} failed: {e}") from e
    prog_id = mine[0].prog_id if mine else None
    log.debug("attached dev=%s ifindex=%d direction=%s prog=%s id=%s", ifname, ifindex, direction, name, prog_id)
    return AttachedProgram(ifname, ifindex, direction, name, prog_id)


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
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        ifindex = int(found[0])
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


class Attacher:
    """The agent's attach bookkeeping: from_pod on ingress and to_pod on egress of pod devices.

    Thread-safe: the device watcher attaches from its thread while others ask what is attached.
    """

    def __init__(self, prog_fds: Mapping[str, int]) -> None:
        missing = [p for p in POD_PROGRAMS.values() if p not in prog_fds]
        if missing:
            raise ValueError(f"program fds missing: {', '.join(missing)}")
        self._prog_fds = dict(prog_fds)
        self._lock = threading.Lock()
        self._attached: dict[str, int] = {}

    def attach_pod_device(self, ifname: str) -> list[AttachedProgram]:
        """Attach both programs to a pod device (idempotent); raises AttachError / DeviceGone."""
        done = [
            attach(ifname, direction, prog_fd=self._prog_fds[prog], name=prog)
            for direction, prog in POD_PROGRAMS.items()
        ]
        with self._lock:
            self._attached[ifname] = done[0].ifindex
        log.info("pod device attached dev=%s ifindex=%d", ifname, done[0].ifindex)
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
