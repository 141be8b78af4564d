"""How libc's entry points reach the kernel: a static reading beside the measurement, and
the syscall() listings (binary analysis)."""

from __future__ import annotations

from vdsomatrix.report import binary
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "binary-entry-points"
TITLE = "How libc's entry points reach the kernel"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *binary.entry_points_contents(results.measured))
