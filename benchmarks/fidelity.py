#!/usr/bin/env python3
"""The probe's native rows against independent references, side by side in one run.

Round after round on the same machine, and on the same CPU (every side is started pinned to
--cpu, and the probe and the reference pin themselves to the CPU they start on), this runs
  A. `perf bench syscall basic` (Debian's linux-perf: 10 million getppid() calls),
  B. benchmarks/references/reference_loop.c, a loop written apart from the probe that shares
     none of its code (vDSO symbols from glibc's loader, eight calls written out per iteration,
     long loops timed with CLOCK_MONOTONIC_RAW; see its header), built here with the host's gcc,
  C. the probe's helper (the host backend's dynamic build, prepared as benchmarks/syscall_cost.py
     prepares it),
in an order that rotates each round so that no side always runs first or last. Alternating keeps
the comparison fair on a shared, noisy machine: every side sees the same background load.

It prints, per row (getppid; clock_gettime on five clocks; gettimeofday; time; getcpu; each
through libc, the vDSO and the system call): the probe's and the reference's nanoseconds (the
median over rounds of each round's median), the ratio probe ÷ reference (the median over rounds
of each round's ratio, with the rounds' lowest and highest), and a flag where that ratio is
outside ±5%; perf bench beside the getppid rows; the probe's own run-to-run spread (the highest
over the lowest of its per-round medians, for the "repeatability" goal); and, for getcpu, the
reference's variants of the call (with the node pointer, through libc's syscall(2), the bare
rdpid instruction) against the probe's rows. Nothing here asserts a speed.

    nox -s bench -- fidelity [--rounds 5] [--cpu N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from vdsomatrix.backends.host import HostBackend
from vdsomatrix.matrix import BackendName, Build, Environment

HERE = Path(__file__).resolve().parent
REFERENCE_SOURCE = HERE / "references" / "reference_loop.c"
TOLERANCE = 0.05  # the goal: every native row within ±5% of the reference
# Below this many nanoseconds apart, a row outside ±5% is flagged apart: about one cycle at
# 2–3 GHz, under what either loop resolves (the probe subtracts a ~1.2 ns loop overhead).
RESOLUTION_NS = 0.5
CFLAGS = ["-O2", "-std=gnu99", "-Wall", "-Wextra"]

CLOCKS = ["CLOCK_MONOTONIC", "CLOCK_REALTIME", "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME",
          "CLOCK_PROCESS_CPUTIME_ID"]
ROWS: list[tuple[str, str]] = [
    ("getppid", "libc"), ("getppid", "syscall"),
    *[(f"clock_gettime({c})", p) for c in CLOCKS for p in ("libc", "vdso", "syscall")],
    *[(call, p) for call in ("gettimeofday", "time", "getcpu")
      for p in ("libc", "vdso", "syscall")],
]

Key = tuple[str, str]


def build_reference(outdir: Path) -> Path:
    """reference_loop.c compiled with the host's gcc (dynamic glibc: it asks glibc's loader for
    the vDSO)."""
    gcc = shutil.which("gcc")
    if not gcc:
        raise SystemExit("gcc not found: apt-get install gcc libc6-dev")
    binary = outdir / "reference_loop"
    done = subprocess.run([gcc, *CFLAGS, "-o", str(binary), str(REFERENCE_SOURCE), "-ldl"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building {REFERENCE_SOURCE.name} failed:\n{done.stderr}")
    return binary


def default_cpu() -> int:
    """The highest-numbered CPU this process may run on (CPU 0 takes most interrupts)."""
    return max(os.sched_getaffinity(0))


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


def perf_getppid_ns(cpu: int) -> float:
    out = subprocess.run(pinned(cpu, ["perf", "bench", "syscall", "basic"]),
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"([\d.]+)\s+usecs/op", out)
    if not match:
        raise SystemExit(f"unexpected perf output: {out!r}")
    return float(match.group(1)) * 1000


def ok_medians(rows: list[dict]) -> dict[Key, float]:
    return {(r["call"], r["path"]): r["ns"]["median"] for r in rows if r.get("status") == "ok"}


def run_reference(binary: Path, cpu: int, loops: int,
                  loop_ms: float) -> tuple[dict[Key, float], dict[Key, float], dict]:
    doc = json.loads(subprocess.run(
        pinned(cpu, [str(binary), "--cpu", str(cpu), "--loops", str(loops),
                     "--loop-ms", str(loop_ms)]),
        capture_output=True, check=True, timeout=600).stdout)
    return ok_medians(doc["rows"]), ok_medians(doc["variants"]), doc


def run_probe(helper: Path, cpu: int) -> tuple[dict[Key, float], dict]:
    doc = json.loads(subprocess.run(pinned(cpu, [str(helper)]), capture_output=True,
                                    check=True, timeout=600).stdout)
    return ok_medians(doc["calls"]), doc


def spread(values: list[float]) -> float | None:
    return max(values) / min(values) if values and min(values) > 0 else None


def fmt_range(values: list[float]) -> str:
    return f"{min(values):.3f}–{max(values):.3f}" if values else "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None,
                        help="the CPU every side runs on (default: the highest allowed)")
    parser.add_argument("--loops", type=int, default=21, help="reference loops per row")
    parser.add_argument("--loop-ms", type=float, default=2.0, help="reference loop length")
    parser.add_argument("--no-perf", action="store_true", help="leave perf bench out")
    parser.add_argument("--helper", type=Path, default=None,
                        help="a vdsoprobe binary to measure instead of the host backend's "
                             "(to try a change to the probe)")
    parser.add_argument("--json", type=Path, default=None, help="also write every round here")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cpu = default_cpu() if args.cpu is None else args.cpu
    if not shutil.which("taskset"):
        print("taskset not found: apt-get install util-linux", file=sys.stderr)
        return 2
    use_perf = not args.no_perf
    if use_perf and not shutil.which("perf"):
        print("perf not found (apt-get install linux-perf): running without it",
              file=sys.stderr)
        use_perf = False

    if args.helper:
        helper = args.helper.resolve()
    else:
        backend = HostBackend()
        env = Environment(name="bench", backend=BackendName.HOST, build=Build.DYNAMIC)
        backend.prepare(env, log=lambda m: None)
        helper = backend.helper_path(env.build)

    probe_rounds: list[dict[Key, float]] = []
    ref_rounds: list[dict[Key, float]] = []
    variant_rounds: list[dict[Key, float]] = []
    perf_rounds: list[float] = []
    raw: dict = {"cpu": cpu, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="vdsomatrix-fidelity-") as tmp:
        reference = build_reference(Path(tmp))
        sides = ["perf", "reference", "probe"] if use_perf else ["reference", "probe"]
        for i in range(args.rounds):
            order = sides[i % len(sides):] + sides[:i % len(sides)]
            this: dict = {"order": order}
            for side in order:
                if side == "perf":
                    this["perf_getppid_ns"] = perf_getppid_ns(cpu)
                    perf_rounds.append(this["perf_getppid_ns"])
                elif side == "reference":
                    rows, variants, doc = run_reference(reference, cpu, args.loops, args.loop_ms)
                    ref_rounds.append(rows)
                    variant_rounds.append(variants)
                    this["reference"] = doc
                else:
                    rows, doc = run_probe(helper, cpu)
                    probe_rounds.append(rows)
                    this["probe"] = {"method": doc.get("method"), "pinned_cpu":
                                     doc.get("pinned_cpu"), "calls": doc.get("calls")}
            raw["rounds"].append(this)
            print(f"round {i + 1}/{args.rounds} done ({' → '.join(order)})", file=sys.stderr)

    table = []
    flagged = []
    ratios_all: dict[Key, list[float]] = {}
    for key in ROWS:
        probe = [r[key] for r in probe_rounds if key in r]
        ref = [r[key] for r in ref_rounds if key in r]
        ratios = [p[key] / r[key] for p, r in zip(probe_rounds, ref_rounds, strict=True)
                  if key in p and key in r and r[key] > 0]
        ratios_all[key] = ratios
        if not probe or not ref:
            table.append([*key, probe and statistics.median(probe), ref and
                          statistics.median(ref), None, "–", None, None, None, "missing"])
            continue
        ratio = statistics.median(ratios)
        pm, rm = statistics.median(probe), statistics.median(ref)
        perf_ratio = None
        perf_ns = None
        if key[0] == "getppid" and perf_rounds:
            perf_ns = statistics.median(perf_rounds)
            perf_ratio = statistics.median(p[key] / f for p, f in
                                           zip(probe_rounds, perf_rounds, strict=True))
        flag = ""
        if abs(ratio - 1) > TOLERANCE:
            flagged.append(key)
            flag = (f"outside ±5%, |Δ| < {RESOLUTION_NS} ns" if abs(pm - rm) < RESOLUTION_NS
                    else "OUTSIDE ±5%")
        table.append([*key, pm, rm, ratio, fmt_range(ratios), pm - rm, spread(probe), perf_ns,
                      perf_ratio, flag])
    print(f"\nProbe ({helper.name}) against reference_loop, {args.rounds} rounds, "
          f"every side pinned to CPU {cpu}; medians over rounds\n")
    print(tabulate(table, headers=["call", "path", "probe ns", "reference ns",
                                   "probe ÷ ref", "rounds' ÷ range", "probe − ref ns",
                                   "probe max/min", "perf bench ns", "probe ÷ perf", "flag"],
                   floatfmt=".3f", tablefmt="github", missingval="–"))

    spreads = [(key, spread([r[key] for r in probe_rounds if key in r])) for key in ROWS]
    spreads = [(k, s) for k, s in spreads if s is not None]
    if spreads:
        worst = max(spreads, key=lambda ks: ks[1])
        within = sum(1 for _, s in spreads if s <= 1 + TOLERANCE)
        print(f"\nRepeatability: the probe's per-round medians, highest ÷ lowest over "
              f"{args.rounds} rounds: median {statistics.median(s for _, s in spreads):.3f}, "
              f"worst {worst[1]:.3f} ({worst[0][0]} {worst[0][1]}); {within} of {len(spreads)} "
              f"rows within 5%.")
    print(f"Fidelity: {len(ROWS) - len(flagged)} of {len(ROWS)} rows within ±5% of the "
          f"reference" + (f"; outside: {', '.join(f'{c} {p}' for c, p in flagged)}"
                          if flagged else "."))
    fine = [k for k in flagged if k in ratios_all and abs(
        statistics.median(r[k] for r in probe_rounds if k in r)
        - statistics.median(r[k] for r in ref_rounds if k in r)) < RESOLUTION_NS]
    if fine:
        print(f"  of which {len(fine)} less than {RESOLUTION_NS} ns apart (about one cycle): "
              f"{', '.join(f'{c} {p}' for c, p in fine)}")

    # getcpu (and the syscall rows): the reference's variants beside the probe's rows.
    vkeys = sorted({k for v in variant_rounds for k in v})
    variant_rows = []
    for label, rounds, keys in (
            ("probe", probe_rounds, [k for k in ROWS if k[0] in ("getcpu", "getppid")]),
            ("reference", ref_rounds, [k for k in ROWS if k[0] in ("getcpu", "getppid")]),
            ("reference variant", variant_rounds, vkeys)):
        for key in keys:
            values = [r[key] for r in rounds if key in r]
            if values:
                variant_rows.append([label, *key, statistics.median(values), fmt_range(values)])
    if variant_rows:
        print("\ngetcpu and getppid: the probe's rows beside the reference's forms of the call "
              "(medians over rounds, ns)\n")
        print(tabulate(variant_rows, headers=["side", "call", "form", "ns", "rounds' range"],
                       floatfmt=".3f", tablefmt="github"))
        pairs = [(probe_rounds, ("getcpu", "syscall"), variant_rounds, ("getcpu", "syscall+node"),
                  "probe", "reference"),
                 (probe_rounds, ("getcpu", "vdso"), variant_rounds, ("getcpu", "vdso+node"),
                  "probe", "reference"),
                 (variant_rounds, ("getcpu", "syscall+node"), ref_rounds, ("getcpu", "syscall"),
                  "reference", "reference"),
                 (ref_rounds, ("getppid", "syscall"), variant_rounds,
                  ("getppid", "syscall inline"), "reference", "reference")]
        print()
        for top, tkey, bottom, bkey, tname, bname in pairs:
            ratios = [t[tkey] / b[bkey] for t, b in zip(top, bottom, strict=True)
                      if tkey in t and bkey in b and b[bkey] > 0]
            if ratios:
                print(f"{tname} {tkey[0]} {tkey[1]} ÷ {bname} {bkey[0]} {bkey[1]}: "
                      f"{statistics.median(ratios):.3f} ({fmt_range(ratios)})")

    if args.json:
        raw["summary"] = {f"{c} | {p}": {"ratios": ratios_all[(c, p)]} for c, p in ROWS}
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
