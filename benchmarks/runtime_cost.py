#!/usr/bin/env python3
"""The runtime rows' nanoseconds against an independent measurement of the same call, in one run.

For every runtime the host has, alternates round after round between
  A. the probe's own timing program (probes/runtimes/, `time CALL ITERATIONS ROUNDS`: a fixed
     count of calls per round, the median round), and
  B. a reference written apart from it that shares none of its code:
     Python: `python3 -m timeit` (the standard library's harness, best of its repeats);
     Go: `go test -bench` (Go's own benchmark harness);
     Java: benchmarks/references/Reference.java (Debian ships JMH only in forky and sid, as
           libjmh-java; this is a differently structured loop: a fixed time, eight calls per
           iteration, the clock read every 1024 iterations);
     Node.js: benchmarks/references/reference.js (the same structure as the Java one),
and prints both and their ratio A / B. Alternating keeps the comparison fair on a shared, noisy
machine: both see the same background load. Nothing here asserts a speed.

    nox -s bench -- runtimes [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
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
REFERENCES = HERE / "references"
SECONDS = 0.3  # per reference repeat
REPEATS = 5

CALLS = {
    "python": ["time.monotonic_ns()", "time.time_ns()", "time.perf_counter_ns()",
               "os.getppid()"],
    "go": ["time.Now()", "syscall.Getppid()"],
    "java": ["System.nanoTime()", "System.currentTimeMillis()", "Instant.now()",
             "Thread.yield()"],
    "node": ["process.hrtime.bigint()", "Date.now()", "performance.now()", "process.ppid"],
}
GO_BENCH = {"time.Now()": "BenchmarkTimeNow", "syscall.Getppid()": "BenchmarkGetppid"}
BASELINES = {"os.getppid()", "syscall.Getppid()", "Thread.yield()", "process.ppid"}


def run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-300:]}")
    return done.stdout


def probe_ns(program: list[str], call: str) -> float:
    """The probe's figure: the median round of its own timing program."""
    iterations = 20_000 if call in BASELINES else 200_000
    out = json.loads(run([*program, "time", call, str(iterations), "7"]).splitlines()[-1])
    return statistics.median(out["ns_per_call"])


class References:
    """The independent measurements, prepared once (compiled into a temporary folder)."""

    def __init__(self, work: Path):
        self.work = work
        self.javac_done = False

    def python(self, call: str) -> float:
        module, _, _ = call.partition(".")
        out = run([sys.executable, "-m", "timeit", "-r", str(REPEATS), "-s", f"import {module}",
                   call])
        match = re.search(r"best of \d+: ([\d.]+) (nsec|usec|msec|sec) per loop", out)
        if not match:
            raise RuntimeError(f"unexpected timeit output {out!r}")
        scale = {"nsec": 1, "usec": 1e3, "msec": 1e6, "sec": 1e9}[match[2]]
        return float(match[1]) * scale

    def go(self, call: str) -> float:
        folder = self.work / "go"
        if not folder.is_dir():
            folder.mkdir()
            shutil.copy(REFERENCES / "reference_test.go", folder)
            (folder / "go.mod").write_text("module reference\n\ngo 1.15\n")
        env_home = {"HOME": str(self.work), "GOCACHE": str(self.work / "gocache"),
                    "GOPATH": str(self.work / "gopath"), "PATH": "/usr/bin:/bin",
                    "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        out = subprocess.run(
            ["go", "test", "-run", "^$", "-bench", f"^{GO_BENCH[call]}$",
             "-benchtime", f"{SECONDS}s", "-count", str(REPEATS)],
            capture_output=True, text=True, cwd=folder, env=env_home, timeout=600)
        values = [float(v) for v in re.findall(r"\s([\d.]+) ns/op", out.stdout)]
        if not values:
            raise RuntimeError(f"go test -bench printed no ns/op: {out.stdout[-300:]}"
                               f"{out.stderr[-300:]}")
        return statistics.median(values)

    def java(self, call: str, java: str) -> float:
        if not self.javac_done:
            run(["javac", "--release", "8", "-Xlint:-options", "-d", str(self.work),
                 str(REFERENCES / "Reference.java")])
            self.javac_done = True
        return float(run([java, "-cp", str(self.work), "Reference", call, str(SECONDS),
                          str(REPEATS)]).split()[-1])

    def node(self, call: str, node: str) -> float:
        return float(run([node, str(REFERENCES / "reference.js"), call, str(SECONDS),
                          str(REPEATS)]).split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    backend = HostBackend()
    env = Environment(name="bench-runtimes", backend=BackendName.HOST, build=Build.RUNTIMES)
    backend.prepare(env, log=lambda m: None)
    programs = backend.runtimes_dir()

    java, node = shutil.which("java"), shutil.which("node") or shutil.which("nodejs")
    runtimes: dict[str, tuple[list[str], object]] = {
        "python": ([sys.executable, str(programs / "timing.py")], None)}
    if shutil.which("go") and (programs / "timing-go-static").exists():
        runtimes["go"] = ([str(programs / "timing-go-static")], None)
    if java and shutil.which("javac") and (programs / "Timing.class").exists():
        runtimes["java"] = ([java, "-cp", str(programs), "Timing"], java)
    if node and (programs / "timing.js").exists():
        runtimes["node"] = ([node, str(programs / "timing.js")], node)
    missing = sorted(set(CALLS) - set(runtimes))
    if missing:
        print(f"not on this host (apt-get install them to compare): {', '.join(missing)}",
              file=sys.stderr)

    figures: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="vdsomatrix-bench-") as tmp:
        refs = References(Path(tmp))
        for round_no in range(args.rounds):
            for runtime, (program, tool) in runtimes.items():
                for call in CALLS[runtime]:
                    ours = probe_ns(program, call)
                    ref = getattr(refs, runtime)(call, *([tool] if tool else []))
                    mine, theirs = figures.setdefault((runtime, call), ([], []))
                    mine.append(ours)
                    theirs.append(ref)
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)

    rows = []
    for (runtime, call), (mine, theirs) in figures.items():
        a, b = statistics.median(mine), statistics.median(theirs)
        ratios = [m / t for m, t in zip(mine, theirs, strict=True)]
        rows.append([runtime, call, f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}",
                     f"{min(ratios):.2f}–{max(ratios):.2f}"])
    print(tabulate(rows, headers=["runtime", "call", "probe ns", "reference ns",
                                  "ratio", "ratio range over rounds"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
