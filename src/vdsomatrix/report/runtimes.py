"""The language runtimes: do they take the fast path? (Java, Python, Go, Node.js, Rust.)

A runtime environment (``host-runtimes``, ``<suite>-runtimes``, ``k6.1-…-runtimes``) measures no
C rows: its result has ``"calls": []`` and a top-level ``runtimes`` list, a row per runtime
variant and call (the shared contract: runtime, variant, label, version, package, call, clock,
status, reason, ns, syscalls_per_call, syscalls_by_name, counted, seconds, …). Each row is read
defensively into a :class:`Row`; the mechanism is the C rows' (:func:`cells.mechanism`: counted
system calls per call, never speed).

Everything here is computed from the rows: the answer sentence that opens the section ("does Java
use the fast syscalls?"), the lines of "at a glance", the summary table on the page, one table
per question (monotonic clock, wall clock, baseline: a row per runtime call, a column per
environment), the versions and the time each environment took, and every row with its exact
counts. Plain text throughout: the renderers escape it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from vdsomatrix.report.cells import (
    ENTERS_KERNEL,
    MISSING,
    Result,
    fmt_ns,
    mechanism,
    number,
    part,
    plain_line,
    text,
    whole_number,
)
from vdsomatrix.report.measurements import label_value, slug
from vdsomatrix.report.model import MISSING_VALUE, Finding, Table, Value
from vdsomatrix.results import Runtime

SECTION_ID = "runtimes"
RUNTIMES = tuple(str(r) for r in Runtime)  # the result schema's vocabulary and order
NAMES = {"java": "Java", "python": "Python", "go": "Go", "node": "Node.js", "rust": "Rust"}
# The calls of each runtime in the order the tables list them (the contract's CALL ids).
CALLS = {
    "java": ("System.nanoTime()", "System.currentTimeMillis()", "Instant.now()",
             "Thread.yield()"),
    "python": ("time.monotonic_ns()", "time.perf_counter_ns()", "time.time_ns()",
               "os.getppid()"),
    "go": ("time.Now()", "syscall.Getppid()"),
    "node": ("process.hrtime.bigint()", "performance.now()", "Date.now()", "process.ppid"),
    "rust": ("Instant::now()", "SystemTime::now()", "std::os::unix::process::parent_id()"),
}
# The call the summary table shows for each runtime: its monotonic clock.
PRIMARY = {"java": "System.nanoTime()", "python": "time.monotonic_ns()", "go": "time.Now()",
           "node": "process.hrtime.bigint()", "rust": "Instant::now()"}
TIME_CLOCKS = ("monotonic", "realtime")
# (table id, clock, title, question)
CLOCK_TABLES = (
    ("runtimes-monotonic", "monotonic", "Monotonic clock",
     "Every monotonic clock call, a column per environment."),
    ("runtimes-wall", "realtime", "Wall clock",
     "Every wall-clock call, a column per environment."),
    ("runtimes-baseline", "baseline", "Baseline (always enters the kernel)",
     "A call that always makes a system call: the counter sees it, and its price."),
)
# Go's time.Now() reads the wall clock and the monotonic clock in one call.
BOTH_CLOCKS = {("go", "time.Now()")}
STATUS_WORDS = {"not_shipped": "not shipped", "not_installed": "not installed",
                "crashed": "crashed", "timeout": "timeout", "error": "error"}
FAILED_WORDS = {"crashed": "crashed", "timeout": "timed out", "error": "failed"}
ABSENT = ("not_shipped", "not_installed")
MANY_VERSIONS = 4  # more labels than this are written as a range ("Java 8 to 25")


# ----------------------------------------------------------------------- reading --------------

@dataclass(frozen=True)
class Row:
    """One runtime row of a result, every field type-checked and made a plain bounded line."""

    env: Result
    runtime: str
    variant: str
    label: str
    version: str
    package: str
    call: str
    clock: str
    status: str
    reason: str
    median: float | None
    low: float | None
    high: float | None
    syscalls: float | None
    by_name: tuple[tuple[str, float], ...]
    mechanism: str | None
    counted: str
    rounds: int | None
    iterations: int | None
    warmup: str
    seconds: float | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def enters(self) -> bool | None:
        """Whether the call made a system call each time, as counted (None: not counted)."""
        if not self.ok or self.syscalls is None:
            return None
        return self.syscalls >= ENTERS_KERNEL

    @property
    def failed(self) -> bool:
        return not self.ok and self.status not in ABSENT



def _mechanism(raw: dict) -> str:
    """The C rows' mechanism (cells.mechanism), from a count that is an average over N calls
    with a runtime's background threads in it: 2.04 system calls per call is "2 syscalls"
    (the exact figure stays in the table of every row)."""
    syscalls = number(raw.get("syscalls_per_call"))
    if syscalls is not None and syscalls >= ENTERS_KERNEL:
        raw = {**raw, "syscalls_per_call": float(round(syscalls))}
    return mechanism(raw)

def read_row(env: Result, raw: dict) -> Row:
    runtime = plain_line(raw.get("runtime"), 20) or "?"
    status = plain_line(raw.get("status"), 20) or "?"
    ok = status == "ok"
    by_name = raw.get("syscalls_by_name")
    counted = raw.get("counted")
    error = plain_line(raw.get("count_error"), 200)
    if isinstance(counted, dict) and whole_number(counted.get("n")) is not None:
        how = plain_line(counted.get("method"), 40)
        counted_text = (f"n={whole_number(counted.get('n'))}: "
                        f"{text(whole_number(counted.get('total_n'))) or '?'} at n, "
                        f"{text(whole_number(counted.get('total_2n'))) or '?'} at 2n"
                        + (f" ({how})" if how else ""))
    else:
        counted_text = (error if error.startswith("not counted") else f"not counted: {error}"
                        ) if error else ""
    return Row(
        env=env, runtime=runtime,
        variant=plain_line(raw.get("variant"), 40),
        label=plain_line(raw.get("label"), 40) or NAMES.get(runtime, runtime),
        version=plain_line(raw.get("version"), 120),
        package=plain_line(raw.get("package"), 80),
        call=plain_line(raw.get("call"), 60),
        clock=plain_line(raw.get("clock"), 20),
        status=status,
        reason=plain_line(raw.get("reason"), 200),
        median=number(part(raw, "ns", "median")) if ok else None,
        low=number(part(raw, "ns", "min")) if ok else None,
        high=number(part(raw, "ns", "p90")) if ok else None,
        syscalls=number(raw.get("syscalls_per_call")),
        by_name=tuple((plain_line(name, 40), n) for name, value in (
            by_name.items() if isinstance(by_name, dict) else ())
            if (n := number(value)) is not None),
        mechanism=_mechanism(raw) if ok else None,
        counted=counted_text,
        rounds=whole_number(raw.get("rounds")),
        iterations=whole_number(raw.get("iterations")),
        warmup=plain_line(raw.get("warmup"), 120),
        seconds=number(raw.get("seconds")),
    )


def rows_of(results: list[Result]) -> list[Row]:
    """Every runtime row of the runtime environments, in environment order, then runtime,
    variant and call order."""
    def key(row: Row) -> tuple:
        calls = CALLS.get(row.runtime, ())
        return (RUNTIMES.index(row.runtime) if row.runtime in RUNTIMES else len(RUNTIMES),
                row.runtime, _natural(row.variant),
                calls.index(row.call) if row.call in calls else len(calls))

    out = []
    for env in results:
        out += sorted((read_row(env, raw) for raw in env.runtimes), key=key)
    return out


def _natural(label: str) -> tuple:
    """A sort key that puts "Java 8" before "Java 17"."""
    return tuple((0, int(w), "") if w.isdigit() else (1, 0, w)
                 for w in re.split(r"(\d+)", label) if w)


# ----------------------------------------------------------------------- words ---------------

def fmt_time(ns: float | None) -> str:
    """A duration from nanoseconds, in the unit that reads best: 24 ns, 1.2 µs, 3.4 ms."""
    if ns is None:
        return MISSING
    for scale, unit in ((1e6, "ms"), (1e3, "µs")):
        if abs(ns) >= scale and abs(ns) < 1e12:
            return f"{ns / scale:.2g} {unit}" if ns / scale < 10 else f"{ns / scale:.0f} {unit}"
    return f"{fmt_ns(ns)} ns"


def fmt_span(values: list[float]) -> str:
    """One duration, or the range of several ("21–25 ns")."""
    low, high = min(values), max(values)
    first, last = fmt_time(low), fmt_time(high)
    if first == last:
        return first
    a, unit_a = first.rsplit(" ", 1)
    b, unit_b = last.rsplit(" ", 1)
    return f"{a}–{b} {unit_b}" if unit_a == unit_b else f"{first}–{last}"


def fmt_count(value: float) -> str:
    return f"{value:.2f}"


def fmt_counts(values: list[float]) -> str:
    low, high = fmt_count(min(values)), fmt_count(max(values))
    return low if low == high else f"{low}–{high}"


def by_name_text(row: Row) -> str:
    return ", ".join(f"{name} {fmt_count(n)}" for name, n in row.by_name)


def join(words: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def versions(labels: Iterable[str]) -> str:
    """Labels as one phrase: "Java 8, 17 and 21", "Go 1.19 static and dynamic", "Java 8 to 25
    (5 versions)"."""
    labels = sorted(unique(labels), key=_natural)
    if len(labels) <= 1:
        return "".join(labels)
    words = [label.split(" ") for label in labels]
    common = 0
    while all(len(w) > common + 1 for w in words) and len({tuple(w[:common + 1])
                                                          for w in words}) == 1:
        common += 1
    prefix = " ".join(words[0][:common])
    rests = [" ".join(w[common:]) for w in words]
    if len(rests) > MANY_VERSIONS:
        phrase = f"{rests[0]} to {rests[-1]} ({len(rests)} versions)"
    else:
        phrase = join(rests)
    return f"{prefix} {phrase}" if prefix else phrase


def env_name(env: Result) -> str:
    return env.label.removesuffix(" †")


def env_names(envs: list[Result], *, cmdline: bool = True) -> str:
    """Environments by name, each with the kernel command line its matrix entry added
    ("k6.1-vdso0-runtimes (vdso=0)")."""
    def one(env: Result) -> str:
        added = plain_line(env.get("environment", "matrix_cmdline"), 60)
        return f"{env_name(env)} ({added})" if cmdline and added else env_name(env)
    return join([one(e) for e in envs])


def _verb(labels: list[str], singular: str, plural: str) -> str:
    return singular if len(unique(labels)) == 1 else plural


# ----------------------------------------------------------------------- facts ---------------

@dataclass
class Facts:
    """What the rows of one runtime (some of its calls) say, environment by environment."""

    name: str
    user: list[Result]  # every counted call stayed out of the kernel
    kernel: list[Result]  # every counted call entered it
    mixed: list[Result]  # some did, some did not
    uncounted: list[Result]  # measured, but the system calls were not counted
    absent: list[Result]  # not shipped or not installed there
    rows: dict[Result, list[Row]]
    failed: list[Row]  # crashed, timed out, error

    @property
    def measured(self) -> list[Result]:
        return [e for e in self.rows if e in self.user or e in self.kernel or e in self.mixed
                or e in self.uncounted]

    def signature(self) -> tuple:
        def names(envs):
            return tuple(e.name for e in envs)
        return (names(self.user), names(self.kernel), names(self.mixed), names(self.uncounted),
                names(self.absent), tuple(sorted({(r.env.name, r.status) for r in self.failed})))


def facts(runtime: str, rows: list[Row], *, calls: Iterable[str] | None = None,
          clocks: Iterable[str] = TIME_CLOCKS) -> Facts:
    wanted = set(calls) if calls is not None else None
    clocks = tuple(clocks)
    mine = [r for r in rows if r.runtime == runtime and (
        (r.clock in clocks and (wanted is None or r.call in wanted))
        or (not r.ok and not r.call))]  # a runtime not there: one row that names no call
    found = Facts(NAMES.get(runtime, runtime), [], [], [], [], [], {}, [])
    for row in mine:
        found.rows.setdefault(row.env, []).append(row)
    for env, env_rows in found.rows.items():
        found.failed += [r for r in env_rows if r.failed]
        counted = [r for r in env_rows if r.enters is not None]
        into = [r for r in counted if r.enters]
        if counted and len(into) == len(counted):
            found.kernel.append(env)
        elif into:
            found.mixed.append(env)
        elif counted:
            found.user.append(env)
        elif any(r.ok for r in env_rows):
            found.uncounted.append(env)
        elif all(r.status in ABSENT for r in env_rows):
            found.absent.append(env)
    return found


def _ok_labels(found: Facts, envs: list[Result]) -> list[str]:
    return [r.label for e in envs for r in found.rows[e] if r.ok]


def answer(runtime: str, rows: list[Row], envs: list[Result]) -> str:
    """One sentence: do this runtime's clock calls stay out of the kernel, where, where not,
    with the counts; what could not be measured and why."""
    found = facts(runtime, rows)
    name = found.name
    if not envs:
        return f"{name} was not measured: these results have no runtime environment."
    if not found.rows:
        return f"{name} was not measured: no runtime environment has {name} rows."
    user_labels = _ok_labels(found, found.user)
    clauses = [c for c in (_user_clause(found, user_labels),
                           _kernel_clause(found, user_labels)) if c]
    clauses += _mixed_clauses(found)
    if (uncounted := _uncounted_clause(found)):
        clauses.append(uncounted)
    clauses += _failure_clauses(found)
    if (absent := _absent_clause(found)):
        clauses.append(absent)
    if not clauses:
        return f"{name} was not measured."
    sentence = "; ".join(clauses)
    return sentence[0].upper() + sentence[1:] + "."


def _user_clause(found: Facts, user_labels: list[str]) -> str | None:
    """Where the runtime reads the clock without a system call."""
    if not found.user:
        return None
    measured = found.measured
    if len(found.user) == len(measured):
        where = (f"in the one environment measured ({env_names(found.user)})"
                 if len(measured) == 1 else
                 f"in every environment measured ({len(measured)})")
    else:
        where = f"in {len(found.user)} of {len(measured)} environments"
        if len(found.user) <= 3:
            where += f" ({env_names(found.user, cmdline=False)})"
    return (f"{versions(user_labels)} {_verb(user_labels, 'reads', 'read')} the clock without "
            f"a system call {where}")


def _kernel_clause(found: Facts, user_labels: list[str]) -> str | None:
    """Where every clock read enters the kernel, with the counted system calls per call."""
    if not found.kernel:
        return None
    labels = _ok_labels(found, found.kernel)
    counts = fmt_counts([r.syscalls for e in found.kernel for r in found.rows[e]
                         if r.syscalls is not None])
    if not found.user:
        where = (f"in every environment measured ({env_names(found.kernel)})"
                 if len(found.kernel) == len(found.measured) and len(found.measured) > 1
                 else f"in {env_names(found.kernel)}")
        return (f"{versions(labels)} {_verb(labels, 'enters', 'enter')} the kernel on every "
                f"clock read {where}, {counts} system calls per call")
    if set(labels) <= set(user_labels):
        return (f"in {env_names(found.kernel)} every call enters the kernel ({counts} system "
                "calls per call)")
    return (f"in {env_names(found.kernel)} {versions(labels)} "
            f"{_verb(labels, 'enters', 'enter')} the kernel on every call ({counts} system "
            "calls per call)")


def _mixed_clauses(found: Facts) -> list[str]:
    """The environments where some calls stay out of the kernel and others do not."""
    clauses = []
    for env in found.mixed:
        into = [r for r in found.rows[env] if r.enters]
        out = [r for r in found.rows[env] if r.enters is False]
        clauses.append(f"in {env_names([env])} only some calls stay out of the kernel: "
                       + join([f"{r.label} {r.call} enters it ({fmt_count(r.syscalls)} system "
                               "calls per call)" for r in into])
                       + f", {join(unique(f'{r.label} {r.call}' for r in out))} "
                         f"{'does' if len(out) == 1 else 'do'} not")
    return clauses


def _uncounted_clause(found: Facts) -> str | None:
    if not found.uncounted:
        return None
    labels = _ok_labels(found, found.uncounted)
    return (f"{versions(labels)} ran but {_verb(labels, 'its', 'their')} system calls could not "
            f"be counted in {env_names(found.uncounted)}")


def _failure_clauses(found: Facts) -> list[str]:
    """A clause per runtime label and failed status, naming the environments it failed in."""
    failures: dict[tuple[str, str], list[Result]] = {}
    for row in found.failed:
        envs_of = failures.setdefault((row.label, row.status), [])
        if row.env not in envs_of:
            envs_of.append(row.env)
    return [f"{label} {FAILED_WORDS.get(status, f'ended {status}')} in "
            f"{env_names(where, cmdline=False)}" for (label, status), where in failures.items()]


def _absent_clause(found: Facts) -> str | None:
    if not found.absent:
        return None
    reasons = unique(r.reason for e in found.absent for r in found.rows[e] if r.reason)
    return (f"{found.name} is not shipped in {env_names(found.absent, cmdline=False)}"
            + (f" ({'; '.join(reasons[:3])})" if reasons else ""))


# ----------------------------------------------------------------------- at a glance ---------

def _primary_facts(runtime: str, rows: list[Row]) -> Facts:
    calls = {r.call for r in rows if r.runtime == runtime}
    primary = PRIMARY.get(runtime)
    if primary not in calls:  # no such row: the first monotonic call it has
        primary = next((r.call for r in rows if r.runtime == runtime
                        and r.clock == "monotonic"), None)
    # Any clock: Go's time.Now() is its monotonic clock and its wall clock in one call.
    return facts(runtime, rows, calls=[primary] if primary else [], clocks=TIME_CLOCKS)


def _calls(found: Facts) -> list[str]:
    return unique(r.call for rs in found.rows.values() for r in rs if r.call)


def glance(rows: list[Row]) -> list[Finding]:
    """The lines of "at a glance": Java's monotonic clock on its own line (the seed's
    question), the other runtimes grouped where their environments agree."""
    present = [rt for rt in unique(r.runtime for r in rows)]
    by_signature: dict[tuple, list[tuple[str, Facts]]] = {}
    out = []
    for runtime in present:
        found = _primary_facts(runtime, rows)
        if not found.rows:
            continue
        if runtime == "java":
            out.append(Finding(f"{found.name}'s {PRIMARY['java']}", _glance_text(found, 1)))
        else:
            by_signature.setdefault(found.signature(), []).append((runtime, found))
    for members in by_signature.values():
        names = join([f.name for _, f in members])
        calls = ", ".join(unique(c for _, f in members for c in _calls(f)))
        out.append(Finding(names, f"({calls}) " + _glance_text(members[0][1], len(members))))
    return out


def _glance_text(found: Facts, runtimes: int) -> str:
    measured = found.measured
    parts = []
    verb = "makes" if runtimes == 1 else "make"
    if found.user and len(found.user) == len(measured):
        parts.append(f"{verb} no system call in any of the {len(measured)} environments "
                     "measured" if len(measured) > 1 else f"{verb} no system call in the one "
                     f"environment measured ({env_name(measured[0])})")
    elif found.user:
        parts.append(f"{verb} no system call in {len(found.user)} of {len(measured)} "
                     "environments")
    it = ("it " if runtimes == 1 else "they ") if parts else ""
    if found.kernel:
        parts.append(f"{it}enter{'s' if runtimes == 1 else ''} the kernel in "
                     f"{env_names(found.kernel, cmdline=False)}")
    if found.mixed:
        parts.append(f"mixed in {env_names(found.mixed, cmdline=False)}")
    if found.uncounted:
        parts.append(f"not counted in {env_names(found.uncounted, cmdline=False)}")
    failed = unique(env_name(r.env) for r in found.failed)
    if failed:
        parts.append(f"{join(unique(FAILED_WORDS.get(r.status, r.status) for r in found.failed))}"
                     f" in {join(failed)}")
    if found.absent:
        parts.append(f"not shipped in {env_names(found.absent, cmdline=False)}")
    return "; ".join(parts or ["was not measured"]) + "."


# ----------------------------------------------------------------------- cells ---------------

def row_value(row: Row) -> Value:
    """One runtime call in one environment: "24 ns · no syscall", or what happened instead;
    the exact counts in ``detail`` (CSV, JSON and the page's tooltip)."""
    if row.ok:
        how = row.mechanism or "?"
        counts = ("not counted" if row.syscalls is None else
                  f"{fmt_count(row.syscalls)} system calls per call"
                  + (f" ({by_name_text(row)})" if row.by_name else ""))
        return Value(f"{fmt_time(row.median)} {how}", number=row.median, unit="ns",
                     mechanism=how, status="ok", low=row.low, high=row.high,
                     detail=f"{row.label} {row.version}".strip() + f": {counts}")
    words = STATUS_WORDS.get(row.status, row.status)
    return Value(words, status=row.status, detail=row.reason or None,
                 strong=row.failed)


def summary_value(rows: list[Row]) -> Value:
    """Several variants of one runtime's call in one environment (Java 8, 17, 21; Go static and
    dynamic) in one cell: the range of their medians and the mechanism they share."""
    if not rows:
        return MISSING_VALUE
    if len(rows) == 1:
        return row_value(rows[0])
    ok = [r for r in rows if r.ok]
    others = unique(STATUS_WORDS.get(r.status, r.status) for r in rows if not r.ok)
    detail = "; ".join(f"{r.label}: {row_value(r).text}" for r in rows)
    if not ok:
        return Value(join(others), status=rows[0].status, detail=detail,
                     strong=any(r.failed for r in rows))
    mechanisms = unique(r.mechanism or "?" for r in ok)
    medians = [r.median for r in ok if r.median is not None]
    how = mechanisms[0] if len(mechanisms) == 1 else "mixed"
    shown = f"{fmt_span(medians) if medians else MISSING} {how}"
    failed = [r for r in rows if r.failed]
    if len(ok) < len(rows):
        shown += " (" + ", ".join(f"{r.label} {STATUS_WORDS.get(r.status, r.status)}"
                                  for r in rows if not r.ok) + ")"
    return Value(shown, number=min(medians) if medians else None,
                 unit="ns" if medians else None, status="ok",
                 mechanism=how if len(mechanisms) == 1 else None, detail=detail,
                 strong=bool(failed) or how == "mixed")


def seconds_value(values: list[float | None]) -> Value:
    known = [v for v in values if v is not None]
    if not known:
        return MISSING_VALUE
    total = sum(known)
    return Value(f"{total:.0f}" if total >= 10 else f"{total:.1f}", number=total, unit="s")


# ----------------------------------------------------------------------- tables --------------

def _family(rows: list[Row]) -> str:
    """The label of a variant across environments: its own where they agree ("Java 17"),
    without the version numbers where they differ ("Python" for 3.9, 3.11 and 3.13)."""
    labels = unique(r.label for r in rows)
    if len(labels) == 1:
        return labels[0]
    stripped = unique(re.sub(r"\s*\d+(\.\d+)*", "", label).strip() for label in labels)
    return stripped[0] if len(stripped) == 1 and stripped[0] else versions(labels)


def _keys(titles: list[str]) -> list[str]:
    keys: list[str] = []
    for title in titles:
        key = slug(title.replace("::", " ").replace(".", " ")) or "call"
        while key in keys:
            key += "_2"
        keys.append(key)
    return keys


def _notes(rows: list[Row]) -> list[str]:
    """Why a cell is not a measurement: one line per runtime and reason."""
    reasons: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        if not row.ok and row.reason:
            where = reasons.setdefault((row.label, STATUS_WORDS.get(row.status, row.status),
                                        row.reason), [])
            if env_name(row.env) not in where:
                where.append(env_name(row.env))
    return [f"{label} {status} in {join(where)}: {reason}"
            for (label, status, reason), where in reasons.items()]


def clock_table(table_id: str, clock: str, title: str, question: str, rows: list[Row],
                envs: list[Result]) -> Table:
    """A row per (runtime variant, call) of one clock, a column per environment (data: a row
    per environment, shown transposed)."""
    mine = [r for r in rows if r.clock == clock and r.call]
    families: dict[tuple[str, str, str], list[Row]] = {}
    for row in mine:
        families.setdefault((row.runtime, row.variant or row.label, row.call), []).append(row)
    # a runtime not shipped in an environment may have one row for all its calls, naming none
    absent = {(r.env.name, r.runtime): r for r in rows if not r.ok and not r.call}
    order = sorted(families, key=lambda k: (
        RUNTIMES.index(k[0]) if k[0] in RUNTIMES else len(RUNTIMES), k[0], _natural(k[1]),
        CALLS.get(k[0], ()).index(k[2]) if k[2] in CALLS.get(k[0], ()) else 99))
    titles = [f"{_family(families[k])} · {k[2]}" for k in order]
    table_rows = []
    for env in envs:
        cells = [label_value(env)]
        for k in order:
            found = [r for r in families[k] if r.env is env]
            if not found and not any(r.env is env and r.runtime == k[0] for r in mine):
                found = [absent[key]] if (key := (env.name, k[0])) in absent else []
            cells.append(summary_value(found) if found else MISSING_VALUE)
        table_rows.append(cells)
    notes = _notes(mine + list(absent.values()))
    both = [k for k in order if (k[0], k[2]) in BOTH_CLOCKS]
    if both:
        notes.append(f"Go's time.Now() reads both the wall clock and the monotonic clock; it "
                     f"is measured once, as a {clock} clock call in this table.")
    elif any((r.runtime, r.call) in BOTH_CLOCKS for r in rows) and clock != "baseline":
        landed = next(r.clock for r in rows if (r.runtime, r.call) in BOTH_CLOCKS)
        notes.append(f"Go's time.Now() reads both clocks: it is in the {landed} clock table.")
    return Table(
        id=table_id, title=title, section=SECTION_ID, question=question,
        columns=["environment"] + titles, keys=["environment"] + _keys(titles),
        rows=table_rows, subjects=[e.subject for e in envs], notes=notes, layout="columns",
        on_page=False, fixed_layout=True)


def summary_table(rows: list[Row], envs: list[Result]) -> Table:
    """The page's table: each environment's monotonic clock call of each runtime, and the time
    its runtime rows took."""
    present = sorted(unique(r.runtime for r in rows),
                     key=lambda rt: RUNTIMES.index(rt) if rt in RUNTIMES else len(RUNTIMES))
    primary = {}
    for runtime in present:
        found = _primary_facts(runtime, rows)
        primary[runtime] = set(_calls(found))
    titles = [NAMES.get(rt, rt) for rt in present]
    table_rows = []
    for env in envs:
        cells = [label_value(env)]
        for runtime in present:
            found = [r for r in rows if r.env is env and r.runtime == runtime
                     and r.call in primary[runtime]]
            if not found:  # not shipped: its rows may name no call
                found = [r for r in rows if r.env is env and r.runtime == runtime
                         and not r.ok][:1]
            cells.append(summary_value(found))
        cells.append(seconds_value([r.seconds for r in rows if r.env is env]))
        table_rows.append(cells)
    calls = join([f"{NAMES.get(rt, rt)} {c}" for rt in present for c in sorted(primary[rt])])
    return Table(
        id=SECTION_ID, title="Each runtime's monotonic clock, by environment",
        section=SECTION_ID,
        question=f"The monotonic clock ({calls}): median and mechanism as counted (a range "
                 "over versions); time: seconds for all the environment's runtime rows.",
        columns=["environment"] + titles + ["time (s)"],
        keys=["environment"] + _keys(titles) + ["time"],
        rows=table_rows, subjects=[e.subject for e in envs],
        notes=_notes([r for r in rows if r.runtime in primary
                      and (r.call in primary[r.runtime] or not r.ok)]))


def versions_table(rows: list[Row], envs: list[Result]) -> Table:
    """A row per environment and runtime variant: its version, package, and what came of it."""
    table_rows, subjects = [], []
    for env in envs:
        variants: dict[str, list[Row]] = {}
        for row in rows:
            if row.env is env:
                variants.setdefault(row.variant or row.label, []).append(row)
        for members in variants.values():
            first = members[0]
            statuses = unique(STATUS_WORDS.get(r.status, r.status) for r in members)
            reasons = unique(r.reason for r in members if r.reason)
            table_rows.append([
                label_value(env), Value(first.label),
                Value(first.version) if first.version else MISSING_VALUE,
                Value(first.package) if first.package else MISSING_VALUE,
                Value(join(statuses), status=first.status if len(statuses) == 1 else "mixed",
                      detail="; ".join(reasons) or None),
                seconds_value([r.seconds for r in members]),
            ])
            subjects.append(env.subject)
    return Table(
        id="runtimes-versions", title="Runtime versions", section=SECTION_ID,
        question="Each runtime's version, package, and the seconds its rows took.",
        columns=["environment", "runtime", "version", "package", "status", "time (s)"],
        keys=["environment", "runtime", "version", "package", "result", "time"],
        rows=table_rows, subjects=subjects, on_page=False)


def rows_table(rows: list[Row]) -> Table:
    """Every runtime row with its exact counts: what the docs can verify a cell by."""
    table_rows = []
    for row in rows:
        value = row_value(row)
        counted = row.syscalls is not None
        table_rows.append([
            label_value(row.env), Value(row.label),
            Value(row.version) if row.version else MISSING_VALUE,
            Value(row.call) if row.call else MISSING_VALUE,
            Value(row.clock) if row.clock else MISSING_VALUE,
            Value(STATUS_WORDS.get(row.status, row.status), status=row.status),
            dataclasses.replace(value, text=f"{fmt_ns(row.median)} ({fmt_ns(row.low)}–"
                                            f"{fmt_ns(row.high)})", mechanism=None,
                                detail=None, strong=False)
            if row.ok and row.median is not None else MISSING_VALUE,
            Value(row.mechanism, mechanism=row.mechanism, status=row.status)
            if row.mechanism else MISSING_VALUE,
            Value(f"{row.syscalls:.3f}", number=row.syscalls, unit="count")
            if counted else MISSING_VALUE,
            Value(by_name_text(row)) if row.by_name else (
                Value("none") if counted else MISSING_VALUE),
            Value(row.counted) if row.counted else MISSING_VALUE,
            Value(f"{row.rounds} × {row.iterations}") if row.rounds and row.iterations
            else MISSING_VALUE,
            Value(row.warmup) if row.warmup else MISSING_VALUE,
            seconds_value([row.seconds]),
            Value(row.reason) if row.reason else MISSING_VALUE,
        ])
    return Table(
        id="runtimes-rows", title="Every runtime row, with its counts", section=SECTION_ID,
        question="Every row with its exact system call counts, in all and by name.",
        columns=["environment", "runtime", "version", "call", "clock", "status",
                 "median (ns)", "mechanism", "syscalls per call", "syscalls by name",
                 "counted", "rounds × iterations", "warm-up", "time (s)", "reason"],
        keys=["environment", "runtime", "version", "call", "clock", "result", "median",
              "how", "syscalls_per_call", "syscalls_by_name", "counted", "rounds", "warmup",
              "time", "reason"],
        rows=table_rows, subjects=[r.env.subject for r in rows], on_page=False)


# The method in brief (the section's intro); the probe's own words, in full, are the notes of
# the table of every row.
METHOD = ("How: each runtime times its own calls with its own clock after a warm-up; syscount "
          "counts the system calls of N and of 2N calls under ptrace, and (count at 2N − count at "
          "N) ÷ N is the system calls per call (the probe's full method is under the table of "
          "every row).")


def method_notes(envs: list[Result]) -> list[str]:
    """The probe's ``runtimes_method`` (each distinct wording once), for the rows table."""
    methods = unique(m for e in envs if (m := plain_line(e.get("runtimes_method"), 2000)))
    notes = []
    for method in methods[:3]:  # a sentence a line: a page bounds each line
        sentences = [x for x in re.split(r"(?<=[.:;])\s+(?=[A-Z])", method) if x]
        notes += ["Method: " + sentences[0]] + sentences[1:]
    return notes


def contents(envs: list[Result]) -> tuple[list[str], list[Table]]:
    """The intro and tables of the runtime environments' section (``envs``: in page order)."""
    rows = rows_of(envs)
    intro = [answer("java", rows, envs), METHOD]
    if not rows:
        intro.append("No runtime environment reported any runtime row (the Problems section "
                     "says why where known).")
    tables = [summary_table(rows, envs)] if rows else []
    tables += [clock_table(*spec, rows, envs) for spec in CLOCK_TABLES
               if any(r.clock == spec[1] for r in rows)]
    if rows:
        every = rows_table(rows)
        tables += [versions_table(rows, envs),
                   dataclasses.replace(every, notes=every.notes + method_notes(envs))]
    return intro, tables


def findings(envs: list[Result]) -> list[Finding]:
    return glance(rows_of(envs)) if envs else []
