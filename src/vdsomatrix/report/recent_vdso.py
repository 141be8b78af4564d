"""Recent vDSO interfaces: getrandom (Linux 6.11, used by glibc 2.41) and time namespaces
(Linux 5.6, whose offsets the vDSO applies through a page of their own).

Read from the result documents alone:

- the ``getrandom`` call rows (paths libc, vdso, syscall; a 32-bit process: int80 and
  kernel_vsyscall), counted like every row; a kernel or libc that lacks the function gives an
  ``unsupported`` row whose reason says so;
- ``environment.time_namespace`` of an environment that asked for one: whether the probe's
  children ran in a new time namespace, how it was entered, the offsets written and the shifts
  a child observed. Its clock rows are compared with those of the plain environment it is a
  variant of (same backend, userland and kernel, no namespace).

Computed here: the section "recent-vdso" (an answer per interface, the time-namespace table) and
the lines of "at a glance". The getrandom rows of every environment are in the latency table
``latency-getrandom`` and in "which way libc's call goes". Plain text; the renderers escape it.
"""

from __future__ import annotations

import dataclasses

from vdsomatrix.report.cells import (
    ENTERS_KERNEL,
    Result,
    call_row,
    fmt_ns,
    in_time_namespace,
    median,
    number,
    part,
    plain_line,
    plain_twin,
)
from vdsomatrix.report.measurements import environment_table, label_value, outcome, slug, takes
from vdsomatrix.report.model import MISSING_VALUE, Finding, Table, Value

SECTION_ID = "recent-vdso"
GETRANDOM = "getrandom"
# The clocks a time namespace offsets (CLOCK_REALTIME it does not).
TIMENS_CLOCKS = ("clock_gettime(CLOCK_MONOTONIC)", "clock_gettime(CLOCK_BOOTTIME)")
NS_PER_DAY = 86_400 * 10**9


def timens(result: Result) -> dict | None:
    found = part(result.environment, "time_namespace")
    return found if isinstance(found, dict) and in_time_namespace(result) else None


def has_section(results: list[Result]) -> bool:
    return any(call_row(r, GETRANDOM, "syscall") or call_row(r, GETRANDOM, "int80")
               or timens(r) for r in results)


def _offsets(ns: dict) -> Value:
    if ns.get("entered") is not True:
        return Value("not entered", status="unsupported",
                     detail=plain_line(ns.get("reason"), 200) or None)
    shifts = part(ns, "observed_shift_ns")
    wanted = part(ns, "offsets_ns")
    shown = []
    for clock in ("monotonic", "boottime"):
        seen = number(part(shifts, clock))
        shown.append("?" if seen is None else f"+{seen / NS_PER_DAY:.3f}")
    applied = ns.get("offsets_applied")
    verdict = "applied" if applied is True else "NOT applied" if applied is False else "?"
    if shown == ["?", "?"] and number(part(wanted, "monotonic")) is None:
        return Value(verdict)
    return Value(f"{', '.join(shown)} {verdict}", strong=applied is False)


def _entered(ns: dict) -> Value:
    """How: the unshare() flags, without the CLONE_ prefixes (the question names them)."""
    if ns.get("entered") is True:
        how = plain_line(ns.get("how"), 80)
        flags = how.removeprefix("unshare(").removesuffix(")").replace("CLONE_", "")
        return Value(flags or "yes")
    return Value("not entered", strong=True, detail=plain_line(ns.get("reason"), 200) or None)


def timens_table(results: list[Result]) -> Table | None:
    variants = [r for r in results if timens(r)]
    if not variants:
        return None
    columns: list[tuple[str, object]] = [
        ("unshare", lambda r, twin: _entered(timens(r) or {})),
        ("offsets seen (d)", lambda r, twin: _offsets(timens(r) or {})),
        ("compared with", lambda r, twin: label_value(twin) if twin else MISSING_VALUE)]
    for clock in TIMENS_CLOCKS:
        short = clock.removeprefix("clock_gettime(CLOCK_").removesuffix(")")
        columns.append((short, lambda r, twin, c=clock: outcome(call_row(r, c, "vdso"))))
        columns.append((f"its {short}", lambda r, twin, c=clock: outcome(call_row(twin, c, "vdso"))
                        if twin else MISSING_VALUE))
    rows = []
    for r in variants:
        twin = plain_twin(r, results)
        rows.append([label_value(r)] + [build(r, twin) for _, build in columns])
    return Table(
        id="time-namespace", title="Time namespaces", section=SECTION_ID,
        question=("The probe's helper run in a new time namespace (unshare: the CLONE_ flags "
                  "it was entered with) with non-zero offsets for CLOCK_MONOTONIC and "
                  "CLOCK_BOOTTIME (offsets seen: the shift of each clock a child process "
                  "observed, in days), against the environment it is a variant of (its: the "
                  "same clock there): median ns and the counted mechanism of clock_gettime "
                  "through the vDSO."),
        columns=["environment"] + [title for title, _ in columns],
        keys=["environment"] + [slug(title) for title, _ in columns],
        rows=rows, subjects=[r.subject for r in variants],
    )


def getrandom_path_table(results: list[Result]) -> Table | None:
    """The way each path of getrandom goes, counted: a folded page table (mechanisms only; the
    latencies are in ``latency-getrandom``)."""
    with_rows = [r for r in results if call_row(r, GETRANDOM, "libc")]
    if not with_rows:
        return None
    paths = (("libc", "libc"), ("vDSO", "vdso"), ("syscall", "syscall"),
             ("int $0x80", "int80"), ("__kernel_vsyscall", "kernel_vsyscall"))
    shown = [(title, path) for title, path in paths
             if any(call_row(r, GETRANDOM, path) for r in with_rows)]
    table = environment_table(
        "getrandom-path", SECTION_ID, "Which way getrandom goes",
        "getrandom(buf, 16, 0) through libc, through __vdso_getrandom called directly, and by "
        "the system call itself: the counted mechanism of each (unsupported: the vDSO exports "
        "no __vdso_getrandom). Medians are in the table getrandom of \"Every way into the "
        "kernel\".", [(title, takes(GETRANDOM, path)) for title, path in shown], with_rows,
        page_folds=True)
    return dataclasses.replace(table, on_page=False)  # the section's first line sums it up


def _libc_enters(result: Result) -> bool | None:
    row = call_row(result, GETRANDOM, "libc")
    if not row or row.get("status") != "ok":
        return None
    count = number(row.get("syscalls_per_call"))
    return None if count is None else count >= ENTERS_KERNEL


def _vdso_offered(result: Result) -> bool | None:
    row = call_row(result, GETRANDOM, "vdso")
    if not row:
        return None
    return row.get("status") == "ok"


def _libc_name(result: Result) -> str:
    """"glibc 2.41", "glibc 2.41 static", "musl 1.2.5 static": what decides a libc's path."""
    name, version, linkage = (plain_line(part(result.environment, "libc", k), 40) for k in
                              ("name", "version", "linkage"))
    shown = f"{name} {version}".strip() if name else "?"
    return f"{shown} static" if linkage == "static" else shown


def _listed(results: list[Result], limit: int = 8) -> str:
    names = [r.label for r in results]
    if len(names) > limit:
        return ", ".join(names[:limit - 1]) + f" and {len(names) - limit + 1} more"
    return ", ".join(names)


def _libcs(results: list[Result]) -> str:
    seen: list[str] = []
    for r in results:
        if (name := _libc_name(r)) not in seen:
            seen.append(name)
    return ", ".join(seen)


def getrandom_finding(results: list[Result]) -> Finding | None:
    measured = [r for r in results if _libc_enters(r) is not None]
    if not measured:
        return None
    stays = [r for r in measured if _libc_enters(r) is False]
    enters = [r for r in measured if _libc_enters(r) is True]
    # A 32-bit process's vDSO lacking it says nothing of the kernel (its 64-bit one may have it)
    no_vdso32 = [r for r in enters if r.i386 and _vdso_offered(r) is False]
    no_vdso = [r for r in enters if not r.i386 and _vdso_offered(r) is False]
    libc_only = [r for r in enters if r not in no_vdso and r not in no_vdso32]
    parts = []
    if stays:
        parts.append(f"no system call in {len(stays)} of {len(measured)} environments "
                     f"({_libcs(stays)}, on kernels whose vDSO exports __vdso_getrandom)")
    if libc_only:
        dynamic = [r for r in libc_only if not _libc_name(r).endswith(" static")]
        static = [r for r in libc_only if r not in dynamic]
        which = ", ".join(filter(None, (_libcs(dynamic), f"{len(static)} static builds, glibc's "
                                        "and musl's" if static else "")))
        parts.append(f"one in {len(libc_only)} whose kernel offers __vdso_getrandom but "
                     f"whose libc does not use it ({which})")
    if no_vdso:
        parts.append(f"one in {len(no_vdso)} whose kernel offers no __vdso_getrandom "
                     f"({_listed(no_vdso, 4)})")
    if no_vdso32:
        parts.append(f"one in the {len(no_vdso32)} 32-bit userlands, whose vDSO has no "
                     f"__vdso_getrandom")
    return Finding("getrandom()", "through libc makes " + "; ".join(parts) + ".")


def timens_finding(results: list[Result]) -> Finding | None:
    said = []
    for r in results:
        ns = timens(r)
        if not ns:
            continue
        if ns.get("entered") is not True:
            said.append(f"{r.label} could not enter one ({plain_line(ns.get('reason'), 160)})")
            continue
        row, twin = call_row(r, TIMENS_CLOCKS[0], "vdso"), plain_twin(r, results)
        value = outcome(row)
        if value.status != "ok":
            continue
        twin_value = outcome(call_row(twin, TIMENS_CLOCKS[0], "vdso")) if twin else None
        applied = "offsets applied" if ns.get("offsets_applied") is True else (
            "offsets NOT applied")
        against = (f" against {fmt_ns(twin_value.number)} ns without ({twin.label})"
                   if twin and twin_value and twin_value.status == "ok" else "")
        said.append(f"{r.label}: {value.mechanism}, {fmt_ns(value.number)} ns{against}, "
                    f"{applied}")
    if not said:
        return None
    return Finding("In a time namespace", "clock_gettime(MONOTONIC) through the vDSO: "
                   + "; ".join(said) + ".")


def findings(results: list[Result]) -> list[Finding]:
    return [f for f in (getrandom_finding(results), timens_finding(results)) if f is not None]


def contents(results: list[Result]) -> tuple[list[str], list[Table]]:
    intro = []
    for finding in findings(results):
        intro.append(f"{finding.topic} {finding.text}")
    native = [r for r in results if r.backend in ("host", "docker") and not r.emulated]
    costs = {path: [m for r in native if (m := median(call_row(r, GETRANDOM, path))) is not None
                    and (call_row(r, GETRANDOM, path) or {}).get("status") == "ok"]
             for path in ("vdso", "syscall")}
    if costs["vdso"] and costs["syscall"]:
        intro.append(f"On this machine's kernel, __vdso_getrandom called directly (its opaque "
                     f"state allocated as the kernel documents) takes "
                     f"{fmt_ns(min(costs['vdso']))}–{fmt_ns(max(costs['vdso']))} ns for 16 "
                     f"bytes, the system call {fmt_ns(min(costs['syscall']))}–"
                     f"{fmt_ns(max(costs['syscall']))} ns.")
    tables = [t for t in (getrandom_path_table(results), timens_table(results)) if t]
    return intro, tables
