"""Fixtures of the BPF_PROG_TEST_RUN tests: a harness running from_pod / to_pod and reading counters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bpfproxy.loader.build import Datapath
from bpfproxy.loader.maps import DatapathMaps
from packets import Harness


@pytest.fixture()
def h(datapath: Datapath, maps: DatapathMaps) -> Iterator[Harness]:
    """A harness on emptied maps (the service CIDRs too), no foreign prefix known, zeroed counters."""
    maps.reset_foreign()
    maps.set_service_cidrs([])
    yield Harness(datapath, maps)
