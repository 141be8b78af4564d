"""At a glance: the answers in a few lines, each computed from the measured rows (no
expectations), with the same counted-mechanism rules as the tables below."""

from __future__ import annotations

from vdsomatrix.report import correctness, entry_costs, i386, recent_vdso, runtimes
from vdsomatrix.report.cells import Result, call_row, enters_kernel, fmt_ns, median
from vdsomatrix.report.guard import Guard
from vdsomatrix.report.measurements import RESOLUTION_NS, VSYSCALL_CALLS
from vdsomatrix.report.model import Finding
from vdsomatrix.report.result_set import EMULATED, EMULATED_MARK, NATIVE, ResultSet

ID = "at-a-glance"
TITLE = "At a glance"
REPORT_FIELD = "summary"  # a part of the page the Report holds itself, not a Section


def included(results: ResultSet) -> bool:
    return True


def build(results: ResultSet, guard: Guard) -> list[Finding]:
    """The page's own findings, then those of the sections that have a line here (each
    guarded on its own)."""
    return (guard.pieces("summary", lambda: summary(results.measured))
            + guard.pieces("entry-cost summary", lambda: entry_costs.findings(
                results.native_x86, results.emulated_x86))
            + guard.pieces("recent vDSO summary",
                           lambda: recent_vdso.findings(results.x86_and_i386))
            + guard.pieces("correctness summary",
                           lambda: [f for f in [correctness.finding(results.measured)] if f])
            + guard.pieces("32-bit summary", lambda: i386.findings(
                results.i386_envs, results.x86, results.several))
            + guard.pieces("runtimes summary", lambda: runtimes.findings(results.runtime_envs)))


def _names(results: list[Result]) -> str:
    # without the † of emulated guests: the summary comes before the glossary that explains it
    return ", ".join(r.label.removesuffix(EMULATED_MARK) for r in results) or "none"


def summary(results: list[Result]) -> list[Finding]:
    """The answers in a few lines, each computed from the measured rows (no expectations), with
    the same counted-mechanism rules as the tables below: the vDSO and the vsyscall page of
    every environment, the costs of the x86_64 ones (a 32-bit process's are in
    :func:`i386.findings`)."""
    probed = [r for r in results if r.calls]
    if not probed:  # no C rows at all (only runtime environments): nothing to say here
        return []
    x86 = [r for r in probed if not r.i386 and not r.arm64]
    found = []
    with_vdso = [r for r in probed if r.get("vdso", "present") is True]
    without = [r for r in probed if r not in with_vdso]
    found.append(Finding("The vDSO", f"is mapped in {len(with_vdso)} of {len(probed)} "
                                     f"environments; absent in: {_names(without)}."))
    runs = [r for r in probed if all(
        (row := call_row(r, c, "vsyscall")) and row.get("status") == "ok" for c in VSYSCALL_CALLS)]
    dies = [r for r in probed if any(
        (row := call_row(r, c, "vsyscall")) and row.get("status") == "crashed"
        for c in VSYSCALL_CALLS)]
    found.append(Finding("Legacy vsyscall calls",
                         f"work in {len(runs)} environments and kill the caller in "
                         f"{len(dies)}: {_names(dies)}."))
    for where, backends in (("natively", NATIVE), ("under QEMU", EMULATED)):
        costs = [c for r in x86 if r.backend in backends
                 if (c := median(call_row(r, "getppid", "syscall"))) is not None]
        if costs:
            found.append(Finding("A system call",
                                 f"(getppid, raw syscall instruction) costs "
                                 f"{fmt_ns(min(costs))}–{fmt_ns(max(costs))} ns {where} "
                                 f"({len(costs)} environments, medians)"
                                 + (", emulated time" if where == "under QEMU" else "") + "."))
    call = "clock_gettime(CLOCK_MONOTONIC)"
    speedups, fallbacks = [], []
    for r in x86:
        vdso_row = call_row(r, call, "vdso")
        fast, slow = median(vdso_row), median(call_row(r, call, "syscall"))
        if fast is None or slow is None:
            continue
        if enters_kernel(vdso_row):
            fallbacks.append(r)
        elif fast >= RESOLUTION_NS:
            speedups.append(slow / fast)
    if speedups:
        found.append(Finding(f"The vDSO's {call}",
                             f"is {min(speedups):.1f}–{max(speedups):.1f}× faster than the "
                             f"system call where it stays in user space; it makes the system "
                             f"call itself in: {_names(fallbacks)}."))
    libc_kernel = [r for r in x86 if enters_kernel(call_row(r, call, "libc"))]
    found.append(Finding(f"libc's {call}",
                         f"enters the kernel on every call in: {_names(libc_kernel)}."))
    return found
