#!/usr/bin/env python3
"""Where a run's wall time goes: phase timings of the matrix, warm or cold, and how it scales.

Runs the project's own runner (runner.run_environments, as `vdsomatrix run` does) on a set of
environments and records, with a monotonic clock, when each phase starts and ends:

  prepare   images built or found, kernels and initramfs fetched or found (in parallel)
  shared    the host and the containers, measured one at a time
  guests    the QEMU guests, --jobs at a time

and each environment's own seconds. Results go to a temporary folder: the committed reports are
never touched.

    nox -s bench -- wall                       # warm: today's 27 environments, --jobs 2
    nox -s bench -- wall --scaling             # 1, 5, 15, 27 environments at --jobs 1 and 2
    nox -s bench -- wall --cold                # cold: an empty cache and every image rebuilt
    nox -s bench -- wall --env 'k6.1*' --jobs 1
    nox -s bench -- wall --repeat              # two warm runs back to back: how far apart

"Cold" here is everything a fresh machine does after apt: debootstrap, image builds, kernel
downloads, initramfs, helper builds. VDSOMATRIX_CACHE points at an empty folder, and the base and
probe images of the environments' suites are removed from the engine first (they are built again
by the run itself; other images stay). The Debian packages apt installs on the host are not part
of it.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from tabulate import tabulate

# The 27 environments issue 14 measured ("today's"): the host, 5 suites x 3 builds in
# containers, the four Debian kernel series and seven boot options of 6.1 under QEMU.
BASELINE = (
    ["host"]
    + [f"{s}{b}" for s in ("bullseye", "bookworm", "trixie", "forky", "sid")
       for b in ("", "-static", "-musl")]
    + ["k5.10", "k6.1", "k6.12", "k7.2", "k6.1-vdso0", "k6.1-vsyscall-emulate",
       "k6.1-vsyscall-xonly", "k6.1-vsyscall-none", "k6.1-tsc", "k6.1-hpet", "k6.1-acpi_pm"]
)
# Subsets for the scaling table: the first N of the baseline, so every size has the host and
# each larger one adds containers, then guests.
SCALING_SIZES = (1, 5, 15, 27)


class Clock:
    """The runner's Progress, recording when phases and environments start and end."""

    def __init__(self, total: int, quiet: bool):
        from vdsomatrix.runner import Progress

        outer = self

        class Timed(Progress):
            def group(self, title: str) -> None:
                outer.mark("prepare-start")
                super().group(title)

            def end_group(self) -> None:
                outer.mark("prepare-end")
                super().end_group()

            def start(self, name: str) -> None:
                outer.mark(f"start:{name}")
                super().start(name)

            def finish(self, record) -> None:
                outer.mark(f"end:{record.env.name}")
                outer.records.append(record)
                super().finish(record)

        self.t0 = time.monotonic()
        self.marks: dict[str, float] = {}
        self.records: list = []
        self.lock = threading.Lock()
        self.progress = Timed(total, stream=open(os.devnull, "w") if quiet else sys.stderr)

    def mark(self, what: str) -> None:
        with self.lock:
            self.marks.setdefault(what, time.monotonic() - self.t0)


def select(matrix, patterns: list[str]) -> list:
    names = [n for n in matrix.environments
             if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if missing:
        raise SystemExit(f"no environment matches {', '.join(missing)} (see `vdsomatrix list`)")
    order = {n: i for i, n in enumerate(patterns)}
    return sorted((matrix.environments[n] for n in names), key=lambda e: order.get(e.name, 1e9))


def remove_suite_images(envs: list) -> list[str]:
    """Remove the base, run base and probe images of the suites ``envs`` run on (a cold start);
    returns the tags removed."""
    from vdsomatrix.engine.client import docker_client
    from vdsomatrix.images.probe_image import probe_image_tag, run_base_tag
    from vdsomatrix.images.rootfs import base_image_tag

    suites = {e.userland.name: e.userland for e in envs if e.userland is not None}
    tags = [t for s in suites.values()
            for t in (probe_image_tag(s), run_base_tag(s), base_image_tag(s))]
    removed = []
    client = docker_client(timeout=300)
    try:
        for tag in tags:
            try:
                client.images.remove(tag, force=True)
                removed.append(tag)
            except Exception:  # not there: nothing to remove
                pass
    finally:
        client.close()
    return removed


def one_run(envs: list, jobs: int, *, rebuild: bool, quiet: bool, keep: Path | None = None
            ) -> dict:
    """One run of ``envs``; its results are kept in ``keep`` (to compare runs with
    `vdsomatrix compare`), else thrown away."""
    from vdsomatrix.backends import get_backend
    from vdsomatrix.runner import run_environments

    clock = Clock(len(envs), quiet)
    with tempfile.TemporaryDirectory(prefix="vdsomatrix-wall-") as scratch:
        out = keep or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        run_environments(envs, out, jobs=jobs, rebuild=rebuild, progress=clock.progress)
    total = time.monotonic() - clock.t0
    marks = clock.marks
    shared = [e.name for e in envs if get_backend(e.backend).shares_host_cpu]
    guests = [e.name for e in envs if e.name not in shared]

    def span(names: list[str]) -> float:
        starts = [marks[f"start:{n}"] for n in names if f"start:{n}" in marks]
        ends = [marks[f"end:{n}"] for n in names if f"end:{n}" in marks]
        return max(ends) - min(starts) if starts and ends else 0.0

    failed = [r.env.name for r in clock.records if str(r.status) != "ok"]
    seconds = {r.env.name: r.seconds for r in clock.records}
    return {
        "environments": len(envs), "jobs": jobs, "total": total,
        "prepare": marks.get("prepare-end", 0.0) - marks.get("prepare-start", 0.0),
        "shared": span(shared), "guests": span(guests),
        "per_container": statistics.median([seconds[n] for n in shared if n in seconds] or [0]),
        "per_guest": statistics.median([seconds[n] for n in guests if n in seconds] or [0]),
        "failed": failed,
    }


def medians(folder: Path) -> dict[tuple[str, str, str], float]:
    """(environment, call, path) -> median ns of every measured row of the results in
    ``folder``, read through the project's loader (schema-checked, bounded)."""
    from vdsomatrix.results import load_results

    out = {}
    for doc in load_results([folder]).documents:
        for row in doc.get("calls") or []:
            ns = (row.get("ns") or {}).get("median")
            if row.get("status") == "ok" and isinstance(ns, (int, float)) and ns > 0:
                out[(doc["environment"]["name"], str(row.get("call")), str(row.get("path")))] = ns
    return out


def repeat_table(first: Path, second: Path, emulated: set[str]) -> str:
    """Run to run: for native and for emulated environments, how many rows' medians moved by
    less than 5 % (and by less than 5 % or less than the report's resolution, 1 ns: a 0.2 ns
    median is the subtracted loop's noise, and its ratio means nothing), the median and the 95th
    percentile of |second / first - 1|, and the largest move of a row above that resolution."""
    from vdsomatrix.report.measurements import RESOLUTION_NS

    a, b = medians(first), medians(second)
    lines = []
    for kind, keep in (("native", lambda env: env not in emulated),
                       ("emulated (TCG)", lambda env: env in emulated)):
        keys = [k for k in a.keys() & b.keys() if keep(k[0])]
        if not keys:
            continue
        moves = sorted((abs(b[k] / a[k] - 1), k) for k in keys)
        within = sum(1 for m, _ in moves if m <= 0.05)
        floor = sum(1 for m, k in moves if m <= 0.05 or abs(b[k] - a[k]) < RESOLUTION_NS)
        above = [(m, k) for m, k in moves if max(a[k], b[k]) >= RESOLUTION_NS]
        worst_move, worst = above[-1] if above else moves[-1]
        p95 = moves[min(len(moves) - 1, int(0.95 * len(moves)))][0]
        lines.append([kind, len(moves), f"{within} ({within / len(moves):.0%})",
                      f"{floor} ({floor / len(moves):.0%})",
                      f"{statistics.median(m for m, _ in moves):.1%}", f"{p95:.1%}",
                      f"{worst_move:.0%}: {' '.join(worst)} ({a[worst]:.1f} -> {b[worst]:.1f} ns)"])
    return tabulate(lines, headers=["rows", "compared", "within 5 %",
                                    f"within 5 % or {RESOLUTION_NS:g} ns", "median move",
                                    "95th pct move", "largest move (rows >= 1 ns)"],
                    tablefmt="github", disable_numparse=True)


def show(runs: list[dict]) -> str:
    rows = [[r["environments"], r["jobs"], f"{r['total']:.1f}", f"{r['prepare']:.1f}",
             f"{r['shared']:.1f}", f"{r['guests']:.1f}", f"{r['per_container']:.1f}",
             f"{r['per_guest']:.1f}", f"{r['total'] / r['environments']:.2f}",
             ", ".join(r["failed"]) or "none"] for r in runs]
    return tabulate(rows, headers=["envs", "jobs", "wall (s)", "prepare (s)",
                                   "host+containers (s)", "guests (s)", "per container (s)",
                                   "per guest (s)", "s per env", "not ok"],
                    tablefmt="github", disable_numparse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append",
                        help="environment or glob (repeatable; default: the 27 of issue 14)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cold", action="store_true",
                        help="an empty cache (VDSOMATRIX_CACHE) and the suites' images removed")
    parser.add_argument("--scaling", action="store_true",
                        help=f"warm runs of {SCALING_SIZES} environments at --jobs 1 and 2")
    parser.add_argument("--quiet", action="store_true", help="no runner log")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the results in DIR (not with --scaling)")
    parser.add_argument("--repeat", action="store_true",
                        help="two warm runs back to back, and how far apart their medians are")
    args = parser.parse_args()

    if args.cold:
        cold_cache = tempfile.mkdtemp(prefix="vdsomatrix-cold-cache-")
        os.environ["VDSOMATRIX_CACHE"] = cold_cache
        print(f"cold: cache {cold_cache} (remove it afterwards)", file=sys.stderr)
    from vdsomatrix.matrix import load_matrix

    matrix = load_matrix()
    envs = select(matrix, args.env or BASELINE)
    if args.cold:
        removed = remove_suite_images(envs)
        print(f"cold: removed {len(removed)} images: {', '.join(removed)}", file=sys.stderr)
    runs = []
    if args.scaling:
        # a first warm-up run so that every size finds its images and kernels prepared
        one_run(envs, args.jobs, rebuild=False, quiet=True)
        for size in SCALING_SIZES:
            for jobs in (1, 2):
                runs.append(one_run(envs[:size], jobs, rebuild=False, quiet=args.quiet))
                print(show(runs[-1:]).splitlines()[-1], file=sys.stderr)
    elif args.repeat:
        one_run(envs, args.jobs, rebuild=False, quiet=True)  # warm-up: images and kernels ready
        with tempfile.TemporaryDirectory(prefix="vdsomatrix-repeat-") as scratch:
            folders = [args.keep or Path(scratch), Path(scratch) / "second"]
            if args.keep:
                folders[1] = args.keep / "second"
            folders[0] = folders[0] / "first"
            for folder in folders:
                runs.append(one_run(envs, args.jobs, rebuild=False, quiet=args.quiet,
                                    keep=folder))
            emulated = {e.name for e in envs if e.backend == "qemu"}
            print("Run to run: the second warm run's medians against the first's, row by row\n")
            print(repeat_table(*folders, emulated) + "\n")
    else:
        runs.append(one_run(envs, args.jobs, rebuild=False, quiet=args.quiet, keep=args.keep))
    print(("cold" if args.cold else "warm") + f" runs on {os.cpu_count()} CPUs:")
    print(show(runs))
    return 1 if any(r["failed"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
