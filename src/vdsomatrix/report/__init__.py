"""The report: a pure function of result documents.

    cells.py         the one home of reading a document defensively, the missing-value mark,
                     medians, the "entered the kernel" threshold, the table wrapper, and the
                     escaping of everything an environment said
    measurements.py  the measured tables (identity, vDSO, vsyscall, system-call cost, speed-ups,
                     latency)
    binary.py        the binary-analysis tables (symbols, census, vDSO use, entry points)
    page.py          the page: sections in order, at a glance, method, problems
"""

from vdsomatrix.report.page import render_report

__all__ = ["render_report"]
