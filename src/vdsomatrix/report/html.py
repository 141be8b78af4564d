"""The report as one self-contained HTML page: sortable tables and inline SVG figures.

``render_html(report)`` is a function of the :class:`~vdsomatrix.report.model.Report` alone (the
figures are drawn from its tables), so the page cannot disagree with the Markdown, CSV or JSON.

Everything an environment said is text to this module: the template escapes every value
(jinja2 autoescaping, never switched off for a value from a result), no link, attribute name or
class is made from a result, and the only markup inserted unescaped is the page's own CSS and
script and the SVG that :mod:`plots` drew and checked. A Content-Security-Policy lets only the
page's own script (by its hash) run and forbids fetching anything.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from vdsomatrix.report import plots
from vdsomatrix.report.model import MISSING_VALUE, Report, Section, Subject, Table, Value
from vdsomatrix.text import plain

# The CSS class of each kind of mechanism (fixed words: no class is made from a result).
MECHANISM_CSS = {"user": "user", "no syscall": "nosyscall", "trap": "trap", "syscall": "syscall",
                 "?": "unknown"}
MECHANISM_LEGEND = [
    ("user", "user space only"),
    ("nosyscall", "no syscall (traps not countable)"),
    ("trap", "trap into the kernel"),
    ("syscall", "system call"),
    ("unknown", "not counted"),
]
BAD_STATUSES = {"crashed", "failed", "error", "timeout"}


@dataclass
class CellView:
    text: str
    classes: str = ""
    sort: str | None = None
    tip: str = ""
    strong: bool = False
    mechanism: str = ""


@dataclass
class HeaderView:
    text: str
    emulated: bool = False


@dataclass
class RowView:
    cells: list[CellView]
    emulated: bool = False


@dataclass
class BodyView:
    title: str
    rows: list[RowView]


@dataclass
class GridView:
    """One HTML table: a part of a model table (all its groups as bodies in the "rows" layout;
    one group, transposed, in the "columns" layout)."""

    caption: str
    headers: list[HeaderView]
    bodies: list[BodyView]


@dataclass
class TableView:
    id: str
    title: str
    question: str
    notes: list[str]
    grids: list[GridView]
    has_mechanisms: bool
    on_page: bool


@dataclass
class SectionView:
    id: str
    title: str
    intro: list[str]
    tables: list[TableView]
    listings: list
    plots: list[plots.Plot] = field(default_factory=list)
    plot_problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------- cells and tables -----

def _number_text(number: float) -> str:
    return f"{number:.6g}"


def cell_view(value: Value, *, subject_column: bool = False) -> CellView:
    """A table cell: the display text (escaped by the template), the number to sort by, and
    classes from a fixed vocabulary."""
    classes = []
    sort = None
    if value.number is not None and math.isfinite(value.number):
        sort = repr(float(value.number))
        classes.append("num")
    if subject_column:
        classes.append("subject")
    if value.missing:
        classes.append("missing")
    if value.status in BAD_STATUSES:
        classes.append("bad")
    tip = []
    if value.low is not None and value.high is not None and value.number is not None:
        unit = f" {value.unit}" if value.unit else ""
        tip.append(f"min {_number_text(value.low)} · median {_number_text(value.number)} · "
                   f"p90 {_number_text(value.high)}{unit}")
    if value.bound == "lower":
        tip.append("a lower bound")
    if value.detail and value.detail not in value.text:
        tip.append(value.detail)
    mechanism = ""
    if value.mechanism is not None:
        mechanism = MECHANISM_CSS[plots.mechanism_kind(value.mechanism)]
        tip.append(f"mechanism: {value.mechanism}")
    return CellView(text=value.text, classes=" ".join(classes), sort=sort,
                    tip=" · ".join(plain(t, "?") for t in tip), strong=value.strong,
                    mechanism=mechanism)


def _rows_grid(parts: list[tuple[str, str, Table]]) -> GridView:
    """Every group of a table as a body of one HTML table (sorting keeps groups apart)."""
    first = parts[0][2]
    bodies = []
    for _, title, part in parts:
        about_subjects = any(part.subjects)
        rows = [RowView([cell_view(v, subject_column=about_subjects and i == 0)
                         for i, v in enumerate(row)], emulated=bool(s and s.emulated))
                for row, s in zip(part.rows, part.subjects or [None] * len(part.rows),
                                  strict=False)]
        bodies.append(BodyView(title if len(parts) > 1 else "", rows))
    return GridView("", [HeaderView(text) for text in first.columns], bodies)


def _columns_grid(title: str, part: Table, several: bool) -> GridView:
    """A transposed part: a column per environment (its subject), a row per fact."""
    subjects = list(part.subjects) + [None] * len(part.columns)
    headers = [HeaderView(part.columns[0] if part.columns else "")]
    headers += [HeaderView(text, emulated=bool(s and s.emulated))
                for text, s in zip(part.columns[1:], subjects, strict=False)]
    rows = [RowView([cell_view(v, subject_column=i == 0) for i, v in enumerate(row)])
            for row in part.rows]
    return GridView(title if several else "", headers, [BodyView("", rows)])


def table_view(table: Table) -> TableView:
    parts = table.parts()
    if table.layout == "columns":
        grids = [_columns_grid(title, part, len(parts) > 1) for _, title, part in parts]
    else:
        grids = [_rows_grid(parts)] if parts else []
    return TableView(
        id=table.id, title=table.title, question=table.question, notes=list(table.notes),
        grids=grids, on_page=table.on_page,
        has_mechanisms=any(v.mechanism is not None for row in table.rows for v in row))


# ----------------------------------------------------------------------- figures --------------

@dataclass(frozen=True)
class Column:
    """Where a figure finds its numbers: a table's id and a column's key."""

    table: str
    key: str


def column_cells(report: Report, where: Column) -> list[plots.Cell] | None:
    """The (subject, value) of each environment in one column of a table, in table order
    (``rows`` are a row per environment whatever the layout shown)."""
    table = next((t for t in report.tables() if t.id == where.table), None)
    if table is None or where.key not in table.keys:
        return None
    index = table.keys.index(where.key)
    return [plots.Cell(s, row[index] if index < len(row) else MISSING_VALUE)
            for s, row in zip(table.subjects, table.rows, strict=False)
            if isinstance(s, Subject)]


def _panel(report: Report, title: str, where: Column,
           mechanism_from: Column | None = None) -> plots.Panel | None:
    cells = column_cells(report, where)
    if not cells:
        return None
    if mechanism_from is not None:
        # A speed-up has no mechanism of its own: it takes the vDSO call's, by environment.
        mechanisms = {c.subject: c.value for c in column_cells(report, mechanism_from) or []}
        cells = [plots.Cell(c.subject, dataclasses.replace(
            c.value, mechanism=mechanisms[c.subject].mechanism))
            if c.subject in mechanisms else c for c in cells]
    return plots.Panel(title, cells)


def _same_rows(panels: list[plots.Panel]) -> list[plots.Panel]:
    """The panels that describe the same environments in the same order as the first; a panel
    of more environments (the vsyscall table's has the 32-bit ones, which the latency tables
    have not) keeps the first's only."""
    if not panels:
        return []
    subjects = [c.subject for c in panels[0].cells]
    out = []
    for panel in panels:
        by_subject = {c.subject: c for c in panel.cells}
        if set(subjects) <= set(by_subject):
            out.append(dataclasses.replace(panel, cells=[by_subject[s] for s in subjects]))
    return out


MONOTONIC = "clock_gettime(CLOCK_MONOTONIC)"
LATENCY_PANELS = [
    ("getppid · raw syscall", Column("latency-getppid", "syscall")),
    ("MONOTONIC · vDSO", Column("latency-monotonic", "vdso")),
    ("MONOTONIC · syscall", Column("latency-monotonic", "syscall")),
    ("gettimeofday · vDSO", Column("latency-gettimeofday", "vdso")),
]
SPEEDUP_PANELS = [
    ("MONOTONIC", Column("speedup", "monotonic"),
     Column("latency-monotonic", "vdso")),
    ("MONOTONIC_COARSE", Column("speedup", "monotonic_coarse"),
     Column("latency-monotonic-coarse", "vdso")),
    ("PROCESS_CPUTIME_ID", Column("speedup", "process_cputime_id"),
     Column("latency-process-cputime-id", "vdso")),
    ("gettimeofday", Column("speedup", "gettimeofday"),
     Column("latency-gettimeofday", "vdso")),
]
LIBC_CALLS = [("MONOTONIC", "monotonic"), ("REALTIME", "realtime"),
              ("MONOTONIC_COARSE", "monotonic_coarse"), ("BOOTTIME", "boottime"),
              ("PROCESS_CPUTIME_ID", "process_cputime_id"), ("gettimeofday", "gettimeofday"),
              ("time", "time"), ("getcpu", "getcpu")]
MECHANISM_COLUMNS = [("libc: getppid", Column("latency-getppid", "libc"))] + [
    (f"libc: {title}", Column("libc-path", key)) for title, key in LIBC_CALLS
] + [(f"vsyscall: {call}", Column("vsyscall", call))
     for call in ("gettimeofday", "time", "getcpu")]


def figures(report: Report) -> tuple[dict[str, list[plots.Plot]], dict[str, list[str]]]:
    """The figures by the id of the section they belong to, and, by section, why a figure
    could not be drawn (a figure never stops the page)."""
    drawn: dict[str, list[plots.Plot]] = {}
    problems: dict[str, list[str]] = {}
    # (section, draw, id, title, caption, the panels' (title, column[, mechanism from]))
    for section, draw, plot_id, title, caption, specs in (
        ("syscall-cost", plots.latency_plot, "figure-latency",
         "Latency per call, by environment.",
         "The mark is the median of the batches, the bar runs from the fastest batch to the 90th "
         "percentile; colour and shape say how the call entered the kernel, as counted. A panel "
         "with a wide range has a log scale.", LATENCY_PANELS),
        ("speedup", plots.speedup_plot, "figure-speedup", "vDSO speed-up (syscall ÷ vDSO).",
         "Bars run from 1× (no gain) to the quotient of the medians, on a log scale; the mark's "
         "colour is how the vDSO call entered the kernel: a vDSO that falls back to the system "
         "call gains nothing.", SPEEDUP_PANELS),
        ("latency", plots.mechanism_plot, "figure-mechanism", "How each call entered the kernel.",
         "libc's own calls and the legacy vsyscall calls, by environment; a crashed or "
         "unsupported call is named instead.", MECHANISM_COLUMNS),
    ):
        if report.section(section) is None:
            continue
        try:
            panels = _same_rows([p for spec in specs if (p := _panel(report, *spec))])
            if panels:
                drawn.setdefault(section, []).append(draw(plot_id, title, caption, panels))
        except Exception as exc:  # a figure is an extra: the tables still carry every number
            problems.setdefault(section, []).append(
                f"A figure could not be drawn: {plain(str(exc), '?')[:200]}")
    return drawn, problems


# ----------------------------------------------------------------------- the page -------------

def _environment():
    environment = Environment(
        loader=PackageLoader("vdsomatrix.report", "templates"),
        autoescape=True,  # every template, every value: results are hostile input
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return environment


def _static(environment: Environment, name: str) -> str:
    source, _, _ = environment.loader.get_source(environment, name)
    return source


def section_view(section: Section) -> SectionView:
    return SectionView(id=section.id, title=section.title, intro=list(section.intro),
                       tables=[table_view(t) for t in section.tables],
                       listings=list(section.listings))


def _facts(report: Report) -> list[str]:
    subjects = {s.environment for t in report.tables() for s in t.subjects if s is not None}
    facts = [f"{len(subjects)} environments"]
    if report.machines:
        facts.append("machines: " + ", ".join(plain(m, "?")[:60] for m in report.machines[:8]))
    version = report.meta.get("vdsomatrix") if isinstance(report.meta, dict) else None
    if isinstance(version, str):
        facts.append(f"vdsomatrix {plain(version, '?')[:40]}")
    facts.append("† emulated (TCG): nanoseconds are emulated time")
    return facts


def render_html(report: Report) -> str:
    """The whole page, as one string of HTML with everything inline."""
    environment = _environment()
    script = _static(environment, "sort.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    drawn, plot_problems = figures(report)
    sections = []
    for section in report.sections:
        view = section_view(section)
        # The one unescaped insertion of generated markup: SVG checked by plots.checked_svg.
        view.plots = [dataclasses.replace(p, svg=Markup(p.svg)) for p in drawn.get(section.id, [])]
        view.plot_problems = plot_problems.get(section.id, [])
        sections.append(view)
    contents = []
    if report.shows("at-a-glance") and report.summary:
        contents.append({"anchor": "at-a-glance", "title": report.titles["at-a-glance"]})
    if report.shows("glossary") and report.glossary:
        # the page's own short name for it: the Markdown heading is a sentence
        contents.append({"anchor": "glossary", "title": "Glossary"})
    contents += [{"anchor": s.id, "title": s.title} for s in sections]
    contents += [{"anchor": p.id, "title": f"Figure: {p.title.rstrip('.')}"}
                 for s in sections for p in s.plots]
    if report.shows("method") and report.method_lines:
        contents.append({"anchor": "method", "title": report.titles["method"]})
    if report.shows("problems"):
        contents.append({"anchor": "problems",
                         "title": f"{report.titles['problems']} ({len(report.problems)})"})
    meta = json.dumps(report.meta, indent=1, sort_keys=True, ensure_ascii=False, default=str) \
        if report.meta else ""
    template = environment.get_template("report.html.j2")
    return template.render(
        report=report,
        sections=sections,
        contents=contents,
        facts=_facts(report),
        meta=plain(meta, "?"),
        mechanism_legend=[{"css": css, "text": text} for css, text in MECHANISM_LEGEND],
        css=Markup(_static(environment, "report.css")),
        script=Markup(script),
        script_hash=f"sha256-{digest}",
    )
