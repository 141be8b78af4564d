"""Recent vDSO interfaces: getrandom and time namespaces, when any result has getrandom rows
or ran in a time namespace (x86_64 and i386: the names read are x86's)."""

from __future__ import annotations

from vdsomatrix.report import recent_vdso
from vdsomatrix.report.model import Section
from vdsomatrix.report.result_set import ResultSet

ID = "recent-vdso"
TITLE = "Recent vDSO interfaces: getrandom and time namespaces"


def included(results: ResultSet) -> bool:
    return results.c_sections and recent_vdso.has_section(results.x86_and_i386)


def build(results: ResultSet) -> Section:
    return Section(ID, TITLE, *recent_vdso.contents(results.x86_and_i386))
