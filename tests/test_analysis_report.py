"""The analysis sections of the report: real data renders, hostile data stays inert."""

from __future__ import annotations

import copy
import functools
import re

import pytest
from analysis_support import HOST_LIBC, host_vdso, make_doc, static_musl

from vdsomatrix.analysis import analyse_result
from vdsomatrix.analysis.report import render_analysis

HOSTILE = "x|y<script>alert(1)</script>`rm -rf`[link](http://evil)\n| a | b |"


@functools.cache
def _real_docs() -> tuple[dict, ...]:
    docs = []
    if HOST_LIBC.exists():
        docs.append(make_doc("host", vdso=host_vdso(), libc=HOST_LIBC))
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


def _tables(markdown: str) -> list[list[str]]:
    """Markdown tables as lists of their lines."""
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _columns(line: str) -> int:
    """Number of cells in a table line, not counting escaped pipes."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def _assert_well_formed(markdown: str) -> None:
    tables = _tables(markdown)
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
    assert "could not be rendered" not in markdown


def test_empty_and_unanalysed():
    assert "No results" in render_analysis([])
    markdown = render_analysis([make_doc("bare")])
    assert "bare: no analysis in this result" in markdown
    assert "No libc was disassembled." in markdown
