"""Loader build checks: a reused pinned map of another shape is refused with a clear error."""

from __future__ import annotations

import ctypes as ct

import pytest
from bpfproxy.loader import bpfsys
from bpfproxy.loader.build import DatapathSettings, cflags, check_pinned_shapes
from bpfproxy.loader.maps import SVC, MapShapeError, check_shape


def test_pinned_map_with_other_capacity_is_refused(datapath) -> None:  # type: ignore[no-untyped-def]
    """The session's maps were built with defaults; asking for another capacity names map and fix."""
    with pytest.raises(MapShapeError) as err:
        check_pinned_shapes(datapath.pin_dir, DatapathSettings(lb_map_max=1024))
    message = str(err.value)
    assert "bpx_svc_v1" in message and "capacity 262144, expected 1024" in message and "bpfproxy cleanup" in message


def test_pinned_maps_of_the_same_build_are_accepted(datapath) -> None:  # type: ignore[no-untyped-def]
    check_pinned_shapes(datapath.pin_dir, DatapathSettings())


def test_other_type_key_and_value_size_are_each_named() -> None:
    info = bpfsys.MapInfo(type=2, key_size=8, value_size=24, max_entries=10)
    with pytest.raises(MapShapeError) as err:
        check_shape("/sys/fs/bpf/x/bpx_svc_v1", SVC, info, None)
    message = str(err.value)
    assert "type array, expected hash" in message
    assert f"key size 8, expected {ct.sizeof(SVC.key)}" in message
    assert f"value size 24, expected {ct.sizeof(SVC.value)}" in message


def test_sizes_reach_the_compiler_as_defines() -> None:
    flags = cflags("/sys/fs/bpf/p", DatapathSettings(ct_map_max=1000, lb_map_max=2000))
    assert "-DCT_MAP_MAX=1000" in flags and "-DLB_MAP_MAX=2000" in flags
    assert '-DPIN_DIR="/sys/fs/bpf/p"' in flags
