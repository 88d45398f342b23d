"""kube-proxy's endpoint semantics: the endpoint cache of one service port and CategorizeEndpoints.

Place in the data flow: pure helpers of translate (and, through it, of `explain`). A port of
kubernetes pkg/proxy endpointslicecache.go (which endpoints a service port has) and topology.go
(`CategorizeEndpoints`: which of them cluster- and local-policy traffic may use on this node).

- `port_endpoints()` merges the IPv4 slices of one service: slice ports are matched to the
  service port by name and protocol, endpoints are keyed by IP:port across all slices, and a
  duplicate never downgrades a ready endpoint. Conditions keep kube-proxy's nil defaults: ready
  unset = ready, serving unset = ready, terminating unset = not terminating. Slices without the
  `kubernetes.io/service-name` label, of another service, or not IPv4 are ignored.
- `categorize()` returns the cluster-policy endpoints (ready ones, filtered by topology hints when
  every ready endpoint carries hints and one matches this node, PreferSameNode first, then
  PreferSameZone; else the serving+terminating ones), the local-policy endpoints (local ready
  ones, else local serving+terminating ones), their union, and whether the service has any
  usable endpoint anywhere.

- `ready_endpoints()` is the shortcut of the common case: every endpoint of the port ready and
  unhinted, so that under Cluster policies CategorizeEndpoints would select all of them.

Hot path (every sync of a changed service, 100k endpoints at cold start): plain tuples and
strings, no ipaddress objects.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any, NamedTuple

from bpfproxy.controller.model import COND_EFFECTIVE, EndpointSlice, ServicePort

#: Node label holding the node's zone (topology hints match it)
ZONE_LABEL = "topology.kubernetes.io/zone"
#: topology mode: hints for this node are used (EndpointSlice hints.forNodes)
PREFER_SAME_NODE = "PreferSameNode"
#: topology mode: hints for this node's zone are used (EndpointSlice hints.forZones)
PREFER_SAME_ZONE = "PreferSameZone"

_NO_HINTS: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


class EndpointInfo(NamedTuple):
    """One endpoint of one service port, as kube-proxy's endpoint cache holds it."""

    addr: str
    """IPv4 address, dotted"""
    port: int
    """endpoint port (the slice port matched to the service port)"""
    ready: bool
    """conditions.ready (unset = True)"""
    serving: bool
    """conditions.serving (unset = ready)"""
    terminating: bool
    """conditions.terminating (unset = False)"""
    local: bool
    """nodeName is this node"""
    zone_hints: tuple[str, ...]
    """hints.forZones names"""
    node_hints: tuple[str, ...]
    """hints.forNodes names"""

    @property
    def usable_terminating(self) -> bool:
        """Serving and terminating: the fallback when no endpoint is ready."""
        return self.serving and self.terminating

    def __str__(self) -> str:
        return f"{self.addr}:{self.port}"


def _rank(ep: EndpointInfo) -> int:
    """Which of two duplicates wins: ready over serving+terminating over the rest."""
    if ep.ready:
        return 2
    return 1 if ep.serving and ep.terminating else 0


def port_endpoints(
    port: ServicePort, slices: Iterable[EndpointSlice], node_name: str, service_key: str = ""
) -> list[EndpointInfo]:
    """Endpoints of one service port from the service's slices, unique by IP:port, sorted by (address, port).

    `service_key` ("ns/name"), when given, drops slices that belong to another service.
    """
    found: dict[tuple[str, int], EndpointInfo] = {}
    name, protocol = port.name, port.protocol
    for sl in slices:
        if sl.address_type != "IPv4" or not sl.service_name:
            continue
        if service_key and sl.service_key != service_key:
            continue
        numbers = [p.port for p in sl.ports if p.name == name and p.protocol == protocol and p.port is not None]
        if not numbers:
            continue
        conditions, node_names, hints = sl.conditions, sl.node_names, sl.hints
        for i, addr in enumerate(sl.addresses):
            ready, serving, terminating = COND_EFFECTIVE[conditions[i]]
            local = bool(node_name) and bool(node_names) and node_names[i] == node_name
            zone_hints, node_hints = hints[i] if hints else _NO_HINTS
            for number in numbers:
                info = EndpointInfo(addr, number, ready, serving, terminating, local, zone_hints, node_hints)
                key = (addr, number)
                old = found.get(key)
                if old is None or _rank(info) > _rank(old):
                    found[key] = info
    return [found[k] for k in sorted(found, key=_sort_key)]


def _sort_key(key: tuple[str, int]) -> tuple[bytes, int]:
    return socket.inet_aton(key[0]), key[1]


#: conditions bytes whose endpoint is (effectively) ready: bytes.translate deletes them
_READY_CONDS = bytes(b for b, (ready, _, _) in enumerate(COND_EFFECTIVE) if ready)


def ready_endpoints(port: ServicePort, slices: Iterable[EndpointSlice]) -> list[tuple[str, int]] | None:
    """(address, port) of every endpoint of one service port, unique and sorted by (address, port),
    when every one is ready and none carries topology hints; None otherwise.

    The common case at scale: then CategorizeEndpoints selects exactly these under a Cluster policy,
    terminating and local flags do not matter, and the caller skips `port_endpoints()` + `categorize()`
    (their EndpointInfo per endpoint). Same slice filter and port matching as `port_endpoints()`.
    """
    name, protocol = port.name, port.protocol
    pairs: list[tuple[str, int]] = []
    single: tuple[str, ...] | None = None
    single_number = 0
    parts = 0
    for sl in slices:
        if sl.address_type != "IPv4" or not sl.service_name:
            continue
        numbers = [p.port for p in sl.ports if p.name == name and p.protocol == protocol and p.port is not None]
        if not numbers:
            continue
        if sl.hints or sl.conditions.translate(None, _READY_CONDS):
            return None
        parts += len(numbers)
        if parts == 1:
            single, single_number = sl.addresses, numbers[0]
            continue
        if single is not None:
            pairs.extend(zip(single, repeat(single_number)))
            single = None
        for number in numbers:
            pairs.extend(zip(sl.addresses, repeat(number)))
    if single is not None and len(set(single)) == len(single):
        # one slice, one port, no duplicate address: sort the addresses alone (C-level key)
        return list(zip(sorted(single, key=socket.inet_aton), repeat(single_number)))
    if single is not None:
        pairs.extend(zip(single, repeat(single_number)))
    return sorted(set(pairs), key=_sort_key)


class Categorized(NamedTuple):
    """The result of `categorize()` (kube-proxy's CategorizeEndpoints)."""

    cluster: list[EndpointInfo] | None
    """usable cluster-policy endpoints; None when the port never uses cluster policy"""
    local: list[EndpointInfo] | None
    """usable local-policy endpoints; None when the port never uses local policy"""
    all_reachable: list[EndpointInfo]
    """union of cluster and local"""
    has_any: bool
    """the service has a usable endpoint somewhere in the cluster (False: reject, not drop)"""
    topology_mode: str
    """"" (no topology), PREFER_SAME_NODE or PREFER_SAME_ZONE: what filtered `cluster`"""


def topology_mode(endpoints: Iterable[EndpointInfo], node_name: str, zone: str) -> str:
    """The topology mode hints allow: every ready endpoint hinted, and one hinted for this node / zone."""
    for_node = for_zone = False
    all_node_hints = all_zone_hints = True
    for ep in endpoints:
        if not ep.ready:
            continue
        if not ep.node_hints:
            all_node_hints = False
        elif node_name in ep.node_hints:
            for_node = True
        if not ep.zone_hints:
            all_zone_hints = False
        elif zone in ep.zone_hints:
            for_zone = True
    if all_node_hints and for_node:
        return PREFER_SAME_NODE
    if all_zone_hints and for_zone:
        return PREFER_SAME_ZONE
    return ""


def _topology_ok(ep: EndpointInfo, mode: str, node_name: str, zone: str) -> bool:
    if mode == PREFER_SAME_NODE:
        return node_name in ep.node_hints
    if mode == PREFER_SAME_ZONE:
        return zone in ep.zone_hints
    return True


def categorize(
    endpoints: list[EndpointInfo], *, uses_cluster: bool, uses_local: bool, node_name: str, zone: str
) -> Categorized:
    """CategorizeEndpoints: cluster- and local-policy endpoints of one service port on this node.

    `uses_cluster` = internalTrafficPolicy Cluster or externally accessible; `uses_local` =
    internalTrafficPolicy Local or (externalTrafficPolicy Local and externally accessible).
    """
    cluster: list[EndpointInfo] | None = None
    local: list[EndpointInfo] | None = None
    has_any = False
    mode = ""
    if uses_cluster:
        mode = topology_mode(endpoints, node_name, zone)
        cluster = [ep for ep in endpoints if ep.ready and _topology_ok(ep, mode, node_name, zone)]
        if not cluster:
            # no ready endpoint anywhere (topology was already dropped when none matched)
            cluster = [ep for ep in endpoints if ep.serving and ep.terminating]
        has_any = bool(cluster)
    if not uses_local:
        return Categorized(cluster, None, cluster or [], has_any, mode)

    local_ready = local_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            local_ready = local_ready or ep.local
        elif ep.serving and ep.terminating:
            has_any = True
            local_terminating = local_terminating or ep.local
    if local_ready:
        local = [ep for ep in endpoints if ep.local and ep.ready]
    elif local_terminating:
        local = [ep for ep in endpoints if ep.local and ep.serving and ep.terminating]
    else:
        local = []
    if cluster is None:
        return Categorized(None, local, local, has_any, mode)
    local_uses_terminating = not local_ready and local_terminating
    if not mode and not local_uses_terminating:
        # cluster holds every ready endpoint and local only ready ones: a superset
        return Categorized(cluster, local, cluster, has_any, mode)
    merged = {(ep.addr, ep.port): ep for ep in cluster}
    for ep in local:
        merged[(ep.addr, ep.port)] = ep
    return Categorized(cluster, local, list(merged.values()), has_any, mode)


def node_zone(node: Mapping[str, Any] | None) -> str:
    """The topology.kubernetes.io/zone label of a v1 Node dict ("" when absent)."""
    if not isinstance(node, Mapping):
        return ""
    meta = node.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping):
        return ""
    return str(labels.get(ZONE_LABEL) or "")
