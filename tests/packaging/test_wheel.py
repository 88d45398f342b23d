"""Packaging: a non-editable install ships the C sources and installs only the bpfproxy namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_c_sources_under_bpfproxy_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("bpfproxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bpfproxy/bpf/bpf_tc.c" in names
    for header in ("consts.h", "structs.h", "maps.h"):
        assert f"bpfproxy/bpf/include/{header}" in names
    assert "bpfproxy/loader/build.py" in names and "bpfproxy/controller/__init__.py" in names
    top = {n.split("/", 1)[0] for n in names}
    assert top <= {"bpfproxy", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top


def test_installed_package_finds_its_c_sources(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
    )
    probe = "from bpfproxy.loader.structs import BPF_DIR; print(BPF_DIR); assert (BPF_DIR / 'bpf_tc.c').is_file()"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip().startswith(str(target)), out
    assert not (target / "loader").exists() and not (target / "controller").exists()
