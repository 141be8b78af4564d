"""Across architectures: how each libc enters the kernel, and what the vDSO offers, on x86_64,
i386 and arm64.

The question is the same on every architecture, the answer is not: an x86_64 libc enters the
kernel with ``syscall``, an i386 one mostly through the vDSO's ``__kernel_vsyscall``
(``call *%gs:0x10``), an arm64 one with ``svc``; an x86 vDSO exports ``__vdso_*`` functions at
LINUX_2.6, an arm64 one ``__kernel_*`` at LINUX_2.6.39, without time or getcpu. Everything here
is computed from the results alone: the instruction counts from the analysis of the libc each
environment loaded (the census), the vDSO's functions from the analysis of the vDSO it was
given, and whether libc's clock_gettime stays in user space from the measured row (system calls
counted with ptrace).

Built here, as pure functions of the results: a row per ABI on the page, a row per environment
in a table of its own, and, since arm64 rows are in none of the x86_64 latency tables, every
call of the arm64 environments by every path in another.
"""

from __future__ import annotations

from collections.abc import Callable

from vdsomatrix.report.cells import (
    AARCH64,
    I386,
    Result,
    call_row,
    entries,
    number,
    part,
    plain_line,
    whole_number,
)
from vdsomatrix.report.measurements import (
    PATH_TITLES,
    environment_table,
    exported,
    libc_label,
    outcome,
    plain,
    short_call,
    slug,
)
from vdsomatrix.report.model import MISSING_VALUE, Table, Value

SECTION_ID = "architectures"
ABIS = ("x86_64", I386, AARCH64)  # the order of the rows
# The census's kinds of kernel entry (analysis/sweep.KINDS), as the tables name them.
ENTRY_SHOWN = {"syscall": "syscall", "sysenter": "sysenter", "int80": "int 0x80",
               "kernel_vsyscall": "call gs:[0x10]", "svc": "svc"}
MONOTONIC = "clock_gettime(CLOCK_MONOTONIC)"
TITLES = {**PATH_TITLES, "kernel_vsyscall": "__kernel_vsyscall"}
MAX_PATHS = 100  # (call, path) columns of the arm64 table; a result may name any number


def census(result: Result) -> dict | None:
    """The census of the libc the environment loaded (analysis.libc.census), or None."""
    found = part(result.libc_analysis, "census")
    return found if isinstance(found, dict) else None


def entry_counts(result: Result) -> dict[str, int]:
    """The kinds of kernel-entry instruction its libc holds, with how many: only those it has."""
    found = census(result) or {}
    return {kind: n for kind in ENTRY_SHOWN
            if (n := whole_number(found.get(kind))) is not None and n > 0}


def _entries_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{ENTRY_SHOWN[k]} ×{n}" for k, n in counts.items())


def _stays_in_user_space(result: Result) -> bool | None:
    """Whether libc's clock_gettime(CLOCK_MONOTONIC) made no system call (counted), or None."""
    row = call_row(result, MONOTONIC, "libc")
    count = number(row.get("syscalls_per_call")) if row and row.get("status") == "ok" else None
    return None if count is None else count < 0.5


# ----------------------------------------------------------------------- tables --------------

def abi_table(results: list[Result]) -> Table:
    """A row per ABI the results have: the environments, the instructions their libcs enter
    the kernel with (the range of counts), the vDSO functions (in how many environments when
    not in all) and in how many libc's monotonic clock made no system call."""
    rows = []
    for abi in ABIS:
        ours = [r for r in results if r.abi == abi]
        if not ours:
            continue
        rows.append([Value(abi),
                     _entries_range(ours), _vdso_union(ours), _user_space_count(ours)])
    columns = ["ABI", "libc enters with", "vDSO functions", "no syscall"]
    return Table(
        id=SECTION_ID, title="How this libc enters the kernel, and what the vDSO offers, on "
                             "x86_64, i386 and arm64", section=SECTION_ID,
        question="A row per ABI (Debian's amd64, i386 and arm64 userlands): kernel-entry "
                 "instructions per libc (fewest–most), its vDSOs' "
                 "functions (in how many vDSOs when not in all), and in how many environments "
                 "libc's clock_gettime(CLOCK_MONOTONIC) made no system call.",
        columns=columns, keys=[slug(c) for c in columns], rows=rows, subjects=[None] * len(rows))


def _entries_range(results: list[Result]) -> Value:
    counted = [entry_counts(r) for r in results if census(r) is not None]
    if not counted:
        return MISSING_VALUE
    kinds = [k for k in ENTRY_SHOWN if any(k in c for c in counted)]
    shown = []
    for kind in kinds:
        values = [c.get(kind, 0) for c in counted]
        low, high = min(values), max(values)
        shown.append(f"{ENTRY_SHOWN[kind]} ×{low}" + (f"–{high}" if high != low else ""))
    return Value(", ".join(shown) or "none")


def _vdso_union(results: list[Result]) -> Value:
    analysed = [set(exported(r)) for r in results if r.vdso_analysis is not None]
    analysed = [names for names in analysed if names]
    if not analysed:
        return MISSING_VALUE
    every = set.intersection(*analysed)
    some = sorted(set.union(*analysed) - every)
    counts = {n: sum(1 for names in analysed if n in names) for n in some}
    shown = ", ".join(sorted(every))
    if some:
        shown += "; " + ", ".join(f"{n} ({counts[n]}/{len(analysed)})" for n in some)
    return Value(plain_line(shown, 400))


def _user_space_count(results: list[Result]) -> Value:
    known = [s for r in results if (s := _stays_in_user_space(r)) is not None]
    if not known:
        return MISSING_VALUE
    n = sum(known)
    return Value(f"{n}/{len(known)}", number=float(n), unit="count")


def environments_table(results: list[Result]) -> Table:
    """The same, a row per environment (every ABI)."""
    def entries_cell(r: Result) -> Value:
        if census(r) is None:
            return MISSING_VALUE
        return Value(_entries_text(entry_counts(r)) or "none")

    def vdso_cell(r: Result) -> Value:
        if r.get("vdso", "present") is False:
            return Value("not mapped", strong=True)
        shown = exported(r)
        return Value(plain_line(", ".join(shown), 400)) if shown else MISSING_VALUE

    def version_cell(r: Result) -> Value:
        versions = r.vdso_analysis.get("versions") if r.vdso_analysis else None
        if not isinstance(versions, list) or not versions:
            return MISSING_VALUE
        return plain(", ".join(v for v in versions if isinstance(v, str)), 100)

    columns: list[tuple[str, Callable[[Result], Value]]] = [
        ("ABI", lambda r: Value(r.abi)), ("libc", lambda r: plain(libc_label(r), 40)),
        ("kernel", lambda r: plain(r.get("environment", "kernel", "release"), 40)),
        ("libc enters the kernel with", entries_cell),
        ("vDSO functions", vdso_cell), ("vDSO version", version_cell),
        (f"{short_call(MONOTONIC)} libc", lambda r: outcome(call_row(r, MONOTONIC, "libc"))),
        ("getppid libc", lambda r: outcome(call_row(r, "getppid", "libc"))),
    ]
    table = environment_table(
        "architectures-environments", SECTION_ID, "Each environment's way into the kernel",
        "The same, a row per environment, with two calls through libc.", columns, results)
    table.on_page = False
    return table


def arm64_paths_table(results: list[Result]) -> Table:
    """Every call of the arm64 environments by every path: a row per call and path."""
    ours = [r for r in results if r.arm64]
    used: list[tuple[str, str, str]] = []  # (rows, call, path): the calls, then entry costs
    for rows in ("calls", "entry_costs"):
        for r in ours:
            for row in entries(r.doc.get(rows)):
                key = (rows, row.get("call"), row.get("path")) if isinstance(row, dict) else ()
                if (key and isinstance(key[1], str) and isinstance(key[2], str)
                        and key not in used and len(used) < MAX_PATHS):
                    used.append(key)
    columns = [(plain_line(f"{c} · {TITLES.get(p, p)}", 100),
                lambda r, w=w, c=c, p=p: outcome(call_row(r, c, p, rows=w))) for w, c, p in used]
    table = environment_table(
        "architectures-arm64-paths", SECTION_ID, "Every call by every path (arm64)",
        "Each call by each path (syscall: svc #0), and the entry costs (brk for int3), or why "
        "a path is not there.", columns, ours)
    table.keys = ["environment"] + _unique([slug(f"{c} {p}") for _w, c, p in used])
    table.layout = "columns"
    table.fixed_layout = True
    table.on_page = False
    table.columns[0] = "call · path"
    table.keys[0] = "call_path"
    return table


def _unique(keys: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}_{seen[key]}")
    return out


def contents(results: list[Result]) -> tuple[list[str], list[Table]]:
    intro = ["arm64 enters the kernel with svc #0 and has no vsyscall page, int $0x80 or "
             "__kernel_vsyscall (\"not on this architecture\"); its guests are in none of the "
             "x86_64 tables above."]
    tables = [abi_table(results), environments_table(results)]
    if any(r.arm64 for r in results):
        tables.append(arm64_paths_table(results))
    return intro, tables
