"""Typed views of the Kubernetes objects the proxier consumes: Service and EndpointSlice.

Place in the data flow: sources hand plain dicts (as `kubectl get -o yaml` or the REST JSON give
them, camelCase) to the change trackers, which call `parse_service` / `parse_endpoint_slice` here.
Everything after the trackers works on these frozen dataclasses only. Pure, no kernel.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

#: protocols a Service or EndpointSlice port may carry
PROTOCOLS = ("TCP", "UDP", "SCTP")
#: spec.type values
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
#: default of sessionAffinityConfig.clientIP.timeoutSeconds (3 hours)
DEFAULT_AFFINITY_TIMEOUT = 10800
#: label naming the Service an EndpointSlice belongs to
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


_AF_INET = socket.AF_INET
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_intern = sys.intern


class BadObject(ValueError):
    """An object that cannot be used; the message names its kind, namespace/name and the reason."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One entry of spec.ports of a Service."""

    name: str
    """port name ("" when unnamed, allowed only for single-port services)"""
    protocol: str
    """TCP, UDP or SCTP"""
    port: int
    """the port the service serves on its cluster IPs (1..65535)"""
    target_port: int | str
    """backend port number or the name of a container port (resolved through EndpointSlice ports)"""
    node_port: int | None
    """node port for NodePort/LoadBalancer services, None when not allocated"""


@dataclass(frozen=True, slots=True)
class Service:
    """The fields of a v1 Service that decide its frontends."""

    namespace: str
    """metadata.namespace"""
    name: str
    """metadata.name"""
    type: str
    """spec.type: ClusterIP, NodePort, LoadBalancer or ExternalName"""
    cluster_ips: tuple[str, ...]
    """IPv4 cluster IPs (IPv6 ones are dropped); empty for headless and ExternalName services"""
    headless: bool
    """spec.clusterIP is "None": no frontend, DNS only"""
    ports: tuple[ServicePort, ...]
    """spec.ports in order"""
    session_affinity: str
    """spec.sessionAffinity: "None" or "ClientIP\""""
    affinity_timeout: int
    """sessionAffinityConfig.clientIP.timeoutSeconds (seconds), meaningful with ClientIP"""
    external_ips: tuple[str, ...]
    """spec.externalIPs"""
    load_balancer_ingress: tuple[str, ...]
    """status.loadBalancer.ingress[].ip"""
    load_balancer_source_ranges: tuple[str, ...]
    """spec.loadBalancerSourceRanges as normalized CIDRs"""
    external_traffic_policy: str
    """spec.externalTrafficPolicy: Cluster or Local"""
    internal_traffic_policy: str
    """spec.internalTrafficPolicy: Cluster or Local"""
    labels: Mapping[str, str]
    """metadata.labels"""
    external_name: str
    """spec.externalName of an ExternalName service, else \"\""""

    @property
    def key(self) -> str:
        """ "namespace/name", the key trackers and plans use."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointPort:
    """One entry of ports of an EndpointSlice."""

    name: str
    """port name, matching the Service port name ("" when unnamed)"""
    protocol: str
    """TCP, UDP or SCTP"""
    port: int | None
    """backend port number; None means "all ports" (unusable for a proxy)"""


class Endpoint(NamedTuple):
    """One entry of endpoints of an EndpointSlice (a named tuple: 100k of them are built per cold start,
    ~10x cheaper than a frozen dataclass)."""

    addresses: tuple[str, ...]
    """endpoint addresses (only the first is used, as kube-proxy does)"""
    ready: bool | None
    """conditions.ready (None = unknown, treated as ready)"""
    serving: bool | None
    """conditions.serving (None = same as ready)"""
    terminating: bool | None
    """conditions.terminating (None = not terminating)"""
    node_name: str
    """nodeName, "" when absent"""
    zone: str
    """zone, "" when absent"""
    hints_for_zones: tuple[str, ...]
    """hints.forZones[].name"""
    hints_for_nodes: tuple[str, ...]
    """hints.forNodes[].name"""


#: EndpointSlice.conditions bits of one endpoint: each condition is "set" (not null) and its value
COND_READY_SET, COND_READY, COND_SERVING_SET, COND_SERVING, COND_TERMINATING_SET, COND_TERMINATING = 1, 2, 4, 8, 16, 32


def _cond_bits(ready: bool | None, serving: bool | None, terminating: bool | None) -> int:
    """The EndpointSlice.conditions byte of one endpoint's three nullable conditions."""
    bits = 0
    for value, set_bit in ((ready, COND_READY_SET), (serving, COND_SERVING_SET), (terminating, COND_TERMINATING_SET)):
        if value is not None:
            bits |= set_bit | (set_bit << 1 if value else 0)
    return bits


def _cond_of(bits: int) -> tuple[bool | None, bool | None, bool | None]:
    """(ready, serving, terminating) as the slice gave them (None = unset) from a conditions byte."""
    return tuple(  # type: ignore[return-value]
        bool(bits & (set_bit << 1)) if bits & set_bit else None
        for set_bit in (COND_READY_SET, COND_SERVING_SET, COND_TERMINATING_SET)
    )


#: conditions byte -> its nullable (ready, serving, terminating)
COND_RAW: tuple[tuple[bool | None, bool | None, bool | None], ...] = tuple(_cond_of(b) for b in range(64))
#: conditions byte -> kube-proxy's effective (ready, serving, terminating): ready unset = True,
#: serving unset = ready, terminating unset = False
COND_EFFECTIVE: tuple[tuple[bool, bool, bool], ...] = tuple(
    (r is not False, (r is not False) if s is None else s, t is True) for r, s, t in COND_RAW
)
#: conditions byte of each (ready, serving, terminating) combination, for the parser
_COND_BYTE: dict[tuple[bool | None, bool | None, bool | None], int] = {c: b for b, c in enumerate(COND_RAW)}


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """The fields of a discovery.k8s.io/v1 EndpointSlice that decide backends.

    Endpoints are held column-wise (parallel tuples, one entry per endpoint), not as one object per
    endpoint: 100k endpoints cost ~16 MiB less that way. `endpoints` rebuilds `Endpoint` tuples on
    demand for readers that want them; the hot path (topology.port_endpoints) reads the columns.
    """

    namespace: str
    """metadata.namespace"""
    name: str
    """metadata.name"""
    service_name: str
    """label kubernetes.io/service-name ("" when absent: the slice belongs to no service)"""
    address_type: str
    """addressType: IPv4, IPv6 or FQDN"""
    ports: tuple[EndpointPort, ...]
    """ports"""
    addresses: tuple[str, ...]
    """first address of each endpoint (the only one used, as kube-proxy does)"""
    conditions: bytes
    """conditions of each endpoint, one byte of COND_* bits (COND_RAW / COND_EFFECTIVE decode it)"""
    node_names: tuple[str, ...]
    """nodeName of each endpoint ("" when absent); () when no endpoint has one"""
    zones: tuple[str, ...]
    """zone of each endpoint ("" when absent); () when no endpoint has one"""
    hints: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    """(hints.forZones names, hints.forNodes names) of each endpoint; () when no endpoint has hints"""
    all_addresses: tuple[tuple[str, ...], ...]
    """every address of each endpoint; () when each has exactly one (then it is `addresses`)"""
    annotations: Mapping[str, str]
    """metadata.annotations"""

    @property
    def key(self) -> str:
        """ "namespace/name" of the slice."""
        return f"{self.namespace}/{self.name}"

    @property
    def service_key(self) -> str:
        """ "namespace/service-name" of the service this slice belongs to ("" when none)."""
        return f"{self.namespace}/{self.service_name}" if self.service_name else ""

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints as `Endpoint` tuples, built on each call (not for hot paths)."""
        out = []
        for i, addr in enumerate(self.addresses):
            ready, serving, terminating = COND_RAW[self.conditions[i]]
            zones, nodes = self.hints[i] if self.hints else ((), ())
            out.append(Endpoint(
                self.all_addresses[i] if self.all_addresses else (addr,), ready, serving, terminating,
                self.node_names[i] if self.node_names else "", self.zones[i] if self.zones else "", zones, nodes,
            ))  # fmt: skip
        return tuple(out)


class _Ctx:
    """Where an error is: kind and namespace/name, for messages."""

    def __init__(self, kind: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") if type(obj) is dict or isinstance(obj, Mapping) else None
        meta = meta if type(meta) is dict or isinstance(meta, Mapping) else {}
        self.namespace = _intern(str(meta.get("namespace") or "default"))
        self.name = str(meta.get("name") or "")
        self.kind = kind

    def bad(self, reason: str) -> BadObject:
        return BadObject(f"{self.kind} {self.namespace}/{self.name or '?'}: {reason}")


def _mapping(ctx: _Ctx, value: Any, where: str) -> Mapping[str, Any]:
    if type(value) is dict:  # the common case, without an ABC isinstance check
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.bad(f"{where} is not a mapping")
    return value


def _list(ctx: _Ctx, value: Any, where: str) -> list[Any]:
    if type(value) is list:
        return value
    if value is None:
        return []
    if not isinstance(value, list):
        raise ctx.bad(f"{where} is not a list")
    return value


def _str_map(ctx: _Ctx, value: Any, where: str) -> Mapping[str, str]:
    """Labels/annotations with interned keys and values: the same few strings repeat over 10k objects
    (and an empty one is one shared read-only mapping)."""
    items = _mapping(ctx, value, where)
    return _interned_map(items) if items else _EMPTY_MAP


def _interned_map(items: Mapping[Any, Any]) -> dict[str, str]:
    """items with interned string keys and values."""
    return {_intern(str(k)): _intern(str(v)) for k, v in items.items()}


def _plain_str_map(value: Any) -> Mapping[str, str] | None:
    """_str_map for the fast paths: a plain dict or nothing; None (leave it to the general path) otherwise."""
    if not value:
        return _EMPTY_MAP if value is None or type(value) is dict else None
    return _interned_map(value) if type(value) is dict else None


_EMPTY_MAP: Mapping[str, str] = MappingProxyType({})

#: bound of the shared-value cache (cleared when full: it then only loses sharing)
SHARE_CACHE_MAX = 4096
_shared: dict[Any, Any] = {}


def _share(value: Any) -> Any:
    """One object for equal immutable values (the ports tuple, node-name and conditions columns of
    slices: the same few repeat over 10k slices). A bounded cache, so it never holds more than
    SHARE_CACHE_MAX values whatever the cluster looks like."""
    got = _shared.get(value)
    if got is not None:
        return got
    if len(_shared) >= SHARE_CACHE_MAX:
        _shared.clear()
    _shared[value] = value
    return value


def _ipv4_or_6(ctx: _Ctx, value: Any, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ctx.bad(f"invalid IP {value!r} in {where}") from None


def _is_canonical_ipv4(value: Any) -> bool:
    """True when value is an IPv4 address in canonical dotted form (it round-trips through inet_pton)."""
    try:
        return type(value) is str and _inet_ntop(_AF_INET, _inet_pton(_AF_INET, value)) == value
    except OSError:
        return False


def _port(ctx: _Ctx, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ctx.bad(f"port {value!r} in {where} out of 1..65535")
    return value


def _protocol(ctx: _Ctx, value: Any, where: str) -> str:
    proto = "TCP" if value is None else value
    if proto not in PROTOCOLS:
        raise ctx.bad(f"unknown protocol {value!r} in {where} (TCP, UDP or SCTP)")
    return PROTOCOLS[PROTOCOLS.index(proto)]  # the shared constant, not the parsed copy


def _opt_bool(ctx: _Ctx, value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ctx.bad(f"{where} is not a boolean: {value!r}")


def _metadata(ctx: _Ctx, obj: Any) -> Mapping[str, Any]:
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise ctx.bad("not a mapping")
    meta = _mapping(ctx, obj.get("metadata"), "metadata")
    if not meta.get("name"):
        raise ctx.bad("missing metadata.name")
    return meta


def parse_service(obj: Mapping[str, Any]) -> Service:
    """A Service from its dict form; raises BadObject naming the service and the reason."""
    if type(obj) is dict:
        svc = _service_fast(obj)
        if svc is not None:
            return svc
    return _service_general(obj)


_FAST_TYPES = {"ClusterIP": "ClusterIP", "NodePort": "NodePort", "LoadBalancer": "LoadBalancer"}
_FAST_PROTOCOLS = {p: p for p in PROTOCOLS}
_FAST_AFFINITIES = {"None": "None", "ClientIP": "ClientIP"}
_FAST_POLICIES = {"Cluster": "Cluster", "Local": "Local"}


def _plain_identity(meta: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of plain metadata ("default" when no namespace), or None when the name is
    missing or either is not a string: the fast paths then leave the object to the general ones."""
    name = meta.get("name")
    namespace = meta.get("namespace")
    if type(name) is not str or not name:
        return None
    if not namespace:
        return "default", name
    if type(namespace) is not str:
        return None
    return namespace, name


def _service_fast(obj: dict[str, Any]) -> Service | None:
    """The Service of the common shape (plain dicts, canonical IPv4 cluster IPs, int ports and target
    ports or named target ports, no external IPs / load-balancer fields, not ExternalName), or None on
    anything else, including every error: `_service_general` then parses it and names the field.
    Builds no error-location strings and calls few helpers: this runs 10k times on a cold list."""
    meta = obj.get("metadata")
    spec = obj.get("spec")
    if type(meta) is not dict or type(spec) is not dict:
        return None
    ident = _plain_identity(meta)
    if ident is None:
        return None
    namespace, name = ident
    status = obj.get("status")
    if status is not None:
        if type(status) is not dict:
            return None
        lb = status.get("loadBalancer")
        if lb is not None and (type(lb) is not dict or lb):
            return None
    external = spec.get("externalIPs")
    ranges = spec.get("loadBalancerSourceRanges")
    if (external is not None and (type(external) is not list or external)) or (
        ranges is not None and (type(ranges) is not list or ranges)
    ):
        return None

    raw_type = spec.get("type") or "ClusterIP"
    svc_type = _FAST_TYPES.get(raw_type) if type(raw_type) is str else None
    raw_affinity = spec.get("sessionAffinity") or "None"
    affinity = _FAST_AFFINITIES.get(raw_affinity) if type(raw_affinity) is str else None
    raw_policy = spec.get("externalTrafficPolicy") or "Cluster"
    external_policy = _FAST_POLICIES.get(raw_policy) if type(raw_policy) is str else None
    raw_policy = spec.get("internalTrafficPolicy") or "Cluster"
    internal_policy = _FAST_POLICIES.get(raw_policy) if type(raw_policy) is str else None
    if svc_type is None or affinity is None or external_policy is None or internal_policy is None:
        return None
    timeout = DEFAULT_AFFINITY_TIMEOUT
    cfg = spec.get("sessionAffinityConfig")
    if cfg is not None:
        if type(cfg) is not dict:
            return None
        client_ip = cfg.get("clientIP")
        if client_ip is not None:
            if type(client_ip) is not dict:
                return None
            timeout = client_ip.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
            if type(timeout) is not int or not 1 <= timeout <= 86400:
                return None

    raw_ips = spec.get("clusterIPs")
    if raw_ips is None:
        raw_ips = []
    elif type(raw_ips) is not list:
        return None
    if not raw_ips:
        single = spec.get("clusterIP")
        if single:
            raw_ips = [single]
    headless = "None" in raw_ips
    cluster_ips: tuple[str, ...] = ()
    if not headless and raw_ips:
        for ip in raw_ips:
            if type(ip) is not str or not _CANONICAL_QUAD.fullmatch(ip):
                return None
        cluster_ips = tuple(raw_ips)

    raw_ports = spec.get("ports")
    ports: tuple[ServicePort, ...] = ()
    if raw_ports is not None:
        if type(raw_ports) is not list:
            return None
        several = len(raw_ports) > 1
        out: list[ServicePort] = []
        seen: set[tuple[str, str]] = set()
        for raw in raw_ports:
            if type(raw) is not dict:
                return None
            port_name = raw.get("name")
            if not port_name:
                if several:
                    return None
                port_name = ""
            elif type(port_name) is str:
                port_name = _intern(port_name)
            else:
                return None
            port = raw.get("port")
            if type(port) is not int or not 1 <= port <= 65535:
                return None
            raw_proto = raw.get("protocol")
            proto = "TCP" if raw_proto is None else _FAST_PROTOCOLS.get(raw_proto) if type(raw_proto) is str else None
            if proto is None:
                return None
            pair = (port_name, proto)
            if pair in seen:
                return None
            seen.add(pair)
            target = raw.get("targetPort")
            if target is None or target == "":
                target = port
            elif type(target) is int:
                if not 1 <= target <= 65535:
                    return None
            elif type(target) is str and not target.isdigit():
                target = _intern(target)
            else:
                return None
            node_port = raw.get("nodePort")
            if node_port is not None and (type(node_port) is not int or not 1 <= node_port <= 65535):
                return None
            out.append(ServicePort(port_name, proto, port, target, node_port))
        ports = tuple(out)

    label_map = _plain_str_map(meta.get("labels"))
    if label_map is None:
        return None
    return Service(
        _intern(namespace), name, svc_type, cluster_ips, headless, ports, affinity, timeout, (), (), (),
        external_policy, internal_policy, label_map, "",
    )


def _service_general(obj: Mapping[str, Any]) -> Service:
    """parse_service for any shape: every check, errors naming the field."""
    ctx = _Ctx("Service", obj)
    meta = _metadata(ctx, obj)
    spec = _mapping(ctx, obj.get("spec"), "spec")
    status = _mapping(ctx, obj.get("status"), "status")
    svc_type = _intern(str(spec.get("type") or "ClusterIP"))
    if svc_type not in SERVICE_TYPES:
        raise ctx.bad(f"unknown spec.type {svc_type!r}")

    raw_ips = _list(ctx, spec.get("clusterIPs"), "spec.clusterIPs")
    if not raw_ips and spec.get("clusterIP"):
        raw_ips = [spec["clusterIP"]]
    headless = "None" in raw_ips
    cluster_ips: list[str] = []
    if svc_type != "ExternalName" and not headless:
        for ip in raw_ips:
            if _is_canonical_ipv4(ip):
                cluster_ips.append(ip)
                continue
            addr = _ipv4_or_6(ctx, ip, "spec.clusterIPs")
            if addr.version == 4:
                cluster_ips.append(str(addr))

    ports: list[ServicePort] = []
    names: set[tuple[str, str]] = set()
    raw_ports = _list(ctx, spec.get("ports"), "spec.ports")
    for i, raw in enumerate(raw_ports):
        where = f"spec.ports[{i}]"
        raw = _mapping(ctx, raw, where)
        name = _intern(str(raw.get("name") or ""))
        if not name and len(raw_ports) > 1:
            raise ctx.bad(f"missing name in {where} (required when a service has several ports)")
        port = _port(ctx, raw.get("port"), where)
        proto = _protocol(ctx, raw.get("protocol"), where)
        if (name, proto) in names:
            raise ctx.bad(f"duplicate port name {name!r} in {where}")
        names.add((name, proto))
        target = raw.get("targetPort")
        target_port: int | str
        if target is None or target == "":
            target_port = port
        elif isinstance(target, str) and not target.isdigit():
            target_port = _intern(target)
        else:
            target_port = _port(ctx, int(target), f"{where}.targetPort")
        node_port = raw.get("nodePort")
        ports.append(
            ServicePort(
                name=name,
                protocol=proto,
                port=port,
                target_port=target_port,
                node_port=None if node_port is None else _port(ctx, node_port, f"{where}.nodePort"),
            )
        )

    affinity = _intern(str(spec.get("sessionAffinity") or "None"))
    if affinity not in ("None", "ClientIP"):
        raise ctx.bad(f"unknown spec.sessionAffinity {affinity!r}")
    cfg = _mapping(ctx, spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    client_ip = _mapping(ctx, cfg.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
    timeout = client_ip.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise ctx.bad(f"sessionAffinityConfig.clientIP.timeoutSeconds {timeout!r} out of 1..86400")

    # (the generators only when there is something: most services have neither)
    raw_external = _list(ctx, spec.get("externalIPs"), "externalIPs")
    external_ips = tuple(
        str(_ipv4_or_6(ctx, ip, "spec.externalIPs")) for ip in raw_external
    ) if raw_external else ()
    lb = _mapping(ctx, status.get("loadBalancer"), "status.loadBalancer")
    raw_ingress = _list(ctx, lb.get("ingress"), "status.loadBalancer.ingress") if lb else ()
    ingress = tuple(
        str(_ipv4_or_6(ctx, ing["ip"], "status.loadBalancer.ingress"))
        for ing in raw_ingress
        if isinstance(ing, Mapping) and ing.get("ip")
    ) if raw_ingress else ()
    ranges: list[str] = []
    for cidr in _list(ctx, spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges"):
        try:
            ranges.append(str(ipaddress.ip_network(str(cidr).strip(), strict=False)))
        except ValueError:
            raise ctx.bad(f"invalid CIDR {cidr!r} in spec.loadBalancerSourceRanges") from None

    policies = []
    for field in ("externalTrafficPolicy", "internalTrafficPolicy"):
        value = str(spec.get(field) or "Cluster")
        if value not in ("Cluster", "Local"):
            raise ctx.bad(f"unknown spec.{field} {value!r}")
        policies.append(value)

    external_name = str(spec.get("externalName") or "") if svc_type == "ExternalName" else ""
    return Service(
        namespace=ctx.namespace,
        name=str(meta["name"]),
        type=svc_type,
        cluster_ips=tuple(cluster_ips),
        headless=headless,
        ports=tuple(ports),
        session_affinity=affinity,
        affinity_timeout=timeout,
        external_ips=external_ips,
        load_balancer_ingress=ingress,
        load_balancer_source_ranges=tuple(ranges),
        external_traffic_policy=policies[0],
        internal_traffic_policy=policies[1],
        labels=_str_map(ctx, meta.get("labels"), "metadata.labels"),
        external_name=external_name,
    )


def parse_endpoint_slice(obj: Mapping[str, Any]) -> EndpointSlice:
    """An EndpointSlice from its dict form; raises BadObject naming the slice and the reason."""
    if type(obj) is dict:
        sl = _slice_fast(obj)
        if sl is not None:
            return sl
    return _slice_general(obj)


#: (name, protocol, port) of each port of a slice -> the shared EndpointPort tuple (bounded like _shared)
_slice_ports: dict[tuple[tuple[str, str, int | None], ...], tuple[EndpointPort, ...]] = {}


def _slice_fast(obj: dict[str, Any]) -> EndpointSlice | None:
    """The EndpointSlice of the common shape (plain dicts, IPv4, string labels, ports with string or
    absent name and protocol and int or absent port, endpoints `_columns_fast` takes), or None on
    anything else, including every error: `_slice_general` then parses it and names the field.
    No error context, no label map (only the service-name label is kept), ports from a cache."""
    meta = obj.get("metadata")
    if type(meta) is not dict or obj.get("addressType") != "IPv4":
        return None
    ident = _plain_identity(meta)
    if ident is None:
        return None
    namespace, name = ident
    labels = meta.get("labels")
    if labels is None:
        service_name = ""
    elif type(labels) is dict:
        service_name = labels.get(SERVICE_NAME_LABEL, "")
        if type(service_name) is not str:
            return None
    else:
        return None
    annotation_map = _plain_str_map(meta.get("annotations"))
    if annotation_map is None:
        return None

    raw_ports = obj.get("ports")
    ports: tuple[EndpointPort, ...] = ()
    if raw_ports is not None:
        if type(raw_ports) is not list:
            return None
        triples: list[tuple[str, str, int | None]] = []
        for raw in raw_ports:
            if type(raw) is not dict:
                return None
            port_name = raw.get("name") or ""
            raw_proto = raw.get("protocol")
            proto = "TCP" if raw_proto is None else _FAST_PROTOCOLS.get(raw_proto) if type(raw_proto) is str else None
            number = raw.get("port")
            if type(port_name) is not str or proto is None or (
                number is not None and (type(number) is not int or not 1 <= number <= 65535)
            ):
                return None
            triples.append((port_name, proto, number))
        key = tuple(triples)
        cached = _slice_ports.get(key)
        if cached is None:
            cached = _share(tuple(EndpointPort(_intern(n), p, number) for n, p, number in key))
            if len(_slice_ports) >= SHARE_CACHE_MAX:
                _slice_ports.clear()
            _slice_ports[key] = cached
        ports = cached

    raws = obj.get("endpoints")
    if raws is None:
        raws = []
    elif type(raws) is not list:
        return None
    columns = _columns_fast(raws)
    if columns is None:
        return None
    addresses, conds, nodes, zones, hints, all_addresses = columns
    return EndpointSlice(
        _intern(namespace), name, _intern(service_name) if service_name else "", "IPv4", ports, addresses,
        _share(conds), _share(nodes) if any(nodes) else (), _share(zones) if any(zones) else (), hints,
        all_addresses, annotation_map,
    )


def _slice_general(obj: Mapping[str, Any]) -> EndpointSlice:
    """parse_endpoint_slice for any shape: every check, errors naming the field."""
    ctx = _Ctx("EndpointSlice", obj)
    meta = _metadata(ctx, obj)
    labels = _str_map(ctx, meta.get("labels"), "metadata.labels")
    address_type = obj.get("addressType")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise ctx.bad(f"unknown addressType {address_type!r} (IPv4, IPv6 or FQDN)")

    ports: list[EndpointPort] = []
    for i, raw in enumerate(_list(ctx, obj.get("ports"), "ports")):
        where = f"ports[{i}]"
        raw = _mapping(ctx, raw, where)
        number = raw.get("port")
        ports.append(
            EndpointPort(
                name=_intern(str(raw.get("name") or "")),
                protocol=_protocol(ctx, raw.get("protocol"), where),
                port=None if number is None else _port(ctx, number, where),
            )
        )

    raws = _list(ctx, obj.get("endpoints"), "endpoints")
    columns = _columns_fast(raws) if address_type == "IPv4" else None
    if columns is None:
        columns = _columns_general(ctx, raws, address_type)
    addresses, conds, nodes, zones, hints, all_addresses = columns
    return EndpointSlice(
        namespace=ctx.namespace,
        name=str(meta["name"]),
        service_name=labels.get(SERVICE_NAME_LABEL, ""),
        address_type=_intern(str(address_type)),
        ports=_share(tuple(ports)),
        addresses=addresses,
        conditions=_share(conds),
        node_names=_share(nodes) if any(nodes) else (),
        zones=_share(zones) if any(zones) else (),
        hints=hints,
        all_addresses=all_addresses,
        annotations=_str_map(ctx, meta.get("annotations"), "metadata.annotations"),
    )


#: the endpoint columns of a slice: first addresses, conditions bytes, node names and zones ("" when
#: absent), hints (() when no endpoint has any), every address (() when each endpoint has one)
_Columns = tuple[
    tuple[str, ...],
    bytes,
    tuple[str, ...],
    tuple[str, ...],
    tuple[tuple[tuple[str, ...], tuple[str, ...]], ...],
    tuple[tuple[str, ...], ...],
]

_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_QUAD = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
#: canonical dotted quads, one per line: exactly the strings that round-trip through inet_pton/inet_ntop
_CANONICAL_QUADS = re.compile(rf"(?:{_QUAD}\n)*{_QUAD}")
#: one canonical dotted quad
_CANONICAL_QUAD = re.compile(_QUAD)


def _columns_fast(raws: list[Any]) -> _Columns | None:
    """The endpoint columns of an IPv4 slice whose endpoints all have the common shape (plain dicts,
    one canonical address, boolean or absent conditions, string or absent nodeName/zone, no hints),
    in one tight loop and one address check for the whole slice (a regex over the joined addresses);
    None at the first other shape: `_columns_general` then parses the slice or names the bad field.
    Parsing 100k endpoints is most of a cold start."""
    addresses: list[str] = []
    conds = bytearray()
    nodes: list[str] = []
    zones: list[str] = []
    cond_byte = _COND_BYTE
    for raw in raws:
        if type(raw) is not dict or "hints" in raw:
            return None
        addrs = raw.get("addresses")
        cond = raw.get("conditions")
        if type(addrs) is not list or len(addrs) != 1 or type(cond) is not dict:
            return None
        addr = addrs[0]
        ready = cond.get("ready")
        serving = cond.get("serving")
        terminating = cond.get("terminating")
        node = raw.get("nodeName")
        zone = raw.get("zone")
        if not (  # identity tests: 1 == True, but 1 is not a boolean here
            type(addr) is str
            and (ready is None or ready is True or ready is False)
            and (serving is None or serving is True or serving is False)
            and (terminating is None or terminating is True or terminating is False)
            and (node is None or type(node) is str)
            and (zone is None or type(zone) is str)
        ):
            return None
        addresses.append(addr)
        conds.append(cond_byte[ready, serving, terminating])
        nodes.append(_intern(node) if node else "")
        zones.append(_intern(zone) if zone else "")
    if addresses:
        joined = "\n".join(addresses)
        if joined.count("\n") != len(addresses) - 1 or _CANONICAL_QUADS.fullmatch(joined) is None:
            return None
    return tuple(addresses), bytes(conds), tuple(nodes), tuple(zones), (), ()


def _columns_general(ctx: _Ctx, raws: list[Any], address_type: Any) -> _Columns:
    """The endpoint columns of a slice of any shape, endpoint by endpoint; BadObject naming the field."""
    addresses: list[str] = []
    conds = bytearray()
    nodes: list[str] = []
    zones: list[str] = []
    hints: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    all_addresses: list[tuple[str, ...]] | None = None
    fast = address_type == "IPv4"
    cond_byte = _COND_BYTE
    for i, raw in enumerate(raws):
        ep = _endpoint_fast(raw) if fast else None
        if ep is None:
            ep = _endpoint_general(ctx, i, raw, address_type)
        addrs, cond, node, zone, hint = ep
        addresses.append(addrs[0])
        conds.append(cond_byte[cond])
        nodes.append(node)
        zones.append(zone)
        if hint is not None:
            if not hints:
                hints = [_NO_HINT_PAIR] * i
            hints.append(hint)
        elif hints:
            hints.append(_NO_HINT_PAIR)
        if len(addrs) != 1 and all_addresses is None:
            all_addresses = [(a,) for a in addresses[:-1]]
        if all_addresses is not None:
            all_addresses.append(tuple(addrs))
    return tuple(addresses), bytes(conds), tuple(nodes), tuple(zones), tuple(hints), tuple(all_addresses or ())


_NO_HINTS: Mapping[str, Any] = {}
_NO_HINT_PAIR: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
#: one parsed endpoint: (addresses, (ready, serving, terminating), node name, zone, hints or None)
_ParsedEndpoint = tuple[
    tuple[str, ...] | list[str],
    tuple[bool | None, bool | None, bool | None],
    str,
    str,
    tuple[tuple[str, ...], tuple[str, ...]] | None,
]


def _endpoint_fast(raw: Any) -> _ParsedEndpoint | None:
    """An IPv4 endpoint of the common shape (a plain dict, one canonical address, boolean or absent
    conditions, no hints), or None for anything else (the general path then parses it or names the
    error). Parsing 100k endpoints is most of a cold start."""
    if type(raw) is dict and "hints" not in raw:
        addrs = raw.get("addresses")
        cond = raw.get("conditions")
        if type(addrs) is list and len(addrs) == 1 and type(cond) is dict:
            ready = cond.get("ready")
            serving = cond.get("serving")
            terminating = cond.get("terminating")
            node = raw.get("nodeName")
            zone = raw.get("zone")
            if (
                _is_canonical_ipv4(addrs[0])
                and (ready is None or ready is True or ready is False)
                and (serving is None or serving is True or serving is False)
                and (terminating is None or terminating is True or terminating is False)
                and (node is None or type(node) is str)
                and (zone is None or type(zone) is str)
            ):
                return addrs, (ready, serving, terminating), _intern(node or ""), _intern(zone or ""), None
    return None


def _endpoint_general(ctx: _Ctx, i: int, raw: Any, address_type: Any) -> _ParsedEndpoint:
    """endpoints[i] of a slice, any shape; BadObject naming the field when invalid."""
    if type(raw) is not dict:
        raw = _mapping(ctx, raw, f"endpoints[{i}]")
    get = raw.get
    addrs = get("addresses")
    if type(addrs) is not list:
        addrs = _list(ctx, addrs, f"endpoints[{i}].addresses")
    if not addrs:
        raise ctx.bad(f"no addresses in endpoints[{i}]")
    if address_type == "FQDN":
        addresses = tuple(str(a) for a in addrs)
    else:
        addresses = tuple(_endpoint_address(ctx, str(a), i, address_type) for a in addrs)
    cond = get("conditions")
    if type(cond) is not dict:
        cond = _mapping(ctx, cond, f"endpoints[{i}].conditions")
    flags = []
    for name in ("ready", "serving", "terminating"):
        value = cond.get(name)
        if value is not None and value is not True and value is not False:
            raise ctx.bad(f"endpoints[{i}].conditions.{name} is not a boolean: {value!r}")
        flags.append(value)
    hints = get("hints")
    hints = _NO_HINTS if hints is None else _mapping(ctx, hints, f"endpoints[{i}].hints")
    hint = None
    if hints:
        hint = (
            _hint_names(ctx, hints.get("forZones"), f"endpoints[{i}].hints.forZones"),
            _hint_names(ctx, hints.get("forNodes"), f"endpoints[{i}].hints.forNodes"),
        )
    return (
        addresses,
        (flags[0], flags[1], flags[2]),
        _intern(str(get("nodeName") or "")),
        _intern(str(get("zone") or "")),
        hint,
    )


def _endpoint_address(ctx: _Ctx, a: str, i: int, address_type: Any) -> str:
    """An address of endpoints[i] in canonical form; BadObject when invalid or of the other family."""
    if address_type == "IPv4":
        # fast path: a canonical dotted quad round-trips unchanged
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, a)) == a:
                return a
        except OSError:
            pass
    addr = _ipv4_or_6(ctx, a, f"endpoints[{i}].addresses")
    if f"IPv{addr.version}" != address_type:
        raise ctx.bad(f"address {a!r} in endpoints[{i}] is not {address_type}")
    return str(addr)


def _hint_names(ctx: _Ctx, value: Any, where: str) -> tuple[str, ...]:
    out = []
    for item in _list(ctx, value, where):
        if not isinstance(item, Mapping) or not item.get("name"):
            raise ctx.bad(f"entry without name in {where}")
        out.append(str(item["name"]))
    return tuple(out)
