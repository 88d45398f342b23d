"""Translate one Service and its EndpointSlices into datapath frontends (kube-proxy semantics).

Place in the data flow: pure, after the change trackers and before plan. For now only ClusterIP
frontends exist: one per (IPv4 cluster IP, service port) for TCP and UDP; types ClusterIP,
NodePort and LoadBalancer all get them, headless and ExternalName services get none. Backends of
a port are the endpoints of the service's IPv4 slices whose slice port matches the service port by
name and protocol; the backend port is the slice port's number (how a targetPort by name works).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from bpfproxy.controller.model import Endpoint, EndpointSlice, Service, ServicePort
from bpfproxy.loader.structs import SVC_SCOPE_EXT

log = logging.getLogger(__name__)

#: IP protocol numbers of the protocols the datapath serves
PROTO_NUMBERS: dict[str, int] = {"TCP": 6, "UDP": 17}
#: names of PROTO_NUMBERS, for display
PROTO_NAMES: dict[int, str] = {v: k for k, v in PROTO_NUMBERS.items()}


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


def frontend_name(service: str, port: ServicePort) -> str:
    """ "ns/name:port/proto" for a Service port."""
    return f"{service}:{port.name or port.port}/{port.protocol}"


def _ip_key(ref: BackendRef) -> tuple[int, int]:
    return int(ipaddress.IPv4Address(ref.addr)), ref.port


def _endpoint_state(ep: Endpoint) -> bool | None:
    """False: usable for new flows; True: terminating (existing flows only); None: not a backend."""
    ready = ep.ready is not False
    if ready:
        return False
    serving = ep.serving if ep.serving is not None else ready
    if serving and ep.terminating:
        return True
    return None


def port_backends(port: ServicePort, slices: Iterable[EndpointSlice]) -> tuple[BackendRef, ...]:
    """Backends of one Service port from the service's slices, deduplicated by IP:port."""
    found: dict[tuple[str, int], bool] = {}
    for sl in slices:
        if sl.address_type != "IPv4":
            continue
        numbers = [
            p.port for p in sl.ports
            if p.name == port.name and p.protocol == port.protocol and p.port is not None
        ]
        for ep in sl.endpoints:
            terminating = _endpoint_state(ep)
            if terminating is None:
                continue
            addr = ep.addresses[0]
            for number in numbers:
                key = (addr, number)
                # an endpoint listed ready in one slice and terminating in another is ready
                found[key] = found.get(key, True) and terminating
    refs = [BackendRef(addr, number, term) for (addr, number), term in found.items()]
    return tuple(sorted(refs, key=_ip_key))


def programmed_frontends(svc: Service, slices: Iterable[EndpointSlice], node: NodeConfig) -> list[Frontend]:
    """The frontends of one Service the datapath implements now (ClusterIP ones): what the proxier programs."""
    return [f for f in translate_service(svc, slices, node) if f.kind == "ClusterIP"]


def translate_service(svc: Service, slices: Iterable[EndpointSlice], node: NodeConfig) -> list[Frontend]:
    """Every frontend of one Service (ClusterIP frontends only, for now)."""
    if svc.type == "ExternalName" or svc.headless or not svc.cluster_ips:
        return []
    slices = list(slices)
    timeout = svc.affinity_timeout if svc.session_affinity == "ClientIP" else 0
    out: list[Frontend] = []
    for port in svc.ports:
        proto = PROTO_NUMBERS.get(port.protocol)
        if proto is None:
            log.info("skipping port the datapath does not serve service=%s port=%s protocol=%s",
                     svc.key, port.name or port.port, port.protocol)
            continue
        backends = port_backends(port, slices)
        for ip in svc.cluster_ips:
            out.append(
                Frontend(
                    service=svc.key,
                    port_name=port.name,
                    name=frontend_name(svc.key, port),
                    addr=ip,
                    port=port.port,
                    proto=proto,
                    scope=SVC_SCOPE_EXT,
                    backends=backends,
                    affinity_timeout=timeout,
                    drop_no_ep=False,
                )
            )
    return out
