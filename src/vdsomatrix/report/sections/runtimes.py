"""Language runtimes: do they take the fast path? When any result is of a runtime environment."""

from __future__ import annotations

from vdsomatrix.report import runtimes
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "runtimes"
TITLE = "Language runtimes: do they take the fast path?"


def included(results: ResultSet) -> bool:
    return bool(results.runtime_envs)


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *runtimes.contents(results.runtime_envs))
