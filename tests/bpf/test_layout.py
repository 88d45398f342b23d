"""The Python mirror of every map key and value matches the layout bcc compiled from structs.h."""

from __future__ import annotations

import ctypes as ct
from typing import Any

import pytest
from bpfproxy.loader.build import Datapath
from bpfproxy.loader.maps import ALL_MAPS, MapSpec


def _layout(t: Any) -> tuple[int, list[tuple[str, int, int]]]:
    """(size, [(field, offset, size)]) of a ctypes type; scalars have no fields."""
    fields = []
    for f in getattr(t, "_fields_", []):
        name = f[0]
        desc = getattr(t, name)
        fields.append((name, desc.offset, desc.size))
    return ct.sizeof(t), fields


@pytest.mark.parametrize("spec", ALL_MAPS, ids=lambda s: s.name)
def test_map_layout_matches_c(datapath: Datapath, spec: MapSpec) -> None:
    table = datapath.bpf.get_table(spec.name.encode())
    key, leaf = table.Key, table.Leaf
    if spec.kind.startswith("percpu"):
        leaf = leaf._type_  # bcc's per-CPU leaf is an array over CPUs
    assert _layout(spec.key) == _layout(key), f"{spec.name} key"
    assert _layout(spec.value) == _layout(leaf), f"{spec.name} value"
