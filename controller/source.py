"""The contract between object sources (file, Kubernetes API) and the proxier.

Place in the data flow: a source (source_file.FileSource, later the Kubernetes list+watch source)
calls a `SourceHandler` with plain object dicts; the proxier implements it and feeds its change
trackers. Sources hold no business logic: they only say what exists, what changed, and when the
first complete list of a kind is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

#: kind of v1 Service objects
KIND_SERVICE = "Service"
#: kind of discovery.k8s.io/v1 EndpointSlice objects
KIND_ENDPOINT_SLICE = "EndpointSlice"
#: kind of v1 Node objects
KIND_NODE = "Node"

#: apiVersion accepted for each kind
API_VERSIONS: dict[str, str] = {
    KIND_SERVICE: "v1",
    KIND_ENDPOINT_SLICE: "discovery.k8s.io/v1",
    KIND_NODE: "v1",
}

#: every kind a source reports, in the order its first sync is announced
KINDS: tuple[str, ...] = (KIND_SERVICE, KIND_ENDPOINT_SLICE, KIND_NODE)


class SourceHandler(Protocol):
    """Receives objects from a source; called from the source's thread."""

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        """Object `key` ("ns/name"; "name" for cluster-scoped kinds) of `kind` is now obj; None = deleted."""

    def on_synced(self, kind: str) -> None:
        """The first complete list of `kind` has been delivered through on_object."""


def report_objects(handler: SourceHandler, kind: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Hand listed objects (key, obj) of one kind to handler: one `on_objects(kind, items)` call when
    the handler has that optional method (exactly on_object for each, at a lower cost per object, as
    the proxier does), else on_object for each."""
    batch = getattr(handler, "on_objects", None)
    if batch is not None:
        batch(kind, items)
        return
    for key, obj in items:
        handler.on_object(kind, key, obj)


def object_key(obj: dict[str, Any]) -> str | None:
    """ "namespace/name" of a namespaced object ("name" for a Node); None without metadata.name."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        return None
    if obj.get("kind") == KIND_NODE:
        return str(meta["name"])
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


def parse_source_spec(spec: str) -> tuple[str, str]:
    """The `--source` value as ("file", PATH) or ("kube", ""); ValueError with the accepted forms otherwise."""
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        if not path:
            raise ValueError(f"--source {spec!r}: file: needs a path (file:PATH)")
        return ("file", path)
    if spec == "kube":
        return ("kube", "")
    raise ValueError(f"--source {spec!r}: expected file:PATH (a YAML file or directory) or kube (the Kubernetes API)")
