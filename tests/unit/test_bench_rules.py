"""bench/: the result-row schema and kube-proxy's rules as the B2 contenders load them.

The rule generators are checked by structure (chains, probabilities, DNAT targets, verdict map)
and against kube-proxy's own chain names for ns1/svc1:p80 (data rows of pkg/proxy/iptables tests);
one test loads both rulesets into a fresh network namespace, as B2 does.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common
import rules
import workload
from pktgen import ACK, SYN, read_records, tcp_frame, tcp_tuple, write_records

CIDR = "10.244.0.0/16"


def good_row() -> dict[str, object]:
    return {"benchmark": "b2", "contender": "bpfproxy", "services": 1000, "endpoints": 10000,
            "metric": "conn_rate.uniform", "value": 1234.5, "unit": "per_s"}  # fmt: skip


def test_row_round_trip(tmp_path: Path) -> None:
    row = common.validate_row(good_row())
    path = tmp_path / "r.json"
    common.write_rows([row], path)
    assert json.loads(path.read_text()) == [good_row()]
    assert common.read_rows(path) == [row]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"extra": 1}, "keys must be exactly"),
        ({"services": -1}, "services must be a non-negative integer"),
        ({"endpoints": 1.5}, "endpoints must be a non-negative integer"),
        ({"value": "fast"}, "value must be a number"),
        ({"value": True}, "value must be a number"),
        ({"metric": ""}, "metric must be a non-empty string"),
    ],
)
def test_row_rejects_bad_shape(change: dict[str, object], problem: str) -> None:
    obj = {**good_row(), **change}
    with pytest.raises(ValueError, match=problem):
        common.validate_row(obj)


def test_read_rows_rejects_non_list(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(good_row()))
    with pytest.raises(ValueError, match="JSON list"):
        common.read_rows(path)


def test_percentiles() -> None:
    values = list(range(1, 101))
    assert common.median(values) == 50.5
    assert common.percentile(values, 0.99) == 99
    assert common.percentile(values, 1.0) == 100
    assert common.percentile([], 0.5) == 0.0


def test_kube_proxy_chain_names() -> None:
    # pkg/proxy/iptables proxier tests: ns1/svc1:p80 (tcp) and its endpoint 10.180.0.1:80
    assert "KUBE-SVC-" + rules.chain_hash("ns1/svc1:p80tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert "KUBE-SEP-" + rules.chain_hash("ns1/svc1:p80tcp10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def test_iptables_rules_shape() -> None:
    services = workload.bench_services(2, backends=3)
    text = rules.iptables_restore(services, CIDR)
    declared = set(re.findall(r"^:(\S+) ", text, re.M))
    jumped = set(re.findall(r"-j (KUBE-\S+)", text))
    assert jumped <= declared | {"KUBE-FORWARD"}
    svc = services[1]
    chain = rules.svc_chain(svc)
    assert f"-A KUBE-SERVICES -m comment --comment \"bench/svc-1:http cluster IP\" -m tcp -p tcp -d 10.96.0.2/32 " \
           f"--dport 80 -j {chain}" in text
    picks = [line for line in text.splitlines() if line.startswith(f"-A {chain} ") and "KUBE-SEP-" in line]
    assert [re.search(r"--probability (\S+)", p).group(1) if "--probability" in p else None  # type: ignore[union-attr]
            for p in picks] == ["0.3333333333", "0.5000000000", None]  # fmt: skip
    dnats = re.findall(r"-A (KUBE-SEP-\S+) .*DNAT --to-destination (\S+)", text)
    assert len(dnats) == 6
    assert {d for _, d in dnats} == {"10.244.2.10:8080", "10.244.2.11:8080", "10.244.2.12:8080"}
    assert text.count("COMMIT") == 2


def test_nft_rules_shape() -> None:
    services = workload.bench_services(3, backends=2)
    text = rules.nft_ruleset(services, CIDR)
    assert text.count("numgen random mod 2 vmap") == 3
    elements = re.findall(r"(\d+\.\d+\.\d+\.\d+) \. tcp \. 80 : goto (service-\S+)", text)
    assert [e[0] for e in elements] == ["10.96.0.1", "10.96.0.2", "10.96.0.3"]
    assert {e[1] for e in elements} == {rules.nft_service_chain(s) for s in services}
    assert "meta l4proto tcp dnat to 10.244.2.11:8080" in text


def test_frames_round_trip() -> None:
    frames = [tcp_frame("10.244.1.10", "10.96.0.1", 40000 + i, 80, SYN if i else ACK) for i in range(3)]
    assert list(read_records(write_records(frames))) == frames
    assert tcp_tuple(frames[1]) == ("10.244.1.10", "10.96.0.1", 40001, 80, SYN)


def test_frame_checksums_match_scapy() -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    frame = tcp_frame("10.244.1.10", "10.96.0.1", 40000, 80, SYN, b"hello")
    pkt = Ether(frame)
    sums = (pkt[IP].chksum, pkt[TCP].chksum)
    del pkt[IP].chksum
    del pkt[TCP].chksum
    again = Ether(bytes(pkt))  # scapy recomputes both checksums
    assert (again[IP].chksum, again[TCP].chksum) == sums
    assert bytes(again) == frame


def test_sizes_hold_the_services() -> None:
    need = common.sizes_need(100_000)
    assert need["lb_map_max"] >= 100_000 * 12
    assert need["backend_map_max"] > 1_000_000
    assert need["svc_id_max"] > 100_000
