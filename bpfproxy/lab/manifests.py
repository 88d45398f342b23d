"""Kubernetes objects for the lab, as `kubectl get -o yaml` prints them.

Place in the data flow: the start of it. The lab and the tests write these dicts as YAML into the
directory the agent's file source watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Port:
    """One service port and where its endpoints listen."""

    name: str
    """port name ("" for none)"""
    port: int
    """service port"""
    protocol: str = "TCP"
    """TCP or UDP"""
    target_port: int | str | None = None
    """targetPort: a number or a container port name (default: the port)"""
    endpoint_port: int | None = None
    """the port number the endpoints listen on (EndpointSlice port; default: target_port or port)"""


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of an EndpointSlice."""

    ip: str
    """pod address"""
    pod: str = ""
    """pod name (targetRef)"""
    ready: bool | None = True
    """conditions.ready (None: left out)"""
    serving: bool | None = True
    """conditions.serving"""
    terminating: bool | None = False
    """conditions.terminating"""
    node: str = "lab-node"
    """nodeName"""


def service(
    name: str,
    cluster_ip: str,
    ports: Sequence[Port],
    *,
    namespace: str = "demo",
    affinity_timeout: int | None = None,
    affinity: bool = False,
) -> dict[str, Any]:
    """A v1 Service of type ClusterIP; affinity=True adds sessionAffinity ClientIP."""
    spec: dict[str, Any] = {
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [
            {
                **({"name": p.name} if p.name else {}),
                "port": p.port,
                "protocol": p.protocol,
                "targetPort": p.target_port if p.target_port is not None else p.port,
            }
            for p in ports
        ],
        "selector": {"app": name},
        "sessionAffinity": "ClientIP" if affinity else "None",
        "type": "ClusterIP",
    }
    if affinity and affinity_timeout is not None:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity_timeout}}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "uid": f"uid-{namespace}-{name}"},
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def endpoint_slice(
    service_name: str,
    ports: Sequence[Port],
    endpoints: Sequence[Endpoint],
    *,
    namespace: str = "demo",
    suffix: str = "abcde",
) -> dict[str, Any]:
    """A discovery.k8s.io/v1 EndpointSlice of the service."""

    def endpoint_port(p: Port) -> int:
        if p.endpoint_port is not None:
            return p.endpoint_port
        return p.target_port if isinstance(p.target_port, int) else p.port

    def conditions(e: Endpoint) -> dict[str, bool]:
        return {
            k: v
            for k, v in (("ready", e.ready), ("serving", e.serving), ("terminating", e.terminating))
            if v is not None
        }

    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "resourceVersion": "1",
        },
        "addressType": "IPv4",
        "ports": [
            {**({"name": p.name} if p.name else {}), "port": endpoint_port(p), "protocol": p.protocol} for p in ports
        ],
        "endpoints": [
            {
                "addresses": [e.ip],
                "conditions": conditions(e),
                "nodeName": e.node,
                **({"targetRef": {"kind": "Pod", "name": e.pod, "namespace": namespace}} if e.pod else {}),
            }
            for e in endpoints
        ],
    }
