"""Watch the network devices of the node: report pod devices that appear and vanish.

Place in the data flow: the agent starts a `DeviceWatcher` with the --pod-devices globs and
callbacks into loader.attach.Attacher, so programs are attached to every existing and future
pod device within a second of its creation.

Netlink link events only wake the watcher; the truth is a fresh link dump diffed against the
devices known so far (keyed by ifindex). So bursts coalesce, a lost event (socket overflow)
costs nothing, link-up/down or MTU events on a known device cause no callback, a renamed device
is a remove plus an add, and a device re-created under the same name (new ifindex) is added
again. A periodic dump backs the events up.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence

from pyroute2 import IPRoute

log = logging.getLogger("bpfproxy.devices")

#: rtnetlink multicast group of link events (RTMGRP_LINK)
_RTMGRP_LINK = 1
#: setns() nstype of a network namespace
_CLONE_NEWNET = 0x40000000

DeviceCallback = Callable[[str, int], None]


def parse_globs(text: str) -> list[str]:
    """The globs of a --pod-devices value ("veth*,lxc*"), blanks dropped."""
    return [g.strip() for g in text.split(",") if g.strip()]


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _same_netns(fd: int) -> bool:
    here = os.stat("/proc/thread-self/ns/net")
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class DeviceWatcher:
    """Calls on_add / on_remove for devices whose names match the globs, from its own thread.

    It acts on the network namespace that is current for the thread that constructs it, even when
    run() executes in another thread. on_add runs for every matching device found at start and for
    every one that appears later; on_remove when one vanishes or is renamed away. An exception from
    a callback is logged; a failed add is retried at the next dump.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        on_add: DeviceCallback,
        on_remove: DeviceCallback,
        *,
        resync_interval: float = 30.0,
        poll_interval: float = 0.2,
    ) -> None:
        self.patterns = list(patterns)
        self.on_add = on_add
        self.on_remove = on_remove
        self.resync_interval = resync_interval
        self.poll_interval = poll_interval
        self._known: dict[int, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.synced = threading.Event()
        """set after the first dump has been handled"""
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self._events.bind((0, _RTMGRP_LINK))  # subscribe before the first dump: nothing falls in between
        self._events.setblocking(False)

    def matches(self, ifname: str) -> bool:
        """True when ifname matches one of the globs."""
        return any(fnmatch.fnmatchcase(ifname, p) for p in self.patterns)

    def known(self) -> dict[int, str]:
        """ifindex -> ifname of the matching devices reported added and not removed."""
        with self._lock:
            return dict(self._known)

    def start(self) -> None:
        """Run the watcher in a daemon thread until stop()."""
        if self._thread is not None:
            raise RuntimeError("DeviceWatcher already started")
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="device-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread started by start() and wait for it; closes the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Release the event socket and the namespace handle."""
        if self._events.fileno() != -1:
            self._events.close()
        if self._netns_fd != -1:
            os.close(self._netns_fd)
            self._netns_fd = -1

    def run(self, stop: threading.Event) -> None:
        """Dump, then follow link events until stop is set (in the watcher's namespace)."""
        switched = not _same_netns(self._netns_fd)
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC) if switched else -1
        try:
            if switched:
                _setns(self._netns_fd)
            self._loop(stop)
        finally:
            if switched:
                _setns(original)
                os.close(original)

    def _loop(self, stop: threading.Event) -> None:
        with IPRoute() as ipr:
            self.resync(ipr)
            self.synced.set()
            next_resync = time.monotonic() + self.resync_interval
            while not stop.is_set():
                ready, _, _ = select.select([self._events], [], [], self.poll_interval)
                if ready:
                    self._drain()
                if ready or time.monotonic() >= next_resync:
                    self.resync(ipr)
                    next_resync = time.monotonic() + self.resync_interval

    def _drain(self) -> None:
        """Read every pending event; their content does not matter, the dump that follows does."""
        while True:
            try:
                if not self._events.recv(65536):
                    return
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    log.info("link events overflowed: resyncing from a dump")
                    continue
                raise

    def resync(self, ipr: IPRoute) -> None:
        """Dump the links, report the difference to what is known (removals first)."""
        current = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name and self.matches(name):
                current[int(link["index"])] = str(name)
        with self._lock:
            known = dict(self._known)
        for ifindex, ifname in sorted(known.items()):
            if current.get(ifindex) != ifname:
                with self._lock:
                    del self._known[ifindex]
                self._call(self.on_remove, "remove", ifname, ifindex)
        for ifindex, ifname in sorted(current.items()):
            if known.get(ifindex) == ifname:
                continue
            if self._call(self.on_add, "add", ifname, ifindex):
                with self._lock:
                    self._known[ifindex] = ifname

    def _call(self, callback: DeviceCallback, what: str, ifname: str, ifindex: int) -> bool:
        log.info("pod device %s dev=%s ifindex=%d", what, ifname, ifindex)
        try:
            callback(ifname, ifindex)
        except Exception as e:
            log.warning("pod device %s failed dev=%s ifindex=%d error=%s", what, ifname, ifindex, e)
            return False
        return True
