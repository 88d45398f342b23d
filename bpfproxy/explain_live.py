"""`explain --live`: run one crafted packet through the attached program and report what the kernel chose.

Place in the data flow: beside the datapath, never in it. The computed answer of `explain` comes
from controller/explain.py; this module asks the kernel: it finds the `from_pod` program attached
in the current network namespace (our tc filter slot), gets an fd for it by id, builds an
Ethernet/IPv4 packet SRC -> DST:PORT (a TCP SYN, a UDP datagram, or an SCTP common header) and runs
it once with BPF_PROG_TEST_RUN against the maps the program really uses (checked against
--pin-dir). The verdict comes from the return code and the output packet (DNAT to which backend,
reject reply, drop, pass); the verdict counter that moved names the datapath's reason.

No lasting effect on flows: the source port is one with no conntrack entry, and afterwards the
forward and reply conntrack entries the packet created are deleted, this client's session-affinity
entries are restored to what they were, and no fragment entry can appear (the packet is not a
fragment). Counters do move: one packet on the verdict counter and, when forwarded, on the
service's packet/byte counters.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any

from bpfproxy.controller.sync import ip_to_be32
from bpfproxy.inspect import verdicts
from bpfproxy.loader import bpfsys
from bpfproxy.loader.attach import list_attached
from bpfproxy.loader.build import PROG_FROM_POD
from bpfproxy.loader.maps import DatapathMaps
from bpfproxy.loader.structs import CT_DIR_FWD, CT_DIR_REPLY, AffinityKey, AffinityVal, CtKey
from bpfproxy.loader.testrun import TcAction, inet_checksum, run_tc

#: IP protocol numbers of the protocols a live packet can carry
LIVE_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}
#: MACs of the crafted frame (a pod's eth0 toward its host veth; the program does not look at them)
SRC_MAC, DST_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


class LiveError(RuntimeError):
    """explain --live cannot run: nothing attached here, maps missing or not the program's."""


@dataclass(frozen=True)
class LiveResult:
    """What the attached program did with the crafted packet."""

    program: str
    """which program ran: name, device and kernel id"""
    verdict: str
    """forward, reject, drop or pass, read from the return code and output packet"""
    reason: str
    """the datapath verdict counter that moved (e.g. fwd_new, reject_tcp_rst), "" when unclear"""
    backend: str | None
    """ "IP:PORT" the packet was rewritten to (forward only)"""
    sport: int
    """the source port used"""
    cleaned: tuple[str, ...]
    """the entries the run created and that were removed or restored afterwards"""

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"program": self.program, "verdict": self.verdict, "reason": self.reason, "backend": self.backend,
                "sport": self.sport, "cleaned": list(self.cleaned)}

    def text(self) -> str:
        """Human form, appended to explain's output."""
        lines = [f"  live:       {self.verdict}{f' ({self.reason})' if self.reason else ''}"
                 f"{f' -> {self.backend}' if self.backend else ''}",
                 f"              {self.program}, source port {self.sport}"]
        if self.cleaned:
            lines.append(f"              removed afterwards: {', '.join(self.cleaned)}")
        return "\n".join(lines)


def build_packet(src: str, dst: str, sport: int, dport: int, proto: str) -> bytes:
    """An Ethernet/IPv4 frame src:sport -> dst:dport: TCP SYN, UDP (8-byte payload) or SCTP common header."""
    number = LIVE_PROTOS[proto]
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    if number == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    elif number == 17:
        payload = b"bpfproxy"
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    else:
        l4 = struct.pack("!HHII", sport, dport, 0, 0)
    if number in (6, 17):
        pseudo = saddr + daddr + struct.pack("!BBH", 0, number, len(l4))
        csum = inet_checksum(pseudo + l4)
        offset = 16 if number == 6 else 6
        l4 = l4[:offset] + struct.pack("!H", csum or 0xFFFF) + l4[offset + 2:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x4242, 0x4000, 64, number, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return DST_MAC + SRC_MAC + b"\x08\x00" + ip + l4


def _attached_program(ifname: str | None) -> tuple[int, str]:
    progs = [p for p in list_attached() if p.name == PROG_FROM_POD and p.prog_id
             and (ifname is None or p.ifname == ifname)]
    if not progs:
        where = f" on {ifname}" if ifname else ""
        raise LiveError(f"no bpfproxy {PROG_FROM_POD} program is attached{where} in this network namespace "
                        "(run explain --live where the agent attached its programs)")
    prog = progs[0]
    assert prog.prog_id is not None
    return prog.prog_id, f"{PROG_FROM_POD} on {prog.ifname} (prog id {prog.prog_id})"


def run_live(pin_dir: str, src: str, dst: str, port: int, proto: str, *, ifname: str | None = None) -> LiveResult:
    """Run one crafted packet src -> dst:port through the attached from_pod program; leave no flow state."""
    proto = proto.lower()
    if proto not in LIVE_PROTOS:
        raise LiveError(f"protocol {proto!r}: tcp, udp or sctp")
    prog_id, label = _attached_program(ifname)
    try:
        prog_fd = bpfsys.prog_get_fd_by_id(prog_id)
    except bpfsys.BpfError as e:
        raise LiveError(f"cannot open program id {prog_id}: {e}") from None
    try:
        try:
            maps = DatapathMaps(pin_dir)
        except (bpfsys.BpfError, RuntimeError) as e:
            raise LiveError(f"cannot open the pinned maps in {pin_dir}: {e}") from None
        with maps:
            used = set(bpfsys.prog_info(prog_fd).map_ids)
            ct_id = int(bpfsys.map_info(maps.ct.fd).id)
            if ct_id not in used:
                raise LiveError(f"the attached program (id {prog_id}) does not use the maps pinned in {pin_dir}")
            return _run(maps, prog_fd, label, src, dst, port, proto)
    finally:
        os.close(prog_fd)


def _run(maps: DatapathMaps, prog_fd: int, label: str, src: str, dst: str, port: int, proto: str) -> LiveResult:
    number = LIVE_PROTOS[proto]
    client = ip_to_be32(src)
    for _ in range(64):
        sport = random.randint(32768, 60999)
        fwd = CtKey(saddr=client, daddr=ip_to_be32(dst), sport=socket.htons(sport), dport=socket.htons(port),
                    proto=number, dir=CT_DIR_FWD)  # fmt: skip
        if maps.ct.get(fwd) is None:
            break
    else:
        raise LiveError("no free source port without a conntrack entry")
    affinity_before = {int(k.svc_id): bytes(v) for k, v in maps.affinity.items() if k.client == client}
    counts_before = verdicts(maps)

    run = run_tc(prog_fd, build_packet(src, dst, sport, port, proto))

    counts_after = verdicts(maps)
    moved = [name for name, n in counts_after.items() if n != counts_before.get(name, 0)]
    reason = moved[0] if len(moved) == 1 else ""
    cleaned: list[str] = []
    entry = maps.ct.get(fwd)
    if entry is not None:
        reply = CtKey(saddr=entry.nat_addr, daddr=client, sport=entry.nat_port, dport=socket.htons(sport), proto=number,
                      dir=CT_DIR_REPLY)
        if maps.ct.delete(reply):
            cleaned.append("conntrack reply entry")
        if maps.ct.delete(fwd):
            cleaned.append("conntrack forward entry")
    affinity_after = {int(k.svc_id): bytes(v) for k, v in maps.affinity.items() if k.client == client}
    for svc_id, value in affinity_after.items():
        key = AffinityKey(svc_id=svc_id, client=client)
        old = affinity_before.get(svc_id)
        if old is None:
            maps.affinity.delete(key)
            cleaned.append(f"affinity entry of svc id {svc_id}")
        elif old != value:
            maps.affinity.put(key, AffinityVal.from_buffer_copy(old))
            cleaned.append(f"affinity entry of svc id {svc_id} (restored)")
    verdict, backend = _read_verdict(run.action, run.packet, dst, port, proto)
    return LiveResult(program=label, verdict=verdict, reason=reason, backend=backend, sport=sport,
                      cleaned=tuple(cleaned))


def _read_verdict(action: int, packet: bytes, dst: str, port: int, proto: str) -> tuple[str, str | None]:
    if action == TcAction.SHOT:
        return "drop", None
    if action == TcAction.REDIRECT:
        return "reject", None
    if action != TcAction.OK or len(packet) < 34:
        return f"unknown (tc action {action})", None
    daddr = socket.inet_ntoa(packet[30:34])
    ihl = (packet[14] & 0x0F) * 4
    dport = struct.unpack("!H", packet[14 + ihl + 2:14 + ihl + 4])[0] if proto != "sctp" else port
    if daddr == dst and dport == port:
        return "pass", None
    return "forward", f"{daddr}:{dport}"
