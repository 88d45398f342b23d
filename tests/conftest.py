"""Shared fixtures: a unique pin directory and the datapath compiled once per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from bpfproxy.lab.netns import run_id


def need_root() -> None:
    """Kernel tests need root; this machine and CI run them as root, so anything else is a failure."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root (make test runs as root)")


@pytest.fixture(scope="session")
def session_pin_dir() -> Iterator[str]:
    """A pin directory unique to this session under /sys/fs/bpf, removed at the end."""
    need_root()
    path = f"/sys/fs/bpf/bpxtest-{run_id()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def datapath(session_pin_dir: str):  # type: ignore[no-untyped-def]
    """The tc programs compiled once for the whole session, maps pinned in session_pin_dir."""
    from bpfproxy.loader.build import load_datapath

    return load_datapath(session_pin_dir)


@pytest.fixture()
def maps(datapath):  # type: ignore[no-untyped-def]
    """The session's pinned maps, emptied before each test."""
    from bpfproxy.loader.maps import DatapathMaps

    with DatapathMaps(datapath.pin_dir) as m:
        for table in (m.svc, m.backend, m.ct, m.affinity, m.frag, m.svcname):
            table.delete_many(list(table.keys()))
        zero_percpu(m)
        yield m


def zero_percpu(m) -> None:  # type: ignore[no-untyped-def]
    """Reset the per-CPU counters of the verdict and per-service arrays."""
    import ctypes as ct

    from bpfproxy.loader import bpfsys

    for table in (m.verdict, m.svcstat):
        ncpu = bpfsys.possible_cpus()
        zero = (table.value_type * ncpu)()
        for i in range(table.max_entries if table is m.verdict else 64):
            bpfsys.update(table.fd, ct.c_uint32(i), zero)
