"""Section 6 of the report (binary analysis): real data renders, hostile data stays inert."""

from __future__ import annotations

import copy
import functools
import re

import pytest
from analysis_support import HOST_LIBC, host_ldso, host_vdso, make_doc, static_musl
from fakes import markdown_tables

from vdsomatrix.analysis import analyse_result
from vdsomatrix.report.binary import render_analysis as render_results
from vdsomatrix.report.cells import read_results

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


def render_analysis(docs) -> str:
    """Section 6 of the documents, read as the page reads them."""
    return render_results(read_results(docs))


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
    for heading in ("### vDSO symbols", "### Kernel-entry instructions",
                    "### vDSO: what the kernel offers", "### The `syscall()` wrapper"):
        assert heading in markdown
    assert "LINUX\\_2.6" in markdown
    assert "k6.1-vdso0: no vDSO in this environment" in markdown
    assert "Permission denied" in markdown
    assert "vdso-then-syscall-fallback" in markdown
    # host-musl and host-musl-again share one libc: one listing for both
    assert markdown.count("in host-musl, host-musl-again") == 1
    assert markdown.count("<details>") == (2 if HOST_LIBC.exists() else 1)
    assert "syscall" in markdown.split("<pre>", 1)[1]


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
    summary = [line for line in markdown.splitlines() if line.startswith("<summary>")]
    assert summary and all(line.endswith("</summary>") and line.count("<") == 2
                           for line in summary)


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
    assert "No results" in render_analysis([])
    markdown = render_analysis([make_doc("bare")])
    assert "bare: no analysis in this result" in markdown
    assert "No libc was disassembled." in markdown


def _row(call: str, path: str, syscalls, status: str = "ok") -> dict:
    return {"call": call, "path": path, "status": status, "syscalls_per_call": syscalls}


def _entry_table(markdown: str) -> dict[str, list[str]]:
    """The entry-point table as environment -> its cells (syscall(), clock_gettime, ...)."""
    section = markdown.split("### How the libc's entry points", 1)[1]
    table = markdown_tables(section)[0]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0]] = cells[1:]
    return rows


def test_usage_says_which_object_asks():
    if not HOST_LIBC.exists():
        pytest.skip(f"{HOST_LIBC} does not exist on this machine")
    markdown = render_analysis(real_docs())
    usage = markdown.split("### vDSO: what the kernel offers", 1)[1].split("###", 1)[0]
    host = [line for line in usage.splitlines() if line.startswith("| host ")][0]
    assert "\\_\\_vdso\\_clock\\_gettime (ld.so)" in host
    assert "(libc, ld.so)" in host
    # ld.so was analysed: no undercount note for host (still there for older results)
    assert not any(line.startswith("- host:") and "undercount" in line
                   for line in usage.splitlines())


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
    table = _entry_table(markdown)
    syscall_fn, cgt, gtod, time_ = table["host-musl"]
    assert syscall_fn == "syscall; not measured"
    assert cgt == "vdso-then-syscall-fallback; measured: no syscall"
    # the vDSO itself fell back to the kernel here (a clock source it cannot read): agreement
    assert gtod == "vdso-then-syscall-fallback; measured: syscall"
    # the vDSO answered without the kernel, the libc call did not: the reading is wrong
    assert time_ == "vdso-then-syscall-fallback; measured: syscall (disagrees)"
    _s, cgt, gtod, time_ = table["host-musl-again"]
    assert gtod == "syscall; measured: no syscall (disagrees)"
    assert time_ == "vdso-then-syscall-fallback; system calls not counted"
    assert cgt == "vdso-then-syscall-fallback; measured: crashed"
    # no libc analysis, yet the measurement is still shown; no vDSO: the fallback, agreement
    assert table["k6.1-vdso0"][3] == "—; measured: syscall"
    footnote = markdown.split("Static reading and measurement disagree", 1)[1]
    assert "- host-musl: time: static vdso-then-syscall-fallback, measured syscall" in footnote
    assert "- host-musl-again: gettimeofday: static syscall, measured no syscall" in footnote
    assert footnote.count("\n- ") == 2
    if HOST_LIBC.exists():  # the real host libc: IFUNCs read as the vDSO, no measurement here
        assert table["host"][2] == "vdso-via-ifunc-resolver; not measured"


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
