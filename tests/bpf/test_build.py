"""Loader build checks: a reused pinned map of another shape is refused with a clear error."""

from __future__ import annotations

import ctypes as ct
import os
import shutil

import pytest
from bpfproxy.loader import bpfsys
from bpfproxy.loader.build import (
    PROG_FROM_POD,
    PROG_TO_POD,
    DatapathBuildError,
    DatapathSettings,
    cflags,
    check_pinned_shapes,
    load_datapath,
)
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


def test_compile_child_error_reaches_the_parent_with_the_compiler_message() -> None:
    """bcc runs in a child; its compile error is raised here with clang's own diagnostics."""
    pin_dir = f"/sys/fs/bpf/bpxtest-bad-{os.getpid()}"
    try:
        with pytest.raises(DatapathBuildError) as err:
            load_datapath(pin_dir, DatapathSettings(extra_cflags=("-DCT_LIFETIME_TCP_NS=@@",)))
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
    message = str(err.value)
    assert "bpf_tc.c failed" in message and "#define CT_LIFETIME_TCP_NS @@" in message and "error" in message


def test_the_datapath_is_compiled_outside_this_process(datapath) -> None:  # type: ignore[no-untyped-def]
    """The session datapath came from the compile child: no bcc object here, live program fds, a child peak RSS."""
    assert datapath.bpf is None and datapath.compiler_peak_rss_kib > 0
    names = {bpfsys.prog_info(fd).name for fd in datapath.prog_fds.values()}
    assert names == {PROG_FROM_POD, PROG_TO_POD}


def test_a_cancelled_compile_leaves_no_process_and_keeps_the_pinned_maps() -> None:
    """The agent starts the compile first and cancels it when it gives up early (a bad kubeconfig):
    the child is gone, the maps it pinned meanwhile stay (a later start reuses them)."""
    from bpfproxy.loader.build import start_compile

    pin_dir = f"/sys/fs/bpf/bpxtest-cancel-{os.getpid()}"
    try:
        pending = start_compile(pin_dir, DatapathSettings(lb_map_max=1024, backend_map_max=1024, ct_map_max=1024))
        pending.maps_ready()
        assert os.path.exists(os.path.join(pin_dir, SVC.name))
        pid = pending._proc.pid if pending._proc else 0
        assert pid and os.path.exists(f"/proc/{pid}")
        pending.cancel()
        assert not os.path.exists(f"/proc/{pid}")
        with pytest.raises(DatapathBuildError, match="cancelled"):
            pending.result()
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)


def test_agent_on_maps_of_another_build_exits_with_the_message(datapath, capsys) -> None:  # type: ignore[no-untyped-def]
    """The session's maps have the default capacities: an agent asked for others stops before
    anything starts, with one line naming the map and the fix (no traceback)."""
    import gc

    from bpfproxy.cli import main

    code = main(["agent", "--source", "file:/nonexistent", "--pin-dir", datapath.pin_dir, "--lb-map-max", "1024",
                 "--metrics-bind-address", "", "--healthz-bind-address", ""])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and gc.isenabled()
    assert "bpx_svc_v1 has capacity 262144, expected 1024" in err and "bpfproxy cleanup" in err
    assert "Traceback" not in err
