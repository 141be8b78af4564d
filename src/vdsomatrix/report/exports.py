"""The report's formats, each a function of the :class:`~vdsomatrix.report.model.Report` alone.

Markdown (the page, REPORT.md; one snippet file per table; the disassembly on its own page),
CSV (one file per table: numbers, mechanisms and statuses in separate fields) and JSON (every
table as data, with the metadata that makes it reproducible; its schema is
``vdsomatrix/schema/report.schema.json``). HTML comes from :mod:`vdsomatrix.report.html`.

Escaping is each format's own: Markdown through :func:`cells.cell` (nothing an environment said
becomes markup), CSV with a leading apostrophe on a text cell a spreadsheet would run as a
formula, JSON by the encoder.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tabulate as tabulate_module
from tabulate import tabulate

from vdsomatrix.report.cells import MISSING, cell, code_block, unblocked
from vdsomatrix.report.model import (
    GROUPS,
    LEFT_OUT,
    MISSING_VALUE,
    Listing,
    Report,
    Subject,
    Table,
    Value,
    identical_runs,
)

FORMATS = ("md", "html", "csv", "json")
REPORT_SCHEMA = "vdsomatrix-report/1"
TABLES_DIR = "tables"
DISASSEMBLY = "disassembly.md"
PROSE_WIDTH = 100  # prose is wrapped: the page reads in an editor, too
LONGEST_CELL = 600  # characters of one cell's text a page shows; the model bounds them anyway
UNIT_SUFFIX = {"ns": "_ns", "×": "_x", "bytes": "_bytes", "count": ""}
# A text cell starting with one of these would be run as a formula by a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ----------------------------------------------------------------------- Markdown ------------

def md_value(value: Value) -> str:
    shown = cell(value.text, LONGEST_CELL)
    return f"**{shown}**" if value.strong and shown and value.text != MISSING else shown


def _numeric(rows: list[list[Value]], column: int) -> bool:
    """Whether a column holds numbers (right-aligned): every value a number or the mark."""
    values = [row[column] for row in rows if column < len(row)]
    return any(v.number is not None for v in values) and all(
        v.number is not None or v.text in (MISSING, "") for v in values)


def md_grid(table: Table) -> str:
    """One part of a table (see ``Table.parts``) as a Markdown table."""
    width = len(table.columns)
    rows = [[md_value(v) for v in row[:width]] + [""] * (width - len(row)) for row in table.rows]
    align = ["right" if table.layout == "rows" and i and _numeric(table.rows, i) else "left"
             for i in range(width)]
    # tabulate widens every column by MIN_PADDING beyond its header: blank bytes in every row
    padding, tabulate_module.MIN_PADDING = tabulate_module.MIN_PADDING, 0
    try:
        return tabulate(rows, headers=[cell(c, 120) for c in table.columns], tablefmt="pipe",
                        colalign=align, disable_numparse=True)
    finally:
        tabulate_module.MIN_PADDING = padding


def wrapped(escaped: str, first: str = "", indent: str = "") -> str:
    """Escaped Markdown text as lines of at most PROSE_WIDTH, ``first`` before the first
    (a list marker), ``indent`` before the others; no continuation line may open a block."""
    lines = textwrap.wrap(escaped, PROSE_WIDTH, initial_indent=first, subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False) or [first.rstrip()]
    return "\n".join([lines[0]] + [indent + unblocked(line[len(indent):])
                                   for line in lines[1:]])


def md_paragraph(text: str, limit: int = 4000) -> str:
    return wrapped(cell(text, limit))


def md_item(escaped: str) -> str:
    """A list item of escaped text."""
    return wrapped(escaped, "- ", "  ")


def md_notes(lines: Iterable[str]) -> str:
    return "\n".join(md_item(cell(line, LONGEST_CELL)) for line in lines)


def table_markdown(table: Table, leave_out: tuple[str, ...] = (), where: str = "",
                   fold: bool = False) -> str:
    """A table as Markdown: one grid per group (with the group's title), then ``where`` (the
    lines that say where the groups in ``leave_out`` are and which rows are folded), then its
    notes. ``fold``: identical consecutive rows as one, where the table asks for it (the
    page's; a table's own file has every row)."""
    out = []
    for group, title, part in table.parts(fold=fold):
        if group in leave_out:
            continue
        if title:
            out.append(f"**{cell(title)}**")
        out.append(md_grid(part))
    if where:
        out.append(where)
    if table.notes:
        out.append(md_notes(table.notes))
    return "\n\n".join(out)


def table_snippet(table: Table) -> str:
    """A table's own file: wrapped in the section markers pymdownx.snippets includes by id
    (``--8<-- "reports/tables/vdso.md:vdso"``)."""
    return (f"<!-- --8<-- [start:{table.id}] -->\n{table_markdown(table)}\n"
            f"<!-- --8<-- [end:{table.id}] -->\n")


def _names(labels: list[str]) -> str:
    """Row labels, the first and the last of more than two."""
    return " … ".join([labels[0], labels[-1]]) if len(labels) > 2 else ", ".join(labels)


def _fold_line(table: Table, leave_out: tuple[str, ...], own: str) -> str:
    """The line under a table whose page folds identical consecutive rows: how many
    environments share how many rows (empty when none fold), and the file with every row."""
    runs = [run for group, _ in GROUPS if group not in leave_out
            for run in identical_runs(*_members(table, group)) if len(run) > 1]
    if not runs:
        return ""
    noun = "columns" if table.layout == "columns" else "rows"
    return wrapped(f"Identical consecutive {noun} are folded on this page: "
                   f"{sum(len(run) for run in runs)} environments in {len(runs)} "
                   f"{noun if len(runs) > 1 else noun[:-1]}, each "
                   f"named by its first and last environment and their count; "
                   f"[{cell(own)}]({own}) has a row per environment.")


def _members(table: Table, group: str) -> tuple[list[list[Value]], list[Subject | None]]:
    """The rows (in the "rows" layout) of one group and their subjects."""
    members = [(row, s) for row, s in zip(table.rows, table.subjects, strict=False)
               if s is not None and s.group == group]
    return [row for row, _ in members], [s for _, s in members]


def page_table(report: Report, table: Table, tables: str | None) -> str:
    """A table as the page shows it: without the row groups it leaves off the page (when its
    own file is written and other rows stay), and one line that says where they are; with
    identical consecutive rows folded (``Table.page_folds_identical_rows``, when its own file
    is written), and one line that says so."""
    rows_out = []
    if tables and table.page_leaves_out_rows:
        kept = [(row, s) for row, s in zip(table.rows, table.subjects, strict=False)
                if s is None or s.environment not in table.page_leaves_out_rows]
        rows_out = [s.label for s in table.subjects
                    if s is not None and s.environment in table.page_leaves_out_rows]
        if rows_out and kept:
            table = dataclasses.replace(table, rows=[r for r, _ in kept],
                                        subjects=[s for _, s in kept])
        else:
            rows_out = []
    groups = [group for group, _, _ in table.parts()]
    leave_out = tuple(g for g in groups if g in table.page_leaves_out and g in LEFT_OUT)
    if len(leave_out) == len(groups):
        leave_out = ()
    if not tables:
        return table_markdown(table)
    own = f"{tables}/{table.id}.md"
    fold = table.page_folds_identical_rows
    fold_line = _fold_line(table, leave_out, own) if fold else ""
    lines = []
    for group in leave_out:
        noun, section_id = LEFT_OUT[group]
        labels = [s.label for s in table.subjects if s is not None and s.group == group]
        where = f"[{cell(own)}]({own})"
        summed_up = report.section(section_id)
        if summed_up is not None and summed_up.id != table.section:
            where += f" and in [{cell(summed_up.title)}](#{section_id})"
        lines.append(wrapped(
            f"The {cell(noun.removesuffix('s'))} {cell(labels[0])} is in {where}."
            if len(labels) == 1 else
            f"The {cell(noun)} ({len(labels)}: {cell(_names(labels), 400)}) are in {where}."))
    if rows_out:
        noun = table.page_leaves_out_rows_noun or "other rows"
        lines.append(wrapped(f"The {cell(noun)} ({len(rows_out)}: "
                             f"{cell(_names(rows_out), 400)}) are in [{cell(own)}]({own})."))
    return table_markdown(table, leave_out, "\n\n".join(lines + [fold_line] if fold_line
                                                           else lines), fold=fold)


def _anchor(anchor_id: str) -> str:
    return f'<a id="{anchor_id}"></a>'  # ids are the report's own, never an environment's


def _links(linked: list[Table], tables: str) -> str:
    """Links to tables not on the page: one item per question; tables that answer the same
    question for different calls share an item."""
    by_question: dict[str, list[Table]] = {}
    for table in linked:
        by_question.setdefault(table.question, []).append(table)
    items = []
    for question, members in by_question.items():
        links = ", ".join(f"[{cell(t.title)}]({tables}/{t.id}.md)" for t in members)
        items.append(md_item(f"{links}: {cell(question, 1000)}" if len(members) == 1
                             else f"{cell(question, 1000)} One table per call: {links}."))
    return "\n".join(items)


def _heading(report: Report, part_id: str) -> str:
    """The heading of a part of the page that is not a Section (at a glance, the glossary, ...)."""
    return f"## {cell(report.titles[part_id])}"


def render_markdown(report: Report, *, disassembly: str | None = DISASSEMBLY,
                    tables: str | None = TABLES_DIR) -> str:
    """The page: at a glance on top, the glossary before the first table, a section per
    question, each with a stable anchor (its id). ``disassembly`` and ``tables``: where the
    companion files are, relative to the page (None: not written, not linked; the page then
    shows every table)."""
    out = [f"# {cell(report.title)}", md_paragraph(report.intro)]
    companions = []
    if tables:
        companions.append(f"every table as Markdown and CSV in {cell(tables)}/")
    if report.listings() and disassembly:
        companions.append(f"the syscall() disassembly in [{cell(disassembly)}]({disassembly})")
    if companions:
        out.append(wrapped("Also: " + "; ".join(companions)
                           + "; all of it as data in report.json."))
    if report.shows("at-a-glance"):
        out += [_anchor("at-a-glance"), _heading(report, "at-a-glance"), "\n".join(
            md_item(f"**{cell(f.topic)}** {cell(f.text, 2000)}") for f in report.summary)
            or "None."]
    if report.shows("glossary"):
        out += [_anchor("glossary"), _heading(report, "glossary"), "\n".join(
            md_item(f"**{cell(t.term)}**: {cell(t.definition, 2000)}")
            for t in report.glossary)]
    for section in report.sections:
        out += [_anchor(section.id), f"## {cell(section.title)}"]
        out += [md_paragraph(paragraph) for paragraph in section.intro]
        shown = [t for t in section.tables if t.on_page or not tables]
        linked = [t for t in section.tables if t not in shown]
        for table in shown:
            if table.id != section.id:  # the section's anchor already names its own table
                out.append(_anchor(table.id))
            if len(section.tables) > 1:
                out.append(f"### {cell(table.title)}")
            out += [md_paragraph(table.question, 1000), page_table(report, table, tables)]
        if linked:
            same = not any(t.fixed_layout for t in linked)
            out.append(("More tables, with the same rows:" if shown and same else "More tables:"
                        if shown else "In a table of its own, a row per environment:")
                       + "\n\n" + _links(linked, tables))
        if section.listings and disassembly:
            out.append(wrapped(f"The syscall() wrapper of each distinct libc "
                               f"({len(section.listings)}), disassembled: "
                               f"[{cell(disassembly)}]({disassembly})."))
    if report.shows("method"):
        out += [_anchor("method"), _heading(report, "method"), md_notes(report.method_lines)]
    if report.shows("problems"):
        lines = [md_item(f"**{cell(p.subject)}**: {cell(p.text, LONGEST_CELL)}") if p.subject
                 else md_item(cell(p.text, LONGEST_CELL)) for p in report.problems]
        out += [_anchor("problems"), _heading(report, "problems"), "\n".join(lines) or "None."]
    return "\n\n".join(part for part in out if part) + "\n"


def render_disassembly(report: Report) -> str:
    """The listings, on a page of their own (they were over half the report)."""
    out = ["# The syscall() wrapper, per distinct libc",
           "Disassembled from the libc each environment shipped, on the host (capstone). "
           "Linked from REPORT.md."]
    listings: list[Listing] = report.listings()
    for listing in listings:
        out += [f"## {cell(listing.title, 400)}",
                wrapped("In: " + cell(", ".join(listing.environments), 4000)),
                code_block(listing.lines)]
    if not listings:
        out.append("No libc was disassembled.")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------- CSV -----------------

def csv_text(text: str) -> str:
    """A text field: empty for the mark, and a leading apostrophe where a spreadsheet would
    read a formula."""
    if text == MISSING:
        return ""
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_number(value: float | None) -> str:
    # six significant digits: more than any median here was measured to
    return "" if value is None else f"{value:.6g}"


def _fields(key: str, values: list[Value]) -> list[tuple[str, Any]]:
    """The CSV fields one column becomes: ``(name, getter)``."""
    fields: list[tuple[str, Any]] = []
    if any(v.number is not None for v in values):
        unit = next(v.unit for v in values if v.number is not None) or ""
        suffix = UNIT_SUFFIX.get(unit, "_" + unit)
        fields.append((f"{key}{suffix}", lambda v: csv_number(v.number)))
        if any(v.low is not None or v.high is not None for v in values):
            fields.append((f"{key}_min{suffix}", lambda v: csv_number(v.low)))
            fields.append((f"{key}_p90{suffix}", lambda v: csv_number(v.high)))
        if any(v.bound for v in values):
            fields.append((f"{key}_bound", lambda v: csv_text(v.bound or "")))
        if any(v.number is None and v.status is None and v.text not in (MISSING, "")
               for v in values):  # words where the others have numbers ("?")
            fields.append((f"{key}_text", lambda v: "" if v.number is not None
                           else csv_text(v.text)))
    elif not all(v.status is not None and v.mechanism == v.text for v in values
                 if v.text != MISSING):
        fields.append((key, lambda v: csv_text(v.text)))
    if any(v.mechanism for v in values):
        fields.append((f"{key}_mechanism", lambda v: csv_text(v.mechanism or "")))
    if any(v.status for v in values):
        fields.append((f"{key}_status", lambda v: csv_text(v.status or "")))
    if any(v.detail for v in values):
        fields.append((f"{key}_detail", lambda v: csv_text(v.detail or "")))
    return fields


def render_csv(table: Table) -> str:
    """A table as CSV, one record per row of the "rows" layout (whatever the page's layout):
    who the row is about in its own fields, then each column's number, min, p90, mechanism and
    status in separate fields."""
    about = any(table.subjects)
    first = 1 if about else 0
    header: list[str] = ["environment", "machine", "group", "emulated"] if about else []
    getters = []
    for i in range(first, len(table.columns)):
        values = [row[i] if i < len(row) else MISSING_VALUE for row in table.rows]
        for name, get in _fields(table.keys[i], values):
            header.append(name)
            getters.append((i, get))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row, subject in zip(table.rows, table.subjects or [None] * len(table.rows),
                            strict=False):
        record = []
        if about:
            record = ["", "", "", ""] if subject is None else [
                csv_text(subject.environment), csv_text(subject.machine or ""), subject.group,
                "true" if subject.emulated else "false"]
        record += [get(row[i] if i < len(row) else MISSING_VALUE) for i, get in getters]
        writer.writerow(record)
    return buffer.getvalue()


# ----------------------------------------------------------------------- JSON ----------------

def _whole(value: Any) -> Any:
    """8192 rather than 8192.0: a whole float as an integer (where a float holds it exactly)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value


def value_json(value: Value) -> dict[str, Any]:
    """A cell: ``text`` always, each other field only when it has a value."""
    fields = {"text": value.text, "number": value.number, "unit": value.unit, "min": value.low,
              "p90": value.high, "bound": value.bound, "mechanism": value.mechanism,
              "status": value.status, "detail": value.detail}
    out = {k: _whole(v) for k, v in fields.items() if v is not None}
    if value.missing:
        out["missing"] = True
    return out


def table_json(table: Table) -> dict[str, Any]:
    """A table as data, always in the "rows" layout: each row names its environment (and
    machine) and lists one cell per column, in the order of ``columns``."""
    subjects = table.subjects or [None] * len(table.rows)
    return {
        "id": table.id, "title": table.title, "section": table.section,
        "question": table.question, "on_page": table.on_page, "layout": table.layout,
        "columns": [{"key": k, "title": c} for k, c in zip(table.keys, table.columns,
                                                           strict=False)],
        "notes": list(table.notes),
        "rows": [{"environment": None if s is None else s.environment,
                  "machine": None if s is None else s.machine,
                  "cells": [value_json(v) for v in row]}
                 for row, s in zip(table.rows, subjects, strict=False)],
    }


def report_json(report: Report) -> dict[str, Any]:
    """Every table as data (always the "rows" layout), the page's text, and ``meta``."""
    return {
        "schema": REPORT_SCHEMA,
        "title": report.title,
        "intro": report.intro,
        "meta": report.meta,
        "machines": list(report.machines),
        "summary": [{"topic": f.topic, "text": f.text} for f in report.summary]
        if report.shows("at-a-glance") else [],
        "glossary": [{"term": t.term, "definition": t.definition} for t in report.glossary],
        "sections": [{"id": s.id, "title": s.title, "intro": list(s.intro),
                      "tables": [t.id for t in s.tables],
                      "listings": [{"title": x.title, "environments": list(x.environments),
                                    "lines": list(x.lines)} for x in s.listings]}
                     for s in report.sections],
        "tables": [table_json(t) for t in report.tables()],
        "method": list(report.method_lines) if report.shows("method") else [],
        "problems": [{"subject": p.subject, "text": p.text} for p in report.problems]
        if report.shows("problems") else [],
    }


def render_json(report: Report) -> str:
    """report.json: indented, but each table row on one line (the file stays small and a
    change of one number is a change of one line). Every piece is written by the encoder."""
    data = report_json(report)
    tables = data.pop("tables")

    def dump(value: Any, **options: Any) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, **options)

    texts = []
    for table in tables:
        rows = table.pop("rows")
        head = dump(table, indent=None)
        lines = ",\n   ".join(dump(row, separators=(",", ":")) for row in rows)
        texts.append(f'{head[:-1]}, "rows": [\n   {lines}\n  ]}}' if rows
                     else f'{head[:-1]}, "rows": []}}')
    body = dump(data, indent=1)
    return (f'{body[:-2]},\n "tables": [\n  ' + ",\n  ".join(texts) + "\n ]\n}\n")


# ----------------------------------------------------------------------- files ---------------

def parse_formats(values: Iterable[str] | None) -> list[str]:
    """``--format md,csv --format json`` as a list in FORMATS order; ValueError names an
    unknown one."""
    wanted = {w.strip() for v in values or [] for w in v.split(",") if w.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown format {', '.join(unknown)} (valid: {', '.join(FORMATS)})")
    return [f for f in FORMATS if f in wanted] if wanted else list(FORMATS)


def write_exports(report: Report, out: Path, formats: Iterable[str], *,
                  write=None) -> list[Path]:
    """Write the report in ``formats`` under ``out``; returns the files written. ``write``:
    how a file is written (default: atomically)."""
    if write is None:
        from vdsomatrix.results import write_atomic as write
    formats = list(formats)
    tables = out / TABLES_DIR
    written: list[Path] = []
    if "md" in formats:
        written.append(write(out / "REPORT.md", render_markdown(report)))
        written.append(write(out / DISASSEMBLY, render_disassembly(report)))
        written += [write(tables / f"{t.id}.md", table_snippet(t)) for t in report.tables()]
    if "csv" in formats:
        written += [write(tables / f"{t.id}.csv", render_csv(t)) for t in report.tables()]
    if "json" in formats:
        written.append(write(out / "report.json", render_json(report)))
    if "html" in formats:
        from vdsomatrix.report.html import render_html  # matplotlib: only when asked for

        written.append(write(out / "REPORT.html", render_html(report)))
    return written
