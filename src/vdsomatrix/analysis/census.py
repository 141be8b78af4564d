"""The census of kernel-entry instructions in a libc: how many ``syscall`` / ``sysenter`` /
``int 0x80`` (in 32-bit code, ``call *%gs:0x10`` to ``__kernel_vsyscall``; in AArch64 code,
``svc``) its code holds
(counted exactly as ``objdump -d`` shows them, see sweep.py), and in which functions.

Counts are exact however many sites there are; the lists (function rows, the sites of each row,
section names) are capped as limits.py describes.
"""

from __future__ import annotations

from typing import Any

from vdsomatrix.analysis.functions import FunctionIndex
from vdsomatrix.analysis.limits import (
    MAX_LISTED_FUNCTIONS,
    MAX_LISTED_SECTIONS,
    MAX_LISTED_SITES,
    MAX_SITES_PER_FUNCTION,
    set_capped,
)
from vdsomatrix.analysis.sweep import KINDS, SweepResult


class _Tally:
    """Sites of one function (or of no function: key None), counted exactly."""

    __slots__ = ("counts", "exact", "name", "sites")

    def __init__(self, name: str | None, exact: bool):
        self.name = name
        self.exact = exact
        self.counts = dict.fromkeys(KINDS, 0)
        self.sites: list[dict[str, Any]] = []


def _row_order(key: int | None) -> tuple[bool, int]:
    return (key is None, key or 0)


def take_census(result: SweepResult, index: FunctionIndex, has_symbols: bool,
                regions: list[tuple[str, int, Any]], region_source: str,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(census, function listing) of one sweep.

    The function listing is ``{"functions": rows, "functions_capped", "functions_total"}``,
    rows in address order (the sites of no known function last), each
    ``{"name", "address", "exact", "syscall", "sysenter", "int80", "kernel_vsyscall", "sites",
    "sites_capped", "sites_total"}`` (one count per kind of sweep.KINDS).
    """
    # First pass: exact counts per function; sites are only counted, so that a flood of them
    # costs one small tally per function.
    tallies: dict[int | None, _Tally] = {}
    for address, kind in result.sites():
        fn, exact = index.containing(address)
        key = fn.value if fn else None
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally(fn.name if fn else None, exact)
        tally.counts[kind] += 1
        tally.exact = tally.exact and exact
    keys = sorted(tallies, key=_row_order)
    listed = keys[:MAX_LISTED_FUNCTIONS]
    # Second pass: the sites of the listed functions, as far as the caps allow.
    wanted = set(listed)
    budget = MAX_LISTED_SITES
    for address, kind in result.sites():
        if budget <= 0:
            break
        fn, _exact = index.containing(address)
        key = fn.value if fn else None
        if key in wanted:
            tally = tallies[key]
            if len(tally.sites) < MAX_SITES_PER_FUNCTION:
                tally.sites.append({"address": address, "kind": kind})
                budget -= 1
    rows = []
    for key in listed:
        tally = tallies[key]
        row: dict[str, Any] = {"name": tally.name, "address": key, "exact": tally.exact,
                               **tally.counts}
        set_capped(row, "sites", tally.sites, sum(tally.counts.values()))
        rows.append(row)
    listing: dict[str, Any] = {}
    set_capped(listing, "functions", rows, len(keys))
    attributed = sum(1 for key in keys if tallies[key].name is not None)
    sections = [name for name, _a, _d in regions]
    census: dict[str, Any] = {
        **result.counts,
        "functions": attributed if has_symbols else None,
        "attribution": ("none" if not has_symbols else
                        "exact" if all(t.exact for t in tallies.values()) else "estimate"),
        "instructions": result.instructions,
        "bytes": result.bytes,
        "undecodable_bytes": result.undecodable_bytes,
        "source": region_source,
        "complete": not result.truncated,
    }
    set_capped(census, "sections", sections[:MAX_LISTED_SECTIONS], len(sections))
    return census, listing
