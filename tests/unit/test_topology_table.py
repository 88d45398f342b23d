"""categorize() against kube-proxy's TestCategorizeEndpoints rows.

Rows ported from kubernetes pkg/proxy/topology_test.go (TestCategorizeEndpoints, the version
without the hints annotation: every case's endpoints, hints, policies and expected cluster / local /
all endpoints and hasAnyEndpoints). The PreferSameNode rows and the four "externalTrafficPolicy:
Local, externally accessible" rows come from Antrea's port of the same upstream test
(antrea-io/antrea pkg/agent/proxy/topology_test.go), which follows the newer upstream topology.go
(node hints, PreferSameTrafficDistribution). We port the newest semantics only: the feature gate
is treated as on (GA upstream), so the "PreferSameNode falls back to same-zone when feature gate
disabled" row is kept as DEVIATION with the gate-on answer. The older hintsAnnotation rows ("auto",
"disabled", ...) belong to an upstream version that no longer exists and are not ported.

Expected sets follow the upstream convention: None = the port never uses that policy, set() = it
does but has none; `all` defaults to whichever of cluster/local is set when only one is; has_any is
len(all) > 0 unless `only_remote` says the service has endpoints elsewhere.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from bpfproxy.controller.topology import EndpointInfo, categorize


def e(ep: str, *, ready: bool = False, serving: bool = False, terminating: bool = False, local: bool = False,
      zones: tuple[str, ...] = (), nodes: tuple[str, ...] = ()) -> EndpointInfo:
    """BaseEndpointInfo{endpoint, ready, serving, terminating, isLocal, zoneHints, nodeHints} (unset = false)."""
    addr, port = ep.rsplit(":", 1)
    return EndpointInfo(addr, int(port), ready, serving, terminating, local, zones, nodes)


def r(ep: str, **kw: object) -> EndpointInfo:
    """A ready endpoint (ready and serving, as makeTestEndpointInfo builds it)."""
    return e(ep, ready=True, serving=True, **kw)  # type: ignore[arg-type]


class Case(NamedTuple):
    name: str
    endpoints: list[EndpointInfo]
    cluster: set[str] | None
    local: set[str] | None
    all: set[str] | None = None
    only_remote: bool = False
    itp_local: bool = False
    etp_local: bool = False
    node_port: int = 0
    zone: str = ""
    node: str = ""


ZA, ZB, ZC = ("zone-a",), ("zone-b",), ("zone-c",)
CASES = [
    Case("should use topology since all endpoints have hints, node has a zone label and and there are endpoints "
         "for the node's zone",
         [r("10.1.2.3:80", zones=ZA), r("10.1.2.4:80", zones=ZB), r("10.1.2.5:80", zones=ZC),
          r("10.1.2.6:80", zones=ZA)],
         {"10.1.2.3:80", "10.1.2.6:80"}, None, zone="zone-a"),
    Case("externalTrafficPolicy: Local, topology ignored for Local endpoints",
         [r("10.1.2.3:80", zones=ZA, local=True), r("10.1.2.4:80", zones=ZB, local=True),
          r("10.1.2.5:80", zones=ZC), r("10.1.2.6:80", zones=ZA)],
         {"10.1.2.3:80", "10.1.2.6:80"}, {"10.1.2.3:80", "10.1.2.4:80"}, {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"},
         etp_local=True, node_port=8080, zone="zone-a"),
    Case("internalTrafficPolicy: Local, topology ignored for Local endpoints",
         [r("10.1.2.3:80", zones=ZA, local=True), r("10.1.2.4:80", zones=ZB, local=True),
          r("10.1.2.5:80", zones=ZC), r("10.1.2.6:80", zones=ZA)],
         {"10.1.2.3:80", "10.1.2.6:80"}, {"10.1.2.3:80", "10.1.2.4:80"}, {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"},
         itp_local=True, node_port=8080, zone="zone-a"),
    Case("empty node labels", [r("10.1.2.3:80", zones=ZA)], {"10.1.2.3:80"}, None),
    Case("empty zone label", [r("10.1.2.3:80", zones=ZA)], {"10.1.2.3:80"}, None, zone=""),
    Case("node in different zone, no endpoint filtering", [r("10.1.2.3:80", zones=ZA)], {"10.1.2.3:80"}, None,
         zone="zone-b"),
    Case("unready endpoint",
         [r("10.1.2.3:80", zones=ZA), r("10.1.2.4:80", zones=ZB), r("10.1.2.5:80", zones=ZC),
          e("10.1.2.6:80", zones=ZA)],
         {"10.1.2.3:80"}, None, zone="zone-a"),
    Case("only unready endpoints in same zone (should not filter)",
         [e("10.1.2.3:80", zones=ZA), r("10.1.2.4:80", zones=ZB), r("10.1.2.5:80", zones=ZC),
          e("10.1.2.6:80", zones=ZA)],
         {"10.1.2.4:80", "10.1.2.5:80"}, None, zone="zone-a"),
    Case("missing hints, no filtering applied",
         [r("10.1.2.3:80", zones=ZA), r("10.1.2.4:80", zones=ZB), r("10.1.2.5:80"), r("10.1.2.6:80", zones=ZA)],
         {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"}, None, zone="zone-a"),
    Case("multiple hints per endpoint, filtering includes any endpoint with zone included",
         [r("10.1.2.3:80", zones=("zone-a", "zone-b", "zone-c")), r("10.1.2.4:80", zones=("zone-b", "zone-c")),
          r("10.1.2.5:80", zones=("zone-b", "zone-d")), r("10.1.2.6:80", zones=ZC)],
         {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"}, None, zone="zone-c"),
    # DEVIATION: upstream (gate off) expects the zone answer {10.1.2.3, 10.1.2.6}; the gate is on here
    Case("PreferSameNode falls back to same-zone when feature gate disabled",
         [r("10.1.2.3:80", zones=ZA, nodes=("node-1",)), r("10.1.2.4:80", zones=ZB, nodes=("node-2",)),
          r("10.1.2.5:80", zones=ZC, nodes=("node-3",)), r("10.1.2.6:80", zones=ZA, nodes=("node-4",))],
         {"10.1.2.3:80"}, None, zone="zone-a", node="node-1"),
    Case("PreferSameNode available",
         [r("10.1.2.3:80", zones=ZA, nodes=("node-1",)), r("10.1.2.4:80", zones=ZB, nodes=("node-2",)),
          r("10.1.2.5:80", zones=ZC, nodes=("node-3",)), r("10.1.2.6:80", zones=ZA, nodes=("node-4",))],
         {"10.1.2.3:80"}, None, zone="zone-a", node="node-1"),
    Case("PreferSameNode ignored if some endpoints unhinted",
         [r("10.1.2.3:80", zones=ZA, nodes=("node-1",)), r("10.1.2.4:80"),
          r("10.1.2.5:80", zones=ZC, nodes=("node-3",)), r("10.1.2.6:80", zones=ZA, nodes=("node-4",))],
         {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"}, None, zone="zone-a", node="node-1"),
    Case("PreferSameNode falls back to PreferSameZone if no endpoint for node",
         [r("10.1.2.3:80", zones=ZA, nodes=("node-1",)), r("10.1.2.4:80", zones=ZB, nodes=("node-2",)),
          r("10.1.2.5:80", zones=ZC, nodes=("node-3",)), r("10.1.2.6:80", zones=ZA, nodes=("node-4",))],
         {"10.1.2.3:80", "10.1.2.6:80"}, None, zone="zone-a", node="node-0"),
    Case("conflicting topology and localness require merging allEndpoints",
         [r("10.0.0.0:80", zones=ZA, local=True), r("10.0.0.1:80", zones=ZB, local=True),
          r("10.0.0.2:80", zones=ZA), r("10.0.0.3:80", zones=ZB)],
         {"10.0.0.0:80", "10.0.0.2:80"}, {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"},
         etp_local=True, node_port=8080, zone="zone-a"),
    Case("internalTrafficPolicy: Local, with empty endpoints", [], None, set(), itp_local=True),
    Case("internalTrafficPolicy: Local, but all endpoints are remote", [r("10.0.0.0:80"), r("10.0.0.1:80")],
         None, set(), only_remote=True, itp_local=True),
    Case("internalTrafficPolicy: Local, all endpoints are local",
         [r("10.0.0.0:80", local=True), r("10.0.0.1:80", local=True)],
         None, {"10.0.0.0:80", "10.0.0.1:80"}, itp_local=True),
    Case("internalTrafficPolicy: Local, some endpoints are local", [r("10.0.0.0:80", local=True), r("10.0.0.1:80")],
         None, {"10.0.0.0:80"}, itp_local=True),
    Case("Cluster traffic policy, endpoints not Ready", [e("10.0.0.0:80"), e("10.0.0.1:80")], set(), None),
    Case("Cluster traffic policy, some endpoints are Ready", [e("10.0.0.0:80"), r("10.0.0.1:80")],
         {"10.0.0.1:80"}, None),
    Case("Cluster traffic policy, all endpoints are terminating",
         [e("10.0.0.0:80", serving=True, terminating=True, local=True),
          e("10.0.0.1:80", serving=True, terminating=True)],
         {"10.0.0.0:80", "10.0.0.1:80"}, None),
    Case("iTP: Local, eTP: Cluster, some endpoints local", [r("10.0.0.0:80", local=True), r("10.0.0.1:80")],
         {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80"}, {"10.0.0.0:80", "10.0.0.1:80"},
         itp_local=True, node_port=8080),
    Case("iTP: Cluster, eTP: Local, some endpoints local", [r("10.0.0.0:80", local=True), r("10.0.0.1:80")],
         {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80"}, {"10.0.0.0:80", "10.0.0.1:80"},
         etp_local=True, node_port=8080),
    Case("iTP: Local, eTP: Local, some endpoints local", [r("10.0.0.0:80", local=True), r("10.0.0.1:80")],
         {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80"}, {"10.0.0.0:80", "10.0.0.1:80"},
         itp_local=True, etp_local=True, node_port=8080),
    Case("iTP: Local, eTP: Local, all endpoints remote", [r("10.0.0.0:80"), r("10.0.0.1:80")],
         {"10.0.0.0:80", "10.0.0.1:80"}, set(), {"10.0.0.0:80", "10.0.0.1:80"},
         itp_local=True, etp_local=True, node_port=8080),
    Case("iTP: Local, eTP: Local, all endpoints remote and terminating",
         [e("10.0.0.0:80", serving=True, terminating=True), e("10.0.0.1:80", serving=True, terminating=True)],
         {"10.0.0.0:80", "10.0.0.1:80"}, set(), {"10.0.0.0:80", "10.0.0.1:80"}, only_remote=True,
         itp_local=True, etp_local=True, node_port=8080),
    Case("iTP: Cluster, eTP: Local, with terminating endpoints",
         [r("10.0.0.0:80"), e("10.0.0.1:80", local=True),
          e("10.0.0.2:80", serving=True, terminating=True, local=True),
          e("10.0.0.3:80", serving=True, terminating=True)],
         {"10.0.0.0:80"}, {"10.0.0.2:80"}, {"10.0.0.0:80", "10.0.0.2:80"}, etp_local=True, node_port=8080),
    Case("externalTrafficPolicy ignored if not externally accessible",
         [r("10.0.0.0:80"), r("10.0.0.1:80", local=True)],
         {"10.0.0.0:80", "10.0.0.1:80"}, None, {"10.0.0.0:80", "10.0.0.1:80"}, etp_local=True),
    Case("no cluster endpoints for iTP:Local internal-only service",
         [r("10.0.0.0:80"), r("10.0.0.1:80", local=True)],
         None, {"10.0.0.1:80"}, {"10.0.0.1:80"}, itp_local=True),
    # the four rows below are from Antrea's port
    Case("externalTrafficPolicy: Local, externally accessible, with empty endpoints", [], set(), set(), set(),
         etp_local=True, node_port=8080),
    Case("externalTrafficPolicy: Local, externally accessible, but all endpoints are remote",
         [r("10.0.0.0:80"), r("10.0.0.1:80")],
         {"10.0.0.0:80", "10.0.0.1:80"}, set(), {"10.0.0.0:80", "10.0.0.1:80"}, etp_local=True, node_port=8080),
    Case("externalTrafficPolicy: Local, externally accessible, all endpoints are local",
         [r("10.0.0.0:80", local=True), r("10.0.0.1:80", local=True)],
         {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80", "10.0.0.1:80"},
         etp_local=True, node_port=8080),
    Case("externalTrafficPolicy: Local, externally accessible, some endpoints are local",
         [r("10.0.0.0:80", local=True), r("10.0.0.1:80")],
         {"10.0.0.0:80", "10.0.0.1:80"}, {"10.0.0.0:80"}, {"10.0.0.0:80", "10.0.0.1:80"},
         etp_local=True, node_port=8080),
]


def _set(eps: list[EndpointInfo] | None) -> set[str] | None:
    return None if eps is None else {str(ep) for ep in eps}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_categorize_endpoints(case: Case) -> None:
    external = bool(case.node_port)
    got = categorize(
        case.endpoints,
        uses_cluster=not case.itp_local or external,
        uses_local=case.itp_local or (case.etp_local and external),
        node_name=case.node,
        zone=case.zone,
    )
    assert _set(got.cluster) == case.cluster
    assert _set(got.local) == case.local
    if case.cluster is not None and case.local is None:
        want_all = case.cluster
    elif case.local is not None and case.cluster is None:
        want_all = case.local
    else:
        assert case.all is not None
        want_all = case.all
    assert _set(got.all_reachable) == want_all
    # all_reachable never lists an endpoint twice
    assert len(got.all_reachable) == len(want_all)
    assert got.has_any == (len(want_all) > 0 or case.only_remote)
