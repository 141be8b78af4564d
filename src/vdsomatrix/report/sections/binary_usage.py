"""What the kernel offers, what the libc uses: the vDSO functions each libc asks for (binary
analysis)."""

from __future__ import annotations

from vdsomatrix.report import binary
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "binary-usage"
TITLE = "What the kernel offers, what the libc uses"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *binary.usage_contents(results.measured))
