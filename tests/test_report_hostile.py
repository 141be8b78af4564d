"""The report against hostile and malformed result documents, in every format it exports.

The fixtures are two real results of a full run (tests/data/result-*.json: a static-musl
container and a guest on the hpet clock source under TCG), with the shipped bytes (the vDSO image,
the compressed libc and loader) and the analysis's per-function table removed: the report renders
from ``doc["analysis"]``, which stays. Every string an environment wrote is replaced by hostile
text, every field by arbitrary JSON, fields are removed; the report must render each time, and
nothing an environment said may become markup, a link, a heading or a terminal escape: not in
REPORT.md, the disassembly page or a table's snippet file, not a formula in a CSV cell, and
report.json stays valid (and valid against its schema).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import subprocess
import sys
from typing import Any

import pytest
from fakes import DATA, REPORT_FIXTURES, markdown_cells, markdown_tables, report_validator
from fakes import report_fixtures as fixtures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdsomatrix.report import build_report, render_report
from vdsomatrix.report.cells import MISSING, cell, code_block
from vdsomatrix.report.exports import (
    render_csv,
    render_disassembly,
    render_json,
    render_markdown,
    table_snippet,
)
from vdsomatrix.report.html import render_html
from vdsomatrix.report.model import Report
from vdsomatrix.results import check_document

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


def _parent(doc: Any, path: tuple) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


DELETE = object()  # as a new value: remove the key


def replace(doc: dict, path: tuple, value: Any):
    """Put ``value`` at ``path`` (``DELETE`` removes the key); returns the undo, or None when
    the path no longer leads anywhere (an earlier change replaced a parent)."""
    try:
        parent = _parent(doc, path)
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

def _outside_pre(markdown: str) -> str:
    return re.sub(r"<pre>.*?</pre>", "", markdown, flags=re.S)


def _headings(markdown: str) -> set[str]:
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
    outside = _outside_pre(markdown)
    # the report's own links are to its own files (tables/<id>.md, disassembly.md) and to
    # its own sections' anchors (#<id>: where a table's left-out rows are summed up)
    links = re.findall(r"(?<!\\)\]\(([^)]*)\)", outside)
    assert all(re.fullmatch(r"(tables/[a-z0-9-]+\.md|disassembly\.md|#[a-z0-9-]+)", link)
               for link in links), links
    assert not re.search(r"(?<!\\)\]\(", re.sub(r"\]\(#[a-z0-9-]+\)", "", _outside_pre(
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
                                                                  _outside_pre(own())))
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
    assert _headings(markdown) <= _headings(mine), _headings(markdown) - _headings(mine)
    for heading in (h for h in _headings(mine) if h.startswith("## ")):
        assert heading in markdown.splitlines(), f"section lost: {heading}"


def assert_disassembly_inert(markdown: str, listings: int) -> None:
    """disassembly.md: its title, one heading per listing, and nothing else that acts."""
    assert_markup_inert(markdown, {"pre", "/pre"})
    headings = _headings(_outside_pre(markdown))
    assert len(headings) == 1 + listings, headings


def assert_snippet_inert(text: str, table_id: str) -> None:
    """A table's own file: the snippet markers around an inert table and its notes."""
    lines = text.splitlines()
    assert lines[0] == f"<!-- --8<-- [start:{table_id}] -->"
    assert lines[-1] == f"<!-- --8<-- [end:{table_id}] -->"
    body = "\n".join(lines[1:-1])
    assert "<!--" not in body and "-->" not in body
    assert_markup_inert(body, set())
    assert not _headings(body)


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


def _with_problems(docs: list[dict], text: str) -> None:
    """Give the fixtures something to say in the Problems section, and a failed run."""
    for doc in docs:
        doc["errors"] = [text]
        doc["log_tail"] = [text, "last"]
        doc["run"]["status"] = "failed"


# ------------------------------------------------------------------ the tests ----------------

def test_the_fixtures_are_real_valid_results():
    docs = fixtures()
    for doc in docs:
        assert check_document(doc) == []
    assert_inert(own())
    files = assert_exports_inert(docs)
    assert '<a id="binary-symbols"></a>' in own() and "[disassembly.md](disassembly.md)" in own()
    assert "<pre>" not in own() and "<pre>" in files["disassembly.md"]
    assert "crashed (SIGSEGV)" in own()  # the hpet guest's legacy vsyscall calls
    assert_html_inert(own_html())


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h[:24]))
def test_hostile_text_in_every_field_at_once(hostile):
    docs = fixtures()
    for doc in docs:
        for path in scalar_paths(doc):
            replace(doc, path, hostile)
        # a few fields only the report's readers look for
        doc.setdefault("method", {})["batches"] = hostile
        doc["environment"]["matrix_cmdline"] = hostile
        doc["environment"]["description"] = hostile
        doc["run"]["machine"] = {"id": hostile, "label": hostile, "mitigations": {hostile: hostile}}
    assert_exports_inert(docs, load_problems=[hostile])
    assert_html_inert(render_html_of(docs, load_problems=[hostile]))


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h[:24]))
def test_hostile_text_in_the_strings_only(hostile):
    """Strings only, so that rows are still found and their other fields still shown."""
    docs = fixtures()
    for doc in docs:
        for path in string_paths(doc):
            if path[-1] not in ("call", "path", "status", "backend", "type", "classification"):
                replace(doc, path, hostile)
    _with_problems(docs, hostile)
    files = assert_exports_inert(docs, load_problems=[hostile])
    assert "## Problems\n\nNone." not in files["REPORT.md"]
    if hostile.startswith(("=", "+", "-", "@")):
        assert any(f"'{hostile[:10]}" in text for name, text in files.items()
                   if name.endswith(".csv"))


def test_hostile_text_in_each_field_alone():
    """One field at a time, every field: what one field controls is escaped where it shows."""
    docs = fixtures()
    _with_problems(docs, "a problem")
    corpus = (*HOSTILE, MEDLEY, "=HYPERLINK(\"http://e\")", "@SUM(A1)", "+1+cmd|' /C calc'!A0")
    count = 0
    for doc in docs:
        for path in scalar_paths(doc):
            hostile = corpus[count % len(corpus)]
            count += 1
            undo = replace(doc, path, hostile)
            try:
                assert_exports_inert([doc], schema=False)
            except AssertionError as exc:
                raise AssertionError(f"{'/'.join(map(str, path))} = {hostile[:40]!r}") from exc
            undo()
    assert count > 1000


def test_each_field_removed_alone():
    docs = fixtures()
    removed = 0
    for doc in docs:
        for path in [p for p, _ in nodes(doc) if p and isinstance(p[-1], str)]:
            undo = replace(doc, path, DELETE)
            if undo is None:
                continue
            removed += 1
            try:
                assert_exports_inert([doc], schema=False)
            except AssertionError as exc:
                raise AssertionError("/".join(map(str, path))) from exc
            undo()
    assert removed > 1000


def _cell(markdown: str, column: str, environment: str) -> str:
    """The cell in ``column`` of the row of ``environment``, in the page's tables."""
    for table in markdown_tables(markdown):
        header = markdown_cells(table[0])
        if column not in header:
            continue
        for line in table[2:]:
            cells = markdown_cells(line)
            if cells[0] == environment:
                return cells[header.index(column)]
    raise AssertionError(f"no column {column!r} for {environment}")


def value_of(report: Report, table_id: str, column: str, environment: str):
    """A cell of the model: table, column title, environment label."""
    table = next(t for t in report.tables() if t.id == table_id)
    row = next(r for r in table.rows if r[0].text == environment)
    return row[table.columns.index(column)]


@pytest.mark.parametrize("path, table, column", [
    (("environment", "kernel", "release"), "environments", "kernel"),
    (("environment", "kernel"), "environments", "clocksource"),
    (("environment", "libc"), "environments", "libc"),
    (("environment", "cpu"), "environments-run", "CPU"),
    (("environment", "userland"), "environments", "userland"),
    (("run",), "environments-run", "probed (UTC)"),
    (("vdso", "size"), "vdso", "size (bytes)"),
    (("vdso", "present"), "vdso", "mapped"),
    (("vsyscall", "mode"), "vsyscall", "mode"),
    (("vsyscall", "readable"), "vsyscall", "readable"),
    (("calls",), "syscall-cost", "getppid syscall (ns)"),
    (("calls",), "latency-getppid", "syscall"),
    (("calls",), "vsyscall", "legacy binary runs"),
    (("analysis",), "vdso", "functions"),
    (("analysis",), "binary-entry-points", "clock_gettime"),
])
def test_a_missing_field_is_the_mark(path, table, column):
    docs = fixtures()
    doc = docs[1]
    if path == ("environment", "userland"):
        doc["environment"].pop("suite", None)
    if path == ("calls",):
        doc["calls"] = []  # required by the schema: an environment that measured nothing
    else:
        replace(doc, path, DELETE)
    report, files = exports_of(docs)
    label = doc["environment"]["name"] + " †"
    value = value_of(report, table, column, label)
    assert value.text == MISSING and value.number is None
    assert_inert(files["REPORT.md"])
    # in the CSV, a missing value is an empty field
    rows = list(csv.DictReader(io.StringIO(files[f"tables/{table}.csv"])))
    row = next(r for r in rows if r["environment"] == doc["environment"]["name"])
    key = next(t for t in report.tables() if t.id == table).keys[
        next(t for t in report.tables() if t.id == table).columns.index(column)]
    fields = re.compile(re.escape(key) + r"(_(ns|x|bytes|min_\w+|p90_\w+|bound|text|mechanism"
                        r"|status|detail))?")
    assert [k for k in row if fields.fullmatch(k)]
    assert all(v == "" for k, v in row.items() if fields.fullmatch(k))
    # in the JSON, the cell says it is missing
    data = json.loads(files["report.json"])
    json_table = next(t for t in data["tables"] if t["id"] == table)
    json_row = next(r for r in json_table["rows"] if r["environment"] == doc["environment"]["name"])
    assert json_row["cells"][[c["key"] for c in json_table["columns"]].index(key)] == {
        "text": MISSING, "missing": True}


def test_a_result_without_analysis_says_so_under_the_binary_tables():
    docs = fixtures()
    del docs[0]["analysis"]
    report = build_report(docs)
    # the binary tables are linked from REPORT.md: their notes are in their own files
    for table in (t for t in report.tables() if t.section.startswith("binary-")):
        assert "- — bookworm-musl: no analysis in this result" in table_snippet(table), table.id
    assert "k6.1-hpet" in table_snippet(next(t for t in report.tables()
                                             if t.id == "vdso-symbols"))
    section = render_report(docs).split('<a id="binary-symbols"></a>', 1)[1]
    assert "The one vDSO exports clock\\_getres" in section.split('<a id="method">', 1)[0]


def test_a_result_that_names_no_backend_keeps_its_row():
    docs = fixtures()
    failed = {"schema": "vdsomatrix/1", "environment": {"name": "k9-failed"}, "vdso": {},
              "vsyscall": {}, "calls": [], "errors": ["boot failed"],
              "run": {"status": "failed"}}
    assert check_document(failed) == []
    markdown = render_report([*docs, failed])
    assert "**Results that name no known backend**" in markdown
    assert _cell(markdown, "status", "k9-failed") == "**failed**"
    assert _cell(markdown, "kernel", "k9-failed") == MISSING
    assert "- **k9-failed**: boot failed" in markdown


# Documents that crashed the report before, schema-valid or not: the report reads defensively.
@pytest.mark.parametrize("change", [
    {"environment": {"name": "e", "libc": "glibc", "userland": [1], "kernel": 6, "cpu": True}},
    {"environment": {"name": "e", "libc": {"name": {"a": 1}, "version": [2]},
                     "kernel": {"release": 6.1, "clocksource": None}, "cpu": {"model": []}}},
    {"method": [31]},
    {"method": {"batches": [31, 32]}},
    {"method": {"batches": "<script>alert(1)</script>"}},
    {"run": {"status": "failed", "concurrency": {"x": 1}, "started": 20240101}},
    {"vdso": {"present": True, "size": 10 ** 400}},
    {"vsyscall": "xonly"},
    {"calls": [{"call": "getppid", "path": "syscall", "status": "ok",
                "ns": {"min": 1e308, "median": 1e308, "p90": 1e308},
                "syscalls_per_call": 1e308, "faults_per_call": 1e308}]},
    {"calls": [{"call": "clock_gettime(CLOCK_MONOTONIC)", "path": p, "status": "ok",
                "ns": {"min": 10 ** 400, "median": 10 ** 400, "p90": -(10 ** 400)},
                "syscalls_per_call": 10 ** 400} for p in ("libc", "vdso", "syscall")]},
    {"calls": [{"call": "time", "path": "vdso", "status": "ok", "ns": [1, 2]}]},
    {"calls": "none"},
    {"errors": [{"a": 1}, None, 3], "log_tail": "tail"},
    {"analysis": {"vdso": [], "libc": {"census": [], "entry_points": {"syscall": []},
                                       "vdso_usage": {"offered": "all"}}, "errors": {}}},
])
def test_documents_that_crashed_the_report_render(change):
    docs = fixtures()
    docs[1].update(change)
    assert_exports_inert(docs)


def test_numbers_beyond_a_float_show_the_mark():
    docs = fixtures()
    for row in docs[1]["calls"]:
        if row["call"] == "getppid" and row["path"] == "syscall":
            row["ns"]["median"] = 10 ** 400
    markdown = render_report(docs)
    assert _cell(markdown, "syscall (ns)", "k6.1-hpet †") == MISSING  # the page's "entry-cost"
    report, _files = exports_of(docs)
    assert value_of(report, "latency-getppid", "syscall", "k6.1-hpet †").number is None
    assert value_of(report, "syscall-cost", "getppid syscall (ns)",
                    "k6.1-hpet †").text.startswith(f"{MISSING} (")


# ------------------------------------------------------------------ any valid document ------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 1100), max_value=2 ** 1100)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(HOSTILE[:-1]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
PATHS = [p for p, _ in nodes(fixtures()[1]) if p]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON | st.just(DELETE)),
                min_size=1, max_size=8))
def test_any_schema_valid_document_renders(changes):
    """Mutations of a real result, each kept only if the document stays schema-valid."""
    docs = fixtures()
    doc = docs[1]
    for path, value in changes:
        undo = replace(doc, path, value)
        if undo is not None and check_document(doc):
            undo()
    assert check_document(doc) == []
    assert_exports_inert(docs)


# ------------------------------------------------------------------ the escaper itself -------

def test_cell_escapes_everything_that_could_act():
    assert cell("<script>") == "&lt;script&gt;"
    assert cell("&lt;") == "&amp;lt;"
    assert cell("[x](javascript:a)") == "\\[x\\](javascript:a)"
    assert cell("a|b`c`*d*_e_~f~\\") == "a\\|b\\`c\\`\\*d\\*\\_e\\_\\~f\\~\\\\"
    assert cell("http://evil.example/ and www.evil.example") == (
        "http&#58;//evil.example/ and www&#46;evil.example")
    assert cell("WWW.X") == "WWW&#46;X"
    assert cell("a\nb\x1bc\u202ed") == "a b?c?d"
    assert cell("x" * 500, 10) == "x" * 9 + "…"
    assert cell({"a": 1}) == cell([1]) == cell(None) == cell(True) == ""
    assert cell(10 ** 5000) == "(a number too long to show)"
    assert cell(1.5) == "1.5"


def test_listing_lines_are_inert():
    block = code_block(["# heading", "  </pre><script>", "[x](y) www.e.x", "\x1b[0m"])
    assert block == ("<pre>\n&#35; heading\n  &lt;/pre&gt;&lt;script&gt;\n"
                     "&#91;x&#93;(y) www&#46;e.x\n?&#91;0m\n</pre>")


def test_rendering_reads_the_analysis_and_never_disassembles():
    """Section 6 comes from doc["analysis"]: rendering imports neither capstone nor the
    analysis, so it cannot silently lose the section for want of them."""
    program = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from vdsomatrix.report import render_report\n"
        f"docs = [json.loads((Path({str(DATA)!r}) / n).read_text()) for n in {REPORT_FIXTURES!r}]\n"
        "text = render_report(docs)\n"
        "assert '<a id=\"binary-symbols\"></a>' in text, text\n"
        "loaded = [m for m in sys.modules\n"
        "          if m.split('.')[0] in ('capstone', 'elftools') or m == 'vdsomatrix.analysis']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)


def test_hostile_text_in_the_facts_of_issue_13_is_inert():
    """What a probe says of its CPU, its time namespace, its entry costs and a container's
    seccomp profile reaches the page only as inert text, whatever it holds."""
    def with_facts(docs, text, i):
        doc = docs[i % len(docs)]
        env = doc["environment"]
        env["cpu_security"] = {"vulnerabilities": {text[:60] or "x": text, "spectre_v2": text},
                               "mitigations_cmdline": text, "hypervisor": True}
        env["time_namespace"] = {"requested": True, "entered": i % 2 == 0, "how": text,
                                 "reason": text, "offsets_applied": True,
                                 "observed_shift_ns": {"monotonic": 1, "boottime": text}}
        env["seccomp"] = {"profile": text}
        doc["entry_costs"] = [{"call": "cpuid", "path": "instruction", "status": "ok",
                               "detail": text, "ns": {"min": 1, "median": 2, "p90": 3},
                               "syscalls_per_call": 0}]
        doc["calls"] = list(doc["calls"]) + [
            {"call": "getrandom", "path": "vdso", "status": "unsupported", "reason": text}]
        return docs

    for i, text in enumerate(HOSTILE):
        harmless = render_report(with_facts(fixtures(), "harmless", i))
        assert_exports_inert(with_facts(fixtures(), text, i), own_markdown=harmless)
