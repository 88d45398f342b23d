"""The only writer of the service maps: executes a WritePlan, and reads the maps back as a state.

Place in the data flow: the last stage. `MapsWriter.apply()` runs the phases of a diff.WritePlan
in order with batched writes (put_many / delete_many), converting addresses and ports to network
byte order. `read_applied()` rebuilds a plan.DatapathState (ids, counts, names, address entries)
from the pinned maps, so a restarted agent takes what is there as applied and writes only the
difference. Any failure raises; the proxier then re-reads the maps and does a full sync.
"""

from __future__ import annotations

import ctypes as ct
import logging
import socket
import struct

from bpfproxy.controller.diff import WritePlan
from bpfproxy.controller.plan import BackendEntry, DatapathState, FrontendEntry, FrontendKey
from bpfproxy.loader import bpfsys
from bpfproxy.loader.maps import DatapathMaps
from bpfproxy.loader.structs import SVC_F_ADDR, SVC_NAME_LEN, AffinityKey, Backend, SvcKey, SvcName, SvcVal

log = logging.getLogger(__name__)


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


def _name(value: str) -> SvcName:
    raw = value.encode()[: SVC_NAME_LEN - 1]
    return SvcName(name=raw)


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
        """The state the maps hold now: frontends, slots, backends, names, address entries."""
        m = self.maps
        state = DatapathState()
        names = {int(k.value): bytes(v.name).split(b"\0", 1)[0].decode(errors="replace")
                 for k, v in m.svcname.items()}
        state.names = dict(names)
        masters: dict[FrontendKey, SvcVal] = {}
        slots: dict[FrontendKey, dict[int, int]] = {}
        for k, v in m.svc.items():
            addr = be32_to_ip(k.addr)
            if k.proto == 0 and k.port == 0 and k.slot == 0:
                if v.flags & SVC_F_ADDR:
                    state.addresses.add(addr)
                continue
            fkey = FrontendKey(addr, socket.ntohs(k.port), int(k.proto), int(k.scope))
            if k.slot == 0:
                masters[fkey] = SvcVal.from_buffer_copy(v)
            else:
                slots.setdefault(fkey, {})[int(k.slot)] = int(v.backend_id)
        extra_addresses = set(state.addresses)
        state.addresses = set()
        for fkey, v in sorted(masters.items(), key=lambda kv: kv[1].svc_id):
            have = slots.pop(fkey, {})
            count = int(v.count)
            ids = tuple(have.get(i, 0) for i in range(1, count + 1))
            state.stray_slots |= {(fkey, s) for s in have if not 1 <= s <= count}
            svc_id = int(v.svc_id)
            name = names.get(svc_id, f"?/unnamed:{svc_id}/?")
            if svc_id in state.svc_ids():
                log.warning("two frontends share an id svc_id=%d frontend=%s; it will be rewritten", svc_id, fkey)
                state.stray_slots.add((fkey, 0))
                continue
            state.svc_id_alloc.reserve(svc_id)
            state.add_frontend(fkey, FrontendEntry(svc_id, name, int(v.flags), int(v.affinity_timeout), ids))
        for fkey, rest in slots.items():
            state.stray_slots |= {(fkey, s) for s in rest}
        state.addresses |= extra_addresses
        # every address the maps route (address entries and frontends, stray ones included): none may be foreign
        self._read_addresses = set(state.addresses) | {k.addr for k in masters} | {k.addr for k, _ in state.stray_slots}
        self._read_ports = {b.port for b in state.backends.values()}
        for bkey, b in sorted(m.backend.items(), key=lambda kv: int(kv[0].value)):
            ident = int(bkey.value)
            state.backend_id_alloc.reserve(ident)
            state.add_backend(ident, BackendEntry(be32_to_ip(b.addr), socket.ntohs(b.port), int(b.proto),
                                                  int(b.flags), int(b.svc_id)))
        return state

    def apply(self, wp: WritePlan) -> None:
        """Execute the phases of wp in order; raises on the first failure."""
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
            m.mark_backend_ports({b.port for _, b in wp.backend_puts})
        if wp.stat_resets:
            zero = (m.svcstat.value_type * bpfsys.possible_cpus())()
            for ident in wp.stat_resets:
                bpfsys.update(m.svcstat.fd, ct.c_uint32(ident), zero)
        m.backend.put_many([
            (ct.c_uint32(i), Backend(addr=ip_to_be32(b.addr), port=socket.htons(b.port), proto=b.proto,
                                     flags=b.flags, svc_id=b.svc_id))
            for i, b in wp.backend_puts
        ])
        m.svc.put_many([(svc_key(s.key, s.slot), SvcVal(backend_id=s.backend_id, svc_id=s.svc_id))
                        for s in wp.slot_puts])
        m.svc.put_many([(address_key(a), SvcVal(flags=SVC_F_ADDR)) for a in wp.address_puts])
        m.svc.put_many([
            (svc_key(k, 0), SvcVal(backend_id=0, count=len(e.backend_ids), svc_id=e.svc_id,
                                   affinity_timeout=e.affinity_timeout, flags=e.flags))
            for k, e in wp.frontend_puts
        ])
        m.svcname.put_many([(ct.c_uint32(i), _name(n)) for i, n in wp.name_puts])
        m.svc.delete_many([svc_key(k, 0) for k in wp.frontend_deletes])
        m.svc.delete_many([svc_key(k, s) for k, s in wp.slot_deletes])
        m.svc.delete_many([address_key(a) for a in wp.address_deletes])
        m.backend.delete_many([ct.c_uint32(i) for i in wp.backend_deletes])
        m.svcname.delete_many([ct.c_uint32(i) for i in wp.name_deletes])
        if wp.affinity_purges:
            purge = set(wp.affinity_purges)
            stale: list[AffinityKey] = [k for k in m.affinity.keys() if k.svc_id in purge]  # noqa: SIM118
            m.affinity.delete_many(stale)
