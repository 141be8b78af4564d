"""How much the analysis lists: counts stay exact, lists of sites and functions are capped.

A hostile artefact (a file full of ``0f 05``) holds millions of kernel-entry sites; a real libc
a few hundred. Next to every list that can be capped, the analysis records ``<list>_capped``
(true when entries were left out) and ``<list>_total`` (how many entries the whole list has),
so that a report can say "the first 200 of 4 000 000". Every cap is far above what a real
libc, ld.so or vDSO reaches.
"""

from __future__ import annotations

from typing import Any

MAX_LISTED_FUNCTIONS = 2000  # rows of libc["functions"]; a real libc has about 500
MAX_SITES_PER_FUNCTION = 200  # sites of one function row; a real one has under 50
MAX_LISTED_SITES = 5000  # sites listed in all rows of one object together; a libc has ~700
MAX_LISTED_SECTIONS = 64  # executable section names in a census
MAX_LISTED_NAMES = 256  # __vdso_* names (and LINUX_* versions); a libc asks for under 10
MAX_REFERENCING_FUNCTIONS = 16  # functions listed per vDSO name in referenced_from


def set_capped(out: dict[str, Any], key: str, listed: list[Any], total: int) -> None:
    """``out[key] = listed``, with ``<key>_capped`` and ``<key>_total`` beside it."""
    out[key] = listed
    out[f"{key}_capped"] = len(listed) < total
    out[f"{key}_total"] = total
