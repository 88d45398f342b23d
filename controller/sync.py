"""The only writer of the service maps: executes a WritePlan, and reads the maps back as a state.

Place in the data flow: the last stage. `MapsWriter.apply()` runs the phases of a diff.WritePlan
in order, each phase packed into one buffer (no ctypes object per element; a big phase, as in a full
sync, without a struct call per element either: runs joined around shared bytes, columns packed with
array) and written with batch calls (put_raw / delete_raw), addresses and ports in network byte order.
`read_applied()` rebuilds a plan.DatapathState (ids, counts, names, address entries)
from the pinned maps (read with BPF_MAP_LOOKUP_BATCH), so a restarted agent takes what is there
as applied and writes only the difference. Any failure raises; the proxier then re-reads the maps and does a full sync.
"""

from __future__ import annotations

import ctypes as ct
import logging
import socket
import struct
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from bpfproxy.controller.diff import SlotWrite, WritePlan
from bpfproxy.controller.plan import BackendEntry, DatapathState, FrontendEntry, FrontendKey
from bpfproxy.loader import bpfsys
from bpfproxy.loader.maps import DatapathMaps, packer
from bpfproxy.loader.structs import SVC_F_ADDR, SVC_NAME_LEN, AffinityKey, Backend, SvcKey, SvcName, SvcVal

log = logging.getLogger(__name__)

#: key and value of a _memo cache
K = TypeVar("K")
V = TypeVar("V")


def ip_to_be32(addr: str) -> int:
    """A dotted IPv4 address as the u32 whose memory bytes are in network order."""
    return int(struct.unpack("=I", socket.inet_aton(addr))[0])


def be32_to_ip(value: int) -> str:
    """Inverse of ip_to_be32."""
    return socket.inet_ntoa(struct.pack("=I", value))


def svc_key(key: FrontendKey, slot: int) -> SvcKey:
    """struct svc_key of a frontend slot."""
    return SvcKey(addr=ip_to_be32(key.addr), port=socket.htons(key.port), slot=slot,
                  proto=key.proto, scope=key.scope)


def address_key(addr: str) -> SvcKey:
    """struct svc_key of an address entry."""
    return SvcKey(addr=ip_to_be32(addr), port=0, slot=0, proto=0, scope=0)


#: bytes of a name written to struct svc_name (one byte stays for the terminating NUL)
_NAME_MAX = SVC_NAME_LEN - 1


def _struct_of(ctype: Any, fields: tuple[str, ...], raw: tuple[str, ...] = ()) -> struct.Struct:
    """packer(ctype, raw), checked to pack exactly these fields in this order (the tuples below rely on it)."""
    packed, names = packer(ctype, raw)
    if names != fields:
        raise TypeError(f"{ctype.__name__} packs fields {names}, the writer expects {fields}")
    return packed


def _fields_of(cls: Any, *names: str) -> Callable[[Any], Any]:
    """A getter of these fields of cls's instances: by index when cls is a named tuple (cheaper), else by name."""
    fields = getattr(cls, "_fields", None)
    if isinstance(fields, tuple):
        return itemgetter(*(fields.index(n) for n in names))
    return attrgetter(*names)


# packed layouts of the map elements the writer handles: bulk writes and reads go through plain tuples
_U32 = _struct_of(ct.c_uint32, ("value",))
_SVC_KEY = _struct_of(SvcKey, ("addr", "port", "slot", "proto", "scope"))
_SVC_VAL = _struct_of(SvcVal, ("backend_id", "count", "svc_id", "affinity_timeout", "flags"))
_NAME = _struct_of(SvcName, ("name",))
# for writing: addresses as the 4 network-order bytes socket.inet_aton returns
_SVC_KEY_W = _struct_of(SvcKey, ("addr", "port", "slot", "proto", "scope"), ("addr",))
_BACKEND_W = _struct_of(Backend, ("addr", "port", "proto", "flags", "svc_id"), ("addr",))
#: struct svc_key around its slot field: address and port before it, the rest after it (checked at import)
_SLOT_HEAD, _SLOT, _SLOT_TAIL = struct.Struct("=4sH"), struct.Struct("=H"), struct.Struct("=BB2x")
if _SVC_KEY_W.pack(b"\1\2\3\4", 5, 6, 7, 8) != _SLOT_HEAD.pack(b"\1\2\3\4", 5) + _SLOT.pack(6) + _SLOT_TAIL.pack(7, 8):
    raise TypeError("struct svc_key layout changed: update _SLOT_HEAD / _SLOT / _SLOT_TAIL")
#: struct backend after its address, and the BackendEntry fields it holds (checked at import)
_BACKEND_TAIL = struct.Struct("=HBBI")
_BACKEND_TAIL_FIELDS = _fields_of(BackendEntry, "port", "proto", "flags", "svc_id")
_BACKEND_ADDR, _BACKEND_PORT = _fields_of(BackendEntry, "addr"), _fields_of(BackendEntry, "port")
#: SlotWrite fields read in bulk
_SLOT_KEY, _SLOT_NUMBER = _fields_of(SlotWrite, "key"), _fields_of(SlotWrite, "slot")
_SLOT_SVC_ID, _SLOT_BACKEND_ID = _fields_of(SlotWrite, "svc_id"), _fields_of(SlotWrite, "backend_id")
if _BACKEND_W.pack(b"\1\2\3\4", 5, 6, 7, 8) != b"\1\2\3\4" + _BACKEND_TAIL.pack(5, 6, 7, 8):
    raise TypeError("struct backend layout changed: update _BACKEND_TAIL")
#: from this many elements a phase is packed in bulk (runs, joins, columns); below, element by element
_BULK_MIN = 64
#: array type code of a native u32 (columns of ids are packed with array, not struct)
_U32_CODE = next(code for code in "IL" if array(code).itemsize == 4)
#: u32 word of struct svc_val holding backend_id / svc_id (slot values are packed as u32 columns)
_SLOT_BACKEND_WORD = SvcVal.backend_id.offset // 4
_SLOT_SVC_ID_WORD = SvcVal.svc_id.offset // 4


class MapsWriter:
    """Applies WritePlans to the pinned maps and reads them back."""

    def __init__(self, maps: DatapathMaps) -> None:
        self.maps = maps
        self._read_addresses: set[str] | None = None
        """addresses of the entries found by the last read_applied (None: never read)"""
        self._read_ports: set[int] | None = None
        """ports of the backends found by the last read_applied (None: never read)"""
        self._foreign_ready = False
        """the foreign-prefix and quiet-port bitmaps were rebuilt by this writer (then only new entries need marking)"""

    def read_applied(self) -> DatapathState:
        """The state the maps hold now: frontends, slots, backends, names, address entries.

        Each map is read with batch lookups into one buffer and unpacked as tuples (no ctypes object per entry).
        """
        m = self.maps
        state = DatapathState()
        kraw, vraw = m.svcname.read_raw()
        names = {k: bytes(v).split(b"\0", 1)[0].decode(errors="replace")
                 for (k,), (v,) in zip(_U32.iter_unpack(kraw), _NAME.iter_unpack(vraw), strict=True)}
        state.names = dict(names)
        masters: dict[tuple[int, int, int, int], tuple[int, ...]] = {}
        slots: dict[tuple[int, int, int, int], dict[int, int]] = {}
        addresses_be32: set[int] = set()
        kraw, vraw = m.svc.read_raw()
        for (addr, port, slot, proto, scope), val in zip(_SVC_KEY.iter_unpack(kraw), _SVC_VAL.iter_unpack(vraw),
                                                         strict=True):
            if proto == 0 and port == 0 and slot == 0:
                if val[4] & SVC_F_ADDR:
                    addresses_be32.add(addr)
                continue
            if slot == 0:
                masters[(addr, port, proto, scope)] = val
            else:
                slots.setdefault((addr, port, proto, scope), {})[slot] = val[0]
        ip_of = _memo(be32_to_ip)
        extra_addresses = {ip_of(a) for a in addresses_be32}
        kraw_be, vraw_be = m.backend.read_raw()
        # addresses as their 4 network-order bytes: socket.inet_ntoa takes them as they are
        backends = sorted(zip(memoryview(kraw_be).cast("I").tolist(), _BACKEND_W.iter_unpack(vraw_be), strict=True),
                          key=itemgetter(0))
        for raw_key, (_, count, svc_id, timeout, flags) in sorted(masters.items(), key=lambda kv: kv[1][2]):
            fkey = _fkey(raw_key, ip_of)
            have = slots.pop(raw_key, {})
            ids = tuple(have.get(i, 0) for i in range(1, count + 1))
            state.stray_slots |= {(fkey, s) for s in have if not 1 <= s <= count}
            name = names.get(svc_id, f"?/unnamed:{svc_id}/?")
            if svc_id in state.svc_ids():
                log.warning("two frontends share an id svc_id=%d frontend=%s; it will be rewritten", svc_id, fkey)
                state.stray_slots.add((fkey, 0))
                continue
            state.svc_id_alloc.reserve(svc_id)
            state.add_frontend(fkey, FrontendEntry(svc_id, name, flags, timeout, ids))
        for raw_key, rest in slots.items():
            fkey = _fkey(raw_key, ip_of)
            state.stray_slots |= {(fkey, s) for s in rest}
        state.addresses |= extra_addresses
        # every address the maps route (address entries and frontends, stray ones included): none may be foreign
        self._read_addresses = (set(state.addresses) | {ip_of(k[0]) for k in masters}
                                | {k.addr for k, _ in state.stray_slots})
        ntohs, ntoa = socket.ntohs, socket.inet_ntoa
        reserve, add = state.backend_id_alloc.reserve, state.add_backend
        for ident, (addr, port, proto, flags, svc_id) in backends:  # in id order (ids are unique keys)
            reserve(ident)
            add(ident, BackendEntry(ntoa(addr), ntohs(port), proto, flags, svc_id))
        self._read_ports = {b.port for b in state.backends.values()}
        return state

    def apply(self, wp: WritePlan) -> None:
        """Execute the phases of wp in order; raises on the first failure.

        Every phase is packed into one buffer with struct (see loader.maps.packer) and written with batch calls.
        """
        m = self.maps
        # the datapath passes traffic to a /16 marked foreign without looking further: the first apply
        # rebuilds the bitmap from what the maps hold, and every new address is unmarked before it is written
        # likewise to_pod passes traffic from a port marked quiet (no backend on it)
        if not self._foreign_ready:
            m.rebuild_foreign(self._read_addresses)
            m.rebuild_quiet_ports(self._read_ports)
            self._foreign_ready = True
            log.info("foreign prefixes and quiet ports rebuilt addresses=%s",
                     "scanned" if self._read_addresses is None else len(self._read_addresses))
        if wp.address_puts:
            m.mark_service_addresses(wp.address_puts)
        if wp.backend_puts:
            m.mark_backend_ports(set(map(_BACKEND_PORT, map(itemgetter(1), wp.backend_puts))))
        if wp.stat_resets:  # per-CPU values: each element is one 8-byte-aligned value per possible CPU
            per_elem = m.svcstat.spec.value_size * bpfsys.possible_cpus()
            m.svcstat.put_raw(_u32_array(wp.stat_resets), bytes(per_elem * len(wp.stat_resets)), value_size=per_elem)
        be32 = _memo(socket.inet_aton)
        htons = socket.htons
        svc_key_, svc_val = _SVC_KEY_W.pack, _SVC_VAL.pack
        if wp.backend_puts:
            m.backend.put_raw(*_pack_backends(wp.backend_puts))
        if wp.slot_puts:
            m.svc.put_raw(*_pack_slots(wp.slot_puts, be32))
        if wp.address_puts:
            m.svc.put_raw(b"".join([svc_key_(be32(a), 0, 0, 0, 0) for a in wp.address_puts]),
                          svc_val(0, 0, 0, 0, SVC_F_ADDR) * len(wp.address_puts))
        if wp.frontend_puts:
            m.svc.put_raw(b"".join([svc_key_(be32(k.addr), htons(k.port), 0, k.proto, k.scope)
                                    for k, _ in wp.frontend_puts]),
                          b"".join([svc_val(0, len(e.backend_ids), e.svc_id, e.affinity_timeout, e.flags)
                                    for _, e in wp.frontend_puts]))
        if wp.name_puts:
            name = _NAME.pack  # pads with zeros: the name stays NUL-terminated
            m.svcname.put_raw(_u32_array(map(itemgetter(0), wp.name_puts)),
                              b"".join([name(n.encode()[:_NAME_MAX]) for _, n in wp.name_puts]))
        if wp.frontend_deletes:
            m.svc.delete_raw(b"".join([svc_key_(be32(k.addr), htons(k.port), 0, k.proto, k.scope)
                                       for k in wp.frontend_deletes]))
        if wp.slot_deletes:
            keys = bytearray()
            for fkey, dels in groupby(wp.slot_deletes, key=itemgetter(0)):
                addr, port, proto, scope = be32(fkey.addr), htons(fkey.port), fkey.proto, fkey.scope
                keys += b"".join([svc_key_(addr, port, s, proto, scope) for _, s in dels])
            m.svc.delete_raw(keys)
        if wp.address_deletes:
            m.svc.delete_raw(b"".join([svc_key_(be32(a), 0, 0, 0, 0) for a in wp.address_deletes]))
        if wp.backend_deletes:
            m.backend.delete_raw(_u32_array(wp.backend_deletes))
        if wp.name_deletes:
            m.svcname.delete_raw(_u32_array(wp.name_deletes))
        if wp.affinity_purges:
            purge = set(wp.affinity_purges)
            stale: list[AffinityKey] = [k for k in m.affinity.keys() if k.svc_id in purge]  # noqa: SIM118
            m.affinity.delete_many(stale)


def _u32_array(values: Iterable[int]) -> bytes:
    """values packed as native u32 (a map key of ids), without a struct call per value."""
    return array(_U32_CODE, values).tobytes()


def _pack_backends(puts: Sequence[tuple[int, BackendEntry]]) -> tuple[bytes, bytes | bytearray]:
    """Keys (ids) and struct backend values of backend puts, packed.

    Bulk (a full sync): backends in id order come in runs of one service (same port, protocol, flags and
    svc id); the values of a run are its addresses joined around the one tail they share, no struct call
    per backend. A few puts (a partial sync) are packed one by one, which costs less for them.
    """
    aton = socket.inet_aton  # backend addresses rarely recur: no cache
    if len(puts) < _BULK_MIN:
        htons, backend = socket.htons, _BACKEND_W.pack
        return (b"".join([_U32.pack(i) for i, _ in puts]),
                b"".join([backend(aton(b.addr), htons(b.port), b.proto, b.flags, b.svc_id) for _, b in puts]))
    values = bytearray()
    addr_of = _BACKEND_ADDR
    for (port, proto, flags, svc_id), run in groupby(map(itemgetter(1), puts), key=_BACKEND_TAIL_FIELDS):
        tail = _BACKEND_TAIL.pack(socket.htons(port), proto, flags, svc_id)
        values += tail.join(map(aton, map(addr_of, run)))
        values += tail
    return _u32_array(map(itemgetter(0), puts)), values  # put_raw uses a bytearray without a copy


def _pack_slots(slots: Sequence[SlotWrite], be32: Callable[[str], bytes]) -> tuple[bytearray, bytes]:
    """Keys and struct svc_val values of backend slot writes, packed; be32: address -> 4 network-order bytes.

    A frontend's slots come together. Bulk (a full sync): the keys of one frontend differ only in the slot
    field, so they are the bytes before it (head) and after it (tail) joined around each slot's 2 bytes; the
    values (backend_id, svc_id, the rest zero) are packed column by column. A few writes (a partial sync)
    are packed one by one, which costs less for them.
    """
    htons, keys = socket.htons, bytearray()
    if len(slots) < _BULK_MIN:
        svc_key, svc_val = _SVC_KEY_W.pack, _SVC_VAL.pack
        for fkey, group in groupby(slots, key=itemgetter(0)):
            addr, port, proto, scope = be32(fkey.addr), htons(fkey.port), fkey.proto, fkey.scope
            keys += b"".join([svc_key(addr, port, s.slot, proto, scope) for s in group])
        return keys, b"".join([svc_val(s.backend_id, 0, s.svc_id, 0, 0) for s in slots])
    slot_bytes = _memo(_SLOT.pack)
    for fkey, group in groupby(slots, key=_SLOT_KEY):
        head, tail = _SLOT_HEAD.pack(be32(fkey.addr), htons(fkey.port)), _SLOT_TAIL.pack(fkey.proto, fkey.scope)
        keys += head
        keys += (tail + head).join(map(slot_bytes, map(_SLOT_NUMBER, group)))
        keys += tail
    words = array(_U32_CODE, bytes(_SVC_VAL.size * len(slots)))
    stride = _SVC_VAL.size // words.itemsize
    words[_SLOT_BACKEND_WORD::stride] = array(_U32_CODE, map(_SLOT_BACKEND_ID, slots))
    words[_SLOT_SVC_ID_WORD::stride] = array(_U32_CODE, map(_SLOT_SVC_ID, slots))
    return keys, words.tobytes()


def _fkey(raw: tuple[int, int, int, int], ip_of: Callable[[int], str]) -> FrontendKey:
    """The FrontendKey of a packed (addr, port, proto, scope) in network order."""
    addr, port, proto, scope = raw
    return FrontendKey(ip_of(addr), socket.ntohs(port), proto, scope)


def _memo(fn: Callable[[K], V]) -> Callable[[K], V]:
    """fn remembering its answers for the length of one read or apply (addresses recur there).

    A repeated key costs one dict lookup in C (the answers live in a dict whose __missing__ calls fn).
    """
    return _Memo(fn).__getitem__


class _Memo(dict[K, V]):
    """The cache behind _memo: a dict that fills itself with fn(key) on a miss."""

    def __init__(self, fn: Callable[[K], V]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key: K) -> V:
        value = self[key] = self.fn(key)
        return value
