#!/usr/bin/env python3
"""What the helper's correctness checks (probes/correctness.c, issue 16) cost, on this machine.

Builds the helper three ways with the host's toolchain (probes/build.sh into a temporary folder)
and runs `vdsoprobe-<build> --correctness BUDGET_MS` --runs times per build and budget. Prints,
per build and budget, the wall seconds of a whole run (the median, with the lowest and highest),
the run's own elapsed_ms, the checks made (median) and failed (total), and how many error-path
children it forked. The checks stop by time, not by count, so the wall time should follow the
budget plus the error-path children; the checks made show what a budget buys. Nothing here
asserts a speed.

    python benchmarks/correctness_cost.py [--runs 5] [--budget 300 --budget 100] [--json OUT]
    nox -s bench -- correctness [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
PROBES_DIR = ROOT / "src" / "vdsomatrix" / "probes"
BUILDS = ("dynamic", "static", "musl")


def run_once(helper: Path, budget: int) -> tuple[float, dict]:
    started = time.monotonic()
    done = subprocess.run([str(helper), "--correctness", str(budget)], capture_output=True,
                          timeout=120, check=True)
    wall = time.monotonic() - started
    return wall, json.loads(done.stdout)["correctness"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=int, action="append", help="ms (repeatable; 300)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    budgets = args.budget or [300]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vdsomatrix-correctness-") as out:
        built = subprocess.run(["sh", str(PROBES_DIR / "build.sh"), out, *BUILDS],
                               capture_output=True, text=True)
        if built.returncode != 0:
            print(f"correctness_cost: probes/build.sh failed: {built.stderr.strip()[-300:]}",
                  file=sys.stderr)
            return 1
        for build in BUILDS:
            for budget in budgets:
                runs = [run_once(Path(out) / f"vdsoprobe-{build}", budget)
                        for _ in range(args.runs)]
                walls = [w for w, _ in runs]
                made = [sum(c["made"] for c in doc["checks"]) for _, doc in runs]
                rows.append({
                    "build": build, "budget_ms": budget,
                    "wall_s": statistics.median(walls), "wall_min_s": min(walls),
                    "wall_max_s": max(walls),
                    "elapsed_ms": statistics.median(doc["elapsed_ms"] for _, doc in runs),
                    "checks_made": statistics.median(made),
                    "checks_failed": sum(c["failed"] for _, doc in runs for c in doc["checks"]),
                    "error_path_children": sum(
                        1 for e in runs[0][1]["error_paths"] if e["status"] != "not_offered"),
                })
    print(tabulate([[r["build"], r["budget_ms"],
                     f"{r['wall_s']:.3f} ({r['wall_min_s']:.3f}–{r['wall_max_s']:.3f})",
                     f"{r['elapsed_ms']:.0f}", f"{r['checks_made']:,.0f}", r["checks_failed"],
                     r["error_path_children"]] for r in rows],
                   headers=["build", "budget ms", "wall s (min–max)", "elapsed ms",
                            "checks made", "failed", "children"], tablefmt="github"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
