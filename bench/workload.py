"""The benchmark services: N ClusterIP services, each with the same 10 backend pods, as Kubernetes objects.

Place in the data flow: the start of it, like the lab's manifests. B1 feeds these objects to the
real controller (Proxier + MapsWriter); B2 and B4 write them into the file the real agent reads,
and B2 turns them into kube-proxy-style iptables and nftables rules (rules.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfproxy.controller.source import KIND_ENDPOINT_SLICE, KIND_SERVICE
from common import BACKEND_PORT, ENDPOINTS_PER_SERVICE, SERVICE_PORT, service_ip

from bpfproxy.lab import manifests

#: the namespace of every benchmark service
NAMESPACE = "bench"
#: the address of backend pod j is BACKEND_NET.<10 + j>
BACKEND_NET = "10.244.2"
#: the node name of every endpoint (the agent's --node-name)
NODE_NAME = "bench-node"


def backend_ips(count: int = ENDPOINTS_PER_SERVICE) -> list[str]:
    """Addresses of the backend pods."""
    return [f"{BACKEND_NET}.{10 + j}" for j in range(count)]


@dataclass(frozen=True)
class BenchService:
    """One benchmark service as the rule generators need it."""

    name: str
    """service name (namespace NAMESPACE)"""
    ip: str
    """ClusterIP"""
    port: int
    """service port (TCP)"""
    endpoints: tuple[tuple[str, int], ...]
    """(address, port) of each ready endpoint"""


def bench_services(count: int, backends: int = ENDPOINTS_PER_SERVICE) -> list[BenchService]:
    """Services 0..count-1: svc-<i> on service_ip(i):SERVICE_PORT, every backend on BACKEND_PORT."""
    eps = tuple((ip, BACKEND_PORT) for ip in backend_ips(backends))
    return [BenchService(f"svc-{i}", service_ip(i), SERVICE_PORT, eps) for i in range(count)]


#: the self-addressed service: its only endpoint is its own ClusterIP and port, so DNAT and reverse
#: NAT leave its packets unchanged and B1 can time established and reply packets in the kernel loop
SELF_SERVICE = BenchService("svc-self", "10.111.0.1", SERVICE_PORT, (("10.111.0.1", SERVICE_PORT),))


def objects(services: list[BenchService]) -> list[dict[str, Any]]:
    """The v1 Service and discovery.k8s.io/v1 EndpointSlice objects of services."""
    out: list[dict[str, Any]] = []
    for s in services:
        ports = [manifests.Port("http", s.port, target_port=s.endpoints[0][1] if s.endpoints else s.port)]
        out.append(manifests.service(s.name, s.ip, ports, namespace=NAMESPACE))
        eps = [manifests.Endpoint(ip, node=NODE_NAME) for ip, _ in s.endpoints]
        out.append(manifests.endpoint_slice(s.name, ports, eps, namespace=NAMESPACE))
    return out


def write_source(path: Path, services: list[BenchService]) -> None:
    """Write the objects as one `kind: List` JSON file (what `kubectl get -o json` prints), atomically."""
    doc = {"apiVersion": "v1", "kind": "List", "items": objects(services)}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def feed(handler: Any, services: list[BenchService]) -> None:
    """Deliver the objects to a SourceHandler (e.g. a Proxier) as a source's first list would."""
    for obj in objects(services):
        kind = KIND_SERVICE if obj["kind"] == "Service" else KIND_ENDPOINT_SLICE
        handler.on_object(kind, f"{NAMESPACE}/{obj['metadata']['name']}", obj)
    handler.on_synced(KIND_SERVICE)
    handler.on_synced(KIND_ENDPOINT_SLICE)
