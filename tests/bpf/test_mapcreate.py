"""Maps created before the compile: the same shape and flags as bcc makes, and the programs use them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from bpfproxy.loader import bpfsys
from bpfproxy.loader.build import DatapathSettings, compile_in_process, load_datapath
from bpfproxy.loader.mapcreate import create_missing, declared_flags
from bpfproxy.loader.maps import ALL_MAPS

from bpfproxy.lab.netns import run_id

#: small capacities: the two builds of this file cost little memory
SMALL = DatapathSettings(lb_map_max=1024, backend_map_max=1024, svc_id_max=256, ct_map_max=2048,
                         affinity_map_max=512, frag_map_max=64)  # fmt: skip


@pytest.fixture()
def pin_dirs() -> Iterator[tuple[str, str]]:
    rid = run_id()
    dirs = (f"/sys/fs/bpf/bpxtest-mc-bcc-{rid}", f"/sys/fs/bpf/bpxtest-mc-ours-{rid}")
    for d in dirs:
        os.makedirs(d)
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _info(path: str) -> tuple[int, int, int, int, int, bytes]:
    fd = bpfsys.obj_get(path)
    try:
        i = bpfsys.map_info(fd)
        return i.type, i.key_size, i.value_size, i.max_entries, i.map_flags, i.name
    finally:
        os.close(fd)


def test_created_maps_match_what_bcc_creates(pin_dirs: tuple[str, str]) -> None:
    bcc_dir, ours_dir = pin_dirs
    compile_in_process(bcc_dir, SMALL)  # bcc creates and pins every map itself
    made = create_missing(ours_dir, SMALL.size_defines())
    assert made == [spec.name for spec in ALL_MAPS]
    for spec in ALL_MAPS:
        assert _info(os.path.join(ours_dir, spec.name)) == _info(os.path.join(bcc_dir, spec.name)), spec.name
    assert create_missing(ours_dir, SMALL.size_defines()) == []  # idempotent


def test_flags_are_read_from_the_declarations() -> None:
    flags = declared_flags()
    assert set(flags) == {spec.name for spec in ALL_MAPS}
    assert flags["bpx_svccidr_v1"] == 1 and flags["bpx_svc_v1"] == 0  # BPF_F_NO_PREALLOC on the LPM trie


def test_the_loaded_programs_use_the_maps_created_before_the_compile(pin_dirs: tuple[str, str]) -> None:
    """load_datapath creates the maps before bcc runs: bcc reuses them, so writes made while it
    compiles are what the programs see."""
    _, ours_dir = pin_dirs
    create_missing(ours_dir, SMALL.size_defines())
    ids = set()
    for spec in ALL_MAPS:
        fd = bpfsys.obj_get(os.path.join(ours_dir, spec.name))
        ids.add(bpfsys.map_info(fd).id)
        os.close(fd)
    dp = load_datapath(ours_dir, SMALL)
    used = set(bpfsys.prog_info(dp.prog_fds["from_pod"]).map_ids) | set(bpfsys.prog_info(dp.prog_fds["to_pod"]).map_ids)
    assert used and used <= ids
