"""Kernel-entry instructions in each x86_64 libc (binary analysis; a 32-bit libc's census is
in the section "32-bit code")."""

from __future__ import annotations

from vdsomatrix.report import binary
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "binary-census"
TITLE = "Kernel-entry instructions in each libc"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *binary.census_contents(results.x86))
