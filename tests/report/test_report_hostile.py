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
import io
import json
import re
import subprocess
import sys

import pytest
from fakes import DATA, REPORT_FIXTURES, markdown_cells, markdown_tables
from fakes import report_fixtures as fixtures
from hostile_support import (
    DELETE,
    HOSTILE,
    MEDLEY,
    assert_exports_inert,
    assert_html_inert,
    assert_inert,
    exports_of,
    nodes,
    own,
    own_html,
    render_html_of,
    replace,
    scalar_paths,
    string_paths,
    with_problems,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdsomatrix.report import build_report, render_report
from vdsomatrix.report.cells import MISSING, cell, code_block
from vdsomatrix.report.exports import (
    table_snippet,
)
from vdsomatrix.report.model import Report
from vdsomatrix.results import check_document

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
    with_problems(docs, hostile)
    files = assert_exports_inert(docs, load_problems=[hostile])
    assert "## Problems\n\nNone." not in files["REPORT.md"]
    if hostile.startswith(("=", "+", "-", "@")):
        assert any(f"'{hostile[:10]}" in text for name, text in files.items()
                   if name.endswith(".csv"))


def test_hostile_text_in_each_field_alone():
    """One field at a time, every field: what one field controls is escaped where it shows."""
    docs = fixtures()
    with_problems(docs, "a problem")
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
