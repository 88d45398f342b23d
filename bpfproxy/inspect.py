"""Read what the pinned maps hold now: frontends with backends and counters, conntrack, verdicts.

Place in the data flow: beside it, read-only. `bpfproxy services`, `conntrack` and `counters` open
the pinned maps by path (no compile, no agent needed) and print what the datapath uses this moment.
"""

from __future__ import annotations

import ctypes as ct
import socket
import time
from dataclasses import dataclass, field

from bpfproxy.controller.sync import MapsWriter, be32_to_ip
from bpfproxy.loader.maps import DatapathMaps
from bpfproxy.loader.structs import (
    BE_F_TERMINATING,
    CT_DIR_REPLY,
    SVC_F_AFFINITY,
    SVC_F_DROP_NO_EP,
    Verdict,
)

PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP"}


def _endpoint(addr_be: int, port_be: int) -> str:
    """IP:port of an address and port stored in network order."""
    return f"{be32_to_ip(addr_be)}:{socket.ntohs(port_be)}"


@dataclass
class BackendRow:
    """One backend slot of a frontend."""

    id: int
    """backend id"""
    address: str
    """IP:port"""
    terminating: bool
    """kept for existing flows only"""


@dataclass
class FrontendRow:
    """One frontend as the maps hold it."""

    name: str
    """namespace/name:port/proto"""
    frontend: str
    """IP:port/proto"""
    svc_id: int
    """frontend id"""
    scope: str
    """external or internal backend set"""
    affinity_timeout: int
    """seconds of ClientIP affinity (0: none)"""
    no_endpoints: str
    """what a new flow gets with no backend: reject or drop"""
    backends: list[BackendRow] = field(default_factory=list)
    """slots 1..count in order, then terminating backends"""
    packets: int = 0
    """packets forwarded (all CPUs)"""
    bytes: int = 0
    """bytes forwarded (all CPUs)"""


def frontends(maps: DatapathMaps) -> list[FrontendRow]:
    """Every frontend with its backends and per-service counters, sorted by name.

    The frontends and backends are read exactly as a restarting agent reads them (read_applied).
    """
    state = MapsWriter(maps).read_applied()
    rows = []
    for key, entry in state.frontends.items():
        row = FrontendRow(
            name=entry.name,
            frontend=f"{key.addr}:{key.port}/{PROTO_NAMES.get(key.proto, str(key.proto))}",
            svc_id=entry.svc_id,
            scope="internal" if key.scope else "external",
            affinity_timeout=entry.affinity_timeout if entry.flags & SVC_F_AFFINITY else 0,
            no_endpoints="drop" if entry.flags & SVC_F_DROP_NO_EP else "reject",
        )
        for bid in entry.backend_ids:
            be = state.backends.get(bid)
            row.backends.append(BackendRow(bid, f"{be.addr}:{be.port}" if be else "(missing)", False))
        for bid, be in sorted(state.backends.items()):
            if be.svc_id == entry.svc_id and be.flags & BE_F_TERMINATING:
                row.backends.append(BackendRow(bid, f"{be.addr}:{be.port}", True))
        for stat in maps.svcstat.get_percpu(ct.c_uint32(entry.svc_id)):
            row.packets += stat.packets
            row.bytes += stat.bytes
        rows.append(row)
    return sorted(rows, key=lambda r: (r.name, r.frontend))


@dataclass
class ConntrackRow:
    """One conntrack entry."""

    direction: str
    """forward (client to frontend) or reply (backend to client)"""
    proto: str
    """TCP, UDP, ..."""
    source: str
    """IP:port of the packet's source"""
    destination: str
    """IP:port of the packet's destination"""
    nat: str
    """forward: the backend it goes to; reply: the frontend it is rewritten back to"""
    backend_id: int
    """chosen backend id"""
    svc_id: int
    """frontend id"""
    expires_in: float
    """seconds until the entry is stale (negative: stale, kept until reused or evicted)"""
    closing: bool
    """TCP FIN or RST seen"""


def conntrack(maps: DatapathMaps) -> list[ConntrackRow]:
    """Every conntrack entry, forward ones first."""
    now = time.monotonic_ns()
    rows = []
    for key, val in maps.ct.items():
        rows.append(
            ConntrackRow(
                direction="reply" if key.dir == CT_DIR_REPLY else "forward",
                proto=PROTO_NAMES.get(key.proto, str(key.proto)),
                source=_endpoint(key.saddr, key.sport),
                destination=_endpoint(key.daddr, key.dport),
                nat=_endpoint(val.nat_addr, val.nat_port),
                backend_id=val.backend_id,
                svc_id=val.svc_id,
                expires_in=round((val.expires - now) / 1e9, 1),
                closing=bool(val.tcp_flags),
            )
        )
    return sorted(rows, key=lambda r: (r.direction, r.source, r.destination))


def verdicts(maps: DatapathMaps) -> dict[str, int]:
    """Packets per verdict, summed over CPUs, in enum order."""
    out = {}
    for verdict in Verdict:
        out[verdict.name.lower()] = sum(v.packets for v in maps.verdict.get_percpu(ct.c_uint32(verdict.value)))
    return out
