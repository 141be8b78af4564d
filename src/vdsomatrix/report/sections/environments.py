"""Environments: which userland, libc and kernel each environment ran (a row each; the
runtime environments' versions are in their own section)."""

from __future__ import annotations

from vdsomatrix.report import measurements
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "environments"
TITLE = "Environments"


def included(results: ResultSet) -> bool:
    return True  # a report of runtime environments alone lists them too


def build(results: ResultSet) -> Section:
    tables = measurements.other_abis_off_page(
        measurements.identity_tables(results.results, results.several))
    for table in tables:  # the runtime section lists their versions
        table.page_leaves_out += ("runtimes-native", "runtimes-qemu")
    return Section(ID, TITLE, [], tables)
