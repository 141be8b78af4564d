"""The report's sections, in page order: the one list of their ids, titles and conditions.

Each entry is a module with

    ID              the section's id: an anchor and a ``--section`` name; it does not change
    TITLE           its heading on the page
    included(rs)    whether a report of the ResultSet ``rs`` has it (an optional section's
                    condition: "runtimes" only with a runtime environment, ...)
    build(rs)       the Section, a pure function of the ResultSet

or, for the parts of the page the Report holds itself (at a glance, the glossary, the method,
the problems), ``REPORT_FIELD`` (the Report field it fills) and ``build(rs, guard)``, which
returns that field's list and builds its pieces through the Guard. The renderers place those
four around the sections (at a glance and the glossary before, the method and the problems
after), as they are listed here; their headings are the TITLEs here (``Report.titles``).

A new section is one module here with those four names, and its name on one line of
``SECTION_MODULES``.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

# The modules of this package, one per section, in page order.
SECTION_MODULES: tuple[str, ...] = (
    "at_a_glance",
    "glossary",
    "environments",
    "vdso",
    "vsyscall",
    "syscall_cost",
    "speedup",
    "latency",
    "recent_vdso",
    "correctness",
    "runtimes",
    "i386",
    "architectures",
    "binary_symbols",
    "binary_census",
    "binary_usage",
    "binary_entry_points",
    "method",
    "problems",
)
SECTIONS: tuple[ModuleType, ...] = tuple(import_module(f"{__name__}.{name}")
                                         for name in SECTION_MODULES)
# The ids in page order: the anchors and ``--section`` names.
SECTION_IDS: tuple[str, ...] = tuple(s.ID for s in SECTIONS)
