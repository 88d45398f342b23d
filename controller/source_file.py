"""The standalone source: Services, EndpointSlices and Nodes from a YAML/JSON file or directory.

Place in the data flow: the first stage. `FileSource` polls PATH (one file, or the *.yaml, *.yml
and *.json files of a directory), re-reads files whose (mtime_ns, size, inode) changed, and
reports each object added, changed or removed to a `SourceHandler`, then `on_synced` per kind
after the first complete read. Objects are passed as plain dicts, exactly as
`kubectl get -o yaml` prints them; parsing into typed objects is the trackers' job. Between
reads it keeps each file's text, not its parsed objects (at 100k endpoints the dicts would cost
several times the text); a changed file's previous objects are parsed again from the old text.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bpfproxy.controller.source import API_VERSIONS, KINDS, SourceHandler, object_key

log = logging.getLogger(__name__)

#: file name endings read from a directory
SUFFIXES = (".yaml", ".yml", ".json")

#: (kind, key) of one object
ObjectId = tuple[str, str]


class LoadError(Exception):
    """A file that cannot be read or parsed; the message names the file and line."""


@dataclass
class _FileState:
    """What is known of one file."""

    stamp: tuple[int, int, int]
    """(mtime_ns, size, inode) when last read"""
    text: str = ""
    """its text at its last good parse"""


def read_text(path: str) -> str:
    """The text of a file; raises LoadError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise LoadError(f"cannot read {path}: {e}") from None


def read_documents(path: str) -> list[Any]:
    """Every document of a YAML (multi-document) or JSON file; raises LoadError with file and line."""
    return parse_documents(read_text(path), path)


def parse_documents(text: str, path: str) -> list[Any]:
    """Every document of the text of file path (JSON when it ends in .json, else YAML)."""
    if path.endswith(".json"):
        try:
            return [json.loads(text)] if text.strip() else []
        except json.JSONDecodeError as e:
            raise LoadError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    import yaml  # only YAML files need it

    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise LoadError(f"{path}{line}: invalid YAML: {problem}") from None


def extract_objects(docs: Iterable[Any], origin: str, *, quiet: bool = False) -> dict[ObjectId, dict[str, Any]]:
    """The Service/EndpointSlice/Node objects of parsed documents (`kind: List` expanded).

    Anything else (unknown kind or apiVersion, missing metadata.name) is logged once and skipped
    (quiet: not logged, for a text parsed again).
    """
    out: dict[ObjectId, dict[str, Any]] = {}
    stack = list(docs)
    stack.reverse()
    while stack:
        doc = stack.pop()
        if not isinstance(doc, dict):
            if not quiet:
                log.error("skipping a document that is not a mapping file=%s", origin)
            continue
        kind = doc.get("kind")
        if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
            items = doc.get("items") or []
            if isinstance(items, list):
                stack.extend(reversed(items))
            continue
        name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
        if kind not in API_VERSIONS or doc.get("apiVersion") != API_VERSIONS[kind]:
            if not quiet:
                log.warning(
                "skipping object of unknown kind file=%s kind=%s apiVersion=%s name=%s",
                origin, kind, doc.get("apiVersion"), name,
            )
            continue
        key = object_key(doc)
        if key is None:
            if not quiet:
                log.error("skipping object without metadata.name file=%s kind=%s", origin, kind)
            continue
        out[(str(kind), key)] = doc
    return out


def load_path(path: str) -> dict[ObjectId, dict[str, Any]]:
    """Every object under PATH in one read (for dry runs); unreadable files are logged and skipped."""
    objects: dict[ObjectId, dict[str, Any]] = {}
    for file in list_files(path):
        try:
            objects.update(extract_objects(read_documents(file), file))
        except LoadError as e:
            log.error("%s", e)
    return objects


def list_files(path: str) -> list[str]:
    """PATH itself when it is a file, else the *.yaml, *.yml, *.json files of the directory, sorted."""
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            log.error("cannot list directory path=%s error=%s", path, e)
            return []
        return [
            os.path.join(path, n) for n in names
            if n.endswith(SUFFIXES) and not n.startswith(".") and os.path.isfile(os.path.join(path, n))
        ]
    return [path] if os.path.exists(path) else []


class FileSource:
    """Polls a file or directory of Kubernetes objects and reports changes to a handler."""

    def __init__(self, path: str, handler: SourceHandler, *, poll_interval: float = 0.2) -> None:
        self.path = path
        self.handler = handler
        self.poll_interval = poll_interval
        self._files: dict[str, _FileState] = {}
        self._fresh: dict[str, dict[ObjectId, dict[str, Any]]] = {}
        """objects of the files read in this scan (dropped once reported)"""
        self._emitted: dict[str, str] = {}
        """file -> text as of the last report"""
        self._synced = False
        self._missing_logged = False

    def run(self, stop: threading.Event) -> None:
        """Scan now, announce the first sync, then rescan every poll_interval until stop is set."""
        log.info("file source started path=%s poll_interval=%s", self.path, self.poll_interval)
        while not stop.is_set():
            self.scan()
            stop.wait(self.poll_interval)

    def scan(self) -> int:
        """One poll: re-read changed files, report changed objects; returns how many were reported."""
        files = list_files(self.path)
        if not files and not os.path.exists(self.path) and not self._missing_logged:
            log.error("source path does not exist path=%s", self.path)
            self._missing_logged = True
        changed = False
        for gone in set(self._files) - set(files):
            del self._files[gone]
            changed = True
        for file in files:
            changed |= self._refresh(file)
        reported = self._emit() if changed or not self._synced else 0
        # a missing PATH is never "synced": that would make the proxier delete every service
        if not self._synced and os.path.exists(self.path):
            self._synced = True
            for kind in KINDS:
                self.handler.on_synced(kind)
        return reported

    def _refresh(self, file: str) -> bool:
        try:
            st = os.stat(file)
        except OSError:
            return self._files.pop(file, None) is not None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        state = self._files.get(file)
        if state is not None and state.stamp == stamp:
            return False
        try:
            text = read_text(file)
            objects = extract_objects(parse_documents(text, file), file)
        except LoadError as e:
            old = state.text if state else ""
            kept = len(self._objects(file, old)) if old else 0
            log.error("%s; keeping its %d previously read objects", e, kept)
            self._files[file] = _FileState(stamp, old)
            return False
        self._files[file] = _FileState(stamp, text)
        self._fresh[file] = objects
        return True

    def _objects(self, file: str, text: str) -> dict[ObjectId, dict[str, Any]]:
        """The objects of an earlier good read of file (its text parses: it did before)."""
        if not text:
            return {}
        return extract_objects(parse_documents(text, file), file, quiet=True)

    def _emit(self) -> int:
        merged: dict[ObjectId, dict[str, Any]] = {}
        before: dict[ObjectId, dict[str, Any]] = {}
        for file in sorted(set(self._files) | set(self._emitted)):
            state = self._files.get(file)
            now = self._fresh.get(file)
            if now is None and state is not None:
                now = self._objects(file, state.text)
            merged.update(now or {})
            if file in self._emitted:
                same = now is not None and state is not None and self._emitted[file] == state.text
                before.update(now if same and now is not None else self._objects(file, self._emitted[file]))
        self._fresh = {}
        reported = 0
        for oid in sorted(set(before) - set(merged)):
            self.handler.on_object(oid[0], oid[1], None)
            reported += 1
        for oid, obj in sorted(merged.items(), key=lambda kv: kv[0]):
            if before.get(oid) != obj:
                self.handler.on_object(oid[0], oid[1], obj)
                reported += 1
        self._emitted = {file: state.text for file, state in self._files.items() if state.text}
        return reported
