"""Create the datapath's maps at their pins before bcc runs, so they can be written while it compiles.

Place in the data flow: loader.build.start_compile calls `create_missing` after checking the maps
already pinned and before it starts the compile child. bcc reuses a map pinned at the path of a
BPF_TABLE_PINNED declaration (bpf/include/maps.h), so the programs it loads use these maps; the
agent's first sync (loader.maps / controller.sync) can therefore write every entry while bcc is
still compiling, and only attaching waits for the programs. Types, sizes and flags come from the
same sources bcc uses: loader.maps.ALL_MAPS (ctypes mirrors checked against the compiled layouts)
and the flags argument of each declaration in maps.h.
"""

from __future__ import annotations

import ctypes as ct
import os
import re
from functools import cache

from bpfproxy.loader import bpfsys
from bpfproxy.loader.maps import ALL_MAPS, KIND_TYPES, MapSpec
from bpfproxy.loader.structs import BPF_DIR, VERDICT_COUNT, c_define

#: BPF_MAP_CREATE (bpf() command)
BPF_MAP_CREATE = 0
#: BPF_F_NO_PREALLOC (map flag: allocate elements on insert)
BPF_F_NO_PREALLOC = 1
#: the map flag names maps.h may use, and their values
_FLAG_VALUES = {"BPF_F_NO_PREALLOC": BPF_F_NO_PREALLOC}
#: kernel object names hold 15 characters and a NUL (BPF_OBJ_NAME_LEN)
_OBJ_NAME_MAX = 15


class _MapCreateAttr(ct.Structure):
    """The leading fields of union bpf_attr for BPF_MAP_CREATE (the rest stays zero)."""

    _fields_ = [
        ("map_type", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("inner_map_fd", ct.c_uint32),
        ("numa_node", ct.c_uint32),
        ("map_name", ct.c_char * 16),
        ("map_ifindex", ct.c_uint32),
        ("btf_fd", ct.c_uint32),
        ("btf_key_type_id", ct.c_uint32),
        ("btf_value_type_id", ct.c_uint32),
        ("btf_vmlinux_value_type_id", ct.c_uint32),
        ("map_extra", ct.c_uint64),
    ]


@cache
def declared_flags() -> dict[str, int]:
    """Map name -> the flags its BPF_TABLE_PINNED declaration in maps.h passes (0 when none)."""
    text = (BPF_DIR / "include" / "maps.h").read_text()
    out: dict[str, int] = {}
    for m in re.finditer(r"BPF_TABLE_PINNED\((.*?)\);", text, re.S):
        args = [a.strip() for a in m.group(1).split(",")]
        flags = 0
        for name in args[6:]:
            if name not in _FLAG_VALUES:
                raise ValueError(f"maps.h: unknown map flag {name} on {args[3]}")
            flags |= _FLAG_VALUES[name]
        out[args[3]] = flags
    return out


def max_entries(spec: MapSpec, sizes: dict[str, int]) -> int:
    """The capacity of a map: its -D size of this build, or the constant of consts.h it is declared with."""
    if spec.size_define in sizes:
        return sizes[spec.size_define]
    if spec.size_define == "V_MAX":
        return VERDICT_COUNT
    return c_define(spec.size_define)


def create_missing(pin_dir: str, sizes: dict[str, int]) -> list[str]:
    """Create and pin every map of ALL_MAPS that pin_dir lacks; returns their names.

    A map pinned meanwhile by somebody else (EEXIST on the pin) is kept and ours dropped.
    """
    flags = declared_flags()
    made = []
    for spec in ALL_MAPS:
        path = os.path.join(pin_dir, spec.name)
        if os.path.exists(path):
            continue
        attr = _MapCreateAttr(
            map_type=KIND_TYPES[spec.kind],
            key_size=ct.sizeof(spec.key),
            value_size=spec.value_size,
            max_entries=max_entries(spec, sizes),
            map_flags=flags.get(spec.name, 0),
            map_name=spec.name[:_OBJ_NAME_MAX].encode(),
        )
        fd = bpfsys.bpf(BPF_MAP_CREATE, attr, f"create map {spec.name}")
        try:
            bpfsys.obj_pin(fd, path)
            made.append(spec.name)
        except bpfsys.BpfError as e:
            if e.errno != 17:  # EEXIST: pinned concurrently; that one is checked like any pinned map
                raise
        finally:
            os.close(fd)
    return made
