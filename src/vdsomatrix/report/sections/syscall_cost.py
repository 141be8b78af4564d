"""What does a system call cost, and why? The x86_64 medians beside what explains them (the
entry costs)."""

from __future__ import annotations

from vdsomatrix.report import entry_costs, measurements
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "syscall-cost"
TITLE = "What does a system call cost, and why?"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, [], [measurements.syscall_cost_table(results.x86),
                                  *entry_costs.tables(results.x86)])
