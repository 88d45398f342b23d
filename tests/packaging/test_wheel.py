"""Packaging: a non-editable install ships the C sources and installs only the bpfproxy namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_copy(tmp_path: Path) -> Path:
    """The sources as a fresh clone has them (setuptools would reuse a stale build/ of the checkout)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    src = tmp_path / "src"
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    return src


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
            str(clean_copy(tmp_path)),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("bpfproxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bpfproxy/bpf/bpf_tc.c" in names
    for header in ("consts.h", "structs.h", "maps.h"):
        assert f"bpfproxy/bpf/include/{header}" in names
    assert "bpfproxy/loader/build.py" in names and "bpfproxy/controller/__init__.py" in names
    # every module of the source tree is shipped (a subpackage missing from pyproject's list is not)
    mapped = {"bpfproxy": "bpfproxy", "loader": "bpfproxy/loader", "controller": "bpfproxy/controller"}
    for folder, installed in mapped.items():
        for module in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in module.parts:
                assert f"{installed}/{module.relative_to(REPO / folder).as_posix()}" in names, module
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
            str(clean_copy(tmp_path)),
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
