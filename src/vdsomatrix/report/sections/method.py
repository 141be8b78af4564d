"""Method: how every number was measured and counted."""

from __future__ import annotations

from vdsomatrix.report import entry_costs
from vdsomatrix.report.cells import Result, part, plain_line, whole_number
from vdsomatrix.report.guard import Guard
from vdsomatrix.report.measurements import RESOLUTION_NS
from vdsomatrix.report.result_set import ResultSet

ID = "method"
TITLE = "Method"
REPORT_FIELD = "method_lines"  # a part of the page the Report holds itself, not a Section


def included(results: ResultSet) -> bool:
    return results.c_sections  # the runtime section says its own method


def build(results: ResultSet, guard: Guard) -> list[str]:
    return guard.pieces("method", lambda: method_lines(results.measured)
                        + entry_costs.method_lines(results.native_x86))


def method_lines(results: list[Result]) -> list[str]:
    batches = sorted({b for r in results
                      if (b := whole_number(part(r.get("method"), "batches")))})
    concurrency = sorted({plain_line(c, 300) for r in results
                          if (c := r.text("run", "concurrency"))})
    lines = [
        f"Each latency is the median of {', '.join(str(b) for b in batches) or '?'} batches, "
        "one batch lasting at least 1 ms, on a single pinned CPU, with the measured empty-loop "
        "overhead subtracted; min and p90 are over the same batches. Every call runs in a child "
        "process, so a crash is a result.",
        "The mechanism after each number was counted, not inferred from speed: system calls "
        "with ptrace, traps with the kernel's software page-fault counter (see the glossary).",
        f"Speed-ups with a vDSO median under {RESOLUTION_NS:g} ns are shown as lower bounds: "
        "such a median is within the noise of the subtracted loop overhead.",
        "Containers enter the kernel through a seccomp filter: Docker's default profile (of the "
        "engine's own version) with perf_event_open allowed, so that their rows count traps as "
        "the host's do; every system call pays for the filter (at a glance says how much, where "
        "a measurement-only allow-all container ran); the host has no filter.",
        "Each median is one run's. How far two runs on one machine lie apart is measured by "
        "`nox -s bench -- wall --repeat` (two warm runs back to back, compared row by row; "
        "docs/method.md gives the development machine's figures); a difference within that "
        "spread is no difference.",
        "The binary analysis reads the bytes each environment shipped (its vDSO image and its "
        "libc) with pyelftools and capstone, on the host; its classifications are static "
        "estimates.",
    ]
    return lines + [f"Concurrency: {c}." for c in concurrency]
