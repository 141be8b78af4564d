"""Across architectures: x86_64, i386 and arm64 side by side, when any result is of an arm64
process."""

from __future__ import annotations

from vdsomatrix.report import architectures
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "architectures"
TITLE = "Across architectures"


def included(results: ResultSet) -> bool:
    return bool(results.arm64_envs)


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *architectures.contents(results.measured))
