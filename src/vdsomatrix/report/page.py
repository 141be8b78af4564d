"""The report page: the answers to the questions that close "linux syscalls on x86_64" (atp,
*Atp's external memory*, 21 May 2011), as Markdown tables with one column per environment.

A pure function of result documents: ``render_report(docs)`` reads nothing else, so a report can
be re-rendered without re-probing and results from several machines can be merged. This module
lays the page out (sections in order, the at-a-glance summary, the method, the problems); the
tables are built in :mod:`measurements` and :mod:`binary`, and every value that came from an
environment is written through :mod:`cells`.
"""

from __future__ import annotations

from collections.abc import Callable

from vdsomatrix.matrix import BackendName
from vdsomatrix.report import measurements
from vdsomatrix.report.binary import render_analysis
from vdsomatrix.report.cells import (
    Result,
    call_row,
    cell,
    enters_kernel,
    entries,
    fmt_ns,
    median,
    part,
    read_results,
    text,
    whole_number,
)
from vdsomatrix.report.measurements import RESOLUTION_NS, VSYSCALL_CALLS

# Where the questions come from: the seed article, cited (it is not part of this repository).
ARTICLE = "“linux syscalls on x86_64”, by atp, on the blog *Atp's external memory* (21 May 2011)"
BACKEND_ORDER = {str(b): i for i, b in enumerate(BackendName)}
NATIVE = (BackendName.HOST, BackendName.DOCKER)  # share this machine's kernel
EMULATED = (BackendName.QEMU,)
GROUPS = (
    ("Userlands on this machine's kernel (host and containers)", NATIVE),
    ("Kernels under QEMU", EMULATED),
)
# A result that names no backend (a failed environment's, an old or hand-made one) still gets a
# column: a missing field shows as the mark, it does not hide the environment.
OTHERS = "Results that name no known backend"


def ordered(results: list[Result], order: list[str] | None = None) -> list[Result]:
    """Matrix order where known, then by backend and name."""
    position = {name: i for i, name in enumerate(order or [])}
    return sorted(results, key=lambda r: (position.get(r.name, len(position)),
                                          BACKEND_ORDER.get(r.backend or "", 9), r.name))


def grouped(results: list[Result], build: Callable[[list[Result]], str]) -> str:
    """Render ``build(results_of_group)`` once per backend group that has results."""
    groups = [(title, [r for r in results if r.backend in backends]) for title, backends in GROUPS]
    groups.append((OTHERS, [r for r in results if r.backend not in BACKEND_ORDER]))
    return "\n\n".join(f"**{title}**\n\n{build(members)}" for title, members in groups if members)


def _names(results: list[Result]) -> str:
    return ", ".join(cell(r.name) for r in results) or "none"


def summary_section(results: list[Result]) -> str:
    """The answers in a few lines, each computed from the tables below (no expectations)."""
    probed = [r for r in results if r.calls]
    lines = []
    with_vdso = [r for r in probed if r.get("vdso", "present") is True]
    without = [r for r in probed if r not in with_vdso]
    lines.append(f"- **vDSO**: mapped in {len(with_vdso)} of {len(probed)} environments; "
                 f"absent in: {_names(without)}.")
    runs = [r for r in probed if all(
        (row := call_row(r, c, "vsyscall")) and row.get("status") == "ok" for c in VSYSCALL_CALLS)]
    dies = [r for r in probed if any(
        (row := call_row(r, c, "vsyscall")) and row.get("status") == "crashed"
        for c in VSYSCALL_CALLS)]
    lines.append(f"- **Legacy vsyscall calls** work in {len(runs)} environments and kill the "
                 f"caller in {len(dies)}: {_names(dies)}.")
    for where, backends in (("natively", NATIVE), ("under QEMU", EMULATED)):
        costs = [c for r in probed if r.backend in backends
                 if (c := median(call_row(r, "getppid", "syscall"))) is not None]
        if costs:
            lines.append(f"- **A system call** (getppid, raw `syscall`) costs "
                         f"{fmt_ns(min(costs))}–{fmt_ns(max(costs))} ns {where} "
                         f"({len(costs)} environments, medians)"
                         + (", emulated time" if where == "under QEMU" else "") + ".")
    call = "clock_gettime(CLOCK_MONOTONIC)"
    speedups, fallbacks = [], []
    for r in probed:
        vdso_row = call_row(r, call, "vdso")
        fast, slow = median(vdso_row), median(call_row(r, call, "syscall"))
        if fast is None or slow is None:
            continue
        if enters_kernel(vdso_row):
            fallbacks.append(r)
        elif fast >= RESOLUTION_NS:
            speedups.append(slow / fast)
    if speedups:
        lines.append(f"- **The vDSO's {call}** is {min(speedups):.1f}–{max(speedups):.1f}× "
                     f"faster than the system call where it stays in user space; it makes the "
                     f"system call itself in: {_names(fallbacks)}.")
    libc_kernel = [r for r in probed if enters_kernel(call_row(r, call, "libc"))]
    lines.append(f"- **libc's {call}** enters the kernel on every call in: "
                 f"{_names(libc_kernel)}.")
    return "\n".join(lines)


def method_section(results: list[Result]) -> str:
    batches = sorted({b for r in results
                      if (b := whole_number(part(r.get("method"), "batches")))})
    concurrency = sorted({c for r in results if (c := r.text("run", "concurrency"))})
    lines = [
        "- Each latency is the median of "
        f"{', '.join(cell(b) for b in batches) or '?'} batches, one batch lasting at least "
        "1 ms, on a single pinned CPU, with the measured empty-loop overhead subtracted; min and "
        "p90 are over the same batches. Every call runs in a child process, so a crash is a "
        "result.",
        "- The mechanism after each number was counted, not inferred from speed: `syscall` = "
        "the system calls ptrace saw per call (as strace counts them), `trap` = no system call "
        "but a page-fault trap per call (the kernel's software page-fault counter; this is how "
        "vsyscall emulation enters the kernel), `user` = neither (the vDSO or libc answered in "
        "user space), `no syscall` = no system call, but traps could not be counted (Docker's "
        "default seccomp profile forbids perf_event_open), `?` = the environment allowed no "
        "counting at all.",
        "- Speed-ups below 1 ns on the fast side are shown as bounds: such a median is within "
        "the noise of the subtracted loop overhead.",
        "- Containers enter the kernel through Docker's default seccomp filter, which every "
        "system call pays for; the host column has no filter.",
        "- † marks guests under TCG software emulation: their absolute nanoseconds are "
        "emulated; compare ratios only.",
    ]
    lines += [f"- Concurrency: {cell(c, 300)}." for c in concurrency]
    return "\n".join(lines)


def problems_section(results: list[Result], load_problems: list[str]) -> str:
    lines = []
    for r in results:
        for error in entries(r.get("errors")):
            lines.append(f"- **{cell(r.name)}**: {cell(error, 300)}")
        tail = [line for line in entries(r.get("log_tail")) if text(line) is not None]
        if tail and r.run_status != "ok":
            lines.append(f"- **{cell(r.name)}** last lines: "
                         + " ⏎ ".join(cell(line, 160) for line in tail[-5:]))
    lines += [f"- result file skipped: {cell(p, 300)}" for p in load_problems]
    return "\n".join(lines) if lines else "None."


def _section(build: Callable[[], str]) -> str:
    """A section's text; if a bug breaks it, one line that says so, not a missing report."""
    try:
        return build()
    except Exception as exc:  # the report is the product: the other sections still stand
        return f"(this section could not be rendered: {cell(type(exc).__name__)})"


def render_report(docs: list[dict], *, order: list[str] | None = None,
                  load_problems: list[str] | None = None) -> str:
    results = ordered(read_results(list(docs)), order)
    tables = (
        ("## Environments", measurements.identity_table),
        ("## 1. Is there a vDSO, and what does it export?", measurements.vdso_table),
        ("## 2. The vsyscall page: which mode, and does a legacy vsyscall call work?",
         measurements.vsyscall_table),
        ("## 3. What does a system call cost?", measurements.syscall_cost_table),
        ("## 4. How much faster is each vDSO path than its system call?",
         measurements.speedup_table),
        ("## 5. Every way into the kernel: median latency and mechanism",
         measurements.latency_table),
    )
    parts = [
        "# vdsomatrix report",
        "",
        f"{len(results)} environments. Generated by `vdsomatrix report` from result files "
        "alone; every number below was measured in the environment of its column. The questions "
        f"are those that close {ARTICLE}.",
        "",
        "## At a glance",
        _section(lambda: summary_section(results)),
    ]
    for heading, build in tables:
        parts += [heading, _section(lambda build=build: grouped(results, build))]
    parts += [
        "## 6. Binary analysis",
        _section(lambda: render_analysis(results)),
        "## Method",
        _section(lambda: method_section(results)),
        "## Problems",
        _section(lambda: problems_section(results, [text(p) or "" for p in load_problems or []])),
        "",
    ]
    return "\n\n".join(parts).replace("\n\n\n", "\n\n")
