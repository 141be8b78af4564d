"""Is there a vDSO, and what does it export? A row per environment that measured C rows."""

from __future__ import annotations

from vdsomatrix.report import measurements
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "vdso"
TITLE = "Is there a vDSO, and what does it export?"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, [], measurements.other_abis_off_page(
        [measurements.vdso_table(results.measured)]))
