"""Compile the C datapath with bcc once per process, with sizes and features as -D flags.

Place in the data flow: the agent calls `start_compile` first thing (the BPF tests call
`load_datapath`, which is start_compile(...).result()). It makes sure bpffs is mounted and checks
the shape of maps already pinned (bcc reuses a pinned map blindly); then a thread pins the missing
maps itself (loader.mapcreate, as bcc would make them) and starts a short-lived child
(loader.compile_child) that compiles bpf/bpf_tc.c against them and passes the program fds back
over a UNIX socket, so bcc/LLVM's memory never stays in the agent, and the agent can write the
maps while bcc compiles. The compiled map layouts are checked against loader.structs.
loader.attach hangs the returned program fds on devices; loader.maps opens the same maps by path.
"""

from __future__ import annotations

import ctypes as ct
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bpfproxy.loader import bpfsys
from bpfproxy.loader.mapcreate import create_missing
from bpfproxy.loader.maps import ALL_MAPS, check_shape
from bpfproxy.loader.structs import BPF_DIR

log = logging.getLogger("bpfproxy.loader")

#: the tc program that handles packets leaving a pod (host-side veth ingress): frontends, DNAT
PROG_FROM_POD = "from_pod"
#: the tc program that handles packets entering a pod (host-side veth egress): reverse NAT
PROG_TO_POD = "to_pod"


@dataclass(frozen=True)
class DatapathSettings:
    """Build-time settings of the datapath: map capacities (each a -D flag)."""

    lb_map_max: int = 262144
    """entries in the service map: frontends + backend slots + one per frontend address
    (10k services x 2 ports x 10 endpoints need 230k)"""
    backend_map_max: int = 262144
    """entries in the backend map: one per (frontend, endpoint) (10k x 2 ports x 10 endpoints: 200k)"""
    svc_id_max: int = 65536
    """frontend ids available (per-service counters are an array of this size)"""
    ct_map_max: int = 262144
    """conntrack entries (two per flow); LRU-evicted when full"""
    affinity_map_max: int = 65536
    """session-affinity entries (one per service and client); LRU-evicted when full"""
    frag_map_max: int = 8192
    """fragmented datagrams tracked at once"""
    extra_cflags: tuple[str, ...] = field(default=())
    """more -D flags (feature switches)"""

    def size_defines(self) -> dict[str, int]:
        """The -D macro of each capacity and its value."""
        return {
            "LB_MAP_MAX": self.lb_map_max,
            "BACKEND_MAP_MAX": self.backend_map_max,
            "SVC_ID_MAX": self.svc_id_max,
            "CT_MAP_MAX": self.ct_map_max,
            "AFFINITY_MAP_MAX": self.affinity_map_max,
            "FRAG_MAP_MAX": self.frag_map_max,
        }


class DatapathBuildError(RuntimeError):
    """The datapath could not be compiled or loaded."""


#: (size, ((field, offset, size), ...)) of a ctypes type, as bcc derived it from the C structs
Layout = tuple[int, tuple[tuple[str, int, int], ...]]


@dataclass
class Datapath:
    """The loaded programs: keep this object alive while their fds are needed."""

    bpf: Any
    """the bcc BPF object when compiled in this process (in_process=True), else None"""
    prog_fds: dict[str, int]
    """program name -> fd"""
    pin_dir: str
    """where its maps are pinned"""
    settings: DatapathSettings
    """the settings it was built with"""
    compile_seconds: float
    """time spent in bcc"""
    layouts: dict[str, tuple[Layout, Layout]] = field(default_factory=dict)
    """map name -> (key, value) layout bcc compiled (checked against loader.structs at load)"""
    compiler_peak_rss_kib: int = 0
    """peak RSS of the compile child (0 when compiled in this process)"""


def kernel_headers_dir() -> str:
    """Where bcc looks for kernel headers for the running kernel."""
    return f"/lib/modules/{platform.release()}/build"


def _mounted_fstype(path: str) -> str | None:
    """Filesystem type of the mount exactly at path (the topmost one), if any."""
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == path:
                fstype = parts[parts.index("-") + 1]
    return fstype


def ensure_bpffs(pin_dir: str) -> None:
    """Mount bpffs at the pin root (the parent of pin_dir) when none is there, then make pin_dir."""
    root = os.path.dirname(os.path.abspath(pin_dir.rstrip("/")))
    probe = root
    while probe != "/":
        if _mounted_fstype(probe) == "bpf":
            break
        probe = os.path.dirname(probe)
    else:
        os.makedirs(root, exist_ok=True)
        log.warning("bpffs not mounted: mounting it path=%s", root)
        subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
    os.makedirs(pin_dir, exist_ok=True)


def check_pinned_shapes(pin_dir: str, settings: DatapathSettings) -> None:
    """Check every map already pinned in pin_dir against the shape this build will use."""
    sizes = settings.size_defines()
    for spec in ALL_MAPS:
        path = os.path.join(pin_dir, spec.name)
        if not os.path.exists(path):
            continue
        fd = bpfsys.obj_get(path)
        try:
            check_shape(path, spec, bpfsys.map_info(fd), sizes.get(spec.size_define))
        finally:
            os.close(fd)


def cflags(pin_dir: str, settings: DatapathSettings) -> list[str]:
    """The compiler flags of one build."""
    flags = [f"-I{BPF_DIR / 'include'}", f'-DPIN_DIR="{pin_dir}"', "-Wno-ignored-attributes"]
    flags += [f"-D{k}={v}" for k, v in settings.size_defines().items()]
    flags += list(settings.extra_cflags)
    return flags


_loaded: dict[tuple[str, DatapathSettings], Datapath] = {}

#: seconds to wait for the compile child's answer
COMPILE_TIMEOUT_S = 300.0


def load_datapath(pin_dir: str, settings: DatapathSettings | None = None, *, in_process: bool = False) -> Datapath:
    """Compile (once per process and pin dir) and load the tc programs; pins the maps in pin_dir.

    By default bcc runs in a short-lived child process (loader.compile_child) that hands the program
    fds back over a UNIX socket: bcc/LLVM's memory is never part of this process. in_process=True
    compiles here and keeps the bcc object (Datapath.bpf).
    """
    settings = settings or DatapathSettings()
    cached = _loaded.get((pin_dir, settings))
    if cached is not None and (cached.bpf is not None or not in_process):
        return cached
    if not in_process:
        return start_compile(pin_dir, settings).result()
    _prepare(pin_dir, settings)
    _create_maps(pin_dir, settings)
    bpf, fds, elapsed = compile_in_process(pin_dir, settings)
    return _loaded_now(Datapath(bpf, fds, pin_dir, settings, elapsed, table_layouts(bpf)), "process")


def _prepare(pin_dir: str, settings: DatapathSettings) -> None:
    """What must hold before bcc runs: kernel headers, bpffs mounted, pinned maps of the right shape."""
    if not os.path.isdir(kernel_headers_dir()):
        raise DatapathBuildError(
            f"no kernel headers at {kernel_headers_dir()}: run 'make setup' (it links Debian's "
            "linux-headers there when none exist for the running kernel)"
        )
    ensure_bpffs(pin_dir)
    check_pinned_shapes(pin_dir, settings)


def _create_maps(pin_dir: str, settings: DatapathSettings) -> None:
    """Pin every map bcc would create (so that they can be written while it compiles)."""
    made = create_missing(pin_dir, settings.size_defines())
    if made:
        log.info("maps created pin_dir=%s maps=%s", pin_dir, ",".join(made))


def _loaded_now(dp: Datapath, where: str) -> Datapath:
    """Check the compiled layouts, log, and remember dp as this process's datapath for its pin dir."""
    check_layouts(dp.layouts)
    log.info("datapath compiled seconds=%.2f pin_dir=%s where=%s compiler_peak_rss_mib=%.0f", dp.compile_seconds,
             dp.pin_dir, where, dp.compiler_peak_rss_kib / 1024)
    _loaded[(dp.pin_dir, dp.settings)] = dp
    return dp


def start_compile(pin_dir: str, settings: DatapathSettings | None = None) -> PendingDatapath:
    """Check what the build needs, then return at once while a thread pins the maps (bcc reuses
    them) and starts the compile child: the caller does other work (imports, listing the source)
    meanwhile, calls maps_ready() before it opens the maps and result() when it needs the programs.
    The agent starts it first thing, so neither is on its critical path."""
    settings = settings or DatapathSettings()
    cached = _loaded.get((pin_dir, settings))
    if cached is not None:
        return PendingDatapath(pin_dir, settings, done=cached)
    _prepare(pin_dir, settings)
    return PendingDatapath(pin_dir, settings)


def compile_in_process(pin_dir: str, settings: DatapathSettings) -> tuple[Any, dict[str, int], float]:
    """Compile and load with bcc in this process: (bcc BPF object, program fds, seconds)."""
    from bcc import BPF  # Debian's python3-bpfcc; imported late so pure code needs no bcc

    started = time.monotonic()
    try:
        bpf = BPF(src_file=str(BPF_DIR / "bpf_tc.c").encode(), cflags=cflags(pin_dir, settings))
        fns = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS) for name in (PROG_FROM_POD, PROG_TO_POD)}
    except Exception as e:
        raise DatapathBuildError(f"compiling {BPF_DIR / 'bpf_tc.c'} failed: {e}") from e
    return bpf, {n: int(f.fd) for n, f in fns.items()}, time.monotonic() - started


class PendingDatapath:
    """A compile running in loader.compile_child; result() waits for its program fds (SCM_RIGHTS)."""

    def __init__(self, pin_dir: str, settings: DatapathSettings, *, done: Datapath | None = None) -> None:
        self.pin_dir = pin_dir
        self.settings = settings
        self._done = done
        self._proc: subprocess.Popen[bytes] | None = None
        if done is not None:
            return
        self._failed: BaseException | None = None
        self._sock, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _receive or cancel)
        # creating ~90 MB of preallocated maps takes the kernel ~0.1 s: a thread does it (ctypes lets
        # go of the GIL in the syscall) and then starts the compile child
        self._starter = threading.Thread(target=self._start, name="compile-start", daemon=True)
        self._starter.start()

    def _start(self) -> None:
        from bpfproxy.loader.compile_child import settings_to_json

        request = json.dumps({"pin_dir": self.pin_dir, "settings": settings_to_json(self.settings)})
        try:
            _create_maps(self.pin_dir, self.settings)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bpfproxy.loader.compile_child", "--fd", str(self._theirs.fileno()),
                 "--request", request],
                pass_fds=(self._theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=self._errors, stderr=self._errors,
            )  # fmt: skip
        except BaseException as e:  # raised to the caller by maps_ready() / result()
            self._failed = e
        finally:
            self._theirs.close()

    def maps_ready(self) -> None:
        """Wait until every map is pinned; raises what creating them (or starting bcc) failed with."""
        if self._done is None:
            self._starter.join()
            if self._failed is not None:
                raise self._failed

    def result(self) -> Datapath:
        """The loaded programs (waits for the child); raises DatapathBuildError when it failed."""
        if self._done is None:
            self._done = _loaded_now(self._receive(), "child")
        return self._done

    def cancel(self) -> None:
        """Stop the compile (the caller gave up before result()); no-op when it is done."""
        if self._done is None:
            self._starter.join()
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
            self._sock.close()
            self._errors.close()

    def _receive(self) -> Datapath:
        from bpfproxy.loader.compile_child import KEY_PROGRAMS

        self.maps_ready()
        proc = self._proc
        if proc is None:
            raise DatapathBuildError("the compile was cancelled")
        with self._sock as ours, self._errors as errors:
            try:
                ours.settimeout(COMPILE_TIMEOUT_S)
                data, fds, flags, _ = socket.recv_fds(ours, 1 << 20, 8)
            except OSError as e:
                proc.kill()
                raise DatapathBuildError(f"compile child pid={proc.pid} did not answer: {e}") from e
            finally:
                code = proc.wait()
                errors.seek(0)
                said = errors.read().decode(errors="replace").strip()
                self._proc = None
            silent = {"error": f"compile child exited with code {code} without an answer"}
            meta: dict[str, Any] = json.loads(data) if data else silent
            if "error" in meta or flags & socket.MSG_CTRUNC or len(fds) != len(meta.get(KEY_PROGRAMS, ())):
                for fd in fds:
                    os.close(fd)
                reason = meta.get("error") or f"sent {len(fds)} fds for programs {meta.get(KEY_PROGRAMS)}"
                tail = "\n".join(said.splitlines()[-30:])
                raise DatapathBuildError(f"{reason}" + (f"\ncompiler output:\n{tail}" if tail else ""))
        for line in said.splitlines()[-20:]:
            log.info("compile child pid=%d said: %s", proc.pid, line)
        layouts = {
            name: (_layout_of_json(k), _layout_of_json(v)) for name, (k, v) in meta.get("layouts", {}).items()
        }
        prog_fds = dict(zip(meta[KEY_PROGRAMS], fds, strict=True))
        return Datapath(None, prog_fds, self.pin_dir, self.settings, float(meta["compile_seconds"]), layouts,
                        int(meta.get("peak_rss_kib", 0)))


def _layout_of_json(obj: Any) -> Layout:
    """A Layout read back from JSON lists."""
    size, fields = obj
    return int(size), tuple((str(n), int(o), int(z)) for n, o, z in fields)


def ctype_layout(t: Any) -> Layout:
    """(size, ((field, offset, size), ...)) of a ctypes type; scalars have no fields."""
    out = []
    for f in getattr(t, "_fields_", []):
        desc = getattr(t, f[0])
        out.append((str(f[0]), int(desc.offset), int(desc.size)))
    return ct.sizeof(t), tuple(out)


def table_layouts(bpf: Any) -> dict[str, tuple[Layout, Layout]]:
    """Map name -> (key, value) layout of every map of ours in a bcc BPF object (per-CPU: one CPU's value)."""
    out = {}
    for spec in ALL_MAPS:
        table = bpf.get_table(spec.name.encode())
        leaf = table.Leaf._type_ if spec.kind.startswith("percpu") else table.Leaf
        out[spec.name] = (ctype_layout(table.Key), ctype_layout(leaf))
    return out


def check_layouts(layouts: dict[str, tuple[Layout, Layout]]) -> None:
    """Raise DatapathBuildError when a compiled map key or value differs from its loader.structs mirror."""
    bad = []
    for spec in ALL_MAPS:
        got = layouts.get(spec.name)
        if got is None:
            bad.append(f"{spec.name}: not in the compiled program")
            continue
        for what, mirror, compiled in (("key", spec.key, got[0]), ("value", spec.value, got[1])):
            if ctype_layout(mirror) != compiled:
                bad.append(f"{spec.name} {what}: C {compiled}, Python {ctype_layout(mirror)}")
    if bad:
        raise DatapathBuildError("loader/structs.py does not match bpf/include/structs.h: " + "; ".join(bad))
