"""Builders of Service and EndpointSlice dicts as `kubectl get -o yaml` prints them."""

from __future__ import annotations

from typing import Any


def service(
    name: str = "web",
    ns: str = "default",
    *,
    ip: str | None = "10.96.0.10",
    ports: list[dict[str, Any]] | None = None,
    type: str = "ClusterIP",
    **spec: Any,
) -> dict[str, Any]:
    """A v1 Service dict."""
    body: dict[str, Any] = {"type": type, "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP",
                                                               "targetPort": 8080}]}
    if ip is not None:
        body["clusterIP"] = ip
        body["clusterIPs"] = [ip]
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoint(ip: str, *, ready: bool | None = True, serving: bool | None = None,
             terminating: bool | None = None, node: str = "n1") -> dict[str, Any]:
    """One endpoints[] entry."""
    cond: dict[str, Any] = {}
    for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)):
        if v is not None:
            cond[k] = v
    return {"addresses": [ip], "conditions": cond, "nodeName": node}


def slice_(
    name: str = "web-abc",
    ns: str = "default",
    *,
    svc: str | None = "web",
    ports: list[dict[str, Any]] | None = None,
    endpoints: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """A discovery.k8s.io/v1 EndpointSlice dict."""
    labels = {"kubernetes.io/service-name": svc} if svc else {}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints if endpoints is not None else [endpoint("10.0.0.1"), endpoint("10.0.0.2")],
    }
