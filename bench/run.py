"""Run the benchmarks: `make bench` (full) or `make bench-quick`; tables, JSON results, plots, README section.

Place in the data flow: the entry point of bench/. For each benchmark module present (b1_packet,
b2_e2e, b3_control when it exists, b4_memory) it calls `config(quick)` then `run(config)`, writes the
rows to bench/results/<YYYY-MM-DD-HHMM>-<benchmark>.json, prints a markdown table with ratios,
writes PNG plots, and regenerates the results section of bench/README.md from the newest results
file of every benchmark. Every namespace, process and pin a benchmark creates is undone on exit,
on failure and on SIGTERM/SIGINT (common.CLEANUP).

Usage: python bench/run.py [--quick] [--only b1,b2,b4] [--no-readme]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLEANUP, RESULTS_DIR, Machine, Row, install_cleanup, log, read_rows, write_rows

#: benchmark key -> module; a module that does not exist yet (b3_control) is skipped with a note
MODULES = {"b1": "b1_packet", "b2": "b2_e2e", "b3": "b3_control", "b4": "b4_memory"}
#: the README the results section is written into
README = Path(__file__).resolve().parent / "README.md"


def latest_results() -> dict[str, tuple[Path, list[Row]]]:
    """The newest results file of each benchmark and its rows."""
    out: dict[str, tuple[Path, list[Row]]] = {}
    for key in MODULES:
        files = sorted(RESULTS_DIR.glob(f"*-{key}.json"))
        if files:
            out[key] = (files[-1], read_rows(files[-1]))
    return out


def write_readme(mode: str) -> None:
    """Rewrite the results section of bench/README.md from the newest results of every benchmark."""
    import report

    section = report.readme_section(latest_results(), Machine.here(), mode)
    README.write_text(report.replace_section(README.read_text() if README.exists() else "", section))
    log(f"README results section rewritten path={README}")


def print_table(key: str, rows: list[Row]) -> None:
    """The table of one benchmark on stdout, with its targets."""
    import report

    print(f"\n## {report.BENCH_TITLES.get(key, key)}\n")
    print(report.table_of(key, rows))
    print(report.render_targets(report.targets_of(key, rows)))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; 0 when all ran."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (under 5 minutes)")
    parser.add_argument("--only", default="", help="comma-separated benchmarks (b1,b2,b3,b4); default all")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README results section")
    parser.add_argument("--readme-only", action="store_true", help="only rewrite the README from the newest results")
    args = parser.parse_args(argv)
    if args.readme_only:
        write_readme("make bench-quick" if args.quick else "make bench")
        return 0
    if os.geteuid() != 0:
        print("bench: needs root (namespaces, BPF, iptables)", file=sys.stderr)
        return 2
    install_cleanup()
    selected = [k.strip() for k in args.only.split(",") if k.strip()] or list(MODULES)
    unknown = [k for k in selected if k not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    stamp = time.strftime("%Y-%m-%d-%H%M")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    failed = []
    from plots import PLOTTERS

    for key in selected:
        if importlib.util.find_spec(MODULES[key]) is None:
            log(f"{key}: module {MODULES[key]}.py not present yet, skipped")
            continue
        module = importlib.import_module(MODULES[key])
        cfg = module.config(args.quick)
        log(f"{key} starting config={cfg}")
        t0 = time.monotonic()
        try:
            rows: list[Row] = module.run(cfg)
        except Exception as e:
            log(f"{key} FAILED: {type(e).__name__}: {e}")
            failed.append(key)
            continue
        finally:
            CLEANUP.run()
        path = RESULTS_DIR / f"{stamp}-{key}.json"
        write_rows(rows, path)
        plotter = getattr(module, "plot", None) or PLOTTERS.get(key)
        pngs = plotter(rows, RESULTS_DIR / stamp) if plotter else []
        log(f"{key} done seconds={time.monotonic() - t0:.0f} rows={len(rows)} json={path} plots={len(pngs)}")
        print_table(key, rows)
    if not args.no_readme:
        write_readme("make bench-quick" if args.quick else "make bench")
    log(f"all done seconds={time.monotonic() - started:.0f} failed={','.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
