#!/usr/bin/env python3
"""The probe's own system-call cost against an independent measurement, in one run.

Alternates, round after round on the same machine, between
  A. `perf bench syscall basic` (Debian's linux-perf: 10 million getppid() calls in a loop), and
  B. the vdsoprobe helper's `getppid` rows (raw `syscall` instruction, and libc),
and prints each round's nanoseconds side by side and their ratio B / A. Alternating rounds keeps
the comparison fair on a shared, noisy machine: both see the same background load.

    nox -s bench -- [--rounds 5] [--build dynamic|static|musl]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from vdsomatrix.backends.host import HostBackend
from vdsomatrix.matrix import BackendName, Build, Environment


def perf_getppid_ns() -> float:
    out = subprocess.run(["perf", "bench", "syscall", "basic"], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"([\d.]+)\s+usecs/op", out)
    if not match:
        raise SystemExit(f"unexpected perf output: {out!r}")
    return float(match.group(1)) * 1000


def probe_getppid_ns(helper: Path) -> dict[str, float]:
    doc = json.loads(subprocess.run([str(helper)], capture_output=True, check=True).stdout)
    return {r["path"]: r["ns"]["median"] for r in doc["calls"]
            if r["call"] == "getppid" and r["status"] == "ok"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--build", default="dynamic", choices=["dynamic", "static", "musl"])
    args = parser.parse_args()
    if not shutil.which("perf"):
        print("perf not found: apt-get install linux-perf", file=sys.stderr)
        return 2
    backend = HostBackend()
    env = Environment(name="bench", backend=BackendName.HOST, build=Build(args.build))
    backend.prepare(env, log=lambda m: None)
    helper = backend.helper_path(env.build)

    rows = []
    for i in range(args.rounds):
        perf_ns = perf_getppid_ns()
        probe = probe_getppid_ns(helper)
        rows.append([i + 1, perf_ns, probe.get("syscall"), probe.get("libc"),
                     probe["syscall"] / perf_ns, probe["libc"] / perf_ns])
    medians = ["median", *(statistics.median(r[c] for r in rows) for c in range(1, 6))]
    print(tabulate([*rows, medians],
                   headers=["round", "perf bench getppid ns", "probe raw syscall ns",
                            "probe libc getppid ns", "raw ÷ perf", "libc ÷ perf"],
                   floatfmt=".2f", tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
