"""Hostile text, and the checks that it stays inert in every format the report exports: shared
by the report's tests and the helper's correctness tests (report/test_report_hostile.py says
what the fixtures are and tries every field)."""


from __future__ import annotations

import csv
import functools
import io
import json
import re
from typing import Any

from fakes import markdown_tables, report_validator
from fakes import report_fixtures as fixtures

from vdsomatrix.report import build_report, render_report
from vdsomatrix.report.exports import (
    render_csv,
    render_disassembly,
    render_json,
    render_markdown,
    table_snippet,
)
from vdsomatrix.report.html import render_html
from vdsomatrix.report.model import Report

HOSTILE = (
    "<script>alert(1)</script>",
    "# heading",
    "[x](javascript:alert(1))",
    "![i](http://x/i.png)",
    "http://evil.example/",
    "see https://evil.example/a?b=c and ftp://evil.example",
    "www.evil.example",
    "WWW.EVIL.EXAMPLE",
    "| a | b |",
    "`code` ``fence`` ```",
    "\n## injected",
    "line\r\n# also injected\n\n- item\n---\n===",
    "<img src=x onerror=alert(1)>",
    "&lt;script&gt; &amp; &#60;img&#62;",
    "\x1b[31mred\x1b[0m \x07 \x9b2J",
    "\u202eevil\u202c \u2066isolated\u2069 zero\u200bwidth \u2028",
    "</pre></summary></details><script>x</script>",
    "*bold* _em_ ~~strike~~ \\ <!-- comment -->",
    "x" * 20_000,
)
# Every construct in one line, for the walk that places one string per field.
MEDLEY = ("<script>a</script><img src=x>[x](javascript:a)![i](http://x/i.png) www.e.example "
          "|a|`b`\n## h\x1b[31m\u202e&lt;")
# The only tags the report writes itself (anchors: <a id="section-id"></a>).
OWN_TAGS = {"details", "/details", "summary", "/summary", "pre", "/pre", "a", "/a"}
OWN_ANCHOR = re.compile(r'<a id="[a-z0-9-]+"></a>')
LONGEST_RUN = 600  # the widest cell the report writes


@functools.cache
def own() -> str:
    """The report of the untouched fixtures: what the report writes by itself."""
    return render_report(fixtures())


# ------------------------------------------------------------------ walking a document -------

def nodes(value: Any, path: tuple = ()):
    """Every (path, value) in a document, the document itself first."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from nodes(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from nodes(child, (*path, i))


def scalar_paths(doc: dict) -> list[tuple]:
    """The paths of every string, number, boolean and null in a document."""
    return [p for p, v in nodes(doc) if p and not isinstance(v, dict | list)]


def string_paths(doc: dict) -> list[tuple]:
    return [p for p, v in nodes(doc) if isinstance(v, str)]


def parent_of(doc: Any, path: tuple) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


DELETE = object()  # as a new value: remove the key


def replace(doc: dict, path: tuple, value: Any):
    """Put ``value`` at ``path`` (``DELETE`` removes the key); returns the undo, or None when
    the path no longer leads anywhere (an earlier change replaced a parent)."""
    try:
        parent = parent_of(doc, path)
        key = path[-1]
        if not isinstance(parent, dict | list) or isinstance(parent, dict) != isinstance(key, str):
            return None
        old = parent[key]
    except (KeyError, IndexError, TypeError):
        return None
    if value is DELETE:
        if not isinstance(parent, dict):
            return None
        del parent[key]
    else:
        parent[key] = value

    def undo():
        parent[key] = old
    return undo


# ------------------------------------------------------------------ what inert means ---------

def outside_pre(markdown: str) -> str:
    return re.sub(r"<pre>.*?</pre>", "", markdown, flags=re.S)


def heading_set(markdown: str) -> set[str]:
    return {line for line in markdown.splitlines() if re.match(r" {0,3}#", line)}


def assert_markup_inert(markdown: str, own_tags: set[str] = OWN_TAGS) -> None:
    """Nothing in ``markdown`` that the report did not write itself: no tag, link, image, bare
    URL, setext underline, table cell, code span or control character."""
    assert "could not be rendered" not in markdown and "could not be built" not in markdown
    tags = set(re.findall(r"<(/?[A-Za-z!][^\s>/]*)", markdown))
    assert tags <= own_tags, tags - own_tags
    assert len(re.findall(r"<a\b", markdown)) == len(OWN_ANCHOR.findall(markdown))
    assert markdown.count("<pre>") == markdown.count("</pre>")
    assert markdown.count("<details>") == markdown.count("</details>")
    outside = outside_pre(markdown)
    # the report's own links are to its own files (tables/<id>.md, disassembly.md) and to
    # its own sections' anchors (#<id>: where a table's left-out rows are summed up)
    links = re.findall(r"(?<!\\)\]\(([^)]*)\)", outside)
    assert all(re.fullmatch(r"(tables/[a-z0-9-]+\.md|disassembly\.md|#[a-z0-9-]+)", link)
               for link in links), links
    assert not re.search(r"(?<!\\)\]\(", re.sub(r"\]\(#[a-z0-9-]+\)", "", outside_pre(
        markdown).replace("](tables/", "").replace("](disassembly.md)", ""))), \
        "a live [text](link)"
    assert "://" not in markdown, "a bare URL"
    assert not re.search(r"(?i)www\.", markdown), "a bare www. link"
    assert not re.search(r"(?m)^ {0,3}(=+|-+)\s*$", outside), "a setext underline"
    for line in outside.splitlines():  # a list item's text opens no heading, list or quote
        item = re.match(r" {0,3}[-+*] +(.*)", line)
        assert not (item and re.match(r"\s*(#|>|[-+*=](\s|$)|\d+[.)](\s|$)|```|~~~)",
                                      item.group(1))), line
        # nor does a line that continues a wrapped list item
        more = re.match(r"  (\S.*)", line)
        assert not (more and re.match(r"(#|>|[-+*=](\s|$)|\d+[.)](\s|$)|```|~~~)",
                                      more.group(1))), line
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", markdown), "a control character"
    assert not re.search(r"[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]", markdown)
    # the report's own code spans (some only shown when there is a number for them)
    assert len(re.findall(r"(?<!\\)`", outside)) <= len(re.findall(r"(?<!\\)`",
                                                                  outside_pre(own())))
    assert "x" * (LONGEST_RUN + 1) not in markdown, "an unbounded value"
    for table in markdown_tables(markdown):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(widths) == 1, table


def assert_inert(markdown: str, own_markdown: str | None = None) -> None:
    """REPORT.md: inert, with no heading the report does not write and none of its sections
    lost (``own_markdown``: the report of the same documents with harmless text, when they
    have sections the untouched fixtures do not)."""
    mine = own_markdown if own_markdown is not None else own()
    assert_markup_inert(markdown)
    assert heading_set(markdown) <= heading_set(mine), heading_set(markdown) - heading_set(mine)
    for heading in (h for h in heading_set(mine) if h.startswith("## ")):
        assert heading in markdown.splitlines(), f"section lost: {heading}"


def assert_disassembly_inert(markdown: str, listings: int) -> None:
    """disassembly.md: its title, one heading per listing, and nothing else that acts."""
    assert_markup_inert(markdown, {"pre", "/pre"})
    headings = heading_set(outside_pre(markdown))
    assert len(headings) == 1 + listings, headings


def assert_snippet_inert(text: str, table_id: str) -> None:
    """A table's own file: the snippet markers around an inert table and its notes."""
    lines = text.splitlines()
    assert lines[0] == f"<!-- --8<-- [start:{table_id}] -->"
    assert lines[-1] == f"<!-- --8<-- [end:{table_id}] -->"
    body = "\n".join(lines[1:-1])
    assert "<!--" not in body and "-->" not in body
    assert_markup_inert(body, set())
    assert not heading_set(body)


FORMULA = ("=", "+", "@", "\t", "\r")


def assert_csv_safe(text: str) -> None:
    """Every record as wide as the header, and no field a spreadsheet would run as a formula
    (a field starting with "-" is a number)."""
    records = list(csv.reader(io.StringIO(text)))
    assert records and all(len(r) == len(records[0]) for r in records)
    for record in records:
        for field in record:
            assert not field.startswith(FORMULA), field
            if field.startswith("-"):
                float(field)
            assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", field)


def assert_json_valid(text: str) -> dict:
    data = json.loads(text)  # strict: NaN or Infinity would fail below
    assert "NaN" not in text and "Infinity" not in text
    errors = [e.message for e in report_validator().iter_errors(data)]
    assert not errors, errors[:3]
    return data


def exports_of(docs: list, load_problems: list[str] | None = None) -> tuple[Report, dict]:
    """The report of ``docs`` and every file an export writes but the HTML, by name."""
    report = build_report(docs, load_problems=load_problems)
    files = {"REPORT.md": render_markdown(report), "disassembly.md": render_disassembly(report),
             "report.json": render_json(report)}
    for table in report.tables():
        files[f"tables/{table.id}.md"] = table_snippet(table)
        files[f"tables/{table.id}.csv"] = render_csv(table)
    return report, files


def assert_exports_inert(docs: list, load_problems: list[str] | None = None, *,
                         schema: bool = True, own_markdown: str | None = None) -> dict:
    """Every export of ``docs`` inert; ``schema``: report.json checked against its schema too
    (the slow part: the loops over every field leave it to the other tests)."""
    report, files = exports_of(docs, load_problems)
    assert_inert(files["REPORT.md"], own_markdown)
    assert_disassembly_inert(files["disassembly.md"], len(report.listings()))
    for table in report.tables():
        assert_snippet_inert(files[f"tables/{table.id}.md"], table.id)
        assert_csv_safe(files[f"tables/{table.id}.csv"])
    if schema:
        assert_json_valid(files["report.json"])
    else:
        json.loads(files["report.json"])
    return files


def render_html_of(docs: list, load_problems: list[str] | None = None) -> str:
    return render_html(build_report(docs, load_problems=load_problems))


@functools.cache
def own_html() -> str:
    return render_html_of(fixtures())


def assert_html_inert(page: str) -> None:
    """No tag an environment wrote: the page's own single script, no image, no live link."""
    lowered = page.lower()
    assert lowered.count("<script") == own_html().lower().count("<script")
    assert "<img" not in lowered and "<iframe" not in lowered
    assert not re.search(r"(?i)(href|src)\s*=\s*[\"']?\s*(javascript|https?):", page)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", page)


def with_problems(docs: list[dict], text: str) -> None:
    """Give the fixtures something to say in the Problems section, and a failed run."""
    for doc in docs:
        doc["errors"] = [text]
        doc["log_tail"] = [text, "last"]
        doc["run"]["status"] = "failed"
