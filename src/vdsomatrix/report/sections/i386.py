"""32-bit code: when any result is of a 32-bit process (an i386 userland: its rows are of
another ABI than the x86_64 tables')."""

from __future__ import annotations

from vdsomatrix.report import i386
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "i386"
TITLE = "32-bit code"


def included(results: ResultSet) -> bool:
    return bool(results.i386_envs)


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *i386.contents(results.i386_envs, results.x86))
