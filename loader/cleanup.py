"""Remove every trace of bpfproxy from the current network namespace and the pin directory.

Place in the data flow: `bpfproxy cleanup` (and lab teardown) after the agent has stopped. It
detaches our filters from every device (both clsact hooks), removes a clsact qdisc only when our
filters were the last ones on it, and unpins our maps (only the names in ALL_MAPS). Foreign
filters, qdiscs and pins are left alone. Running it twice is harmless: the second run finds
nothing and succeeds.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from bpfproxy.loader.attach import (
    CLSACT_HANDLE,
    DIRECTIONS,
    TC_H_CLSACT,
    all_filters,
    clsact_devices,
    detach_index,
    hook_filters,
)
from bpfproxy.loader.maps import ALL_MAPS, DEFAULT_PIN_DIR, RETIRED_MAP_NAMES
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("bpfproxy.cleanup")


@dataclass
class CleanupReport:
    """What one cleanup removed and what it left."""

    detached: list[tuple[str, str]] = field(default_factory=list)
    """(ifname, direction) of every filter of ours removed"""
    qdiscs_removed: list[str] = field(default_factory=list)
    """devices whose clsact qdisc was removed because we left it empty"""
    pins_removed: list[str] = field(default_factory=list)
    """paths of the pinned maps removed"""
    pin_dir_removed: bool = False
    """True when the pin directory was removed (it was empty afterwards)"""
    left_in_pin_dir: list[str] = field(default_factory=list)
    """foreign files kept in the pin directory"""
    errors: list[str] = field(default_factory=list)
    """what could not be removed (the rest was still done)"""

    @property
    def changed(self) -> bool:
        """True when anything was removed."""
        return bool(self.detached or self.qdiscs_removed or self.pins_removed or self.pin_dir_removed)

    def summary(self) -> str:
        """One human line for `bpfproxy cleanup`."""
        if not self.changed and not self.errors:
            return "nothing to clean up"
        parts = [
            f"detached {len(self.detached)} program(s)",
            f"removed {len(self.qdiscs_removed)} clsact qdisc(s)",
            f"unpinned {len(self.pins_removed)} map(s)",
        ]
        if self.left_in_pin_dir:
            parts.append(f"kept {len(self.left_in_pin_dir)} foreign pin(s)")
        if self.errors:
            parts.append(f"{len(self.errors)} error(s): " + "; ".join(self.errors))
        return ", ".join(parts)


def any_attached() -> bool:
    """True when a filter of ours is attached to any device of the current netns."""
    with IPRoute() as ipr:
        return any(f.ours for f in all_filters(ipr))


def _detach_all(ipr: Any, report: CleanupReport) -> None:
    for ifindex, ifname in sorted(clsact_devices(ipr).items()):
        touched = False
        for direction in DIRECTIONS:
            if not any(f.ours for f in hook_filters(ipr, ifindex, ifname, direction)):
                continue
            try:
                if detach_index(ipr, ifindex, direction):
                    report.detached.append((ifname, direction))
                    touched = True
            except NetlinkError as e:
                report.errors.append(f"detach {ifname} {direction}: {e}")
        left = [f for d in DIRECTIONS for f in hook_filters(ipr, ifindex, ifname, d)]
        if not touched or left:
            continue
        try:
            ipr.tc("del", "clsact", ifindex, CLSACT_HANDLE, parent=TC_H_CLSACT)
            report.qdiscs_removed.append(ifname)
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                report.errors.append(f"remove clsact of {ifname}: {e}")


def _unpin(pin_dir: str, report: CleanupReport) -> None:
    if not os.path.isdir(pin_dir):
        return
    for name in [spec.name for spec in ALL_MAPS] + list(RETIRED_MAP_NAMES):
        path = os.path.join(pin_dir, name)
        try:
            os.unlink(path)
            report.pins_removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            report.errors.append(f"unpin {path}: {e.strerror}")
    report.left_in_pin_dir = sorted(os.listdir(pin_dir))
    if not report.left_in_pin_dir:
        try:
            os.rmdir(pin_dir)
            report.pin_dir_removed = True
        except OSError as e:
            report.errors.append(f"remove {pin_dir}: {e.strerror}")


def cleanup(pin_dir: str = DEFAULT_PIN_DIR) -> CleanupReport:
    """Detach our programs from every device of the current netns and unpin our maps from pin_dir."""
    report = CleanupReport()
    with IPRoute() as ipr:
        _detach_all(ipr, report)
    _unpin(pin_dir, report)
    for ifname, direction in report.detached:
        log.info("detached dev=%s direction=%s", ifname, direction)
    for ifname in report.qdiscs_removed:
        log.info("clsact removed dev=%s", ifname)
    for path in report.pins_removed:
        log.info("unpinned path=%s", path)
    for err in report.errors:
        log.warning("cleanup error=%s", err)
    return report
