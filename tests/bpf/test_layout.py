"""The Python mirror of every map key and value matches the layout bcc compiled from structs.h."""

from __future__ import annotations

import pytest
from bpfproxy.loader.build import Datapath, DatapathBuildError, check_layouts, ctype_layout
from bpfproxy.loader.maps import ALL_MAPS, SVC, MapSpec


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
