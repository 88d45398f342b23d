"""Translate one Service and its EndpointSlices into frontends (kube-proxy semantics).

Place in the data flow: pure, after the change trackers and before plan. `translate_service()`
computes every frontend of a service: ClusterIP frontends (one per IPv4 cluster IP and TCP/UDP
service port) and the external ones, NodePort (on each node IP inside --nodeport-addresses),
ExternalIP and LoadBalancer (status ingress IPs). `programmed_frontends()` keeps what the datapath
implements now, the ClusterIP ones; plan/explain show the rest.

Backends come from `topology` (kube-proxy's endpoint cache and CategorizeEndpoints):
- ClusterIP frontends use the internalTrafficPolicy set (Cluster: the cluster endpoints,
  topology-filtered; Local: the endpoints on this node). External frontends use the
  externalTrafficPolicy set the same way.
- No usable endpoint anywhere: no backends and `drop_no_ep` False (the datapath rejects).
  Endpoints exist but none for this policy: no backends and `drop_no_ep` True (it drops).
- Cluster policies with every endpoint ready and unhinted (the common case at scale) take a
  shortcut (`topology.ready_endpoints`): all endpoints are the backends, nothing is categorized.
- Serving+terminating endpoints not selected stay as terminating backends (flows continue, no
  new ones), limited to this node's under a Local policy.
- Headless and ExternalName services, services with a service-proxy-name label (another proxy's)
  and SCTP ports get nothing. IPv6 addresses are ignored until the datapath has IPv6.
"""

from __future__ import annotations

import ipaddress
import logging
import operator
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import repeat
from typing import NamedTuple

from bpfproxy.controller.model import EndpointSlice, Service, ServicePort
from bpfproxy.controller.topology import Categorized, EndpointInfo, categorize, port_endpoints, ready_endpoints
from bpfproxy.loader.structs import SVC_SCOPE_EXT

log = logging.getLogger(__name__)

#: IP protocol numbers of the protocols the datapath serves
PROTO_NUMBERS: dict[str, int] = {"TCP": 6, "UDP": 17}
#: names of PROTO_NUMBERS, for display
PROTO_NAMES: dict[int, str] = {v: k for k, v in PROTO_NUMBERS.items()}
#: label naming the proxy a Service is for; kube-proxy (and we) ignore services carrying it
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
#: frontend kinds, in the order translate_service emits them per port
KINDS = ("ClusterIP", "NodePort", "ExternalIP", "LoadBalancer")


@dataclass(frozen=True)
class NodeConfig:
    """What the translation needs to know of the node it runs on."""

    node_name: str = ""
    """this node's name (for Local traffic policies and topology hints)"""
    node_ips: tuple[str, ...] = ()
    """this node's addresses (NodePort frontends, source classification)"""
    cluster_cidrs: tuple[str, ...] = ()
    """pod CIDRs of the cluster: a source inside is a pod"""
    zone: str = ""
    """this node's topology.kubernetes.io/zone label ("" unknown: no zone hints match)"""
    service_cidrs: tuple[str, ...] = ()
    """--service-cidr: an address inside that no service owns is dropped"""
    nodeport_addresses: tuple[str, ...] = ()
    """--nodeport-addresses CIDRs: node IPs inside answer NodePorts (empty: every node IP)"""


class BackendRef(NamedTuple):
    """One backend of a frontend: an endpoint address and port."""

    addr: str
    """endpoint IPv4 address, dotted"""
    port: int
    """endpoint port"""
    terminating: bool
    """serving but terminating: keeps its flows, gets no new ones"""


@dataclass(frozen=True)
class Frontend:
    """One (address, port, protocol, scope) the datapath answers, with its backends."""

    service: str
    """ "ns/name" of the Service"""
    port_name: str
    """the Service port name ("" when unnamed)"""
    name: str
    """ "ns/name:port/proto", port being the port name or, when unnamed, its number"""
    addr: str
    """frontend IPv4 address, dotted"""
    port: int
    """frontend port"""
    proto: int
    """IP protocol number (6 TCP, 17 UDP)"""
    scope: int
    """SVC_SCOPE_EXT or SVC_SCOPE_INT"""
    backends: tuple[BackendRef, ...]
    """backends, sorted by (address, port)"""
    affinity_timeout: int
    """ClientIP session affinity timeout in seconds, 0 = no affinity"""
    drop_no_ep: bool
    """drop (rather than reject) traffic when no backend is usable"""
    kind: str = "ClusterIP"
    """ "ClusterIP", "NodePort", "ExternalIP" or "LoadBalancer": which address of the service this is"""
    source_ranges: tuple[str, ...] = ()
    """LoadBalancer frontends: CIDRs allowed to connect (empty: everyone)"""


class PortEndpoints(NamedTuple):
    """The backend sets of one service port on this node (what explain reads beside the frontends)."""

    internal: tuple[BackendRef, ...]
    """ClusterIP traffic (internalTrafficPolicy), terminating extras included"""
    external: tuple[BackendRef, ...]
    """traffic from outside to an external frontend (externalTrafficPolicy), terminating extras included"""
    cluster: tuple[BackendRef, ...]
    """cluster-policy endpoints: where pods and the node short-circuit to with externalTrafficPolicy Local"""
    has_any: bool
    """a usable endpoint exists somewhere in the cluster"""
    internal_drop: bool
    """ClusterIP frontends drop (True) rather than reject when they have no backend"""
    external_drop: bool
    """external frontends drop (True) rather than reject when they have no backend"""
    topology_mode: str
    """the topology mode that filtered the cluster endpoints ("" none)"""


def frontend_name(service: str, port: ServicePort) -> str:
    """ "ns/name:port/proto" for a Service port."""
    return f"{service}:{port.name or port.port}/{port.protocol}"


_new_tuple = tuple.__new__
_concat = operator.add
_LIVE = (False,)


def _ref_key(ref: BackendRef) -> tuple[bytes, int]:
    return socket.inet_aton(ref.addr), ref.port


def _refs(selected: list[EndpointInfo] | None, extra: list[EndpointInfo] | None = None) -> tuple[BackendRef, ...]:
    """Selected endpoints (sorted) as live backends plus `extra` (not selected) as terminating ones, sorted."""
    refs = [BackendRef(ep.addr, ep.port, False) for ep in selected or ()]
    if extra:
        chosen = {(r.addr, r.port) for r in refs}
        refs.extend(BackendRef(ep.addr, ep.port, True) for ep in extra if (ep.addr, ep.port) not in chosen)
        refs.sort(key=_ref_key)
    return tuple(refs)


def is_ipv4(addr: str) -> bool:
    """Whether addr is a dotted IPv4 address (cheap test for already validated addresses)."""
    return ":" not in addr


def externally_accessible(svc: Service, port: ServicePort) -> bool:
    """kube-proxy's ExternallyAccessible: a node port, an external IP or a load-balancer IP."""
    return bool(node_port(svc, port) or svc.external_ips or lb_ips(svc))


def node_port(svc: Service, port: ServicePort) -> int:
    """The node port of a NodePort/LoadBalancer service port, 0 when none."""
    return (port.node_port or 0) if svc.type in ("NodePort", "LoadBalancer") else 0


def lb_ips(svc: Service) -> tuple[str, ...]:
    """The load-balancer ingress IPs of a LoadBalancer service."""
    return svc.load_balancer_ingress if svc.type == "LoadBalancer" else ()


def is_ours(svc: Service) -> bool:
    """Whether the service is programmed at all (not headless, not ExternalName, not another proxy's)."""
    return (
        svc.type != "ExternalName"
        and not svc.headless
        and bool(svc.cluster_ips)
        and SERVICE_PROXY_NAME_LABEL not in svc.labels
    )


def port_backends(
    svc: Service, port: ServicePort, slices: Iterable[EndpointSlice], node: NodeConfig
) -> PortEndpoints:
    """The backend sets of one service port on this node (CategorizeEndpoints over the endpoint cache)."""
    external_ok = externally_accessible(svc, port)
    itp_local = svc.internal_traffic_policy == "Local"
    etp_local = svc.external_traffic_policy == "Local" and external_ok
    if not isinstance(slices, (list, tuple)):
        slices = list(slices)  # read twice when the fast path declines
    if not itp_local and not etp_local:
        # Cluster policies: when every endpoint is ready and unhinted, all of them are the backends
        ready = ready_endpoints(port, slices)
        if ready is not None:
            # BackendRef(addr, port, False) for each, built in C (what BackendRef._make does per item)
            refs = tuple(map(_new_tuple, repeat(BackendRef), map(_concat, ready, repeat(_LIVE))))
            return PortEndpoints(internal=refs, external=refs if external_ok else (), cluster=refs,
                                 has_any=bool(refs), internal_drop=False, external_drop=False, topology_mode="")
    return _port_backends_general(svc, port, slices, node, external_ok, itp_local, etp_local)


def _port_backends_general(
    svc: Service,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    node: NodeConfig,
    external_ok: bool,
    itp_local: bool,
    etp_local: bool,
) -> PortEndpoints:
    """port_backends for any endpoints: the endpoint cache of the port, then CategorizeEndpoints."""
    eps = port_endpoints(port, slices, node.node_name)
    cat: Categorized = categorize(
        eps,
        uses_cluster=not itp_local or external_ok,
        uses_local=itp_local or etp_local,
        node_name=node.node_name,
        zone=node.zone,
    )
    terminating = [ep for ep in eps if ep.serving and ep.terminating and not ep.ready]
    local_terminating = [ep for ep in terminating if ep.local]
    cluster = _refs(cat.cluster)
    internal_sel = cat.local if itp_local else cat.cluster
    external_sel = cat.local if etp_local else cat.cluster

    def backends(selected: list[EndpointInfo] | None, local_policy: bool) -> tuple[BackendRef, ...]:
        extra = local_terminating if local_policy else terminating
        if selected is cat.cluster and not extra:
            return cluster
        return _refs(selected, extra)

    internal = backends(internal_sel, itp_local)
    external = backends(external_sel, etp_local) if external_ok else ()
    return PortEndpoints(
        internal=internal,
        external=external,
        cluster=cluster,
        has_any=cat.has_any,
        internal_drop=cat.has_any and not internal_sel,
        external_drop=cat.has_any and not external_sel,
        topology_mode=cat.topology_mode,
    )


def nodeport_addresses(node: NodeConfig) -> tuple[str, ...]:
    """The node IPs NodePorts answer on: those inside --nodeport-addresses, or every IPv4 node IP."""
    ips = [ip for ip in node.node_ips if is_ipv4(ip)]
    if not node.nodeport_addresses:
        return tuple(ips)
    nets = [ipaddress.ip_network(c, strict=False) for c in node.nodeport_addresses]
    return tuple(ip for ip in ips if any(ipaddress.ip_address(ip) in n for n in nets))


def lb_source_ranges(svc: Service, node: NodeConfig) -> tuple[str, ...]:
    """loadBalancerSourceRanges (IPv4), plus the LB IPs themselves when a range admits a node IP.

    kube-proxy assumes node-to-LB traffic gets SNATed to the LB IP outside of it, so it allows
    the LB IPs as sources whenever the node is allowed.
    """
    ranges = tuple(r for r in svc.load_balancer_source_ranges if is_ipv4(r))
    if not ranges:
        return ()
    nets = [ipaddress.ip_network(r) for r in ranges]
    node_allowed = any(ipaddress.ip_address(ip) in n for ip in node.node_ips if is_ipv4(ip) for n in nets)
    if node_allowed:
        ranges += tuple(f"{ip}/32" for ip in lb_ips(svc) if is_ipv4(ip))
    return ranges


def translate_service(svc: Service, slices: Iterable[EndpointSlice], node: NodeConfig) -> list[Frontend]:
    """Every frontend of one Service, of every kind (only the ClusterIP ones are programmed now)."""
    return _translate(svc, slices, node, external=True)


def programmed_frontends(svc: Service, slices: Iterable[EndpointSlice], node: NodeConfig) -> list[Frontend]:
    """The frontends of one Service the datapath implements now (ClusterIP ones): what the proxier programs."""
    return _translate(svc, slices, node, external=False)


def _translate(svc: Service, slices: Iterable[EndpointSlice], node: NodeConfig, *, external: bool) -> list[Frontend]:
    if not is_ours(svc):
        return []
    slices = list(slices)
    timeout = svc.affinity_timeout if svc.session_affinity == "ClientIP" else 0
    out: list[Frontend] = []
    np_addrs: tuple[str, ...] | None = None
    ranges: tuple[str, ...] | None = None
    for port in svc.ports:
        proto = PROTO_NUMBERS.get(port.protocol)
        if proto is None:
            log.debug("skipping port the datapath does not serve service=%s port=%s protocol=%s",
                      svc.key, port.name or port.port, port.protocol)
            continue
        sets = port_backends(svc, port, slices, node)
        name = frontend_name(svc.key, port)
        cluster = [Frontend(service=svc.key, port_name=port.name, name=name, addr=ip, port=port.port, proto=proto,
                            scope=SVC_SCOPE_EXT, backends=sets.internal, affinity_timeout=timeout,
                            drop_no_ep=sets.internal_drop) for ip in svc.cluster_ips]
        out.extend(cluster)
        base = cluster[0]
        if not external:
            continue
        ext: list[tuple[str, str, int, tuple[str, ...]]] = []
        number = node_port(svc, port)
        if number:
            if np_addrs is None:
                np_addrs = nodeport_addresses(node)
            ext.extend(("NodePort", ip, number, ()) for ip in np_addrs)
        ext.extend(("ExternalIP", ip, port.port, ()) for ip in svc.external_ips if is_ipv4(ip))
        for ip in lb_ips(svc):
            if is_ipv4(ip):
                if ranges is None:
                    ranges = lb_source_ranges(svc, node)
                ext.append(("LoadBalancer", ip, port.port, ranges))
        for kind, addr, number, src in ext:
            out.append(replace(base, kind=kind, addr=addr, port=number, backends=sets.external,
                               drop_no_ep=sets.external_drop, source_ranges=src))
    return out
