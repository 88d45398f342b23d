"""FileSource: directories of multi-document and List files, change detection, bad YAML, deletions."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from bpfproxy.controller.source_file import FileSource, load_path
from kobj import service, slice_


class Recorder:
    """A SourceHandler that records every call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any] | None]] = []
        self.synced: list[str] = []

    def on_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        self.events.append((kind, key, obj))

    def on_synced(self, kind: str) -> None:
        self.synced.append(kind)

    def take(self) -> list[tuple[str, str, bool]]:
        out = [(k, key, obj is not None) for k, key, obj in self.events]
        self.events.clear()
        return out


def write(path: Path, *docs: Any) -> None:
    path.write_text(yaml.safe_dump_all(list(docs)))
    st = path.stat()
    # make every rewrite visible even within one mtime tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_directory_multidoc_and_list(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service("web"), slice_("web-1"))
    (tmp_path / "b.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                                 "items": [service("db", "prod")]}))
    (tmp_path / "node.yml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Node",
                                                       "metadata": {"name": "n1"}}))
    (tmp_path / "notes.txt").write_text("ignored")
    rec = Recorder()
    src = FileSource(str(tmp_path), rec)
    src.scan()
    assert sorted(rec.take()) == [
        ("EndpointSlice", "default/web-1", True),
        ("Node", "n1", True),
        ("Service", "default/web", True),
        ("Service", "prod/db", True),
    ]
    assert rec.synced == ["Service", "EndpointSlice", "Node"]
    src.scan()
    assert rec.take() == [] and len(rec.synced) == 3


def test_single_file_path_and_changes(tmp_path: Path) -> None:
    f = tmp_path / "objs.yaml"
    write(f, service("web"), service("api"))
    rec = Recorder()
    src = FileSource(str(f), rec)
    src.scan()
    rec.take()
    write(f, service("web", ip="10.96.0.11"))
    src.scan()
    assert sorted(rec.take()) == [("Service", "default/api", False), ("Service", "default/web", True)]
    assert rec.synced == ["Service", "EndpointSlice", "Node"]


def test_bad_yaml_keeps_previous_objects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "svc.yaml"
    write(f, service("web"))
    rec = Recorder()
    src = FileSource(str(tmp_path), rec)
    src.scan()
    rec.take()
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web\n  bad: [\n")
    with caplog.at_level(logging.ERROR):
        src.scan()
        src.scan()
    assert rec.take() == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"{f}:" in errors[0] and "invalid YAML" in errors[0]
    write(f, service("web", ip="10.96.0.12"))
    src.scan()
    assert rec.take() == [("Service", "default/web", True)]


def test_removed_file_deletes_objects(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service("web"))
    write(tmp_path / "b.yaml", slice_("web-1"))
    rec = Recorder()
    src = FileSource(str(tmp_path), rec)
    src.scan()
    rec.take()
    (tmp_path / "b.yaml").unlink()
    src.scan()
    assert rec.take() == [("EndpointSlice", "default/web-1", False)]


def test_unknown_kind_and_missing_name_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}},
          {"apiVersion": "v1", "kind": "Service", "metadata": {}}, service("web"))
    rec = Recorder()
    with caplog.at_level(logging.WARNING):
        FileSource(str(tmp_path), rec).scan()
    assert rec.take() == [("Service", "default/web", True)]
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("ConfigMap" in m for m in msgs) == 1
    assert sum("without metadata.name" in m for m in msgs) == 1


def test_run_picks_up_changes_within_a_second(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write(f, service("web"))
    rec = Recorder()
    stop = threading.Event()
    t = threading.Thread(target=FileSource(str(tmp_path), rec, poll_interval=0.05).run, args=(stop,))
    t.start()
    try:
        deadline = time.monotonic() + 1
        while not rec.events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.take() == [("Service", "default/web", True)]
        write(tmp_path / "b.yaml", service("api"))
        deadline = time.monotonic() + 1
        while not rec.events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.take() == [("Service", "default/api", True)]
    finally:
        stop.set()
        t.join()


def test_load_path(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service("web"), slice_("web-1"))
    (tmp_path / "bad.yaml").write_text("{")
    assert sorted(load_path(str(tmp_path))) == [("EndpointSlice", "default/web-1"), ("Service", "default/web")]


def test_missing_path_is_not_synced_until_it_appears(tmp_path: Path) -> None:
    rec = Recorder()
    src = FileSource(str(tmp_path / "later"), rec)
    src.scan()
    assert rec.synced == []
    (tmp_path / "later").mkdir()
    write(tmp_path / "later" / "a.yaml", service("web"))
    src.scan()
    assert rec.take() == [("Service", "default/web", True)] and len(rec.synced) == 3


def test_change_in_one_file_reports_only_its_changed_objects(tmp_path: Path) -> None:
    """Parsed objects are not kept between scans (the texts are): a change in one file reports
    exactly the objects that changed there, an object moved to another file unchanged is not
    reported, and the other file's objects are not reported again."""
    write(tmp_path / "a.yaml", service("web"), service("api"))
    write(tmp_path / "b.yaml", slice_("web-1"))
    rec = Recorder()
    src = FileSource(str(tmp_path), rec)
    src.scan()
    assert sorted(rec.take()) == [("EndpointSlice", "default/web-1", True), ("Service", "default/api", True),
                                  ("Service", "default/web", True)]
    changed = service("web")
    changed["spec"]["ports"][0]["port"] = 8081
    write(tmp_path / "a.yaml", changed, service("api"))
    src.scan()
    assert rec.take() == [("Service", "default/web", True)]
    assert rec.events == [] and src.scan() == 0
    write(tmp_path / "a.yaml", changed)
    write(tmp_path / "b.yaml", slice_("web-1"), service("api"))  # api moves, unchanged
    src.scan()
    assert rec.take() == []
    write(tmp_path / "b.yaml", slice_("web-1"))
    src.scan()
    assert rec.take() == [("Service", "default/api", False)]
