"""Every way into the kernel: latency and mechanism, a table per call family (x86_64)."""

from __future__ import annotations

from vdsomatrix.report import measurements
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "latency"
TITLE = "Every way into the kernel: latency and mechanism"


def included(results: ResultSet) -> bool:
    return results.c_sections


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, [], measurements.latency_tables(results.x86))
