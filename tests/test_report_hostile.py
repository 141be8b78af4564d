"""The report against hostile and malformed result documents.

The fixtures are two real results of a full run (tests/data/result-*.json: a static-musl
container and a guest on the hpet clock source under TCG), with the shipped bytes (the vDSO image,
the compressed libc and loader) and the analysis's per-function table removed: the report renders
from ``doc["analysis"]``, which stays. Every string an environment wrote is replaced by hostile
text, every field by arbitrary JSON, fields are removed; the report must render each time, and
nothing an environment said may become markup, a link, a heading or a terminal escape.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import markdown_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdsomatrix.report import render_report
from vdsomatrix.report.cells import MISSING, cell, code_block, html_line
from vdsomatrix.results import check_document

DATA = Path(__file__).parent / "data"
FIXTURES = ("result-bookworm-musl.json", "result-k6.1-hpet.json")
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
# The only tags the report writes itself.
OWN_TAGS = {"details", "/details", "summary", "/summary", "pre", "/pre"}
LONGEST_RUN = 600  # the widest cell the report writes


@functools.cache
def _fixtures() -> tuple[dict, ...]:
    return tuple(json.loads((DATA / name).read_text("utf-8")) for name in FIXTURES)


def fixtures() -> list[dict]:
    return copy.deepcopy(list(_fixtures()))


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


def assert_inert(markdown: str) -> None:
    """Nothing in ``markdown`` that the report did not write itself: no tag, link, image, bare
    URL, heading, setext underline, table cell, code span or control character."""
    assert "could not be rendered" not in markdown
    tags = set(re.findall(r"<(/?[A-Za-z!][^\s>/]*)", markdown))
    assert tags <= OWN_TAGS, tags - OWN_TAGS
    assert markdown.count("<pre>") == markdown.count("</pre>")
    assert markdown.count("<details>") == markdown.count("</details>")
    assert not re.search(r"(?<!\\)\]\(", markdown), "a live [text](link)"
    assert "://" not in markdown, "a bare URL"
    assert not re.search(r"(?i)www\.", markdown), "a bare www. link"
    assert _headings(markdown) <= _headings(own()), _headings(markdown) - _headings(own())
    for heading in (h for h in _headings(own()) if h.startswith("## ")):
        assert heading in markdown.splitlines(), f"section lost: {heading}"
    outside = _outside_pre(markdown)
    assert not re.search(r"(?m)^ {0,3}(=+|-+)\s*$", outside), "a setext underline"
    for line in outside.splitlines():  # a list item's text opens no heading, list or quote
        item = re.match(r" {0,3}[-+*] +(.*)", line)
        assert not (item and re.match(r"\s*(#|>|[-+*=](\s|$)|\d+[.)](\s|$)|```|~~~)",
                                      item.group(1))), line
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", markdown), "a control character"
    assert not re.search(r"[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]", markdown)
    # the report's own code spans (some only shown when there is a number for them)
    assert len(re.findall(r"(?<!\\)`", outside)) <= len(re.findall(r"(?<!\\)`",
                                                                  _outside_pre(own())))
    assert "x" * (LONGEST_RUN + 1) not in markdown, "an unbounded value"
    for table in markdown_tables(markdown):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(widths) == 1, table


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
    assert "## 6. Binary analysis" in own()
    assert "### The `syscall()` wrapper" in own() and "<pre>" in own()
    assert "crashed (SIGSEGV)" in own()  # the hpet guest's legacy vsyscall calls


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h[:24]))
def test_hostile_text_in_every_field_at_once(hostile):
    docs = fixtures()
    for doc in docs:
        for path in scalar_paths(doc):
            replace(doc, path, hostile)
        # a few fields only the report's readers look for
        doc.setdefault("method", {})["batches"] = hostile
        doc["environment"]["matrix_cmdline"] = hostile
    markdown = render_report(docs, load_problems=[hostile])
    assert_inert(markdown)


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h[:24]))
def test_hostile_text_in_the_strings_only(hostile):
    """Strings only, so that rows are still found and their other fields still shown."""
    docs = fixtures()
    for doc in docs:
        for path in string_paths(doc):
            if path[-1] not in ("call", "path", "status", "backend", "type", "classification"):
                replace(doc, path, hostile)
    _with_problems(docs, hostile)
    markdown = render_report(docs, load_problems=[hostile])
    assert_inert(markdown)
    assert "## Problems\n\nNone." not in markdown


def test_hostile_text_in_each_field_alone():
    """One field at a time, every field: what one field controls is escaped where it shows."""
    docs = fixtures()
    _with_problems(docs, "a problem")
    corpus = (*HOSTILE, MEDLEY)
    count = 0
    for doc in docs:
        for path in scalar_paths(doc):
            hostile = corpus[count % len(corpus)]
            count += 1
            undo = replace(doc, path, hostile)
            try:
                assert_inert(render_report([doc]))
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
                assert_inert(render_report([doc]))
            except AssertionError as exc:
                raise AssertionError("/".join(map(str, path))) from exc
            undo()
    assert removed > 1000


def _column(markdown: str, label: str, environment: str) -> str:
    """The cell of row ``label`` in the column of ``environment``."""
    for table in markdown_tables(markdown):
        header = [c.strip() for c in table[0].strip("|").split("|")]
        if environment not in header:
            continue
        for line in table[2:]:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells[0] == label:
                return cells[header.index(environment)]
    raise AssertionError(f"no row {label!r} for {environment}")


@pytest.mark.parametrize("path, label", [
    (("environment", "kernel", "release"), "kernel"),
    (("environment", "kernel"), "clocksource"),
    (("environment", "libc"), "libc"),
    (("environment", "libc"), "linkage"),
    (("environment", "cpu"), "CPU"),
    (("environment", "userland"), "userland"),
    (("run",), "probed"),
    (("vdso", "size"), "size (bytes)"),
    (("vdso", "present"), "vDSO mapped (AT_SYSINFO_EHDR)"),
    (("vsyscall", "mode"), "mode (from /proc/self/maps)"),
    (("vsyscall", "readable"), "page readable"),
    (("calls",), "getppid, raw `syscall`"),
    (("calls",), "system calls counted per getppid"),
    (("calls",), "a legacy static binary calling it runs"),
    (("analysis",), "functions exported"),
])
def test_a_missing_field_is_the_mark(path, label):
    docs = fixtures()
    doc = docs[1]
    if path == ("environment", "userland"):
        doc["environment"].pop("suite", None)
    if path == ("calls",):
        doc["calls"] = []  # required by the schema: an environment that measured nothing
    else:
        replace(doc, path, DELETE)
    markdown = render_report(docs)
    assert _column(markdown, label, doc["environment"]["name"] + " †") == MISSING
    assert_inert(markdown)


def test_a_result_without_analysis_says_so_in_section_6():
    docs = fixtures()
    del docs[0]["analysis"]
    markdown = render_report(docs)
    section = markdown.split("## 6. Binary analysis", 1)[1].split("## Method", 1)[0]
    assert "- bookworm-musl: no analysis in this result" in section
    assert "k6.1-hpet" in section


def test_a_result_that_names_no_backend_keeps_its_column():
    docs = fixtures()
    failed = {"schema": "vdsomatrix/1", "environment": {"name": "k9-failed"}, "vdso": {},
              "vsyscall": {}, "calls": [], "errors": ["boot failed"],
              "run": {"status": "failed"}}
    assert check_document(failed) == []
    markdown = render_report([*docs, failed])
    assert "**Results that name no known backend**" in markdown
    assert _column(markdown, "status", "k9-failed") == "failed"
    assert _column(markdown, "kernel", "k9-failed") == MISSING
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
    markdown = render_report(docs)
    assert_inert(markdown)


def test_numbers_beyond_a_float_show_the_mark():
    docs = fixtures()
    for row in docs[1]["calls"]:
        if row["call"] == "getppid" and row["path"] == "syscall":
            row["ns"]["median"] = 10 ** 400
    markdown = render_report(docs)
    assert _column(markdown, "getppid, raw `syscall`", "k6.1-hpet †").startswith(f"{MISSING} ns")


# ------------------------------------------------------------------ any valid document ------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 1100), max_value=2 ** 1100)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(HOSTILE[:-1]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
PATHS = [p for p, _ in nodes(_fixtures()[1]) if p]


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
    assert_inert(render_report(docs))


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


def test_html_and_listing_lines_are_inert():
    assert html_line("a [b](c) #d http://e") == (
        "a &#91;b&#93;&#40;c&#41; &#35;d http&#58;//e")
    assert html_line("line\nbreak\tand tab") == "line break and tab"
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
        f"docs = [json.loads((Path({str(DATA)!r}) / n).read_text()) for n in {FIXTURES!r}]\n"
        "text = render_report(docs)\n"
        "assert '### vDSO symbols' in text, text\n"
        "loaded = [m for m in sys.modules\n"
        "          if m.split('.')[0] in ('capstone', 'elftools') or m == 'vdsomatrix.analysis']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)
