"""Python view of every struct in bpf/include/structs.h and of the constants in consts.h.

Place in the data flow: the sync turns plan entries into these ctypes structs and hands them to
loader.maps; inspection reads them back. tests/bpf/test_layout.py checks each one against the
layout bcc compiled, so this file and the C header cannot drift apart silently.
"""

from __future__ import annotations

import ctypes as ct
import re
from enum import IntEnum
from functools import cache
from pathlib import Path

#: folder of the C sources, both in a checkout and in an installed package
BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"


class SvcKey(ct.Structure):
    """struct svc_key: one frontend (address, port, protocol, scope) and a slot."""

    _fields_ = [
        ("addr", ct.c_uint32),  # network order
        ("port", ct.c_uint16),  # network order
        ("slot", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("scope", ct.c_uint8),
        ("pad", ct.c_uint8 * 2),
    ]


class SvcVal(ct.Structure):
    """struct svc_val: slot 0 describes the frontend; other slots name a backend."""

    _fields_ = [
        ("backend_id", ct.c_uint32),
        ("count", ct.c_uint32),
        ("svc_id", ct.c_uint32),
        ("affinity_timeout", ct.c_uint32),
        ("flags", ct.c_uint16),
        ("pad", ct.c_uint16),
    ]


class Backend(ct.Structure):
    """struct backend: where a backend id sends packets."""

    _fields_ = [
        ("addr", ct.c_uint32),  # network order
        ("port", ct.c_uint16),  # network order
        ("proto", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("svc_id", ct.c_uint32),
    ]


class CtKey(ct.Structure):
    """struct ct_key: a flow tuple and its direction."""

    _fields_ = [
        ("saddr", ct.c_uint32),
        ("daddr", ct.c_uint32),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("dir", ct.c_uint8),
        ("pad", ct.c_uint8 * 2),
    ]


class CtEntry(ct.Structure):
    """struct ct_entry: the translation recorded for a flow."""

    _fields_ = [
        ("expires", ct.c_uint64),
        ("backend_id", ct.c_uint32),
        ("svc_id", ct.c_uint32),
        ("nat_addr", ct.c_uint32),
        ("nat_port", ct.c_uint16),
        ("tcp_flags", ct.c_uint8),
        ("pad", ct.c_uint8),
    ]


class AffinityKey(ct.Structure):
    """struct affinity_key: a frontend and a client address."""

    _fields_ = [("svc_id", ct.c_uint32), ("client", ct.c_uint32)]


class AffinityVal(ct.Structure):
    """struct affinity_val: the backend a client sticks to, and when it was last used."""

    _fields_ = [("last_used", ct.c_uint64), ("backend_id", ct.c_uint32), ("pad", ct.c_uint32)]


class SvcStats(ct.Structure):
    """struct svc_stats: packets and bytes forwarded per frontend (per CPU)."""

    _fields_ = [("packets", ct.c_uint64), ("bytes", ct.c_uint64)]


class VerdictCount(ct.Structure):
    """struct verdict_count: packets that got one verdict (per CPU)."""

    _fields_ = [("packets", ct.c_uint64)]


class FragKey(ct.Structure):
    """struct frag_key: one fragmented datagram."""

    _fields_ = [
        ("saddr", ct.c_uint32),
        ("daddr", ct.c_uint32),
        ("id", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("pad", ct.c_uint8),
    ]


class FragVal(ct.Structure):
    """struct frag_val: ports of a fragmented datagram, from its first fragment."""

    _fields_ = [("expires", ct.c_uint64), ("sport", ct.c_uint16), ("dport", ct.c_uint16), ("pad", ct.c_uint32)]


class SvcCidrKey(ct.Structure):
    """struct svc_cidr_key: an IPv4 prefix in the kernel's lpm_trie layout."""

    _fields_ = [("prefixlen", ct.c_uint32), ("addr", ct.c_uint32)]  # addr in network order


class SvcCidrVal(ct.Structure):
    """struct svc_cidr_val: the value of a service CIDR (reserved flags, zero)."""

    _fields_ = [("flags", ct.c_uint32)]


class ForeignWord(ct.Structure):
    """struct foreign_word: 64 bits of the foreign-prefix bitmap (bit set: that /16 is not service space)."""

    _fields_ = [("bits", ct.c_uint64)]


class SvcName(ct.Structure):
    """struct svc_name: "namespace/name:port/proto" of a frontend, for inspection."""

    _fields_ = [("name", ct.c_char * 128)]


#: C struct name -> Python mirror, for the layout test
STRUCTS: dict[str, type[ct.Structure]] = {
    "svc_key": SvcKey,
    "svc_val": SvcVal,
    "backend": Backend,
    "ct_key": CtKey,
    "ct_entry": CtEntry,
    "affinity_key": AffinityKey,
    "affinity_val": AffinityVal,
    "svc_stats": SvcStats,
    "verdict_count": VerdictCount,
    "frag_key": FragKey,
    "frag_val": FragVal,
    "svc_name": SvcName,
    "svc_cidr_key": SvcCidrKey,
    "svc_cidr_val": SvcCidrVal,
    "foreign_word": ForeignWord,
}


@cache
def _consts_text() -> str:
    return (BPF_DIR / "include" / "consts.h").read_text()


@cache
def c_define(name: str) -> int:
    """The integer value of `#define NAME value` in consts.h (simple expressions only)."""
    m = re.search(rf"^#define {name} (.+?)(?:\s*/\*.*)?$", _consts_text(), re.M)
    if not m:
        raise KeyError(name)
    expr = m.group(1).replace("ULL", "").replace("U", "")
    value = eval(expr, {"__builtins__": {}}, {})  # consts.h holds literals and shifts only
    return int(value)


def _parse_verdicts() -> dict[str, int]:
    body = re.search(r"enum verdict \{(.*?)\};", _consts_text(), re.S)
    assert body, "enum verdict missing from consts.h"
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(V_\w+) = (\d+),", body.group(1), re.M)}


_VERDICTS = _parse_verdicts()
#: number of verdicts (V_MAX)
VERDICT_COUNT = _VERDICTS.pop("V_MAX")
#: every verdict of the datapath, by the names of consts.h (V_ prefix dropped)
Verdict = IntEnum("Verdict", {k[2:]: v for k, v in _VERDICTS.items()})  # type: ignore[misc]

SVC_F_AFFINITY = c_define("SVC_F_AFFINITY")
SVC_F_DROP_NO_EP = c_define("SVC_F_DROP_NO_EP")
SVC_F_ADDR = c_define("SVC_F_ADDR")
BE_F_TERMINATING = c_define("BE_F_TERMINATING")
SVC_SCOPE_EXT = c_define("SVC_SCOPE_EXT")
SVC_SCOPE_INT = c_define("SVC_SCOPE_INT")
CT_DIR_FWD = c_define("CT_DIR_FWD")
CT_DIR_REPLY = c_define("CT_DIR_REPLY")
SVC_NAME_LEN = c_define("SVC_NAME_LEN")
SVC_CIDR_MAX = c_define("SVC_CIDR_MAX")
FOREIGN_WORDS = c_define("FOREIGN_WORDS")
QUIET_PORT_WORDS = c_define("QUIET_PORT_WORDS")
