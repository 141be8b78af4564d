"""Correctness: do the fast paths agree with the kernel? When any result has the helper's
correctness checks."""

from __future__ import annotations

from vdsomatrix.report import correctness
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "correctness"
TITLE = "Correctness: do the fast paths agree with the kernel?"


def included(results: ResultSet) -> bool:
    return results.c_sections and correctness.has_section(results.measured)


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *correctness.contents(results.measured))
