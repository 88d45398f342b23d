"""The bpf() syscall through ctypes: pinned objects, map element and batch operations, test runs.

Place in the data flow: the lowest layer of the loader. loader.maps builds typed maps on it, the
sync writes through those, inspection (`bpfproxy services`, `conntrack`) reads through them with
no compile, and loader.testrun runs programs with BPF_PROG_TEST_RUN. bcc has no wrapper for
BPF_OBJ_GET or the test run, so we speak the syscall ourselves.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from dataclasses import dataclass
from functools import cache

_NR_BPF = 321  # x86_64

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

#: map types whose values are per CPU
PERCPU_MAP_TYPES = {5, 6, 10}  # percpu_hash, percpu_array, lru_percpu_hash

MAP_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash", 10: "lru_percpu_hash"}

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


class BpfError(OSError):
    """A bpf() call failed; errno and the operation are kept."""


class _ElemAttr(ct.Structure):
    _fields_ = [
        ("map_fd", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("key", ct.c_uint64),
        ("value", ct.c_uint64),
        ("flags", ct.c_uint64),
    ]


class _BatchAttr(ct.Structure):
    _fields_ = [
        ("in_batch", ct.c_uint64),
        ("out_batch", ct.c_uint64),
        ("keys", ct.c_uint64),
        ("values", ct.c_uint64),
        ("count", ct.c_uint32),
        ("map_fd", ct.c_uint32),
        ("elem_flags", ct.c_uint64),
        ("flags", ct.c_uint64),
    ]


class _ObjAttr(ct.Structure):
    _fields_ = [
        ("pathname", ct.c_uint64),
        ("bpf_fd", ct.c_uint32),
        ("file_flags", ct.c_uint32),
        ("path_fd", ct.c_int32),
    ]


class _InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


def lookup_batch(
    fd: int, in_batch: ct._CData | None, out_batch: ct._CData, keys: ct._CData, values: ct._CData, count: int
) -> tuple[int, bool]:
    """Read up to count elements after position in_batch (None: from the start) in one call
    (BPF_MAP_LOOKUP_BATCH); the position reached goes to out_batch. Returns (elements read, finished)."""
    attr = _BatchAttr(in_batch=_addr(in_batch), out_batch=ct.addressof(out_batch), keys=ct.addressof(keys),
                      values=ct.addressof(values), count=count, map_fd=fd)
    try:
        bpf(BPF_MAP_LOOKUP_BATCH, attr, f"batch lookup of {count} elements")
    except BpfError as e:
        if e.errno != errno.ENOENT:
            raise
        return int(attr.count), True
    return int(attr.count), False


class _TestRunAttr(ct.Structure):
    _fields_ = [
        ("prog_fd", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("data_in", ct.c_uint64),
        ("data_out", ct.c_uint64),
        ("repeat", ct.c_uint32),
        ("duration", ct.c_uint32),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("ctx_in", ct.c_uint64),
        ("ctx_out", ct.c_uint64),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class MapInfo(ct.Structure):
    """struct bpf_map_info (the leading fields we use)."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
        ("ifindex", ct.c_uint32),
        ("btf_vmlinux_value_type_id", ct.c_uint32),
        ("netns_dev", ct.c_uint64),
        ("netns_ino", ct.c_uint64),
        ("btf_id", ct.c_uint32),
        ("btf_key_type_id", ct.c_uint32),
        ("btf_value_type_id", ct.c_uint32),
        ("btf_vmlinux_id", ct.c_uint32),
        ("map_extra", ct.c_uint64),
    ]


def _addr(obj: ct._CData | None) -> int:
    return 0 if obj is None else ct.addressof(obj)


def bpf(cmd: int, attr: ct.Structure, what: str) -> int:
    """Run one bpf() command; raise BpfError naming `what` on failure."""
    ret = _libc.syscall(_NR_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if ret < 0:
        err = ct.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return int(ret)


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new fd."""
    name = ct.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ct.addressof(name))
    return bpf(BPF_OBJ_GET, attr, f"open pinned object {path}")


def obj_pin(fd: int, path: str) -> None:
    """Pin an fd at path."""
    name = ct.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ct.addressof(name), bpf_fd=fd)
    bpf(BPF_OBJ_PIN, attr, f"pin at {path}")


def map_info(fd: int) -> MapInfo:
    """The kernel's description of a map: type, key and value size, capacity, flags, name."""
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=ct.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"map info of fd {fd}")
    return info


class ProgInfo(ct.Structure):
    """struct bpf_prog_info, up to the run statistics."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("tag", ct.c_uint8 * 8),
        ("jited_prog_len", ct.c_uint32),
        ("xlated_prog_len", ct.c_uint32),
        ("jited_prog_insns", ct.c_uint64),
        ("xlated_prog_insns", ct.c_uint64),
        ("load_time", ct.c_uint64),
        ("created_by_uid", ct.c_uint32),
        ("nr_map_ids", ct.c_uint32),
        ("map_ids", ct.c_uint64),
        ("name", ct.c_char * 16),
        ("ifindex", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("netns_dev", ct.c_uint64),
        ("netns_ino", ct.c_uint64),
        ("nr_jited_ksyms", ct.c_uint32),
        ("nr_jited_func_lens", ct.c_uint32),
        ("jited_ksyms", ct.c_uint64),
        ("jited_func_lens", ct.c_uint64),
        ("btf_id", ct.c_uint32),
        ("func_info_rec_size", ct.c_uint32),
        ("func_info", ct.c_uint64),
        ("nr_func_info", ct.c_uint32),
        ("nr_line_info", ct.c_uint32),
        ("line_info", ct.c_uint64),
        ("jited_line_info", ct.c_uint64),
        ("nr_jited_line_info", ct.c_uint32),
        ("line_info_rec_size", ct.c_uint32),
        ("jited_line_info_rec_size", ct.c_uint32),
        ("nr_prog_tags", ct.c_uint32),
        ("prog_tags", ct.c_uint64),
        ("run_time_ns", ct.c_uint64),
        ("run_cnt", ct.c_uint64),
    ]


@dataclass(frozen=True)
class ProgSummary:
    """What the kernel says about one loaded program."""

    prog_id: int
    """kernel program id"""
    name: str
    """program name (truncated to 15 characters by the kernel)"""
    map_ids: tuple[int, ...]
    """ids of the maps the program uses"""
    run_cnt: int
    """runs counted while BPF statistics were enabled"""


def prog_info(prog_fd: int) -> ProgSummary:
    """Id, name, used maps and run count of the program behind prog_fd."""
    ids = (ct.c_uint32 * 64)()
    info = ProgInfo(nr_map_ids=len(ids), map_ids=ct.addressof(ids))
    attr = _InfoAttr(bpf_fd=prog_fd, info_len=ct.sizeof(info), info=ct.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"program info of fd {prog_fd}")
    n = min(int(info.nr_map_ids), len(ids))
    return ProgSummary(int(info.id), info.name.decode(), tuple(ids[:n]), int(info.run_cnt))


@cache
def possible_cpus() -> int:
    """Number of possible CPUs: the number of values a per-CPU map holds per key."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def lookup(fd: int, key: ct._CData, value: ct._CData) -> bool:
    """Fill value for key; False when the key is absent."""
    attr = _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(value))
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, attr, "map lookup")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def update(fd: int, key: ct._CData, value: ct._CData, flags: int = BPF_ANY) -> None:
    """Insert or replace one element."""
    attr = _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(value), flags=flags)
    bpf(BPF_MAP_UPDATE_ELEM, attr, "map update")


def delete(fd: int, key: ct._CData) -> bool:
    """Delete one element; False when it was absent."""
    attr = _ElemAttr(map_fd=fd, key=_addr(key))
    try:
        bpf(BPF_MAP_DELETE_ELEM, attr, "map delete")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def next_key(fd: int, key: ct._CData | None, out: ct._CData) -> bool:
    """Store the key after `key` (the first one when None) in out; False at the end."""
    attr = _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(out))
    try:
        bpf(BPF_MAP_GET_NEXT_KEY, attr, "map next key")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def update_batch(fd: int, keys: ct._CData, values: ct._CData, count: int) -> None:
    """Write count elements in one call (BPF_MAP_UPDATE_BATCH); keys and values: packed arrays."""
    attr = _BatchAttr(keys=ct.addressof(keys), values=ct.addressof(values), count=count, map_fd=fd)
    bpf(BPF_MAP_UPDATE_BATCH, attr, f"batch update of {count} elements")
    if attr.count != count:
        raise BpfError(errno.EIO, f"batch update wrote {attr.count} of {count} elements")


def delete_batch(fd: int, keys: ct._CData, count: int) -> int:
    """Delete count keys in one call; returns how many were deleted (absent keys stop the kernel)."""
    attr = _BatchAttr(keys=ct.addressof(keys), count=count, map_fd=fd)
    try:
        bpf(BPF_MAP_DELETE_BATCH, attr, f"batch delete of {count} elements")
    except BpfError as e:
        if e.errno != errno.ENOENT:
            raise
    return int(attr.count)


def test_run(
    prog_fd: int,
    data: bytes,
    *,
    ctx: ct._CData | None = None,
    repeat: int = 1,
    out_size: int = 4096,
) -> tuple[int, bytes, int]:
    """BPF_PROG_TEST_RUN: (return value, output packet, mean duration in ns per run)."""
    data_in = ct.create_string_buffer(data, len(data))
    data_out = ct.create_string_buffer(out_size)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(data),
        data_size_out=out_size,
        data_in=ct.addressof(data_in),
        data_out=ct.addressof(data_out),
        repeat=repeat,
    )
    if ctx is not None:
        attr.ctx_in = ct.addressof(ctx)
        attr.ctx_size_in = ct.sizeof(ctx)
        attr.ctx_out = ct.addressof(ctx)
        attr.ctx_size_out = ct.sizeof(ctx)
    bpf(BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return int(attr.retval), data_out.raw[: attr.data_size_out], int(attr.duration)


class _GetIdAttr(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


#: bpf() command: a new fd for the program with a given id
BPF_PROG_GET_FD_BY_ID = 13
#: bpf() command: open a map by its kernel id
BPF_MAP_GET_FD_BY_ID = 14


def prog_get_fd_by_id(prog_id: int) -> int:
    """A new fd for the loaded program with kernel id prog_id (the caller closes it)."""
    return bpf(BPF_PROG_GET_FD_BY_ID, _GetIdAttr(id=prog_id), f"program id {prog_id}")


def map_get_fd_by_id(map_id: int) -> int:
    """A new fd for the map with kernel id map_id (the caller closes it)."""
    return bpf(BPF_MAP_GET_FD_BY_ID, _GetIdAttr(id=map_id), f"map id {map_id}")
