"""The report as data: every table built once from the result documents, rendered by format.

``build_report(docs)`` (:mod:`build`) reads the result documents (through :mod:`cells`,
defensively) and returns a :class:`Report`. Every renderer (Markdown, CSV and JSON in
:mod:`exports`, HTML in :mod:`html`) is a function of that Report alone, so the formats cannot
disagree.

The API, which renderers may rely on (it stays stable):

``Value``        one cell. ``text`` is the display text, UNESCAPED (each renderer escapes it for
                 its format) but already plain: one line, bounded, control and invisible
                 characters replaced. ``number`` is the measured number in ``unit`` ("ns", "×",
                 "bytes" or "count"; None when the cell is not a number), ``low``/``high`` the min
                 and p90 when ``number`` is a median, ``mechanism`` how the call entered the
                 kernel as counted (see ``MECHANISMS``), ``status`` the probe's status of the
                 measured call ("ok", "crashed", "unsupported", ...), ``bound`` is "lower" when
                 ``number`` is only a lower bound (the text says "≥ 80×"), ``detail`` what the
                 text adds to the status (the signal of a crash), ``strong`` asks for
                 emphasis (a "no" a reader must not miss). A missing value has ``text == MISSING``
                 and every other field None.
``Subject``      who a row is about: ``environment``, ``machine`` (only set when the documents
                 come from more than one machine), ``backend``, ``emulated`` (TCG: nanoseconds
                 are emulated time), ``group`` (the id of its ``GROUPS`` entry), and ``label``, the
                 text the tables show for it ("k6.1-hpet †", "host @ ci-amd").
``Table``        ``id`` (stable, used as a file name and an anchor), ``title``, ``section`` (the
                 id of its section), ``question`` (one sentence: what the table answers),
                 ``columns`` (header texts), ``keys`` (one slug per column, for CSV and JSON
                 field names), ``rows`` (lists of Value, one per column), ``subjects`` (one
                 Subject per row, None for a row about no environment), ``notes`` (plain lines
                 shown under the table), ``layout`` (how to SHOW it). ``columns``/``rows`` are
                 always the data in the "rows" layout: a row per environment (or per symbol,
                 for ``vdso-symbols``), the first column naming it. To render, iterate
                 ``Table.parts()``: ``(group id, group title, table)`` per group of rows (host
                 and containers, 32-bit containers, then QEMU guests), each part already in
                 ``layout``
                 ("columns": transposed, a column per environment); render the part's
                 ``columns`` and ``rows`` literally. ``on_page``: False for reference tables
                 too detailed for the Markdown page (it links to their own files instead); other
                 renderers may show them all. ``fixed_layout``: the table keeps its own
                 ``layout`` whatever the report's (the runtime tables: a row per runtime call,
                 a column per environment). ``page_leaves_out``: ids of row groups the
                 Markdown page leaves out of this table (the 32-bit rows of the environment,
                 vDSO and vsyscall tables, summed up in the section of ``LEFT_OUT``): one
                 computed line under the table names them and links the table's own file;
                 ``parts()``, the table's files, CSV, JSON and HTML keep every group.
                 ``page_leaves_out_rows``: environments (by name) whose rows the page
                 leaves out, named in one line with ``page_leaves_out_rows_noun`` (rows that
                 measure what a row left on the page measures: the same kernel through
                 another build of the probe). ``page_folds_identical_rows``: the Markdown
                 page shows consecutive rows of one group whose cells (after the first)
                 are all equal as one row, named "first … last (count)"
                 (``parts(fold=True)``, see ``fold_identical``), with one computed line
                 under the table that links its own file; ``parts()``, the table's files,
                 CSV, JSON and HTML keep a row per environment.
``Listing``      a disassembly: ``title``, ``environments`` and the plain ``lines``.
``Section``      ``id`` (one of ``sections.SECTION_IDS``, stable: an anchor), ``title``,
                 ``intro`` (plain paragraphs), ``tables``, ``listings``. ``Report.sections``
                 holds the sections with tables, in page order, those the registry
                 (:mod:`sections`) includes for the results (environments ...
                 binary-entry-points; "runtimes" only when a result is of a runtime
                 environment, "i386" only when one is of a 32-bit process, "architectures"
                 only when one is of an arm64 process, ...); "at-a-glance", "glossary",
                 "method" and "problems" are the Report's own fields, shown where
                 ``Report.shows(id)``.
``Finding``      one line of "at a glance": ``topic`` and ``text`` (plain), one sentence when
                 read as topic + " " + text (the topic emphasised).
``Term``         a glossary entry: ``term`` and ``definition`` (plain).
``Problem``      ``subject`` (an environment label or None) and ``text`` (plain).
``Report``       ``title``, ``intro``, ``summary`` (list of Finding), ``glossary`` (list of Term),
                 ``sections`` (list of Section, in page order), ``method_lines``, ``problems``,
                 ``meta`` (dict, JSON-ready: versions, commits, machines, engines, QEMU versions,
                 environment descriptions), ``machines`` (the distinct machine ids), ``layout``,
                 ``parts`` (the section ids included), ``titles`` (the heading of each part
                 of the page, by id: those of at a glance, the glossary, the method and the
                 problems, which are not Sections). Helpers: ``section(id)``, ``tables()``,
                 ``listings()``, ``only(section_ids)`` (a report of some sections),
                 ``shows(id)``, ``with_layout(layout)``.

``build_report(docs, *, order=None, load_problems=None, layout="rows") -> Report`` is in
:mod:`build` (this module imports no section: the sections and the renderers import it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from vdsomatrix.report.cells import MISSING

Layout = Literal["rows", "columns"]
LAYOUTS: tuple[str, ...] = ("rows", "columns")
MECHANISMS = ("user", "trap", "syscall", "no syscall", "?")  # or "N syscalls" (several per call)
# (group id, title): the rows of every per-environment table, in this order.
# The language-runtime environments have groups of their own, titled as the others: they are
# rows of the runtime section's tables and of the environment list only.
GROUPS: tuple[tuple[str, str], ...] = (
    ("native", "Host and containers (this machine's kernel)"),
    ("i386", "32-bit userlands in containers (this machine's kernel, IA32 emulation)"),
    ("qemu", "Kernels under QEMU (†: emulated time)"),
    ("arm64", "arm64 kernels and userlands under QEMU (†: emulated time)"),
    ("runtimes-native", "Host and containers (this machine's kernel)"),
    ("runtimes-qemu", "Kernels under QEMU (†: emulated time)"),
    ("other", "Results that name no known backend"),
)
# Row groups a table may leave off the Markdown page (``Table.page_leaves_out``): what the line
# under the table calls its rows, and the section that sums them up (its id is an anchor).
LEFT_OUT: dict[str, tuple[str, str]] = {
    "i386": ("32-bit userlands", "i386"),
    "arm64": ("arm64 environments", "architectures"),
    "runtimes-native": ("runtime environments", "runtimes"),
    "runtimes-qemu": ("runtime environments under QEMU", "runtimes"),
}
# How a folded row is named (``fold_identical``): "bullseye … sid-musl (15)".
FOLD_JOIN = " … "
# Rows with a number in one of these units are never folded (see ``identical_runs``).
UNFOLDED_UNITS = ("ns", "×")


@dataclass(frozen=True)
class Value:
    """One cell. See the module docstring."""

    text: str
    number: float | None = None
    unit: str | None = None
    mechanism: str | None = None
    status: str | None = None
    low: float | None = None
    high: float | None = None
    bound: str | None = None
    detail: str | None = None
    strong: bool = False

    @property
    def missing(self) -> bool:
        return self.text == MISSING and self.number is None


MISSING_VALUE = Value(MISSING)


@dataclass(frozen=True)
class Subject:
    """Who a row (or, transposed, a column) is about."""

    environment: str
    machine: str | None
    backend: str | None
    emulated: bool
    group: str
    label: str


@dataclass
class Table:
    id: str
    title: str
    section: str
    question: str
    columns: list[str]
    keys: list[str]
    rows: list[list[Value]]
    subjects: list[Subject | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layout: Layout = "rows"
    on_page: bool = True
    fixed_layout: bool = False
    page_leaves_out: tuple[str, ...] = ()
    page_folds_identical_rows: bool = False
    # Single rows the page leaves out (environment names), and what the line under the table
    # calls them ("static and musl builds"): rows that repeat another row's measurement.
    page_leaves_out_rows: tuple[str, ...] = ()
    page_leaves_out_rows_noun: str = ""

    def parts(self, fold: bool = False) -> list[tuple[str, str, Table]]:
        """What a renderer shows: ``(group id, group title, table)`` for each group of rows
        that has any, in ``GROUPS`` order (host and containers, then QEMU guests), each table
        already in this table's ``layout`` (transposed for "columns"): render its ``columns``
        and ``rows`` as they are. A table about no environment is one part ("", "", table).
        ``fold`` (the Markdown page's, for a table with ``page_folds_identical_rows``): each
        group's identical consecutive rows as one (``fold_identical``), before any
        transposing."""
        if not any(self.subjects):
            return [("", "", self._shown(self.rows, self.subjects))]
        out = []
        for group, title in GROUPS:
            members = [(row, s) for row, s in zip(self.rows, self.subjects, strict=False)
                       if s is not None and s.group == group]
            if not members:
                continue
            rows, subjects = [r for r, _ in members], [s for _, s in members]
            if fold and self.page_folds_identical_rows:
                rows, subjects = fold_identical(rows, subjects)
            out.append((group, title, self._shown(rows, subjects)))
        return out

    def _shown(self, rows: list[list[Value]], subjects: list[Subject | None]) -> Table:
        part = dataclasses.replace(self, rows=rows, subjects=subjects, layout="rows")
        if self.layout != "columns":
            return part
        shown = part.transposed()
        if self.fixed_layout:  # a row per call: one that no environment of this group has goes
            shown.rows = [row for row in shown.rows if not all(v.missing for v in row[1:])]
        return shown

    def transposed(self) -> Table:
        """A row per column of this table and a column per row: the "columns" layout, as
        literal rows (``subjects`` then describe the columns after the first)."""
        first = self.columns[0] if self.columns else ""
        columns = [first] + [row[0].text if row else "" for row in self.rows]
        rows = [[Value(self.columns[i])] + [row[i] if i < len(row) else MISSING_VALUE
                                            for row in self.rows]
                for i in range(1, len(self.columns))]
        subjects = list(self.subjects) or [None] * len(self.rows)
        keys = [self.keys[0] if self.keys else "label"] + [
            s.environment if s else f"column_{n + 1}" for n, s in enumerate(subjects)]
        return dataclasses.replace(self, columns=columns, keys=keys, rows=rows,
                                   subjects=subjects, layout="columns")


def folded_label(labels: list[str]) -> str:
    """The name of a folded row: "first … last (count)"."""
    return f"{labels[0]}{FOLD_JOIN}{labels[-1]} ({len(labels)})"


def identical_runs(rows: list[list[Value]], subjects: list[Subject | None]) -> list[list[int]]:
    """The rows as runs of indices: consecutive rows about environments whose cells after the
    first (the one that names the environment) are all equal share a run. Whole ``Value``s
    are compared: rows that differ in any field (a number, a status) stay apart, and a row
    with a measured time (a latency, a speed-up: ``UNFOLDED_UNITS``) is never folded, since
    equal medians agree by chance, not because the environments share a property."""
    def foldable(i: int) -> bool:
        return subjects[i] is not None and not any(
            v.unit in UNFOLDED_UNITS and v.number is not None for v in rows[i][1:])

    runs: list[list[int]] = []
    for i, row in enumerate(rows):
        if (runs and foldable(i) and foldable(runs[-1][0])
                and row[1:] == rows[runs[-1][0]][1:]):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def fold_identical(rows: list[list[Value]], subjects: list[Subject | None]
                   ) -> tuple[list[list[Value]], list[Subject | None]]:
    """Each run of ``identical_runs`` as one row named by ``folded_label``; the subject is
    the first's, with that label."""
    out_rows: list[list[Value]] = []
    out_subjects: list[Subject | None] = []
    runs = identical_runs(rows, subjects)
    for run in runs:
        first = run[0]
        if len(run) == 1:
            out_rows.append(rows[first])
            out_subjects.append(subjects[first])
            continue
        named = [subjects[i] for i in run]
        label = folded_label([s.label for s in named if s is not None])
        row = rows[first]
        out_rows.append([dataclasses.replace(row[0], text=label) if row else Value(label)]
                        + row[1:])
        head = named[0]
        out_subjects.append(None if head is None else dataclasses.replace(head, label=label))
    return out_rows, out_subjects


@dataclass
class Listing:
    title: str
    environments: list[str]
    lines: list[str]


@dataclass
class Section:
    id: str
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    listings: list[Listing] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    topic: str
    text: str


@dataclass(frozen=True)
class Term:
    term: str
    definition: str


@dataclass(frozen=True)
class Problem:
    subject: str | None
    text: str


@dataclass
class Report:
    title: str
    intro: str
    summary: list[Finding]
    glossary: list[Term]
    sections: list[Section]
    method_lines: list[str]
    problems: list[Problem]
    meta: dict[str, Any]
    machines: list[str]
    layout: Layout = "rows"
    # the section ids included, in page order (build_report: every id of the registry)
    parts: tuple[str, ...] = ()
    # the heading of every part of the page by id (build_report: the registry's titles)
    titles: dict[str, str] = field(default_factory=dict)

    def shows(self, section_id: str) -> bool:
        """Whether a part of the page is included (see ``only``)."""
        return section_id in self.parts

    def section(self, section_id: str) -> Section | None:
        return next((s for s in self.sections if s.id == section_id), None)

    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]

    def listings(self) -> list[Listing]:
        return [x for s in self.sections for x in s.listings]

    def with_layout(self, layout: Layout) -> Report:
        """This report with every table shown in ``layout`` (the data stays as it is)."""
        sections = [dataclasses.replace(s, tables=[
            t if t.fixed_layout else dataclasses.replace(t, layout=layout) for t in s.tables])
            for s in self.sections]
        return dataclasses.replace(self, sections=sections, layout=layout)

    def only(self, section_ids: list[str] | None) -> Report:
        """This report with only the named sections (all of them for None or [])."""
        if not section_ids:
            return self
        wanted = set(section_ids)
        return dataclasses.replace(self, sections=[s for s in self.sections if s.id in wanted],
                                   parts=tuple(i for i in self.parts if i in wanted))

