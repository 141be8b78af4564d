"""The measured tables: a row per fact, a column per environment.

Identity, the vDSO, the vsyscall page, what a system call costs, what the vDSO saves, and every
way into the kernel with its latency. Each builder takes the results of one group of columns and
returns one Markdown table; every value is read through :mod:`cells`.
"""

from __future__ import annotations

from vdsomatrix.matrix import BackendName
from vdsomatrix.report.cells import (
    MISSING,
    Result,
    call_row,
    cell,
    entries,
    fmt_ns,
    mechanism,
    median,
    part,
    table,
)

CLOCKS = ("CLOCK_MONOTONIC", "CLOCK_REALTIME", "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME",
          "CLOCK_PROCESS_CPUTIME_ID")
VDSO_CALLS = [f"clock_gettime({c})" for c in CLOCKS] + ["gettimeofday", "time", "getcpu"]
VSYSCALL_CALLS = ("gettimeofday", "time", "getcpu")
ROW_ORDER = [("getppid", p) for p in ("libc", "syscall", "int80")] + [
    (call, p)
    for call in VDSO_CALLS
    for p in ("libc", "vdso", "syscall", "vsyscall")
    if p != "vsyscall" or not call.startswith("clock_gettime")
]
RESOLUTION_NS = 1.0  # below this, a median is within the noise of the subtracted loop overhead


def header(result: Result) -> str:
    return cell(result.name) + (" †" if result.emulated else "")


def outcome(row: dict | None, *, with_mechanism: bool = True) -> str:
    """One latency cell: median ns and how the call got there, or why there is no number."""
    if row is None:
        return MISSING
    status = row.get("status")
    if status == "ok":
        latency = f"{fmt_ns(part(row, 'ns', 'median'))} ns"
        return f"{latency} · {mechanism(row)}" if with_mechanism else latency
    if status == "crashed":
        return f"crashed ({cell(row.get('signal') or 'signal')})"
    if status == "unsupported":
        return "unsupported"
    return cell(status) or "?"


def ratio(slow: dict | None, fast: dict | None) -> str:
    """How many times faster ``fast`` is than ``slow``, with both medians."""
    s, f = median(slow), median(fast)
    if s is None or f is None:
        return MISSING
    if f < RESOLUTION_NS:
        # Below a nanosecond the fast path is lost in the loop overhead that was subtracted:
        # a quotient would be noise, a bound is not.
        return f"> {s / RESOLUTION_NS:.0f}× (< {RESOLUTION_NS:g} vs {fmt_ns(s)} ns)"
    return f"{s / f:.1f}× ({fmt_ns(f)} vs {fmt_ns(s)} ns)"


def transposed(title: str, rows: list[tuple[str, list[str]]], results: list[Result]) -> str:
    """A table with a row per fact and a column per environment."""
    return table([title, *(header(r) for r in results)],
                 [[label, *values] for label, values in rows])


def _yes_no(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "**no**"
    return MISSING


def identity_table(results: list[Result]) -> str:
    def libc(r: Result) -> str:
        words = (r.text("environment", "libc", "name"), r.text("environment", "libc", "version"))
        return cell(" ".join(w for w in words if w)) or MISSING

    def userland(r: Result) -> str:
        return cell(r.text("environment", "userland", "pretty_name")
                    or r.text("environment", "userland", "codename")
                    or r.text("environment", "suite")) or MISSING

    def cmdline(r: Result) -> str:
        if r.backend == BackendName.QEMU:
            return cell(r.text("environment", "matrix_cmdline") or "(default)")
        return "(host's)"

    def started(r: Result) -> str:
        return cell((r.text("run", "started") or "")[:16]) or MISSING

    def field(*keys: str, limit: int = 120) -> list[str]:
        return [cell(r.get("environment", *keys), limit) or MISSING for r in results]

    rows = [
        ("status", [cell(r.run_status) for r in results]),
        ("userland", [userland(r) for r in results]),
        ("libc", [libc(r) for r in results]),
        ("linkage", field("libc", "linkage")),
        ("kernel", field("kernel", "release")),
        ("added to kernel command line", [cmdline(r) for r in results]),
        ("clocksource", field("kernel", "clocksource")),
        ("CPU", field("cpu", "model", limit=40)),
        ("accelerator", [cell(r.text("environment", "accel") or "none (native)")
                         for r in results]),
        ("probed", [started(r) for r in results]),
    ]
    return transposed("environment", rows, results)


def vdso_table(results: list[Result]) -> str:
    def symbols(r: Result) -> str:
        functions = [s for s in entries(part(r.vdso_analysis, "symbols"))
                     if isinstance(s, dict) and s.get("type") == "FUNC"]
        if not functions:
            return MISSING
        names = {n for s in functions if isinstance(n := s.get("name"), str)}
        return cell(", ".join(sorted(n for n in names if not n.startswith("__"))), 200)

    rows = [
        ("vDSO mapped (AT_SYSINFO_EHDR)", [_yes_no(r.get("vdso", "present")) for r in results]),
        ("size (bytes)", [cell(r.get("vdso", "size")) or MISSING for r in results]),
        ("functions exported", [symbols(r) for r in results]),
        ("libc clock_gettime(CLOCK_MONOTONIC)",
         [outcome(call_row(r, "clock_gettime(CLOCK_MONOTONIC)", "libc")) for r in results]),
    ]
    return transposed("vDSO", rows, results)


def vsyscall_table(results: list[Result]) -> str:
    def legacy_runs(r: Result) -> str:
        rows = [row for c in VSYSCALL_CALLS if (row := call_row(r, c, "vsyscall"))]
        if not rows:
            return MISSING
        if all(row.get("status") == "ok" for row in rows):
            return "yes"
        crashed = [row for row in rows if row.get("status") == "crashed"]
        if crashed:
            return f"**no**: {cell(crashed[0].get('signal') or 'crash')}"
        return "**no**"

    rows = [
        ("mode (from /proc/self/maps)",
         [cell(r.get("vsyscall", "mode")) or MISSING for r in results]),
        ("page readable", [_yes_no(r.get("vsyscall", "readable")) for r in results]),
        ("a legacy static binary calling it runs", [legacy_runs(r) for r in results]),
    ]
    for call in VSYSCALL_CALLS:
        rows.append((f"{call} via vsyscall",
                     [outcome(call_row(r, call, "vsyscall")) for r in results]))
    return transposed("vsyscall", rows, results)


def syscall_cost_table(results: list[Result]) -> str:
    def spread(row: dict | None) -> str:
        if not row or row.get("status") != "ok":
            return outcome(row)
        ns = row.get("ns")
        return (f"{fmt_ns(part(ns, 'median'))} ns "
                f"({fmt_ns(part(ns, 'min'))}–{fmt_ns(part(ns, 'p90'))})")

    rows = [
        ("getppid, raw `syscall`", [spread(call_row(r, "getppid", "syscall")) for r in results]),
        ("getppid, libc", [spread(call_row(r, "getppid", "libc")) for r in results]),
        ("getppid, `int $0x80`", [spread(call_row(r, "getppid", "int80")) for r in results]),
        ("clock_gettime(MONOTONIC), raw `syscall`",
         [spread(call_row(r, "clock_gettime(CLOCK_MONOTONIC)", "syscall")) for r in results]),
        ("system calls counted per getppid",
         [cell(part(call_row(r, "getppid", "syscall"), "syscalls_per_call")) or MISSING
          for r in results]),
    ]
    return transposed("system call: median (min–p90)", rows, results)


def speedup_table(results: list[Result]) -> str:
    def libc_takes(row: dict | None) -> str:
        return mechanism(row) if row and row.get("status") == "ok" else outcome(row)

    rows = [(f"{call}: vDSO vs syscall",
             [ratio(call_row(r, call, "syscall"), call_row(r, call, "vdso")) for r in results])
            for call in VDSO_CALLS]
    rows += [(f"{call}: libc takes", [libc_takes(call_row(r, call, "libc")) for r in results])
             for call in VDSO_CALLS]
    return transposed("speed-up (syscall ÷ vDSO)", rows, results)


def latency_table(results: list[Result]) -> str:
    rows = [(f"{call} · {path}", [outcome(call_row(r, call, path)) for r in results])
            for call, path in ROW_ORDER]
    return transposed("call · path", rows, results)
