"""The binary-analysis sections of the report: real data renders, hostile data stays inert."""

from __future__ import annotations

import copy
import functools
import re

import pytest
from analysis_support import HOST_LIBC, host_ldso, host_vdso, make_doc, static_musl
from fakes import markdown_tables

from vdsomatrix.analysis import analyse_result
from vdsomatrix.report import build_report
from vdsomatrix.report.exports import render_disassembly, render_markdown

HOSTILE = "x|y<script>alert(1)</script>`rm -rf`[link](http://evil)\n| a | b |"


@functools.cache
def _real_docs() -> tuple[dict, ...]:
    docs = []
    if HOST_LIBC.exists():
        docs.append(make_doc("host", vdso=host_vdso(), libc=HOST_LIBC, ldso=host_ldso()))
    docs.append(make_doc("host-musl", vdso=host_vdso(), libc=static_musl(),
                         role="probe-binary", libc_name="musl", linkage="static"))
    docs.append(make_doc("host-musl-again", vdso=host_vdso(), libc=static_musl(),
                         role="probe-binary", libc_name="musl", linkage="static"))
    no_vdso = make_doc("k6.1-vdso0", vdso=None)
    no_vdso["artefacts"]["libc"] = {"path": "/lib/libc.so.6", "role": "shared-object",
                                    "error": "Permission denied"}
    docs.append(no_vdso)
    for doc in docs:
        doc["analysis"] = analyse_result(doc)
    return tuple(docs)


def real_docs() -> list[dict]:
    return copy.deepcopy(list(_real_docs()))


BINARY = ("binary-symbols", "binary-census", "binary-usage", "binary-entry-points")


def render_analysis(docs) -> str:
    """The binary sections of the documents as Markdown (every table shown, none linked), then
    the disassembly page."""
    report = build_report(docs).only(list(BINARY))
    return render_markdown(report, tables=None, disassembly=None) + render_disassembly(report)


def table(docs, table_id: str):
    return next(t for t in build_report(docs).tables() if t.id == table_id)


def _columns(line: str) -> int:
    """Number of cells in a table line, not counting escaped pipes."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def _assert_well_formed(markdown: str) -> None:
    tables = markdown_tables(markdown)
    assert tables
    for table in tables:
        widths = {_columns(line) for line in table}
        assert len(widths) == 1, table
    assert "<script" not in markdown.lower()
    # no live [text](link) outside <pre> (an HTML block, where Markdown is not rendered)
    outside_pre = re.sub(r"<pre>.*?</pre>", "", markdown, flags=re.S)
    assert not re.search(r"(?<!\\)\]\(", outside_pre)
    # every <details> closes, every <pre> closes
    assert markdown.count("<details>") == markdown.count("</details>")
    assert markdown.count("<pre>") == markdown.count("</pre>")


def test_real_results_render():
    markdown = render_analysis(real_docs())
    _assert_well_formed(markdown)
    for anchor in BINARY:
        assert f'<a id="{anchor}"></a>' in markdown
    assert "# The syscall() wrapper, per distinct libc" in markdown
    assert "LINUX\\_2.6" in markdown
    assert "k6.1-vdso0: no vDSO in this environment" in markdown
    assert "Permission denied" in markdown
    assert "vDSO, else syscall" in markdown
    # host-musl and host-musl-again share one libc: one listing for both
    assert markdown.count("In: host-musl, host-musl-again") == 1
    assert markdown.count("<pre>") == (2 if HOST_LIBC.exists() else 1)
    assert "syscall" in markdown.split("<pre>", 1)[1]
    # all three share the host's vDSO: one column of symbols for them
    symbols = table(real_docs(), "vdso-symbols")
    assert len(symbols.columns) == 2
    assert any(note.endswith(": host, host-musl, host-musl-again") or
               note.endswith(": host-musl, host-musl-again") for note in symbols.notes)


def test_hostile_names_stay_inert():
    docs = real_docs()
    doc = docs[1]
    doc["environment"]["name"] = HOSTILE
    doc["environment"]["libc"]["version"] = HOSTILE
    vdso = doc["analysis"]["vdso"]
    vdso["symbols"][0]["name"] = HOSTILE
    vdso["symbols"][1]["version"] = HOSTILE
    vdso["soname"] = HOSTILE
    libc = doc["analysis"]["libc"]
    libc["path"] = HOSTILE
    libc["sha256"] = HOSTILE
    libc["vdso_usage"]["requested"] = [HOSTILE]
    libc["vdso_usage"]["notes"] = [HOSTILE]
    libc["entry_points"]["syscall"]["listing"] = [HOSTILE, "</pre><script>x</script>", "`a`"]
    libc["entry_points"]["time"]["classification"] = HOSTILE
    docs[3]["analysis"]["errors"] = ["vdso image: " + HOSTILE]
    markdown = render_analysis(docs)
    _assert_well_formed(markdown)
    outside_pre = re.sub(r"<pre>.*?</pre>", "", markdown, flags=re.S)
    assert not re.search(r"(?<!\\)`rm", outside_pre)  # an environment's backticks are escaped
    assert "\\`rm -rf\\`" in markdown
    assert "&lt;/pre&gt;&lt;script&gt;" in markdown
    # a listing's title is a heading of the disassembly page: one line, escaped
    titles = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert titles and all("<" not in line for line in titles)


@pytest.mark.parametrize("analysis", [
    None, "text", [], {"vdso": "x", "libc": 5, "errors": "nope"},
    {"vdso": {"symbols": [None, 1, {"name": 3}, {"name": "ok", "type": "FUNC"}]},
     "libc": {"census": {"syscall": "many"}, "entry_points": {"syscall": {"listing": "x"}},
              "vdso_usage": {"offered": None, "requested": [1, None]}}, "errors": [None]},
])
def test_malformed_analysis_never_crashes(analysis):
    docs = real_docs()
    docs[0]["analysis"] = analysis
    markdown = render_analysis(docs + [{"no": "environment"}, None, 42])
    _assert_well_formed(markdown)


def test_empty_and_unanalysed():
    empty = render_analysis([])
    assert "No environment has an analysed vDSO." in empty
    markdown = render_analysis([make_doc("bare")])
    assert "bare: no analysis in this result" in markdown
    assert "No libc was disassembled." in markdown


def _row(call: str, path: str, syscalls, status: str = "ok") -> dict:
    return {"call": call, "path": path, "status": status, "syscalls_per_call": syscalls}


def _entry_table(docs) -> dict[str, list[str]]:
    """The entry-point table as environment -> its cells (syscall(), clock_gettime, measured,
    gettimeofday, measured, time, measured)."""
    rows = table(docs, "binary-entry-points").rows
    return {row[0].text: [v.text for v in row[1:]] for row in rows}


def test_usage_says_which_object_asks():
    if not HOST_LIBC.exists():
        pytest.skip(f"{HOST_LIBC} does not exist on this machine")
    usage = table(real_docs(), "binary-usage")
    host = next(row for row in usage.rows if row[0].text == "host")
    asks = host[usage.columns.index("asks for")].text.split(", ")
    assert "clock_gettime°" in asks  # only ld.so asks for it
    assert "time" in asks  # libc asks too: no mark
    # ld.so was analysed: no undercount note for host (still there for older results)
    assert not any(note.startswith("host:") and "undercount" in note for note in usage.notes)


def test_old_results_without_ldso_still_render():
    docs = real_docs()
    docs[0]["analysis"]["libc"]["vdso_usage"].pop("requested_by", None)
    docs[0]["analysis"]["libc"]["vdso_usage"].pop("objects", None)
    docs[0]["analysis"].pop("ldso", None)
    markdown = render_analysis(docs)
    _assert_well_formed(markdown)


def test_entry_points_show_the_measurement_beside_the_static_reading():
    docs = real_docs()
    musl = docs[1]
    musl["calls"] = [_row("clock_gettime(CLOCK_MONOTONIC)", "libc", 0),
                     _row("clock_gettime(CLOCK_MONOTONIC)", "vdso", 0),
                     _row("gettimeofday", "libc", 1), _row("gettimeofday", "vdso", 1),
                     _row("time", "libc", 1), _row("time", "vdso", 0)]
    # a static reading the measurement contradicts, as gettimeofday of glibc 2.41 once was
    again = docs[2]
    again["analysis"]["libc"]["entry_points"]["gettimeofday"]["classification"] = "syscall"
    again["calls"] = [_row("gettimeofday", "libc", 0.0), _row("time", "libc", None),
                      _row("clock_gettime(CLOCK_MONOTONIC)", "libc", None, "crashed")]
    no_vdso = docs[3]
    no_vdso["calls"] = [_row("time", "libc", 1),
                        _row("time", "vdso", None, "unsupported")]
    markdown = render_analysis(docs)
    _assert_well_formed(markdown)
    rows = _entry_table(docs)
    syscall_fn, cgt, cgt_m, gtod, gtod_m, time_, time_m = rows["host-musl"]
    assert syscall_fn == "syscall"  # syscall() itself is not measured: no column for it
    assert (cgt, cgt_m) == ("vDSO, else syscall", "no syscall")  # traps not counted here
    # the vDSO itself fell back to the kernel here (a clock source it cannot read): agreement
    assert (gtod, gtod_m) == ("vDSO, else syscall", "syscall")
    # the vDSO answered without the kernel, the libc call did not: the reading is wrong
    assert (time_, time_m) == ("vDSO, else syscall", "syscall (disagrees)")
    _s, cgt, cgt_m, gtod, gtod_m, time_, time_m = rows["host-musl-again"]
    assert (gtod, gtod_m) == ("syscall", "no syscall (disagrees)")
    assert time_m == "not counted"
    assert cgt_m == "crashed"
    # no libc analysis, yet the measurement is still shown; no vDSO: the fallback, agreement
    assert rows["k6.1-vdso0"][5:] == ["—", "syscall"]
    notes = table(docs, "binary-entry-points").notes
    after = notes[notes.index(next(n for n in notes if n.startswith("Static reading"))) + 1:]
    assert after == ["host-musl: time: static vdso-then-syscall-fallback, measured syscall",
                     "host-musl-again: gettimeofday: static syscall, measured no syscall"]
    if HOST_LIBC.exists():  # the real host libc: IFUNCs read as the vDSO, no measurement here
        assert rows["host"][3:5] == ["IFUNC to vDSO", "not measured"]


@pytest.mark.parametrize("calls", [None, "x", [None, 1, "row"],
                                   [{"call": "time", "path": "libc", "status": "ok",
                                     "syscalls_per_call": True}],
                                   [{"call": "time", "path": "libc", "status": HOSTILE,
                                     "syscalls_per_call": "many"}]])
def test_hostile_calls_in_entry_points(calls):
    docs = real_docs()
    docs[1]["calls"] = calls
    markdown = render_analysis(docs)
    _assert_well_formed(markdown)
    assert "<script" not in markdown
