"""How much faster is the vDSO than the system call? (x86_64)"""

from __future__ import annotations

from vdsomatrix.report import measurements
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "speedup"
TITLE = "How much faster is the vDSO than the system call?"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, [], [measurements.speedup_table(results.x86)])
