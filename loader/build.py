"""Compile the C datapath with bcc once per process, with sizes and features as -D flags.

Place in the data flow: the agent (and the BPF tests) call `load_datapath` once; it makes sure
bpffs is mounted, checks the shape of maps already pinned (bcc reuses a pinned map blindly), then
compiles bpf/bpf_tc.c, which creates or reuses the pinned maps. loader.attach hangs the returned
program fds on devices; loader.maps opens the same maps by path for the sync.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from bpfproxy.loader import bpfsys
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


@dataclass
class Datapath:
    """The compiled and loaded programs: keep this object alive while their fds are needed."""

    bpf: Any
    """the bcc BPF object (owns program fds and the map fds it created)"""
    prog_fds: dict[str, int]
    """program name -> fd"""
    pin_dir: str
    """where its maps are pinned"""
    settings: DatapathSettings
    """the settings it was built with"""
    compile_seconds: float
    """time spent in bcc"""


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


def load_datapath(pin_dir: str, settings: DatapathSettings | None = None) -> Datapath:
    """Compile (once per process and pin dir) and load the tc programs; pins the maps in pin_dir."""
    settings = settings or DatapathSettings()
    cached = _loaded.get((pin_dir, settings))
    if cached is not None:
        return cached
    if not os.path.isdir(kernel_headers_dir()):
        raise DatapathBuildError(
            f"no kernel headers at {kernel_headers_dir()}: run 'make setup' (it links Debian's "
            "linux-headers there when none exist for the running kernel)"
        )
    ensure_bpffs(pin_dir)
    check_pinned_shapes(pin_dir, settings)
    from bcc import BPF  # Debian's python3-bpfcc; imported late so pure code needs no bcc

    started = time.monotonic()
    try:
        bpf = BPF(src_file=str(BPF_DIR / "bpf_tc.c").encode(), cflags=cflags(pin_dir, settings))
        fns = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS) for name in (PROG_FROM_POD, PROG_TO_POD)}
    except Exception as e:
        raise DatapathBuildError(f"compiling {BPF_DIR / 'bpf_tc.c'} failed: {e}") from e
    elapsed = time.monotonic() - started
    log.info("datapath compiled seconds=%.2f pin_dir=%s", elapsed, pin_dir)
    dp = Datapath(bpf, {n: int(f.fd) for n, f in fns.items()}, pin_dir, settings, elapsed)
    _loaded[(pin_dir, settings)] = dp
    return dp


def bcc_table_layout(dp: Datapath, map_name: str) -> tuple[type[ct.Structure], type[ct.Structure]]:
    """The key and leaf ctypes classes bcc derived from the compiled C structs (for layout tests)."""
    table = dp.bpf.get_table(map_name)
    return table.Key, table.Leaf
