"""Run a tc program once (or N times) on one packet with BPF_PROG_TEST_RUN.

Place in the data flow: beside the datapath, never in it. The BPF tests (tests/bpf) and the
benchmarks feed a packet to `from_pod` / `to_pod` through `run_tc` and compare the verdict and the
output packet; the kernel runs the real program on a real skb, but nothing is sent anywhere (a
redirect only sets the return value).
"""

from __future__ import annotations

import ctypes as ct
import struct
from dataclasses import dataclass
from enum import IntEnum

from bpfproxy.loader import bpfsys


class TcAction(IntEnum):
    """The tc return codes our programs use (uapi/linux/pkt_cls.h)."""

    OK = 0
    """TC_ACT_OK: let the (possibly rewritten) packet continue"""
    SHOT = 2
    """TC_ACT_SHOT: drop"""
    REDIRECT = 7
    """TC_ACT_REDIRECT: bpf_redirect() was called (a reject goes back out of its device)"""


class SkBuff(ct.Structure):
    """struct __sk_buff (uapi/linux/bpf.h): the ctx of a tc program; the kernel reads a few fields in."""

    _fields_ = [
        ("len", ct.c_uint32),
        ("pkt_type", ct.c_uint32),
        ("mark", ct.c_uint32),
        ("queue_mapping", ct.c_uint32),
        ("protocol", ct.c_uint32),
        ("vlan_present", ct.c_uint32),
        ("vlan_tci", ct.c_uint32),
        ("vlan_proto", ct.c_uint32),
        ("priority", ct.c_uint32),
        ("ingress_ifindex", ct.c_uint32),
        ("ifindex", ct.c_uint32),
        ("tc_index", ct.c_uint32),
        ("cb", ct.c_uint32 * 5),
        ("hash", ct.c_uint32),
        ("tc_classid", ct.c_uint32),
        ("data", ct.c_uint32),
        ("data_end", ct.c_uint32),
        ("napi_id", ct.c_uint32),
        ("family", ct.c_uint32),
        ("remote_ip4", ct.c_uint32),
        ("local_ip4", ct.c_uint32),
        ("remote_ip6", ct.c_uint32 * 4),
        ("local_ip6", ct.c_uint32 * 4),
        ("remote_port", ct.c_uint32),
        ("local_port", ct.c_uint32),
        ("data_meta", ct.c_uint32),
        ("flow_keys", ct.c_uint64),
        ("tstamp", ct.c_uint64),
        ("wire_len", ct.c_uint32),
        ("gso_segs", ct.c_uint32),
        ("sk", ct.c_uint64),
        ("gso_size", ct.c_uint32),
        ("tstamp_type", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
        ("hwtstamp", ct.c_uint64),
    ]


@dataclass(frozen=True)
class TcRun:
    """The outcome of one test run."""

    action: int
    """the program's return value (compare with TcAction)"""
    packet: bytes
    """the packet as the program left it (Ethernet included)"""
    duration_ns: int
    """mean run time per repetition, ns (meaningful with repeat > 1 on a packet the program does not change)"""
    ctx: SkBuff | None
    """the ctx after the run, when one was passed in"""


def run_tc(prog_fd: int, packet: bytes, *, ctx: SkBuff | None = None, repeat: int = 1) -> TcRun:
    """Run the tc program prog_fd on packet (Ethernet frame) `repeat` times; returns the last run's result."""
    if len(packet) < 14:
        raise ValueError(f"a tc test packet needs an Ethernet header, got {len(packet)} bytes")
    out_size = max(4096, len(packet) + 256)
    retval, out, duration = bpfsys.test_run(prog_fd, packet, ctx=ctx, repeat=repeat, out_size=out_size)
    return TcRun(action=retval, packet=out, duration_ns=duration, ctx=ctx)


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data, for building the packets fed to run_tc."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)
