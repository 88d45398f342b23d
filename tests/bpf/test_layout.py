"""The Python mirror of every map key and value matches the layout bcc compiled from structs.h."""

from __future__ import annotations

import ctypes as ct
from typing import Any

import pytest
from bpfproxy.loader.build import Datapath, DatapathBuildError, check_layouts, ctype_layout
from bpfproxy.loader.maps import ALL_MAPS, BATCH_CHUNK, SVC, MapSpec, packer
from bpfproxy.loader.structs import Backend


@pytest.mark.parametrize("spec", ALL_MAPS, ids=lambda s: s.name)
def test_map_layout_matches_c(datapath: Datapath, spec: MapSpec) -> None:
    """The layouts the compile child read from bcc's tables equal loader.structs (load_datapath checks this too)."""
    key, value = datapath.layouts[spec.name]
    assert ctype_layout(spec.key) == key, f"{spec.name} key"
    assert ctype_layout(spec.value) == value, f"{spec.name} value"


def test_a_layout_mismatch_is_refused_naming_the_map(datapath: Datapath) -> None:
    layouts = dict(datapath.layouts)
    key, (size, fields) = layouts[SVC.name]
    layouts[SVC.name] = (key, (size + 4, fields))
    with pytest.raises(DatapathBuildError) as err:
        check_layouts(layouts)
    assert "bpx_svc_v1 value" in str(err.value) and "structs.py" in str(err.value)


@pytest.mark.parametrize("ctype", sorted({t for s in ALL_MAPS for t in (s.key, s.value)}, key=lambda t: t.__name__),
                         ids=lambda t: t.__name__)
def test_packer_packs_the_ctypes_bytes(ctype: Any) -> None:
    """loader.maps.packer (bulk writes and reads) gives byte for byte what the ctypes mirror gives."""
    packed, names = packer(ctype)
    if names == ("value",) and not hasattr(ctype, "_fields_"):
        assert packed.pack(0x01020304) == bytes(ctype(0x01020304))
        return
    values = {}
    for i, name in enumerate(names):
        field = getattr(ctype, name)
        values[name] = b"web" if field.size > 8 else (i * 37 + 1) % (1 << (8 * field.size))
    assert packed.pack(*(values[n] for n in names)) == bytes(ctype(**values))
    assert packed.unpack(bytes(ctype(**values)))[: len(names)] == tuple(
        values[n].ljust(getattr(ctype, n).size, b"\0") if isinstance(values[n], bytes) else values[n] for n in names)


def test_batch_read_and_raw_delete(maps: Any) -> None:
    """read_raw (BPF_MAP_LOOKUP_BATCH, several chunks) sees every entry; delete_raw skips absent keys."""
    n = BATCH_CHUNK + 100
    u32 = packer(ct.c_uint32)[0]
    maps.backend.put_raw(b"".join(u32.pack(i) for i in range(1, n + 1)),
                         b"".join(bytes(Backend(addr=i, port=80, svc_id=1)) for i in range(1, n + 1)))
    keys, values = maps.backend.read_raw()
    got = {k: v for (k,), v in zip(u32.iter_unpack(keys), packer(Backend)[0].iter_unpack(values), strict=True)}
    assert len(got) == n and got[5][0] == 5 and {v[4] for v in got.values()} == {1}
    assert len(list(maps.backend.keys())) == n
    gone = maps.backend.delete_raw(b"".join(u32.pack(i) for i in (1, 999999, 2, 888888, 3)))
    assert gone == 3 and len(maps.backend.read_raw()[0]) == (n - 3) * 4
