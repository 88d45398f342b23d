"""PNG plots of the results with matplotlib (Agg): per-packet cost, connection rate and connect latency.

Place in the data flow: after a benchmark's rows are written. Each plotter takes the rows of one
benchmark and the output stem (bench/results/<stamp>) and returns the files it wrote; README links
them. A benchmark added later (B3's control-plane latency CDF) registers its own plotter in PLOTTERS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import Row
from report import B1_CASES, B2_CONTENDERS, sizes, value

#: line colour of each B2 contender
COLOURS = {"bpfproxy": "tab:blue", "iptables": "tab:red", "nftables": "tab:orange", "no-lb": "tab:gray"}


def plot_b1(rows: Sequence[Row], stem: Path) -> list[Path]:
    """Per-packet cost (p50, hot solid, uniform dashed) against services, log x; the floor as a line."""
    ns = sizes(rows, "bpfproxy")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, case in enumerate(B1_CASES):
        colour = f"C{i}"
        for pattern, style in (("hot", "-"), ("uniform", "--")):
            ys = [value(rows, "bpfproxy", n, f"{case}.{pattern}.p50") for n in ns]
            ax.plot(ns, ys, style, marker="o", color=colour, label=f"{case} ({pattern})")
    floor = [value(rows, "empty-tc", n, "floor") for n in ns]
    ax.plot(ns, floor, ":", color="black", label="empty tc program (floor)")
    ax.set_xscale("log")
    ax.set_xlabel("services (x10 backends)")
    ax.set_ylabel("ns per packet (p50 per call)")
    ax.set_yscale("log")
    ax.set_title("B1: per-packet cost, BPF_PROG_TEST_RUN")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    out = Path(f"{stem}-b1-cost.png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]


def plot_b2(rows: Sequence[Row], stem: Path) -> list[Path]:
    """Connection rate and connect latency (p50 solid, p99 dashed) against services, log x."""
    written = []
    for name, metrics, ylabel, title in (
        ("rate", (("conn_rate.uniform", "-"),), "new connections per second", "B2: connection rate"),
        ("latency", (("connect_p50.uniform", "-"), ("connect_p99.uniform", "--")), "connect() latency, us",
         "B2: connect latency (p50 solid, p99 dashed)"),
    ):  # fmt: skip
        fig, ax = plt.subplots(figsize=(8, 5))
        for c in B2_CONTENDERS:
            for metric, style in metrics:
                pts = [(n, value(rows, c, n, metric)) for n in sizes(rows)]
                pts = [(n, v) for n, v in pts if v is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=COLOURS[c],
                            label=f"{c} {metric.split('.')[0]}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("services (x10 backends)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        out = Path(f"{stem}-b2-{name}.png")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


#: benchmark -> its plotter
PLOTTERS: dict[str, Callable[[Sequence[Row], Path], list[Path]]] = {"b1": plot_b1, "b2": plot_b2}
