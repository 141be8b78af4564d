"""Correctness: do the fast paths give the kernel's answers, and fail the way it fails (issue 16)?

Read from ``correctness`` of each result document (the helper's ``--correctness`` run,
probes/correctness.c), defensively: older results have no such key and are left out; every
field an environment printed is untrusted text, bounded and plain here (the renderers escape).

- ``checks``: per check (a clock, gettimeofday, time, clock_getres, getcpu, CLOCK_MONOTONIC
  across CPUs) its status (pass, fail, not_offered, not_run), checks made and failed, a reason,
  and the first offending readings;
- ``error_paths``: per call, bad input and path (syscall, vdso, libc) what it returned (value,
  errno) or the signal that killed it.

Computed here: the section "correctness" (a line of totals and the failures with their readings
on the page; the per-environment table and the error-path table in files of their own, to keep
the page within its budget) and the line of "at a glance" (with the NULL-pointer difference).
"""

from __future__ import annotations

from vdsomatrix.report.cells import Result, entries, part, plain_line, whole_number
from vdsomatrix.report.measurements import environment_table
from vdsomatrix.report.model import MISSING_VALUE, Finding, Table, Value

SECTION_ID = "correctness"
PATHS = ("syscall", "vdso", "libc")
PATH_TITLES = {"syscall": "system call", "vdso": "vDSO", "libc": "libc"}
STATUSES = ("pass", "fail", "not_offered", "not_run")
MAX_CHECKS = 64  # as the schema bounds them
MAX_ERROR_PATHS = 200
NULL_CASE = ("clock_gettime", "NULL result pointer")
LISTED = 6  # environments named in a row before "and N more"


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def of(result: Result) -> dict | None:
    found = result.get("correctness")
    return found if isinstance(found, dict) else None


def checks(result: Result) -> list[dict]:
    return [c for c in entries(part(of(result), "checks"))[:MAX_CHECKS] if isinstance(c, dict)]


def error_paths(result: Result) -> list[dict]:
    return [e for e in entries(part(of(result), "error_paths"))[:MAX_ERROR_PATHS]
            if isinstance(e, dict)]


def has_section(results: list[Result]) -> bool:
    return any(of(r) for r in results)


def _count(value: object) -> int:
    n = whole_number(value)
    return n if n is not None and n >= 0 else 0


def _status(check: dict) -> str:
    status = check.get("status")
    return status if status in STATUSES else "?"


def totals(result: Result) -> tuple[int, int]:
    """(checks made, checks failed) over every check of one environment."""
    found = checks(result)
    return sum(_count(c.get("made")) for c in found), sum(_count(c.get("failed")) for c in found)


def failing(result: Result) -> list[dict]:
    return [c for c in checks(result) if _status(c) == "fail" or _count(c.get("failed"))]


def _short_clock(name: str) -> str:
    """"clock_gettime(CLOCK_MONOTONIC)" as "MONOTONIC"; any other check's name as it is."""
    prefix = "clock_gettime(CLOCK_"
    return name[len(prefix):].removesuffix(")") if name.startswith(prefix) else name


def _names(found: list[dict], limit: int = 80) -> str:
    return plain_line(", ".join(_short_clock(plain_line(c.get("check"), 80)) for c in found),
                      limit)


def _kind(result: Result, kind: str) -> dict | None:
    return next((c for c in checks(result) if c.get("kind") == kind), None)


def _check_value(check: dict | None) -> Value:
    """A check's status as a cell: pass, FAIL (with the count), or why it did not run."""
    if check is None:
        return MISSING_VALUE
    status = _status(check)
    reason = plain_line(check.get("reason"), 200) or None
    if status == "fail":
        return Value(f"FAIL ({_count(check.get('failed'))} of {_count(check.get('made'))})",
                     status="fail", strong=True, detail=plain_line(check.get("first_failure"),
                                                                    300) or None)
    if status == "not_run":
        return Value(f"not run: {reason}" if reason else "not run", status="not_run")
    return Value(status.replace("_", " "), status=status)


def environment_rows(results: list[Result]) -> Table:
    def made(r: Result) -> Value:
        return Value(str(totals(r)[0]), number=totals(r)[0], unit="count")

    def failed(r: Result) -> Value:
        n = totals(r)[1]
        return Value(str(n), number=n, unit="count", strong=n > 0)

    def failing_checks(r: Result) -> Value:
        found = failing(r)
        return Value(_names(found), strong=True) if found else Value("none")

    def not_offered(r: Result) -> Value:
        found = [c for c in checks(r) if _status(c) == "not_offered"]
        return Value(_names(found)) if found else Value("none")

    columns = [
        ("checks made", made), ("failed", failed), ("failing checks", failing_checks),
        ("getcpu on each CPU", lambda r: _check_value(_kind(r, "getcpu"))),
        ("MONOTONIC across CPUs", lambda r: _check_value(_kind(r, "cross_cpu"))),
        ("clocks not offered", not_offered),
    ]
    table = environment_table(
        SECTION_ID, SECTION_ID, "Checks made and failed",
        "Each clock, gettimeofday, time, clock_getres and getcpu through the system call, the "
        "vDSO and libc, checked against each other, and CLOCK_MONOTONIC across CPUs: checks made "
        "in the time budget, failed, and which.",
        columns, results)
    table.on_page = False
    return table


def outcome_text(row: dict | None) -> str:
    """What one call did with one bad input on one path: "-1 EFAULT" (libc and syscall(2)
    return -1 and set errno), "-EFAULT" (the vDSO returns the negative errno), "0",
    "SIGSEGV", "not offered"."""
    if not row:
        return "—"
    status = row.get("status")
    if status == "crashed":
        return plain_line(row.get("signal"), 20) or "crashed"
    if status == "timeout":
        return "timeout"
    if status == "not_offered":
        return "not offered"
    if status != "returned":
        return "error"
    ret = whole_number(row.get("ret"))
    err = plain_line(row.get("errno"), 20)
    if ret is None:
        return "?"
    if err and ret == -1 and row.get("path") != "vdso":
        return f"-1 {err}"
    if err and ret < 0:
        return f"-{err}"
    return str(ret)


def _cases(results: list[Result]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in results:
        for e in error_paths(r):
            case = (plain_line(e.get("call"), 40), plain_line(e.get("input"), 80))
            if all(case) and case not in seen:
                seen.append(case)
    return seen


def _row(result: Result, case: tuple[str, str], path: str) -> dict | None:
    return next((e for e in error_paths(result)
                 if (plain_line(e.get("call"), 40), plain_line(e.get("input"), 80), e.get("path"))
                 == (*case, path)), None)


def _listed(results: list[Result], total: int) -> str:
    if len(results) == total:
        return f"all {total}"
    names = [r.label for r in results]
    if len(names) > LISTED:
        return ", ".join(names[:LISTED - 1]) + f" and {len(names) - LISTED + 1} more"
    return ", ".join(names)


def error_path_outcomes(results: list[Result]) -> list[tuple[tuple[str, str], tuple[str, ...],
                                                              list[Result]]]:
    """Per (call, bad input): each distinct (syscall, vdso, libc) outcome and the environments
    that gave it, the most common first; a case on which every environment agrees is one."""
    measured = [r for r in results if error_paths(r)]
    out = []
    for case in _cases(measured):
        groups: dict[tuple[str, ...], list[Result]] = {}
        for r in measured:
            outcome = tuple(outcome_text(_row(r, case, p)) for p in PATHS)
            groups.setdefault(outcome, []).append(r)
        for outcome, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            out.append((case, outcome, members))
    return out


def error_path_table(results: list[Result]) -> Table:
    measured = [r for r in results if error_paths(r)]
    rows = []
    for (call, bad), outcome, members in error_path_outcomes(measured):
        rows.append([Value(call), Value(bad)]
                    + [Value(o, strong=o.startswith("SIG")) for o in outcome]
                    + [Value(_listed(members, len(measured)))])
    titles = ["call", "bad input"] + [PATH_TITLES[p] for p in PATHS] + ["environments"]
    return Table(
        id="correctness-error-paths", title="Error paths: bad input, through each path",
        section=SECTION_ID,
        question=("Each call with bad input, in a child process, through each path: what it "
                  "returned (-1 ERR: -1 and errno; -ERR: the vDSO's negative errno) or the "
                  "signal that killed it; rows that agree everywhere are one row."),
        columns=titles, keys=["call", "bad_input", *PATHS, "environments"], rows=rows,
        subjects=[None] * len(rows), on_page=False)


def failures_table(results: list[Result]) -> Table | None:
    rows, subjects = [], []
    for r in results:
        for c in failing(r):
            rows.append([Value(r.label), Value(plain_line(c.get("check"), 80), strong=True),
                         Value(f"{_count(c.get('failed'))} of {_count(c.get('made'))}"),
                         Value(plain_line(c.get("first_failure"), 300) or "—")])
            subjects.append(r.subject)
    if not rows:
        return None
    return Table(
        id="correctness-failures", title="Failed checks", section=SECTION_ID,
        question="Every failed check, with the first readings that failed it.",
        columns=["environment", "check", "failed", "first offending readings"],
        keys=["environment", "check", "failed", "first_offending_readings"], rows=rows,
        subjects=subjects)


def null_pointer_line(results: list[Result], groups_shown: int = 3) -> str | None:
    """The NULL-pointer difference, as measured: clock_gettime(CLOCK_MONOTONIC, NULL), the
    most common answers first, with their number of environments (names for a few)."""
    measured = [r for r in results if error_paths(r)]
    groups = [(o, m) for case, o, m in error_path_outcomes(measured) if case == NULL_CASE]
    if not groups:
        return None

    def where(members: list[Result]) -> str:
        if len(members) == len(measured):
            return f"all {len(measured)} environments"
        if len(members) <= 2:
            return ", ".join(r.label for r in members)
        return f"{len(members)} environments"

    said = [f"the system call {o[0]}, the vDSO {o[1]}, libc {o[2]} in {where(m)}"
            for o, m in groups[:groups_shown]]
    if len(groups) > groups_shown:
        said.append(f"{len(groups) - groups_shown} other answers (see the error-path table)")
    return "clock_gettime(CLOCK_MONOTONIC, NULL): " + "; ".join(said) + "."


def finding(results: list[Result]) -> Finding | None:
    measured = [r for r in results if of(r)]
    if not measured:
        return None
    made = sum(totals(r)[0] for r in measured)
    bad = [r for r in measured if failing(r)]
    verdict = (f"every check passed in all {len(measured)} environments" if not bad else
               f"checks FAILED in {len(bad)} of {len(measured)}: "
               + "; ".join(f"{r.label} ({_names(failing(r), 60)})" for r in bad[:LISTED]))
    text = f"of the vDSO against the system call and libc: {made:,} checks, {verdict}."
    null = null_pointer_line(measured)
    return Finding("Correctness", text + (" " + null if null else ""))


def contents(results: list[Result]) -> tuple[list[str], list[Table]]:
    measured = [r for r in results if of(r)]
    intro = []
    made = sum(totals(r)[0] for r in measured)
    failed = sum(totals(r)[1] for r in measured)
    bad = [r for r in measured if failing(r)]
    intro.append(f"{made:,} checks in {len(measured)} environments, {failed:,} failed"
                 + (f" (in {', '.join(r.label for r in bad[:LISTED])}: see below)." if bad
                    else "."))
    tables = [t for t in (failures_table(measured), environment_rows(measured),
                          error_path_table(measured)) if t]
    return intro, tables
