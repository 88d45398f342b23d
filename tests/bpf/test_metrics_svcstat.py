"""metrics.svcstat_reader against the real bpx_svcstat_v1: per-CPU counters summed, absent ids read as zero."""

from __future__ import annotations

import ctypes as ct
from typing import Any

from bpfproxy.controller.metrics import svcstat_reader
from bpfproxy.loader import bpfsys
from bpfproxy.loader.structs import SvcStats


def test_reader_sums_every_cpu_and_reuses_its_buffers(maps: Any) -> None:
    ncpu = bpfsys.possible_cpus()
    values = (SvcStats * ncpu)(*[SvcStats(packets=i + 1, bytes=100 * (i + 1)) for i in range(ncpu)])
    bpfsys.update(maps.svcstat.fd, ct.c_uint32(5), values)
    read = svcstat_reader(maps)
    total = ncpu * (ncpu + 1) // 2
    assert read(5) == (total, 100 * total)
    assert read(6) == (0, 0)  # a zeroed id: the previous read's buffers do not leak into it
    assert read(5) == (total, 100 * total)
    assert read(maps.svcstat.max_entries + 10) == (0, 0)  # out of the array: absent
