"""Typed access to the pinned maps: shape checks, element and batch operations, iteration.

Place in the data flow: the sync writes desired state through `DatapathMaps`; on start it reads
them back as "applied"; `bpfproxy services` / `conntrack` read them with the agent stopped. Every
map is opened by its pin path, so none of this needs the program compiled in this process.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar, cast

from bpfproxy.loader import bpfsys
from bpfproxy.loader.structs import (
    CT_DIR_REPLY,
    FOREIGN_WORDS,
    QUIET_PORT_WORDS,
    SVC_CIDR_MAX,
    AffinityKey,
    AffinityVal,
    Backend,
    CtEntry,
    CtKey,
    ForeignWord,
    FragKey,
    FragVal,
    SvcCidrKey,
    SvcCidrVal,
    SvcKey,
    SvcName,
    SvcStats,
    SvcVal,
    VerdictCount,
)

K = TypeVar("K", bound="ct._CData")
V = TypeVar("V", bound="ct._CData")

#: default pin directory (DESIGN.md §3)
DEFAULT_PIN_DIR = "/sys/fs/bpf/bpfproxy"


class MapShapeError(RuntimeError):
    """A pinned map exists with another type, key size, value size or capacity than expected."""


@dataclass(frozen=True)
class MapSpec:
    """One map of the datapath: its versioned pin name, kind and C types."""

    name: str
    """pin file name, equal to the map name in maps.h (versioned: _v1, _v2, ...)"""
    kind: str
    """bcc table kind: hash, lru_hash, percpu_array, ..."""
    key: type[ct._CData]
    """ctypes mirror of the key"""
    value: type[ct._CData]
    """ctypes mirror of the value (one CPU's share for per-CPU maps)"""
    size_define: str
    """the -D macro that sets max_entries"""

    @property
    def value_size(self) -> int:
        """The map's value_size as the kernel has it: per-CPU values are declared 8-byte aligned."""
        size = ct.sizeof(self.value)
        return (size + 7) & ~7 if self.kind.startswith("percpu") else size


SVC = MapSpec("bpx_svc_v1", "hash", SvcKey, SvcVal, "LB_MAP_MAX")
BACKEND = MapSpec("bpx_backend_v1", "hash", ct.c_uint32, Backend, "BACKEND_MAP_MAX")
CT = MapSpec("bpx_ct_v1", "lru_hash", CtKey, CtEntry, "CT_MAP_MAX")
AFFINITY = MapSpec("bpx_affinity_v1", "lru_hash", AffinityKey, AffinityVal, "AFFINITY_MAP_MAX")
FRAG = MapSpec("bpx_frag_v1", "lru_hash", FragKey, FragVal, "FRAG_MAP_MAX")
VERDICT = MapSpec("bpx_verdict_v2", "percpu_array", ct.c_uint32, VerdictCount, "V_MAX")
SVCSTAT = MapSpec("bpx_svcstat_v1", "percpu_array", ct.c_uint32, SvcStats, "SVC_ID_MAX")
SVCNAME = MapSpec("bpx_svcname_v1", "hash", ct.c_uint32, SvcName, "SVC_ID_MAX")
SVCCIDR = MapSpec("bpx_svccidr_v1", "lpm_trie", SvcCidrKey, SvcCidrVal, "SVC_CIDR_MAX")
FOREIGN = MapSpec("bpx_foreign_v1", "array", ct.c_uint32, ForeignWord, "FOREIGN_WORDS")
QUIETPORT = MapSpec("bpx_quietport_v1", "array", ct.c_uint32, ForeignWord, "QUIET_PORT_WORDS")

#: every map, in maps.h order
ALL_MAPS: tuple[MapSpec, ...] = (
    SVC, BACKEND, CT, AFFINITY, FRAG, VERDICT, SVCSTAT, SVCNAME, SVCCIDR, FOREIGN, QUIETPORT
)

#: pin names of earlier layouts: never opened, only removed by cleanup
RETIRED_MAP_NAMES: tuple[str, ...] = ("bpx_verdict_v1",)

#: kernel map type number of each bcc table kind of MapSpec.kind
KIND_TYPES = {"hash": 1, "array": 2, "percpu_array": 6, "lru_hash": 9, "lpm_trie": 11}

#: map types read with BPF_MAP_LOOKUP_BATCH (hash, array, lru_hash); the others are walked key by key
_BATCH_READ_TYPES = {1, 2, 9}

#: elements per batch call
BATCH_CHUNK = 8192

_CODES: dict[Any, str] = {ct.c_uint8: "B", ct.c_uint16: "H", ct.c_uint32: "I", ct.c_uint64: "Q"}


@cache
def packer(ctype: Any, raw_fields: tuple[str, ...] = ()) -> tuple[struct.Struct, tuple[str, ...]]:
    """A struct.Struct with ctype's exact layout (native byte order, padding included) and the names of the
    fields it packs, in order ("pad*" fields are zero bytes; a scalar type packs one field, "value").
    Fields named in raw_fields are packed as bytes of their size (e.g. an address as socket.inet_aton gives it).

    Packing plain tuples into one buffer is what makes bulk map writes fast: no ctypes object per element.
    """
    if ctype in _CODES:
        return struct.Struct("=" + _CODES[ctype]), ("value",)
    fmt, names, pos = "=", [], 0
    for f in ctype._fields_:  # type: ignore[attr-defined]
        name, ftype = f[0], f[1]
        desc = getattr(ctype, name)
        if desc.offset > pos:
            fmt += f"{desc.offset - pos}x"
        if name.startswith("pad"):
            fmt += f"{desc.size}x"
        elif name in raw_fields:
            fmt += f"{desc.size}s"
            names.append(name)
        elif ftype in _CODES:
            fmt += _CODES[ftype]
            names.append(name)
        elif issubclass(ftype, ct.Array) and ftype._type_ is ct.c_char:
            fmt += f"{desc.size}s"
            names.append(name)
        else:
            raise TypeError(f"{ctype.__name__}.{name}: no struct code for {ftype}")
        pos = desc.offset + desc.size
    if ct.sizeof(ctype) > pos:
        fmt += f"{ct.sizeof(ctype) - pos}x"
    packed = struct.Struct(fmt)
    if packed.size != ct.sizeof(ctype):
        raise TypeError(f"{ctype.__name__}: struct format {fmt} is {packed.size} bytes, ctypes {ct.sizeof(ctype)}")
    return packed, tuple(names)


class Map(Generic[K, V]):
    """A pinned map opened by path, with typed keys and values."""

    def __init__(self, spec: MapSpec, fd: int, info: bpfsys.MapInfo) -> None:
        self.spec = spec
        self.fd = fd
        self.max_entries = int(info.max_entries)
        self.percpu = info.type in bpfsys.PERCPU_MAP_TYPES
        self.type = int(info.type)
        self.key_type: type[K] = spec.key  # type: ignore[assignment]
        self.value_type: type[V] = spec.value  # type: ignore[assignment]

    @classmethod
    def open(cls, pin_dir: str, spec: MapSpec, *, max_entries: int | None = None) -> Map[K, V]:
        """Open pin_dir/spec.name and check its shape against spec (and max_entries if given)."""
        path = os.path.join(pin_dir, spec.name)
        fd = bpfsys.obj_get(path)
        try:
            info = bpfsys.map_info(fd)
            check_shape(path, spec, info, max_entries)
        except Exception:
            os.close(fd)
            raise
        return cls(spec, fd, info)

    def close(self) -> None:
        """Release the fd (the pin keeps the map)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def get(self, key: K) -> V | None:
        """The value of key, or None (per-CPU maps: use get_percpu)."""
        value = self.value_type()
        return value if bpfsys.lookup(self.fd, key, value) else None

    def get_percpu(self, key: K) -> list[V]:
        """One value per possible CPU (empty list when absent)."""
        values = _array(self.value_type, bpfsys.possible_cpus())()
        return list(values) if bpfsys.lookup(self.fd, key, values) else []

    def put(self, key: K, value: V) -> None:
        """Insert or replace one element."""
        bpfsys.update(self.fd, key, value)

    def delete(self, key: K) -> bool:
        """Delete one key; False when it was absent."""
        return bpfsys.delete(self.fd, key)

    def _walk_keys(self) -> Iterator[K]:
        """Every key by BPF_MAP_GET_NEXT_KEY, one syscall each."""
        prev: K | None = None
        while True:
            out = self.key_type()
            if not bpfsys.next_key(self.fd, prev, out):
                return
            yield out
            prev = out

    def read_raw(self) -> tuple[bytes, bytes]:
        """Every key and value of a non-per-CPU map, packed back to back (snapshot semantics as keys()).

        Hash, LRU and array maps are read with BPF_MAP_LOOKUP_BATCH, BATCH_CHUNK elements per call;
        others (the LPM trie) key by key. Unpack with packer(key_type) / packer(value_type).iter_unpack.
        """
        if self.percpu:
            raise TypeError(f"{self.spec.name}: read_raw does not read per-CPU maps")
        if self.type not in _BATCH_READ_TYPES:
            pairs = [(bytes(k), bytes(v)) for k, v in self._items_walk()]
            return b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs)
        ks, vs = ct.sizeof(self.key_type), ct.sizeof(self.value_type)
        chunk = min(BATCH_CHUNK, self.max_entries)  # a small map needs no large buffers (one call reads it)
        keys_buf = ct.create_string_buffer(chunk * ks)
        values_buf = ct.create_string_buffer(chunk * vs)
        pos = [ct.create_string_buffer(max(ks, 8)), ct.create_string_buffer(max(ks, 8))]
        out_keys, out_values = bytearray(), bytearray()
        first = True
        while True:
            n, done = bpfsys.lookup_batch(self.fd, None if first else pos[0], pos[1], keys_buf, values_buf, chunk)
            out_keys += memoryview(keys_buf)[: n * ks]
            out_values += memoryview(values_buf)[: n * vs]
            if done:
                return bytes(out_keys), bytes(out_values)
            pos.reverse()
            first = False

    def keys(self) -> Iterator[K]:
        """Every key (a snapshot; concurrent changes may be missed or repeated)."""
        if self.percpu or self.type not in _BATCH_READ_TYPES:
            yield from self._walk_keys()
            return
        raw, _ = self.read_raw()
        size, from_copy = ct.sizeof(self.key_type), cast(Any, self.key_type).from_buffer_copy
        for off in range(0, len(raw), size):
            yield from_copy(raw, off)

    def _items_walk(self) -> Iterator[tuple[K, V]]:
        for key in self._walk_keys():
            value = self.get(key)
            if value is not None:
                yield key, value

    def items(self) -> Iterator[tuple[K, V]]:
        """Every (key, value) pair of a non-per-CPU map."""
        if self.type not in _BATCH_READ_TYPES:
            yield from self._items_walk()
            return
        kraw, vraw = self.read_raw()
        ks, vs = ct.sizeof(self.key_type), ct.sizeof(self.value_type)
        kcopy, vcopy = cast(Any, self.key_type).from_buffer_copy, cast(Any, self.value_type).from_buffer_copy
        for i in range(len(kraw) // ks):
            yield kcopy(kraw, i * ks), vcopy(vraw, i * vs)

    def put_raw(self, keys: bytes | bytearray, values: bytes | bytearray, *, value_size: int | None = None) -> None:
        """Write packed keys and values (see packer) with BPF_MAP_UPDATE_BATCH, in chunks, in order.

        value_size: bytes per element of values (per-CPU maps: the 8-aligned value times the possible CPUs).
        """
        ks, vs = ct.sizeof(self.key_type), value_size or ct.sizeof(self.value_type)
        count = len(keys) // ks
        if len(keys) != count * ks or len(values) != count * vs:
            raise ValueError(f"{self.spec.name}: {len(keys)} key bytes and {len(values)} value bytes "
                             f"are not {count} elements of {ks} + {vs} bytes")
        kbuf, vbuf = _c_buffer(keys), _c_buffer(values)
        for start in range(0, count, BATCH_CHUNK):
            n = min(BATCH_CHUNK, count - start)
            bpfsys.update_batch(self.fd, _at(kbuf, start * ks, n * ks), _at(vbuf, start * vs, n * vs), n)

    def delete_raw(self, keys: bytes | bytearray) -> int:
        """Delete packed keys with BPF_MAP_DELETE_BATCH; absent keys are skipped. Returns how many were deleted."""
        ks = ct.sizeof(self.key_type)
        count = len(keys) // ks
        kbuf = _c_buffer(keys)
        deleted = start = 0
        while start < count:
            n = min(BATCH_CHUNK, count - start)
            done = bpfsys.delete_batch(self.fd, _at(kbuf, start * ks, n * ks), n)
            deleted += done
            start += done
            if done < n:  # the kernel stops at an absent key: skip it and go on
                deleted += bpfsys.delete(self.fd, _at(kbuf, start * ks, ks))
                start += 1
        return deleted

    def put_many(self, pairs: Sequence[tuple[K, V]]) -> None:
        """Write all pairs with BPF_MAP_UPDATE_BATCH (in chunks), in the given order."""
        self.put_raw(b"".join([bytes(k) for k, _ in pairs]), b"".join([bytes(v) for _, v in pairs]))

    def delete_many(self, keys: Sequence[K]) -> None:
        """Delete keys; absent keys are skipped."""
        if keys:
            self.delete_raw(b"".join([bytes(k) for k in keys]))


def _array(item: type[ct._CData], length: int) -> Any:
    """The ctypes array type of length items (typeshed cannot multiply a generic ctypes type)."""
    return cast(Any, item) * length


def _c_buffer(data: bytes | bytearray) -> ct.Array[ct.c_char]:
    """A ctypes view of data (bytes are copied once into a bytearray: ctypes only maps writable buffers)."""
    buf = data if isinstance(data, bytearray) else bytearray(data)
    return (ct.c_char * max(len(buf), 1)).from_buffer(buf if buf else bytearray(1))


def _at(buf: ct.Array[ct.c_char], offset: int, length: int) -> ct.Array[ct.c_char]:
    """length bytes of buf from offset, as a ctypes object sharing its memory."""
    return (ct.c_char * length).from_buffer(buf, offset)


def check_shape(path: str, spec: MapSpec, info: bpfsys.MapInfo, max_entries: int | None) -> None:
    """Raise MapShapeError when a pinned map does not have the shape this program expects."""
    want_type = KIND_TYPES[spec.kind]
    problems = []
    if info.type != want_type:
        have = bpfsys.MAP_TYPE_NAMES.get(info.type, str(info.type))
        problems.append(f"type {have}, expected {spec.kind}")
    if info.key_size != ct.sizeof(spec.key):
        problems.append(f"key size {info.key_size}, expected {ct.sizeof(spec.key)}")
    want_value = spec.value_size
    if info.value_size != want_value:
        problems.append(f"value size {info.value_size}, expected {want_value}")
    if max_entries is not None and info.max_entries != max_entries:
        problems.append(f"capacity {info.max_entries}, expected {max_entries}")
    if problems:
        raise MapShapeError(
            f"pinned map {path} has {', '.join(problems)}: it was made by another build or other "
            f"size settings; run 'bpfproxy cleanup --pin-dir {os.path.dirname(path)}' or keep the old settings"
        )


class DatapathMaps:
    """Every pinned map of one pin directory, opened and shape-checked."""

    def __init__(self, pin_dir: str, sizes: dict[str, int] | None = None) -> None:
        self.pin_dir = pin_dir
        sizes = sizes or {}
        opened: list[Map[ct._CData, ct._CData]] = []
        try:
            for spec in ALL_MAPS:
                opened.append(Map.open(pin_dir, spec, max_entries=sizes.get(spec.size_define)))
        except Exception:
            for m in opened:
                m.close()
            raise
        self.svc: Map[SvcKey, SvcVal] = opened[0]  # type: ignore[assignment]
        self.backend: Map[ct.c_uint32, Backend] = opened[1]  # type: ignore[assignment]
        self.ct: Map[CtKey, CtEntry] = opened[2]  # type: ignore[assignment]
        self.affinity: Map[AffinityKey, AffinityVal] = opened[3]  # type: ignore[assignment]
        self.frag: Map[FragKey, FragVal] = opened[4]  # type: ignore[assignment]
        self.verdict: Map[ct.c_uint32, VerdictCount] = opened[5]  # type: ignore[assignment]
        self.svcstat: Map[ct.c_uint32, SvcStats] = opened[6]  # type: ignore[assignment]
        self.svcname: Map[ct.c_uint32, SvcName] = opened[7]  # type: ignore[assignment]
        self.svccidr: Map[SvcCidrKey, SvcCidrVal] = opened[8]  # type: ignore[assignment]
        self.foreign: Map[ct.c_uint32, ForeignWord] = opened[9]  # type: ignore[assignment]
        self.quietport: Map[ct.c_uint32, ForeignWord] = opened[10]  # type: ignore[assignment]
        self._all = opened

    def service_cidrs(self) -> list[str]:
        """The service CIDRs the datapath holds now, sorted."""
        nets = [_cidr_of_key(k) for k in self.svccidr.keys()]  # noqa: SIM118
        return [str(n) for n in sorted(nets)]

    def set_service_cidrs(self, cidrs: Sequence[str]) -> None:
        """Make the service CIDRs exactly cidrs (IPv4, e.g. "10.96.0.0/12"); ValueError names a bad one.

        Inside a service CIDR, an address no frontend owns is dropped (V_DROP_NO_SERVICE).
        Make-before-break: the new prefixes are added first, then the stale ones deleted.
        """
        want = parse_service_cidrs(cidrs)
        have = {_cidr_of_key(k) for k in self.svccidr.keys()}  # noqa: SIM118
        for net in sorted(want - have):
            self.svccidr.put(_cidr_key(net), SvcCidrVal())
        for net in sorted(have - want):
            self.svccidr.delete(_cidr_key(net))
        if want != have:
            self.rebuild_foreign()

    def rebuild_foreign(self, addresses: Iterable[str] | None = None) -> None:
        """Rewrite the foreign-prefix bitmap: every /16 foreign except those of the service CIDRs and addresses.

        addresses: every address the service map holds entries for (None: scan the map for them).
        From then on, writers must call mark_service_addresses before writing a new address entry.
        """
        cidrs = [str(_cidr_of_key(k)) for k in self.svccidr.keys()]  # noqa: SIM118
        if addresses is None:  # one batch read; svc_key starts with the address (network order)
            raw, _ = self.svc.read_raw()
            stride = ct.sizeof(SvcKey) // 4
            be32 = set(memoryview(raw).cast("I")[::stride])
            nets = {socket.ntohl(a) >> 16 for a in be32} | _nets16([], cidrs)
        else:
            nets = _nets16(addresses, cidrs)
        _set_all_bits_but(self.foreign, FOREIGN_WORDS, nets)

    def mark_service_addresses(self, addresses: Iterable[str]) -> None:
        """Clear the foreign bit of each address's /16: call before writing their address entries."""
        _clear_bits(self.foreign, _nets16(addresses, []))

    def reset_foreign(self) -> None:
        """Forget every foreign prefix and quiet port (all zero): every packet takes the full path."""
        self.foreign.put_many([(ct.c_uint32(w), ForeignWord(bits=0)) for w in range(FOREIGN_WORDS)])
        self.quietport.put_many([(ct.c_uint32(w), ForeignWord(bits=0)) for w in range(QUIET_PORT_WORDS)])

    def rebuild_quiet_ports(self, backend_ports: Iterable[int] | None = None) -> None:
        """Rewrite the quiet-port bitmap: every port quiet except backend ports and conntrack reply ports.

        backend_ports: the port of every backend in the backend map (None: scan the map). The source
        ports of conntrack reply entries are added, so a flow whose backend is gone keeps its reverse
        NAT. From then on, writers must call mark_backend_ports before writing a backend.
        """
        if backend_ports is None:
            backend_ports = {socket.ntohs(v.port) for _, v in self.backend.items()}
        used = set(backend_ports)
        raw, _ = self.ct.read_raw()
        ct_key, ct_fields = packer(CtKey)
        sport, direction = ct_fields.index("sport"), ct_fields.index("dir")
        used |= {socket.ntohs(k[sport]) for k in ct_key.iter_unpack(raw) if k[direction] == CT_DIR_REPLY}
        _set_all_bits_but(self.quietport, QUIET_PORT_WORDS, used)

    def mark_backend_ports(self, ports: Iterable[int]) -> None:
        """Clear the quiet bit of each port: call before writing backends on them."""
        _clear_bits(self.quietport, ports)

    def close(self) -> None:
        """Close every fd."""
        for m in self._all:
            m.close()

    def __enter__(self) -> DatapathMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_service_cidrs(cidrs: Sequence[str]) -> set[ipaddress.IPv4Network]:
    """The IPv4 networks of cidrs; ValueError naming the first bad value, or when there are too many."""
    if isinstance(cidrs, str):
        raise ValueError(f"service CIDRs must be a list of strings, got the string {cidrs!r}")
    nets: set[ipaddress.IPv4Network] = set()
    for value in cidrs:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError(f"service CIDR {value!r}: expected an IPv4 CIDR such as 10.96.0.0/12")
        try:
            net = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as e:
            raise ValueError(f"service CIDR {value!r}: {e}") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"service CIDR {value!r}: not IPv4 (the datapath handles IPv4 only)")
        nets.add(net)
    if len(nets) > SVC_CIDR_MAX:
        raise ValueError(f"service CIDRs {sorted(map(str, nets))}: {len(nets)} given, at most {SVC_CIDR_MAX}")
    return nets


def _bit_words(positions: Iterable[int]) -> dict[int, int]:
    """Bit positions grouped into 64-bit words: word index -> bits."""
    words: dict[int, int] = {}
    for pos in positions:
        words[pos >> 6] = words.get(pos >> 6, 0) | 1 << (pos & 63)
    return words


def _set_all_bits_but(bitmap: Map[ct.c_uint32, ForeignWord], nwords: int, positions: Iterable[int]) -> None:
    """Rewrite a bitmap of nwords words: every bit set except those at positions."""
    clear = _bit_words(positions)
    every = (1 << 64) - 1
    bitmap.put_many([(ct.c_uint32(w), ForeignWord(bits=every & ~clear.get(w, 0))) for w in range(nwords)])


def _clear_bits(bitmap: Map[ct.c_uint32, ForeignWord], positions: Iterable[int]) -> None:
    """Clear the bits at positions, writing only the words that change."""
    for w, bits in sorted(_bit_words(positions).items()):
        key = ct.c_uint32(w)
        cur = bitmap.get(key)
        if cur is not None and cur.bits & bits:
            bitmap.put(key, ForeignWord(bits=cur.bits & ~bits))


def _nets16(addresses: Iterable[str], cidrs: Iterable[str]) -> set[int]:
    """Numbers (address >> 16) of the /16 prefixes holding an address or overlapping a CIDR."""
    out = {int.from_bytes(socket.inet_aton(a), "big") >> 16 for a in addresses}
    for c in cidrs:
        net = ipaddress.IPv4Network(c)
        out.update(range(int(net.network_address) >> 16, (int(net.broadcast_address) >> 16) + 1))
    return out


def _cidr_key(net: ipaddress.IPv4Network) -> SvcCidrKey:
    """The trie key of net (address in network order)."""
    addr = int.from_bytes(net.network_address.packed, sys.byteorder)  # memory bytes = network order
    return SvcCidrKey(prefixlen=net.prefixlen, addr=addr)


def _cidr_of_key(key: SvcCidrKey) -> ipaddress.IPv4Network:
    """Inverse of _cidr_key."""
    raw = socket.inet_ntoa(int(key.addr).to_bytes(4, sys.byteorder))
    return ipaddress.IPv4Network(f"{raw}/{int(key.prefixlen)}")


def pinned_maps_present(pin_dir: str) -> bool:
    """True when every map of ours is pinned in pin_dir."""
    return all(os.path.exists(os.path.join(pin_dir, spec.name)) for spec in ALL_MAPS)
