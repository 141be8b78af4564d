"""32-bit code: the i386 userlands (``<suite>-i386``, ``-i386-static``, ``-i386-musl``).

An i386 environment is a container of an i386 userland on this machine's 64-bit kernel (IA32
emulation). Its result has the C rows' shape, but the probe ran as a 32-bit process
(``environment.abi == "i386"``): its calls are those of another ABI (``int $0x80``, the vDSO's
``__kernel_vsyscall`` called as ``call *%gs:0x10``, the 32-bit vDSO's clock functions), so
they are kept out of the x86_64 latency tables and shown here instead. The page decides that
with :attr:`cells.Result.i386`.

Built here, as pure functions of the results: the path table (a row per environment, a column
per way into the kernel of getppid and the monotonic clock; every call and path in a linked
table), what ``__kernel_vsyscall`` executes in each environment (from the analysis of the live
vDSO the probe copied, never from the CPU vendor), the census of each 32-bit libc's kernel-entry
instructions, and the "at a glance" comparison with the 64-bit syscall instruction measured on
the same machine.

The analysis's JSON places are read by one small function each (:func:`kernel_vsyscall`,
:func:`instructions`, :func:`census`, :func:`vsyscall_address`), so that a change of place
is a change of one function.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from vdsomatrix.matrix import BackendName
from vdsomatrix.report.cells import (
    Result,
    call_row,
    entries,
    fmt_ns,
    mechanism,
    median,
    number,
    part,
    plain_line,
    text,
    whole_number,
)
from vdsomatrix.report.measurements import (
    CLOCKS,
    PATH_TITLES,
    exported,
    label_value,
    legacy_runs,
    libc_label,
    outcome,
    plain,
    short_call,
    slug,
)
from vdsomatrix.report.model import MISSING_VALUE, Finding, Table, Term, Value

SECTION_ID = "i386"
KERNEL_VSYSCALL = "kernel_vsyscall"  # the call row's path: call *%gs:0x10 (AT_SYSINFO)
TITLES = {**PATH_TITLES, KERNEL_VSYSCALL: "__kernel_vsyscall"}
MONOTONIC = "clock_gettime(CLOCK_MONOTONIC)"
# What the page shows (column title, call, path): the two ways into the kernel of one system
# call (by the vDSO: through __kernel_vsyscall); then the vDSO and vsyscall cells the page's
# vDSO and vsyscall tables leave out for 32-bit rows. Every other call and path is in the
# linked table: the page keeps its 40 KB and its table lines within 160 characters.
ON_PAGE = [("getppid int $0x80", "getppid", "int80"),
           ("getppid vDSO", "getppid", KERNEL_VSYSCALL)]
TIME64 = "clock_gettime64"  # the 32-bit vDSO's clock with 64-bit seconds (Linux 5.1 on)
# Every call and path of the contract, in the order of the linked table; rows of other calls
# or paths the results have follow them (the vsyscall rows are in the vsyscall table).
PATHS: list[tuple[str, str]] = [
    ("getppid", "libc"), ("getppid", "int80"), ("getppid", KERNEL_VSYSCALL),
] + [(f"clock_gettime({c})", p) for c in CLOCKS
     for p in ("libc", "vdso", "int80", KERNEL_VSYSCALL)] + [
    ("clock_gettime64(CLOCK_MONOTONIC)", "vdso"), ("clock_gettime64(CLOCK_MONOTONIC)", "int80"),
] + [(call, p) for call in ("gettimeofday", "time", "clock_getres(CLOCK_MONOTONIC)")
     for p in ("libc", "vdso", "int80")]
LEFT_OUT_PATHS = ("vsyscall",)
MORE_PATHS = 40  # at most this many (call, path) pairs beyond PATHS: results are untrusted
ENTRIES = ("sysenter", "syscall", "int 0x80")
INSTRUCTIONS_SHOWN = 32
# The census's counts, each under the names the analysis may give it (the first found counts).
CENSUS = [
    ("call gs:[0x10]", ("kernel_vsyscall", "call_gs_0x10", "call dword ptr gs:[0x10]")),
    ("int 0x80", ("int80", "int 0x80", "int_0x80")),
    ("sysenter", ("sysenter",)),
    ("syscall", ("syscall",)),
]
NATIVE = (BackendName.HOST, BackendName.DOCKER)
TERMS = [
    Term("__kernel_vsyscall", "the 32-bit vDSO's way into the kernel (AT_SYSINFO, called "
                              "as call *%gs:0x10), patched at boot to sysenter or syscall."),
]


# ----------------------------------------------------------------------- reading --------------

def kernel_vsyscall(result: Result) -> dict | None:
    """The analysis of ``__kernel_vsyscall`` (the vDSO analysis's ``kernel_vsyscall``)."""
    found = part(result.vdso_analysis, "kernel_vsyscall")
    if not isinstance(found, dict):
        found = part(result.analysis, "kernel_vsyscall")
    return found if isinstance(found, dict) else None


def enters_with(result: Result) -> str | None:
    """The instruction ``__kernel_vsyscall`` enters the kernel with, as the analysis decoded it
    from the live vDSO (a plain line: any other word is shown as it is, bounded)."""
    found = part(kernel_vsyscall(result), "enters_with")
    return found if found in ENTRIES else plain_line(found, 40) or None


def instruction(item: object) -> str:
    """One decoded instruction as a line: a string, or an object with ``mnemonic`` and
    ``op_str`` (or ``operands``, or ``text``)."""
    if isinstance(item, dict):
        shown = text(item.get("text")) or " ".join(
            w for w in (text(item.get("mnemonic")),
                        text(item.get("op_str")) or text(item.get("operands"))) if w)
        return plain_line(shown, 80)
    return plain_line(item, 80)


def instructions(result: Result) -> list[str]:
    return [line for item in entries(part(kernel_vsyscall(result), "instructions"))
            [:INSTRUCTIONS_SHOWN] if (line := instruction(item))]


def vsyscall_address(result: Result) -> str | None:
    return plain_line(result.get("vdso", "kernel_vsyscall_address"), 24) or None


def census(result: Result) -> dict | None:
    """The kernel-entry census of the environment's libc (the libc analysis's ``census``)."""
    found = part(result.libc_analysis, "census")
    return found if isinstance(found, dict) else None


def _count(counts: dict, names: tuple[str, ...]) -> Value:
    for name in names:
        n = number(whole_number(counts.get(name)))
        if n is not None:
            return Value(f"{n:.0f}", number=n, unit="count")
    return MISSING_VALUE


# ----------------------------------------------------------------------- tables --------------

def unique_keys(names: list[str]) -> list[str]:
    """A field name for each column: its slug, with a number after a slug already taken."""
    keys: list[str] = []
    for name in names:
        key, n = slug(name) or "column", 1
        while key in keys:
            n += 1
            key = f"{slug(name) or 'column'}_{n}"
        keys.append(key)
    return keys


def _table(table_id: str, title: str, question: str,
           columns: list[tuple[str, Callable[[Result], Value]]], results: list[Result],
           keys: list[str] | None = None, **options) -> Table:
    return Table(
        id=table_id, title=title, section=SECTION_ID, question=question,
        columns=["environment"] + [t for t, _ in columns],
        keys=["environment"] + (keys or unique_keys([t for t, _ in columns])),
        rows=[[label_value(r)] + [build(r) for _, build in columns] for r in results],
        subjects=[r.subject for r in results], **options)


def _path_title(call: str, path: str) -> str:
    return f"{short_call(call)} {TITLES.get(path, path)}"


def paths_of(results: list[Result]) -> list[tuple[str, str]]:
    """PATHS, then the (call, path) pairs of the results that PATHS lacks, in their order."""
    known = set(PATHS)
    more: list[tuple[str, str]] = []
    for r in results:
        for row in r.calls:
            call, path = row.get("call"), row.get("path")
            if (isinstance(call, str) and isinstance(path, str) and path not in LEFT_OUT_PATHS
                    and (call, path) not in known and len(more) < MORE_PATHS):
                known.add((call, path))
                more.append((call, path))  # as written: the rows are looked up by them
    return PATHS + more


def vdso_cell(result: Result) -> Value:
    """Whether the vDSO is mapped, as the number of functions it exports (the vDSO table's
    "mapped" and "functions" in one compact cell)."""
    present = result.get("vdso", "present")
    if present is False:
        return Value("not mapped", strong=True)
    if present is not True:
        return MISSING_VALUE
    shown = exported(result)
    if not shown:
        return Value("mapped")  # not analysed: no symbols to count
    return Value(f"{len(shown)} functions", number=float(len(shown)), unit="count")


def time64_note(results: list[Result]) -> list[str]:
    """Whether each analysed 32-bit vDSO exports clock_gettime64, in one line."""
    analysed = [r for r in results if r.get("vdso", "present") is True and exported(r)]
    lacking = [r.label for r in analysed if TIME64 not in exported(r)]
    if not analysed:
        return []
    if not lacking:
        return [f"vDSO: its functions include {TIME64} in "
                + ("all " if len(analysed) > 1 else "") + _listed_count(analysed, results) + "."]
    return [f"vDSO: {TIME64} is not among its functions in: {', '.join(lacking)}."]


def _listed_count(analysed: list[Result], results: list[Result]) -> str:
    if len(analysed) == len(results):
        return str(len(results)) if len(results) > 1 else results[0].label
    return f"{len(analysed)} analysed of {len(results)}"


def paths_table(results: list[Result]) -> Table:
    """The 32-bit rows the page shows: a row per environment, its two ways into the kernel,
    its vDSO clock, and what the page's vDSO and vsyscall tables leave out for it."""
    columns = [(title, lambda r, c=call, p=path: outcome(call_row(r, c, p)))
               for title, call, path in ON_PAGE]
    columns += [("vDSO", vdso_cell), ("vsyscall", legacy_runs)]
    return _table(SECTION_ID, "The ways into the kernel of a 32-bit process",
                  "getppid by int $0x80 and through the vDSO's __kernel_vsyscall (median "
                  "latency, and how it entered the kernel), the vDSO's functions, and what a "
                  "legacy vsyscall call does.",
                  columns, results, notes=time64_note(results))


def every_path_table(results: list[Result]) -> Table:
    """Every call by every path: a row per call and path, a column per environment."""
    used = [(c, p) for c, p in paths_of(results) if any(call_row(r, c, p) for r in results)]
    columns = [(plain_line(f"{c} · {TITLES.get(p, p)}", 100),
                lambda r, c=c, p=p: outcome(call_row(r, c, p))) for c, p in used]
    # "clock_gettime(CLOCK_MONOTONIC) · libc" is clock_gettime_clock_monotonic_libc
    keys = unique_keys([plain_line(f"{c.replace('(', ' ')} {p}", 100) for c, p in used])
    table = _table("i386-paths", "Every call by every path (32-bit)",
                   "Every call a 32-bit process made, by each path: median latency and how it "
                   "entered the kernel.", columns, results, keys, layout="columns",
                   fixed_layout=True, on_page=False)
    table.columns[0] = "call · path"
    table.keys[0] = "call_path"
    table.notes = ["The vsyscall rows are in the vsyscall table: a 32-bit process has no "
                   "vsyscall page."]
    return table


def kernel_vsyscall_table(results: list[Result]) -> Table:
    def entry(r: Result) -> Value:
        found = enters_with(r)
        return Value(found) if found else MISSING_VALUE

    def listing(r: Result) -> Value:
        return plain("; ".join(instructions(r)), 600)

    return _table("i386-kernel-vsyscall", "What __kernel_vsyscall executes",
                  "Its instructions, decoded from the live vDSO (patched at boot), and the one "
                  "that enters the kernel.",
                  [("AT_SYSINFO", lambda r: plain(vsyscall_address(r))),
                   ("enters with", entry), ("instructions", listing)], results, on_page=False)


def census_table(results: list[Result]) -> Table:
    def counted(names: tuple[str, ...]) -> Callable[[Result], Value]:
        return lambda r: _count(census(r) or {}, names)

    columns = [("libc", lambda r: plain(libc_label(r), 40))]
    columns += [(title, counted(names)) for title, names in CENSUS]
    columns += [("functions", counted(("functions",)))]
    return _table("i386-census", "Kernel-entry instructions in each 32-bit libc",
                  "How many int 0x80, sysenter and call gs:[0x10] each 32-bit libc's code "
                  "holds (as objdump -d decodes it).", columns, results,
                  on_page=False,
                  notes=[f"— {r.label}: no census of its libc" for r in results
                         if census(r) is None])


# ----------------------------------------------------------------------- prose ---------------

def _listed(names: list[str], total: int) -> str:
    return f"all {total}" if len(names) == total and total > 1 else ", ".join(names)


def entry_sentence(results: list[Result]) -> str | None:
    """Which instruction __kernel_vsyscall enters with, environment by environment."""
    by: dict[str, list[str]] = {}
    for r in results:
        by.setdefault(enters_with(r) or "", []).append(r.label)
    if not results or list(by) == [""]:
        return None
    told = [f"{word} in {_listed(names, len(results))}" for word, names in by.items() if word]
    if "" in by:
        told.append(f"not decoded in {_listed(by[''], len(results))}")
    return ("The vDSO's __kernel_vsyscall, decoded from each process's live copy, enters the "
            "kernel with " + "; ".join(told) + ".")


def ia32_refused(result: Result) -> str | None:
    """What the exec of a 32-bit program gave in a 64-bit environment where it did not run
    (environment.ia32, the probe's own try), else None."""
    ia32 = result.environment.get("ia32")
    if not isinstance(ia32, dict) or ia32.get("runs") is not False:
        return None
    return plain_line(ia32.get("error"), 80) or "refused"


def ia32_sentence(x86: list[Result]) -> str | None:
    """Where a 64-bit kernel runs no 32-bit program at all (ia32_emulation=0), what the exec
    gave, and what int $0x80 from a 64-bit process did there."""
    refused = [(r, why) for r in x86 if (why := ia32_refused(r))]
    if not refused:
        return None
    whys = sorted({why for _, why in refused})
    int80 = sorted({_what_int80_did(call_row(r, "getppid", "int80")) for r, _ in refused})
    return (f"No 32-bit program runs in {', '.join(r.label for r, _ in refused)}: the probe's "
            f"exec of one gave {' or '.join(whys)}. There, int $0x80 from a 64-bit process "
            f"(getppid): {' or '.join(int80)}.")


def _what_int80_did(row: dict | None) -> str:
    if not isinstance(row, dict):
        return "not measured"
    status = plain_line(row.get("status"), 20) or "?"
    if status == "ok":
        return mechanism(row)
    signal = plain_line(row.get("signal"), 20)
    return f"{status} ({signal})" if signal else status


def contents(results: list[Result], x86: list[Result] = ()) -> tuple[list[str], list[Table]]:
    intro = ["A 32-bit process enters the kernel by int $0x80 or by calling the vDSO's "
             "__kernel_vsyscall (call *%gs:0x10: glibc's way); its rows are of another ABI, in "
             "none of the x86_64 latency tables above."]
    if (sentence := entry_sentence(results)):
        intro.append(sentence)
    if (sentence := ia32_sentence(list(x86))):
        intro.append(sentence)
    return intro, [
        paths_table(results), every_path_table(results), kernel_vsyscall_table(results),
        census_table(results)]


def _time(ns: float) -> str:
    return f"{ns / 1000:.1f} µs" if ns >= 1000 else f"{fmt_ns(ns)} ns"


def _times(n: float) -> str:
    return f"{n:.0f}×" if n >= 10 else f"{n:.1f}×"


def baseline(x86: list[Result], backend: str | None) -> tuple[float, str] | None:
    """The 64-bit syscall instruction's getppid median to compare with, and whose it is: the
    median of the x86_64 environments of the same backend (a container pays the same seccomp
    filter as the 32-bit containers), else the host's."""
    same = [(m, r) for r in x86 if r.backend == backend
            if (m := median(call_row(r, "getppid", "syscall"))) is not None]
    if same and backend != BackendName.HOST:
        return statistics.median(m for m, _ in same), (
            f"median of {len(same)} x86_64 containers" if len(same) > 1
            else f"in {same[0][1].label}")
    host = [(m, r) for r in x86 if r.backend == BackendName.HOST
            if (m := median(call_row(r, "getppid", "syscall"))) is not None]
    return (host[0][0], f"in {host[0][1].label}") if host else None


def findings(i386: list[Result], x86: list[Result], several: bool) -> list[Finding]:
    """At a glance, in one line however many machines: int $0x80 from a 32-bit process against
    the 64-bit syscall instruction on the same machine (and backend where there is one), and
    which instruction __kernel_vsyscall enters the kernel with."""
    costs_told = []
    for machine in sorted({r.machine or "" for r in i386}):
        ours = [r for r in i386 if (r.machine or "") == machine and r.backend in NATIVE]
        theirs = [r for r in x86 if (r.machine or "") == machine and r.backend in NATIVE]
        costs = [m for r in ours if (m := median(call_row(r, "getppid", "int80"))) is not None]
        if not costs:
            continue
        cost = statistics.median(costs)
        where = f" on {machine}" if several and machine else " here"
        told = f"{_time(cost)}{where} (getppid, " + (
            f"median of {len(costs)} environments" if len(costs) > 1 else ours[0].label) + ")"
        base = baseline(theirs, ours[0].backend)
        if base is not None and base[0] > 0:
            sep = " " if base[1].startswith("in ") else ", "
            told += (f", {_times(cost / base[0])} the 64-bit syscall instruction "
                     f"({_time(base[0])}{sep}{base[1]})")
        costs_told.append(told)
    by_entry: dict[str, list[Result]] = {}
    for r in i386:
        if (word := enters_with(r)):
            by_entry.setdefault(word, []).append(r)
    entry = ", ".join(f"{word} in {len(rs)}" for word, rs in by_entry.items())
    if entry:
        entry += f" of {len(i386)} 32-bit environments"
    if costs_told:
        line = "from a 32-bit process costs " + "; ".join(costs_told)
        if entry:
            line += (f"; __kernel_vsyscall enters the kernel with {entry} (decoded from the "
                     "live vDSO)")
        return [Finding("int $0x80", line + ".")]
    if entry:
        return [Finding("__kernel_vsyscall",
                        f"enters the kernel with {entry} (decoded from the live vDSO).")]
    return []
