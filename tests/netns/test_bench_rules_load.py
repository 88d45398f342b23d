"""bench/rules.py's kube-proxy-style iptables and nftables rulesets load in a fresh network namespace (needs root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rules
import workload

CIDR = "10.244.0.0/16"


def test_rules_load_in_a_netns() -> None:
    """Both rulesets load where B2 loads them (a fresh namespace), and load again over themselves."""
    if os.geteuid() != 0:
        pytest.fail("this test creates a network namespace: run as root (make test does)")
    name = f"bench-test-{os.getpid()}"
    services = workload.bench_services(3)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        enter = ["nsenter", f"--net=/run/netns/{name}"]
        for _ in range(2):
            subprocess.run([*enter, "iptables-restore"], input=rules.iptables_restore(services, CIDR), text=True,
                           check=True)  # fmt: skip
            subprocess.run([*enter, "nft", "-f", "-"], input=rules.nft_ruleset(services, CIDR), text=True, check=True)
        saved = subprocess.run([*enter, "iptables-save", "-t", "nat"], capture_output=True, text=True, check=True)
        assert saved.stdout.count("DNAT --to-destination") == 30
        listed = subprocess.run([*enter, "nft", "list", "map", "ip", "kube-proxy", "service-ips"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        assert listed.stdout.count(": goto service-") == 3
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
