"""Result documents of runtime environments, built per the shared contract (issue 11): a small
builder of runtime rows and documents for the report's tests, and a realistic matrix of them
(the host, the five suites in Docker, three kernels under QEMU)."""

from __future__ import annotations

import copy

from vdsomatrix import SCHEMA

CALLS = {  # runtime -> [(call, clock)]
    "java": [("System.nanoTime()", "monotonic"), ("System.currentTimeMillis()", "realtime"),
             ("Instant.now()", "realtime"), ("Thread.yield()", "baseline")],
    "python": [("time.monotonic_ns()", "monotonic"), ("time.perf_counter_ns()", "monotonic"),
               ("time.time_ns()", "realtime"), ("os.getppid()", "baseline")],
    "go": [("time.Now()", "monotonic"), ("syscall.Getppid()", "baseline")],
    "node": [("process.hrtime.bigint()", "monotonic"), ("performance.now()", "monotonic"),
             ("Date.now()", "realtime"), ("process.ppid", "baseline")],
    "rust": [("Instant::now()", "monotonic"), ("SystemTime::now()", "realtime"),
             ("std::os::unix::process::parent_id()", "baseline")],
}
BASELINE_SYSCALL = {"java": "sched_yield", "python": "getppid", "go": "getppid",
                    "node": "getppid", "rust": "getppid"}
METHOD = ("Each runtime program warms up (at least 0.5 s or 5 rounds), then times 7 rounds of "
          "1,000,000 calls with the runtime's own monotonic clock; syscount counts the system "
          "calls of N and 2N calls under ptrace, and the difference over N is per call.")


def row(runtime: str, variant: str, label: str, call: str | None, clock: str | None, *,
        status: str = "ok", median: float = 22.0, syscalls: float | None = 0.0,
        by_name: dict | None = None,
        version: str | None = "1.0", package: str | None = "pkg", reason: str | None = None,
        seconds: float = 1.5) -> dict:
    ok = status == "ok"
    return {
        "runtime": runtime, "variant": variant, "label": label, "version": version,
        "package": package, "call": call, "clock": clock, "status": status,
        "reason": reason,
        "ns": {"min": median * 0.95, "median": median, "p90": median * 1.1} if ok else None,
        "rounds": 7 if ok else None, "iterations": 1_000_000 if ok else None,
        "warmup": "5 rounds of 1000000 calls (0.6 s)" if ok else None,
        "syscalls_per_call": syscalls if ok else None,
        "syscalls_by_name": (by_name or {}) if ok and syscalls is not None else {},
        "counted": {"n": 20000, "total_n": 5123, "total_2n": 5123 + int(20000 * (syscalls or 0))}
        if ok and syscalls is not None else None,
        "count_error": None if not ok or syscalls is not None else "ptrace not permitted",
        "seconds": seconds,
    }


def variant_rows(runtime: str, variant: str, label: str, *, version: str, package: str | None,
                 enters: bool = False, ns: float = 22.0, status: str = "ok",
                 reason: str | None = None, seconds: float = 1.5) -> list[dict]:
    """Every call of one runtime variant; ``enters``: its clock calls make a system call."""
    out = []
    for call, clock in CALLS[runtime]:
        syscall = clock == "baseline" or enters
        name = BASELINE_SYSCALL[runtime] if clock == "baseline" else "clock_gettime"
        times = 2.0 if syscall and (runtime, call) == ("go", "time.Now()") else 1.0
        out.append(row(runtime, variant, label, call, clock, status=status,
                       median=(400.0 if syscall else ns), version=version, package=package,
                       syscalls=times if syscall else 0.0,
                       by_name={name: times} if syscall else {}, reason=reason,
                       seconds=seconds))
    return out


def runtime_doc(name: str, rows: list[dict], *, backend: str = "docker", suite: str | None =
                "bookworm", cmdline: str | None = None, accel: str | None = None,
                method: str | None = METHOD) -> dict:
    environment = {"name": name, "backend": backend, "build": "runtimes", "suite": suite,
                   "userland": {"id": "debian", "codename": suite or "bookworm",
                                "pretty_name": f"Debian GNU/Linux ({suite or 'bookworm'})"},
                   "kernel": {"release": "6.1.0-50-amd64", "clocksource": "tsc"}}
    if accel:
        environment["accel"] = accel
    if cmdline is not None:
        environment["matrix_cmdline"] = cmdline
        if "clocksource=" in cmdline:
            environment["kernel"]["clocksource"] = cmdline.split("clocksource=")[1]
    doc = {"schema": SCHEMA, "environment": environment, "vdso": {"present": True},
           "vsyscall": {"mode": "xonly"}, "calls": [], "runtimes": copy.deepcopy(rows),
           "errors": [], "run": {"status": "ok", "seconds": 30.0}}
    if method is not None:
        doc["runtimes_method"] = method
    return doc


SUITES = {  # suite -> (java majors, python, go, node, rust or None)
    "bullseye": (["11", "17"], "3.9", "1.15", "12", None),
    "bookworm": (["17"], "3.11", "1.19", "18", "1.63"),
    "trixie": (["21", "25"], "3.13", "1.24", "20", "1.85"),
    "forky": (["21", "25"], "3.13", "1.24", "20", "1.85"),
    "sid": (["21", "25"], "3.13", "1.24", "20", "1.85"),
}


def suite_rows(suite: str, *, enters: bool = False, ns: float = 22.0) -> list[dict]:
    javas, python, go, node, rust = SUITES[suite]
    rows = []
    for major in javas:
        rows += variant_rows("java", f"openjdk-{major}", f"Java {major}",
                             version=f"{major}.0.13+11-Debian-1", enters=enters, ns=ns,
                             package=f"openjdk-{major}-jre-headless", seconds=4.0)
    rows += variant_rows("python", "python3", f"Python {python}", version=f"{python}.2",
                         package="python3", enters=enters, ns=ns * 2)
    for kind in ("static", "dynamic"):
        rows += variant_rows("go", f"go-{kind}", f"Go {go} {kind}", version=f"go{go}.8",
                             package="golang-go", enters=enters, ns=ns)
    rows += variant_rows("node", "node", f"Node.js {node}", version=f"v{node}.19.0",
                         package="nodejs", enters=enters, ns=ns * 1.5)
    if rust:
        rows += variant_rows("rust", "rust", f"Rust {rust}", version=f"rustc {rust}.0",
                             package="rustc", enters=enters, ns=ns)
    else:
        rows.append(row("rust", "rust", "Rust", None, None, status="not_shipped",
                        version=None, package=None, reason=f"not shipped by {suite}",
                        seconds=0.0))
    return rows


def matrix() -> list[dict]:
    """Runtime documents of the whole matrix: the host, five suites, three kernels (vdso=0
    and clocksource=hpet enter the kernel)."""
    docs = [runtime_doc("host-runtimes", suite_rows("bookworm"), backend="host", suite=None)]
    docs += [runtime_doc(f"{suite}-runtimes", suite_rows(suite), suite=suite)
             for suite in SUITES]
    docs += [runtime_doc(name, suite_rows("bookworm", enters=enters, ns=300.0), backend="qemu",
                         cmdline=cmdline, accel="tcg")
             for name, cmdline, enters in (
                 ("k6.1-runtimes", "", False),
                 ("k6.1-vdso0-runtimes", "vdso=0", True),
                 ("k6.1-clocksource-hpet-runtimes", "clocksource=hpet", True))]
    return docs
