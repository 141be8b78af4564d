"""The measured tables, as :class:`~vdsomatrix.report.model.Table`: a row per environment.

Identity, the vDSO, the vsyscall page, what a system call costs, what the vDSO saves, which way
libc goes, and every way into the kernel with its latency (one table per call family). Every
value is read through :mod:`cells` and kept as data: the number, its unit, the counted
mechanism and the status in separate fields, the display text unescaped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from vdsomatrix.matrix import BackendName
from vdsomatrix.report.cells import (
    Result,
    call_row,
    fmt_ns,
    mechanism,
    median,
    number,
    part,
    plain_line,
    plain_twin,
    text,
    vdso_functions,
    whole_number,
)
from vdsomatrix.report.model import MISSING_VALUE, Table, Value

CLOCKS = ("CLOCK_MONOTONIC", "CLOCK_REALTIME", "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME",
          "CLOCK_PROCESS_CPUTIME_ID")
VDSO_CALLS = [f"clock_gettime({c})" for c in CLOCKS] + ["gettimeofday", "time", "getcpu"]
VSYSCALL_CALLS = ("gettimeofday", "time", "getcpu")
# getrandom: a vDSO function since Linux 6.11 (no vsyscall slot), used by glibc from 2.41.
RANDOM_CALL = "getrandom"
# Every call family and the paths it is measured by, in the order of the latency tables.
FAMILIES: list[tuple[str, tuple[str, ...]]] = [("getppid", ("libc", "syscall", "int80"))] + [
    (call, ("libc", "vdso", "syscall") if call.startswith("clock_gettime")
     else ("libc", "vdso", "syscall", "vsyscall"))
    for call in VDSO_CALLS
] + [(RANDOM_CALL, ("libc", "vdso", "syscall"))]
# The rows the page leaves out of the tables about cost: the same kernel measured through the
# other two builds of the probe (their own files keep them).
OTHER_BUILDS = ("static", "musl")
OTHER_BUILDS_NOUN = "static and musl builds"
# Boot options that change how a clock is read: a guest booted with one answers the clock
# tables' question itself. Other variants (mitigations=, a time namespace, two vCPUs, IA32 off,
# the allow-all seccomp filter) were made for another question, and repeat their plain twin's.
CLOCK_OPTIONS = ("vdso", "vdso32", "vsyscall", "clocksource")
OTHER_VARIANTS_NOUN = "static and musl builds, and variants made for another question"
PATH_TITLES = {"libc": "libc", "vdso": "vDSO", "syscall": "syscall", "int80": "int $0x80",
               "vsyscall": "vsyscall"}
BUILD_ID_SHOWN = 8  # characters of a build-id that name a vDSO in the tables
RESOLUTION_NS = 1.0  # below this, a median is within the noise of the subtracted loop overhead


def short_call(call: str) -> str:
    """A call as a column header: ``clock_gettime(CLOCK_X)`` is written ``X`` (the glossary
    says so)."""
    return call.removeprefix("clock_gettime(CLOCK_").removesuffix(")") if call.startswith(
        "clock_gettime(") else call


def slug(label: str) -> str:
    """A field name for CSV and JSON: lower case, words joined by '_', without a unit in
    brackets (the field's suffix says the unit)."""
    label = re.sub(r"\s*\([^)]*\)", "", label) or label
    out = "".join(c if c.isalnum() else "_" for c in label.lower())
    return "_".join(w for w in out.split("_") if w)


def label_value(result: Result) -> Value:
    return Value(result.label)


def plain(value: object, limit: int = 120) -> Value:
    """A text cell from a document field; the mark when the field is not text."""
    shown = plain_line(value, limit)
    return Value(shown) if shown else MISSING_VALUE


def yes_no(value: object, *, no_is_news: bool = False) -> Value:
    """yes, no, or the mark; ``no_is_news``: a "no" the reader must not miss (emphasised)."""
    if value is True:
        return Value("yes")
    if value is False:
        return Value("no", strong=no_is_news)
    return MISSING_VALUE


def outcome(row: dict | None) -> Value:
    """One measured call: median ns and the counted mechanism, or why there is no number."""
    if row is None:
        return MISSING_VALUE
    status = row.get("status")
    if status == "ok":
        ns = row.get("ns")
        how = mechanism(row)
        return Value(f"{fmt_ns(part(ns, 'median'))} ns {how}",
                     number=number(part(ns, "median")), unit="ns", mechanism=how, status="ok",
                     low=number(part(ns, "min")), high=number(part(ns, "p90")))
    if status == "crashed":
        signal = plain_line(row.get("signal"), 40) or "signal"
        return Value(f"crashed ({signal})", status="crashed", detail=signal)
    if status == "unsupported":
        return Value("unsupported", status="unsupported",
                     detail=plain_line(row.get("reason"), 120) or None)
    shown = plain_line(status, 40) or "?"
    return Value(shown, status=shown)


def spread(row: dict | None) -> Value:
    """A median with its min–p90 range, for the tables about cost."""
    value = outcome(row)
    if value.status != "ok":
        return value
    return dataclasses.replace(
        value, text=f"{fmt_ns(value.number)} ({fmt_ns(value.low)}–{fmt_ns(value.high)})")


def ratio(slow: dict | None, fast: dict | None) -> Value:
    """How many times faster ``fast`` is than ``slow`` (medians)."""
    s, f = median(slow), median(fast)
    if s is None or f is None:
        return MISSING_VALUE
    if f < RESOLUTION_NS:
        # Below a nanosecond the fast path is lost in the loop overhead that was subtracted:
        # a quotient would be noise, a bound is not.
        bound = s / RESOLUTION_NS
        return Value(f"≥ {bound:.0f}×", number=bound, unit="×", bound="lower")
    return Value(f"{s / f:.1f}×", number=s / f, unit="×")


def libc_label(result: Result) -> str:
    """The libc an environment reports, as "name version linkage"."""
    return " ".join(w for key in ("name", "version", "linkage")
                    if (w := part(result.environment, "libc", key)) and isinstance(w, str))


def vdso_name(result: Result) -> str | None:
    """The start of a vDSO's build-id (its sha256 where it has none): the vDSO's name in the
    tables; None when the vDSO was not analysed."""
    vdso = result.vdso_analysis
    if vdso is None:
        return None
    key = text(vdso.get("build_id")) or text(vdso.get("sha256"))
    return plain_line(key[:BUILD_ID_SHOWN]) if key else "no build-id"


def environment_table(table_id: str, section: str, title: str, question: str,
                      columns: list[tuple[str, Callable[[Result], Value]]], results: list[Result],
                      notes: list[str] | None = None, *, page_folds: bool = False,
                      leaves_out: tuple[str, ...] = (),
                      leaves_out_noun: str = OTHER_BUILDS_NOUN) -> Table:
    """A table with a row per environment: the first column names it, then ``columns``.
    ``page_folds``: the page may fold its identical consecutive rows (rows with a latency
    never fold: see ``model.identical_runs``); ``leaves_out``: environments whose rows the page
    leaves out, called ``leaves_out_noun`` in the line that says where they are (by default the
    static and musl builds, see ``OTHER_BUILDS``)."""
    return Table(
        id=table_id, title=title, section=section, question=question,
        columns=["environment"] + [title for title, _ in columns],
        keys=["environment"] + [slug(title) for title, _ in columns],
        rows=[[label_value(r)] + [build(r) for _, build in columns] for r in results],
        subjects=[r.subject for r in results], notes=notes or [],
        page_folds_identical_rows=page_folds,
        page_leaves_out_rows=leaves_out,
        page_leaves_out_rows_noun=leaves_out_noun if leaves_out else "",
    )


def _other_builds(results: list[Result]) -> tuple[str, ...]:
    """The containers of the static and musl builds, when their dynamic twin is there too
    (not the 32-bit ones: a page that leaves rows out leaves out their whole group)."""
    dynamic = {r.text("environment", "suite") for r in results
               if r.backend == BackendName.DOCKER and r.text("environment", "build") == "dynamic"}
    return tuple(r.name for r in results if r.backend == BackendName.DOCKER and not r.i386
                 and r.text("environment", "build") in OTHER_BUILDS
                 and r.text("environment", "suite") in dynamic)


# ----------------------------------------------------------------------- the tables ----------

def identity_tables(results: list[Result], machines: bool) -> list[Table]:
    def userland(r: Result) -> Value:
        # "Debian GNU/Linux 12 (bookworm)" says no more than "Debian 12 (bookworm)"
        return plain((r.text("environment", "userland", "pretty_name") or "").replace(
            " GNU/Linux ", " ") or r.text("environment", "userland", "codename")
            or r.text("environment", "suite"), 40)

    def cmdline(r: Result) -> Value:
        if r.backend == BackendName.QEMU:
            return plain(r.text("environment", "matrix_cmdline") or "(default)", 60)
        return Value("(host's)")

    def started(r: Result) -> Value:
        return plain((r.text("run", "started") or "")[:16].replace("T", " "))

    def field(*keys: str, limit: int = 40) -> Callable[[Result], Value]:
        return lambda r: plain(r.get("environment", *keys), limit)

    status = ("status", lambda r: Value(plain_line(r.run_status, 40),
                                         strong=r.run_status != "ok"))
    columns = [
        ("userland", userland), ("arch", lambda r: Value(r.arch)),
        ("libc", lambda r: plain(libc_label(r), 40)),
        ("kernel", field("kernel", "release")),
        ("kernel cmdline added", cmdline),
        ("clocksource", field("kernel", "clocksource")), status,
    ]
    if machines:
        columns.insert(0, ("machine", lambda r: plain(r.machine, 60)))
    second = [
        ("CPU", field("cpu", "model", limit=40)),
        ("accelerator", lambda r: plain(r.text("environment", "accel") or "none (native)")),
        ("probed (UTC)", started),
        ("description", lambda r: plain(r.text("environment", "description"), 80)),
    ]
    cpus = {}
    for r in results:
        if (model := plain_line(r.get("environment", "cpu", "model"), 60)):
            cpus.setdefault(model, []).append(r)
    notes = ["CPU: " + "; ".join(f"{model} ({len(members)})" for model, members in cpus.items())
             ] if cpus else []
    return [
        environment_table(
            "environments", "environments", "Userland, libc and kernel",
            "Which userland, libc and kernel each environment ran.", columns, results,
            notes=notes, leaves_out=_other_builds(results)),
        dataclasses.replace(environment_table(
            "environments-run", "environments", "Where and when each environment ran",
            "On which CPU, under which accelerator, and when each environment was probed.",
            second, results), on_page=False),
    ]


VDSO_PREFIX = "__vdso_"
ARM64_VDSO_PREFIX = "__kernel_"


def exported(result: Result) -> list[str]:
    """The functions a vDSO exports for callers, by name: an x86_64 vDSO's names without
    "__" (each also has a __vdso_ alias), a 32-bit vDSO's __vdso_ names (it has no others)
    without that prefix, an arm64 vDSO's __kernel_ names without theirs; __kernel_vsyscall
    and the signal trampolines are not among them."""
    names = vdso_functions(result) or set()
    if result.arm64:
        return sorted(n.removeprefix(ARM64_VDSO_PREFIX) for n in names
                      if n.startswith(ARM64_VDSO_PREFIX) and "sigreturn" not in n)
    if result.i386:
        return sorted(n.removeprefix(VDSO_PREFIX) for n in names if n.startswith(VDSO_PREFIX))
    return sorted(n for n in names if not n.startswith("__"))


def vdso_table(results: list[Result]) -> Table:
    def functions(r: Result) -> Value:
        shown = exported(r)
        return Value(str(len(shown)), number=float(len(shown)), unit="count") if shown \
            else MISSING_VALUE

    def size(r: Result) -> Value:
        n = number(whole_number(r.get("vdso", "size")))  # None for more digits than a float
        return Value(f"{n:.0f}", number=n, unit="bytes") if n is not None else MISSING_VALUE

    def build_id(r: Result) -> Value:
        return plain(vdso_name(r))

    return environment_table(
        "vdso", "vdso", "The vDSO",
        "Whether the kernel maps a vDSO, how large it is, how many functions it "
        "exports, and which vDSO it is (the start of its build-id: the vDSO symbols "
        "section lists each one's functions).", [
            ("mapped", lambda r: yes_no(r.get("vdso", "present"), no_is_news=True)),
            ("size (bytes)", size),
            ("functions", functions),
            ("build-id", build_id),
        ], results, page_folds=True)


def legacy_runs(r: Result) -> Value:
    rows = [row for c in VSYSCALL_CALLS if (row := call_row(r, c, "vsyscall"))]
    if not rows:
        return MISSING_VALUE
    if all(row.get("status") == "ok" for row in rows):
        return Value("yes")
    if all(row.get("status") == "unsupported" for row in rows):  # a 32-bit process: no page
        return Value("unsupported", status="unsupported",
                     detail=plain_line(rows[0].get("reason"), 120) or None)
    crashed = [row for row in rows if row.get("status") == "crashed"]
    if crashed:
        signal = plain_line(crashed[0].get("signal"), 40) or "crash"
        return Value(f"no: {signal}", status="crashed", detail=signal, strong=True)
    return Value("no", strong=True)


def vsyscall_table(results: list[Result]) -> Table:
    columns = [
        ("mode", lambda r: plain(r.get("vsyscall", "mode"), 40)),
        ("readable", lambda r: yes_no(r.get("vsyscall", "readable"))),
        ("legacy binary runs", legacy_runs),
    ]
    columns += [(call, lambda r, call=call: outcome(call_row(r, call, "vsyscall")))
                for call in VSYSCALL_CALLS]
    return environment_table(
        "vsyscall", "vsyscall", "The vsyscall page",
        "The vsyscall mode (from /proc/self/maps), whether the page can be read, and "
        "whether a legacy static binary that calls it runs, with the latency of each "
        "legacy call.", columns, results, page_folds=True)


def syscall_cost_table(results: list[Result]) -> Table:
    clock = "clock_gettime(CLOCK_MONOTONIC)"

    counts = [number(part(call_row(r, "getppid", "syscall"), "syscalls_per_call"))
              for r in results]
    once = sum(1 for c in counts if c is not None and round(c) == 1)
    table = environment_table(
        "syscall-cost", "syscall-cost", "What a system call costs",
        "The median cost of one system call in ns (min–p90 in brackets), by each way of making "
        "it.", [
            ("getppid syscall (ns)", lambda r: spread(call_row(r, "getppid", "syscall"))),
            ("getppid libc (ns)", lambda r: spread(call_row(r, "getppid", "libc"))),
            ("getppid int $0x80 (ns)", lambda r: spread(call_row(r, "getppid", "int80"))),
            ("MONOTONIC syscall (ns)", lambda r: spread(call_row(r, clock, "syscall"))),
        ], results,
        notes=[f"ptrace counted one system call per raw getppid in {once} of "
               f"{len(results)} environments (the latency tables show every count)."],
        leaves_out=_other_builds(results))
    # Off the page: the page's table "entry-cost" has the medians beside what explains them.
    return dataclasses.replace(table, on_page=False)


def _other_variants(results: list[Result]) -> tuple[str, ...]:
    """Variants (see CLOCK_OPTIONS) whose plain twin is among ``results``, and which change
    nothing about how a clock is read."""
    def clock_option(r: Result) -> bool:
        words = (r.text("environment", "matrix_cmdline") or "").split()
        return any(w.split("=", 1)[0] in CLOCK_OPTIONS for w in words)

    return tuple(r.name for r in results
                 if not clock_option(r) and plain_twin(r, results) is not None)


def speedup_table(results: list[Result]) -> Table:
    speedups = [(short_call(call), lambda r, call=call: ratio(
        call_row(r, call, "syscall"), call_row(r, call, "vdso"))) for call in VDSO_CALLS]
    return environment_table(
        "speedup", "speedup", "vDSO speed-up",
        "How many times faster the vDSO answers than the system call (ratio of "
        "medians: syscall ÷ vDSO).", speedups, results,
        notes=[f"A vDSO median under {RESOLUTION_NS:g} ns is within the noise of the "
               "subtracted loop overhead: the speed-up is then a lower bound "
               "(\"≥ N×\")."],
        leaves_out=_other_builds(results) + _other_variants(results),
        leaves_out_noun=OTHER_VARIANTS_NOUN)


def takes(call: str, path: str) -> Callable[[Result], Value]:
    """A cell of the way a call goes: the counted mechanism alone (no latency), so that rows
    that went the same way fold on the page."""
    def build(r: Result) -> Value:
        value = outcome(call_row(r, call, path))
        if value.status == "ok":
            return Value(value.mechanism or "?", mechanism=value.mechanism, status="ok")
        return value
    return build


def libc_path_table(results: list[Result]) -> Table:
    def libc_takes(call: str) -> Callable[[Result], Value]:
        return takes(call, "libc")

    libc = [(short_call(call), libc_takes(call)) for call in VDSO_CALLS]
    return environment_table(
        "libc-path", "latency", "Which way libc's call goes",
        "Whether libc's own call answers in user space or makes the system call, as "
        "counted (the latency of every path is in the tables linked below).",
        libc, results, page_folds=True)


def latency_tables(results: list[Result]) -> list[Table]:
    tables = [libc_path_table(results)]
    for call, paths in FAMILIES:
        table_id = "latency-" + slug(short_call(call)).replace("_", "-")
        columns = [(PATH_TITLES[p], lambda r, p=p, call=call: outcome(call_row(r, call, p)))
                   for p in paths]
        tables.append(dataclasses.replace(environment_table(
            table_id, "latency", call, "The median latency of each path (libc, vDSO, raw "
            "syscall, vsyscall or int $0x80), and how it entered the kernel.", columns, results),
            on_page=False))
    return tables


def other_abis_off_page(tables: list[Table]) -> list[Table]:
    """These tables with their 32-bit and arm64 rows left off the Markdown page (it links each
    table's own file, and the sections "32-bit code" and "Across architectures" carry what a
    reader then misses): the page keeps its budget."""
    for table in tables:
        table.page_leaves_out = ("i386", "arm64")  # the groups' ids (GROUPS)
    return tables
