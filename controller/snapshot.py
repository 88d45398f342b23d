"""Snapshot: the desired datapath for a whole source dump, without a kernel (`bpfproxy plan`, `explain`).

Place in the data flow: a dry run of the whole pipeline. `load_source()` lists a source once
(file:PATH with the file source's reader, or kube with one list per kind) into a `Collected`
handler that parses like the trackers do (bad objects logged and skipped) and keeps Node objects
(for the node's zone); `desired_state()` translates (programmed frontends) and plans from an
empty state; `state_to_json()` gives a JSON-able view; `plan_json()` does all three and adds the
external frontends (NodePort, ExternalIP, LoadBalancer) computed but not programmed yet.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from bpfproxy.controller.plan import DatapathState, Limits, plan
from bpfproxy.controller.source import KIND_ENDPOINT_SLICE, KIND_NODE, KIND_SERVICE, parse_source_spec
from bpfproxy.controller.source_file import load_path
from bpfproxy.controller.topology import node_zone
from bpfproxy.controller.tracker import EndpointSliceChangeTracker, ServiceChangeTracker
from bpfproxy.controller.translate import (
    PROTO_NAMES,
    Frontend,
    NodeConfig,
    programmed_frontends,
    translate_service,
)
from bpfproxy.loader.structs import BE_F_TERMINATING, SVC_F_AFFINITY, SVC_F_DROP_NO_EP, SVC_SCOPE_INT

log = logging.getLogger(__name__)


class Collected:
    """A SourceHandler that keeps one listing: Services and slices parsed in trackers, Nodes as dicts."""

    def __init__(self) -> None:
        self.services = ServiceChangeTracker()
        """every valid Service"""
        self.slices = EndpointSliceChangeTracker()
        """every valid EndpointSlice"""
        self.nodes: dict[str, dict[str, Any]] = {}
        """v1 Node objects by name"""
        self.synced: set[str] = set()
        """kinds whose listing is complete"""

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        """Keep (or forget) one object."""
        if kind == KIND_SERVICE:
            self.services.update(key, obj)
        elif kind == KIND_ENDPOINT_SLICE:
            self.slices.update(key, obj)
        elif kind == KIND_NODE:
            if obj is None:
                self.nodes.pop(key, None)
            else:
                self.nodes[key] = obj

    def on_synced(self, kind: str) -> None:
        """Note a complete listing."""
        self.synced.add(kind)

    @property
    def bad_objects(self) -> int:
        """Services and slices skipped as invalid."""
        return self.services.bad_objects + self.slices.bad_objects

    def node_config(self, node: NodeConfig) -> NodeConfig:
        """node with its zone taken from the Node object named node.node_name, when it has none."""
        if node.zone or node.node_name not in self.nodes:
            return node
        return dataclasses.replace(node, zone=node_zone(self.nodes[node.node_name]))


def load_source(spec: str, *, kubeconfig: str | None = None, node_name: str = "") -> Collected:
    """List a `--source` (file:PATH or kube) once; ValueError for a bad spec, OSError/RuntimeError when unreadable."""
    kind, path = parse_source_spec(spec)
    out = Collected()
    if kind == "file":
        for (obj_kind, key), obj in sorted(load_path(path).items()):
            out.on_object(obj_kind, key, obj)
        return out
    from bpfproxy.controller.source_kube import list_objects

    list_objects(out, kubeconfig=kubeconfig, node_name=node_name)
    return out


def load_objects(path: str) -> tuple[ServiceChangeTracker, EndpointSliceChangeTracker]:
    """Trackers holding every valid Service and EndpointSlice under path (bad ones logged, counted)."""
    got = load_source(f"file:{path}")
    return got.services, got.slices


def all_frontends(
    services: ServiceChangeTracker, slices: EndpointSliceChangeTracker, node: NodeConfig
) -> list[Frontend]:
    """Every frontend of every service, in service key order."""
    out: list[Frontend] = []
    for key in sorted(services.services):
        out.extend(programmed_frontends(services.services[key], slices.slices_for(key), node))
    return out


def desired_state(
    services: ServiceChangeTracker,
    slices: EndpointSliceChangeTracker,
    node: NodeConfig,
    limits: Limits | None = None,
) -> DatapathState:
    """The planned state from nothing applied."""
    return plan(all_frontends(services, slices, node), DatapathState(), limits or Limits())


def _flags(flags: int, names: Iterable[tuple[int, str]]) -> list[str]:
    return [name for bit, name in names if flags & bit]


def state_to_json(state: DatapathState) -> dict[str, Any]:
    """A JSON-able view: frontends (with their backends), address entries, skipped services."""
    frontends = []
    for key, entry in sorted(state.frontends.items()):
        slot_ids = set(entry.backend_ids)
        backends = []
        for ident in sorted(state.svc_backends(entry.svc_id),
                            key=lambda i: (i not in slot_ids, state.backends[i].addr, state.backends[i].port)):
            be = state.backends[ident]
            backends.append({
                "id": ident,
                "addr": be.addr,
                "port": be.port,
                "slot": entry.backend_ids.index(ident) + 1 if ident in slot_ids else None,
                "terminating": bool(be.flags & BE_F_TERMINATING),
            })
        frontends.append({
            "kind": "ClusterIP",
            "service": entry.service,
            "name": entry.name,
            "addr": key.addr,
            "port": key.port,
            "proto": PROTO_NAMES.get(key.proto, str(key.proto)),
            "scope": "internal" if key.scope == SVC_SCOPE_INT else "external",
            "svc_id": entry.svc_id,
            "flags": _flags(entry.flags, ((SVC_F_AFFINITY, "affinity"), (SVC_F_DROP_NO_EP, "drop_no_ep"))),
            "affinity_timeout": entry.affinity_timeout,
            "backends": backends,
        })
    return {
        "frontends": frontends,
        "addresses": sorted(state.addresses),
        "skipped": dict(sorted(state.skipped.items())),
        "usage": {"lb_entries": state.lb_usage(), "backends": len(state.backends),
                  "svc_ids": len(state.frontends)},
    }


def external_frontends(
    services: ServiceChangeTracker, slices: EndpointSliceChangeTracker, node: NodeConfig
) -> list[dict[str, Any]]:
    """NodePort, ExternalIP and LoadBalancer frontends: computed, not programmed yet (JSON-able)."""
    out = []
    for key in sorted(services.services):
        for f in translate_service(services.services[key], slices.slices_for(key), node):
            if f.kind == "ClusterIP":
                continue
            out.append({
                "kind": f.kind,
                "service": f.service,
                "name": f.name,
                "addr": f.addr,
                "port": f.port,
                "proto": PROTO_NAMES.get(f.proto, str(f.proto)),
                "flags": ["drop_no_ep"] if f.drop_no_ep else [],
                "affinity_timeout": f.affinity_timeout,
                "source_ranges": list(f.source_ranges),
                "backends": [{"addr": b.addr, "port": b.port, "terminating": b.terminating} for b in f.backends],
            })
    return out


def collected_plan_json(got: Collected, node: NodeConfig, limits: Limits | None = None) -> dict[str, Any]:
    """The desired datapath of a listing as JSON-able data, the external frontends and the bad-object count."""
    node = got.node_config(node)
    out = state_to_json(desired_state(got.services, got.slices, node, limits))
    out["external_frontends"] = external_frontends(got.services, got.slices, node)
    out["node"] = {"name": node.node_name, "zone": node.zone, "ips": list(node.node_ips)}
    out["bad_objects"] = got.bad_objects
    return out


def plan_json(path: str, node: NodeConfig, limits: Limits | None = None) -> dict[str, Any]:
    """The desired datapath of a file source (file or directory) as JSON-able data."""
    return collected_plan_json(load_source(f"file:{path}"), node, limits)
