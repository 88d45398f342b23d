"""`bpfproxy lab up|down` and `bpfproxy lab demo` as a user runs them: processes, namespaces, pins."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bpfproxy.lab import netns


def bpfproxy(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "bpfproxy", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_lab_up_serves_the_service_and_down_removes_everything() -> None:
    out = bpfproxy("lab", "up")
    rid = re.search(r"lab (\w+) is up", out)
    assert rid, out
    node_ns = f"bpx-{rid.group(1)}-node"
    pin_dir = f"/sys/fs/bpf/bpfproxy-lab-{rid.group(1)}"
    try:
        assert netns.exists(node_ns) and os.path.exists(f"{pin_dir}/bpx_svc_v1")
        answer = netns.sh(["curl", "-s", "--max-time", "2", "http://10.96.0.10/"], ns=f"bpx-{rid.group(1)}-client")
        assert re.match(r"pod=web-\d client=10\.244\.1\.10:\d+", answer), answer
    finally:
        assert f"lab {rid.group(1)} removed" in bpfproxy("lab", "down", rid.group(1))
    assert not netns.exists(node_ns) and not os.path.exists(pin_dir)
    assert not [n for n in os.listdir(netns.NETNS_DIR) if rid.group(1) in n]


def test_demo_passes_and_cleans_up() -> None:
    out = bpfproxy("lab", "demo")
    assert "demo passed" in out, out
    assert "client addresses the backends saw: 10.244.1.10" in out
    rid = re.search(r"bpfproxy lab (\w+): node namespace", out)
    assert rid, out
    # only this demo's names: other labs (another test run on the machine) may come and go meanwhile
    assert not [n for n in os.listdir(netns.NETNS_DIR) if f"-{rid.group(1)}-" in n]
    assert not os.path.exists(f"/sys/fs/bpf/bpfproxy-lab-{rid.group(1)}")
