"""vDSO symbols: what each distinct vDSO exports (binary analysis)."""

from __future__ import annotations

from vdsomatrix.report import binary
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "binary-symbols"
TITLE = "vDSO symbols"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *binary.symbols_contents(results.measured))
