"""Raw Ethernet/IPv4/TCP frames for B1, built with struct (thousands per second, checksums correct).

Place in the data flow: the input of B1. b1_packet writes these frames into a records file
(u16 length, frame) that the C driver bench-testrun feeds to BPF_PROG_TEST_RUN one by one, and
parses the frames the programs left to learn which backend a new flow was given.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator

from bpfproxy.loader.testrun import inet_checksum

#: TCP flag bits
SYN, RST, ACK = 0x02, 0x04, 0x10
#: source and destination MAC of every frame (the programs do not look at them)
SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def tcp_frame(saddr: str, daddr: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    """An Ethernet frame carrying an IPv4 TCP segment with valid IP and TCP checksums."""
    src, dst = socket.inet_aton(saddr), socket.inet_aton(daddr)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000 if flags & ACK else 0, 5 << 4, flags, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack("!H", inet_checksum(pseudo + tcp + payload)) + tcp[18:]
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return DST_MAC + SRC_MAC + b"\x08\x00" + ip + tcp + payload


def tcp_tuple(frame: bytes) -> tuple[str, str, int, int, int]:
    """(saddr, daddr, sport, dport, flags) of a frame made by tcp_frame (or rewritten by a program)."""
    ip = frame[14:34]
    ihl = (ip[0] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", frame[14 + ihl : 18 + ihl])
    flags = frame[14 + ihl + 13]
    return socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), sport, dport, flags


def write_records(frames: Iterable[bytes]) -> bytes:
    """The records format of bench-testrun: each frame preceded by its length (u16, host order)."""
    return b"".join(struct.pack("=H", len(f)) + f for f in frames)


def read_records(data: bytes) -> Iterator[bytes]:
    """Inverse of write_records."""
    off = 0
    while off + 2 <= len(data):
        (length,) = struct.unpack_from("=H", data, off)
        yield data[off + 2 : off + 2 + length]
        off += 2 + length
