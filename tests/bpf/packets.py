"""Packet builders and map seeding for the BPF_PROG_TEST_RUN tests.

Input and expected packets are both built with scapy, independently of the program: scapy computes
every checksum of the expected packet, and the tests compare bytes exactly.
"""

from __future__ import annotations

import ctypes as ct
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bpfproxy.loader.build import PROG_FROM_POD, PROG_TO_POD, Datapath
from bpfproxy.loader.maps import DatapathMaps
from bpfproxy.loader.structs import SVC_F_ADDR, SVC_SCOPE_EXT, Backend, CtEntry, CtKey, SvcKey, SvcVal, Verdict
from bpfproxy.loader.testrun import TcRun, run_tc
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

#: mac of the pod's eth0 (source of packets leaving the pod)
POD_MAC = "02:00:00:00:00:01"
#: mac of the host side of the pod's veth
HOST_MAC = "02:00:00:00:00:02"
#: the client pod
CLIENT = "10.244.1.10"
#: a ClusterIP frontend
FRONTEND = "10.96.0.10"
#: an address that is no frontend (another pod)
OTHER = "10.244.2.20"
#: backend pods
BACKENDS = ("10.244.3.1", "10.244.3.2", "10.244.3.3")

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def n32(addr: str) -> int:
    """An IPv4 address as the c_uint32 of a struct field holding it in network order."""
    return int(struct.unpack("=I", socket.inet_aton(addr))[0])


def n16(port: int) -> int:
    """A port as the c_uint16 of a struct field holding it in network order."""
    return int(struct.unpack("=H", struct.pack("!H", port))[0])


def a32(value: int) -> str:
    """Inverse of n32."""
    return socket.inet_ntoa(struct.pack("=I", value))


def h16(value: int) -> int:
    """Inverse of n16."""
    return int(struct.unpack("!H", struct.pack("=H", value))[0])


def eth(src: str = POD_MAC, dst: str = HOST_MAC) -> Ether:
    """An Ethernet header from the pod to the host."""
    return Ether(src=src, dst=dst)


def tcp(
    src: str = CLIENT,
    dst: str = FRONTEND,
    sport: int = 40000,
    dport: int = 80,
    *,
    flags: str = "S",
    seq: int = 1000,
    ack: int = 0,
    payload: bytes = b"",
    ip_options: Sequence[object] = (),
    ip_id: int = 7,
    frag: int = 0,
    ip_flags: int = 0,
) -> Packet:
    """An Ethernet/IPv4/TCP frame with correct checksums."""
    ip = IP(src=src, dst=dst, id=ip_id, ttl=63, options=list(ip_options), frag=frag, flags=ip_flags)
    return eth() / ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=512) / payload


def udp(
    src: str = CLIENT,
    dst: str = FRONTEND,
    sport: int = 40000,
    dport: int = 53,
    *,
    payload: bytes = b"query",
    chksum: int | None = None,
    ip_options: Sequence[object] = (),
    ip_id: int = 7,
) -> Packet:
    """An Ethernet/IPv4/UDP frame (chksum=0: no UDP checksum)."""
    ip = IP(src=src, dst=dst, id=ip_id, ttl=63, options=list(ip_options))
    return eth() / ip / UDP(sport=sport, dport=dport, chksum=chksum) / payload


def icmp(
    src: str = CLIENT, dst: str = FRONTEND, *, type_: int = 8, code: int = 0, payload: bytes = b"ping1234"
) -> Packet:
    """An Ethernet/IPv4/ICMP frame."""
    return eth() / IP(src=src, dst=dst, id=7, ttl=63) / ICMP(type=type_, code=code, id=1, seq=1) / payload


def rebuilt(pkt: Packet, **ip_changes: object) -> bytes:
    """pkt with IP fields and/or L4 ports changed, every checksum recomputed by scapy.

    Keys: ip_src, ip_dst, sport, dport. A zero UDP checksum stays zero.
    """
    p = pkt.copy()
    if "ip_src" in ip_changes:
        p[IP].src = ip_changes["ip_src"]
    if "ip_dst" in ip_changes:
        p[IP].dst = ip_changes["ip_dst"]
    del p[IP].chksum
    l4 = p.getlayer(TCP) or p.getlayer(UDP)
    if l4 is not None:
        if "sport" in ip_changes:
            l4.sport = ip_changes["sport"]
        if "dport" in ip_changes:
            l4.dport = ip_changes["dport"]
        if not (UDP in p and pkt[UDP].chksum == 0):
            del l4.chksum
    return bytes(p)


@dataclass
class Svc:
    """One frontend to seed: its slot-0 entry, backend slots, backends and address entry."""

    addr: str = FRONTEND
    port: int = 80
    proto: int = IPPROTO_TCP
    svc_id: int = 1
    backends: Sequence[tuple[int, str, int]] = field(default_factory=list)
    """(backend id, address, port) per slot, in slot order"""
    flags: int = 0
    affinity_timeout: int = 0
    addr_entry: bool = True
    """also write the address entry (port 0, proto 0) of addr"""
    terminating: Sequence[int] = ()
    """backend ids written with BE_F_TERMINATING (and no slot)"""


def svc_key(addr: str, port: int, proto: int, slot: int = 0) -> SvcKey:
    """The service-map key of a frontend slot (scope external)."""
    return SvcKey(addr=n32(addr), port=n16(port), slot=slot, proto=proto, scope=SVC_SCOPE_EXT)


def seed(maps: DatapathMaps, svc: Svc) -> None:
    """Write svc into the maps in make-before-break order: backends, slots, frontend, address entry."""
    from ctypes import c_uint32

    from bpfproxy.loader.structs import BE_F_TERMINATING

    maps.mark_backend_ports([port for _, _, port in svc.backends])
    for bid, addr, port in svc.backends:
        flags = BE_F_TERMINATING if bid in svc.terminating else 0
        maps.backend.put(
            c_uint32(bid), Backend(addr=n32(addr), port=n16(port), proto=svc.proto, flags=flags, svc_id=svc.svc_id)
        )
    live = [b for b in svc.backends if b[0] not in svc.terminating]
    for slot, (bid, _, _) in enumerate(live, start=1):
        maps.svc.put(svc_key(svc.addr, svc.port, svc.proto, slot), SvcVal(backend_id=bid, svc_id=svc.svc_id))
    maps.svc.put(
        svc_key(svc.addr, svc.port, svc.proto),
        SvcVal(count=len(live), svc_id=svc.svc_id, affinity_timeout=svc.affinity_timeout, flags=svc.flags),
    )
    if svc.addr_entry:
        maps.mark_service_addresses([svc.addr])
        maps.svc.put(SvcKey(addr=n32(svc.addr)), SvcVal(flags=SVC_F_ADDR))


def ct_key(saddr: str, daddr: str, sport: int, dport: int, proto: int, direction: int) -> CtKey:
    """A conntrack key."""
    return CtKey(saddr=n32(saddr), daddr=n32(daddr), sport=n16(sport), dport=n16(dport), proto=proto, dir=direction)


def ct_get(maps: DatapathMaps, key: CtKey) -> CtEntry | None:
    """The conntrack entry of key, if any."""
    return maps.ct.get(key)


class Harness:
    """Runs packets through the programs and reads the per-CPU counters back, summed."""

    def __init__(self, datapath: Datapath, maps: DatapathMaps) -> None:
        self.dp = datapath
        self.maps = maps

    def from_pod(self, pkt: Packet | bytes) -> TcRun:
        """Run from_pod (packet leaving a pod) once."""
        return run_tc(self.dp.prog_fds[PROG_FROM_POD], bytes(pkt))

    def to_pod(self, pkt: Packet | bytes) -> TcRun:
        """Run to_pod (packet entering a pod) once."""
        return run_tc(self.dp.prog_fds[PROG_TO_POD], bytes(pkt))

    def verdicts(self) -> Counter[Verdict]:
        """Packets per verdict so far (zero counts left out)."""
        out: Counter[Verdict] = Counter()
        for v in Verdict:
            total = sum(c.packets for c in self.maps.verdict.get_percpu(ct.c_uint32(v)))
            if total:
                out[v] = total
        return out

    def svc_stats(self, svc_id: int) -> tuple[int, int]:
        """(packets, bytes) forwarded for frontend svc_id."""
        values = self.maps.svcstat.get_percpu(ct.c_uint32(svc_id))
        return sum(v.packets for v in values), sum(v.bytes for v in values)
