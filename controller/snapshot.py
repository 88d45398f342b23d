"""Snapshot: the desired datapath for a whole source dump, without a kernel (`bpfproxy plan --json`).

Place in the data flow: a dry run of the whole pipeline. `load_objects()` reads a file or
directory with the file source's reader and parses it like the trackers do (bad objects logged
and skipped); `desired_state()` translates and plans from an empty state; `state_to_json()` gives
a JSON-able view; `plan_json()` does all three.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from bpfproxy.controller.plan import DatapathState, Limits, plan
from bpfproxy.controller.source import KIND_ENDPOINT_SLICE, KIND_SERVICE
from bpfproxy.controller.source_file import load_path
from bpfproxy.controller.tracker import EndpointSliceChangeTracker, ServiceChangeTracker
from bpfproxy.controller.translate import PROTO_NAMES, Frontend, NodeConfig, programmed_frontends
from bpfproxy.loader.structs import BE_F_TERMINATING, SVC_F_AFFINITY, SVC_F_DROP_NO_EP, SVC_SCOPE_INT

log = logging.getLogger(__name__)


def load_objects(path: str) -> tuple[ServiceChangeTracker, EndpointSliceChangeTracker]:
    """Trackers holding every valid Service and EndpointSlice under path (bad ones logged, counted)."""
    services = ServiceChangeTracker()
    slices = EndpointSliceChangeTracker()
    for (kind, key), obj in sorted(load_path(path).items()):
        if kind == KIND_SERVICE:
            services.update(key, obj)
        elif kind == KIND_ENDPOINT_SLICE:
            slices.update(key, obj)
    return services, slices


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


def plan_json(path: str, node: NodeConfig, limits: Limits | None = None) -> dict[str, Any]:
    """The desired datapath of a source dump as JSON-able data, plus the count of bad objects."""
    services, slices = load_objects(path)
    out = state_to_json(desired_state(services, slices, node, limits))
    out["bad_objects"] = services.bad_objects + slices.bad_objects
    return out
