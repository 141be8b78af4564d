"""The report with arm64 results: architecture in every environment's identity, the section
across architectures computed from the rows, arm64 rows kept out of the x86_64 tables, the page
budget, and hostile text in an arm64 result.

The arm64 fixtures (tests/data/result-k6.1-arm64.json, result-k7.2-arm64.json) are real results
of the two arm64 guests, trimmed like the other report fixtures (no shipped bytes, no
per-function table).
"""

from __future__ import annotations

import copy
import json

import pytest
from fakes import DATA, markdown_cells, markdown_tables, report_fixtures
from hostile_support import HOSTILE, assert_exports_inert, string_paths
from test_i386_section import _full_matrix, section_text

from vdsomatrix.report import build_report, render_report
from vdsomatrix.report.exports import render_csv, render_markdown
from vdsomatrix.results import check_document

ARM64_FIXTURES = ("result-k6.1-arm64.json", "result-k7.2-arm64.json")


def arm64_docs(same_machine: bool = True) -> list[dict]:
    """The arm64 results; ``same_machine``: run on the machine of the other report fixtures
    (as they were: one machine), so that no label names its machine."""
    docs = [json.loads((DATA / name).read_text("utf-8")) for name in ARM64_FIXTURES]
    if same_machine:
        for doc in docs:
            doc["run"]["machine"] = copy.deepcopy(report_fixtures()[0]["run"]["machine"])
    return docs


def test_the_arm64_fixtures_are_results_with_every_row_measured_or_unsupported():
    for doc in arm64_docs():
        assert check_document(doc) == []
        env = doc["environment"]
        assert (env["arch"], env["abi"]) == ("arm64", "aarch64")
        rows = doc["calls"] + doc["entry_costs"]
        assert {r["status"] for r in rows} == {"ok", "unsupported"}
        assert all(r.get("reason") for r in rows if r["status"] == "unsupported")
        x86_only = [r for r in rows if r["path"] in ("int80", "kernel_vsyscall", "vsyscall")
                    or r["call"] == "cpuid"]
        assert x86_only and all(r["reason"] == "not on this architecture" for r in x86_only)
        assert doc["vsyscall"]["mode"] is None


def test_architecture_is_in_every_environments_identity():
    docs = report_fixtures() + arm64_docs()
    report = build_report(docs)
    table = next(t for t in report.tables() if t.id == "environments")
    arch = table.columns.index("arch")
    expected = {"bookworm-musl": "amd64", "k6.1-hpet": "amd64", "k6.1-arm64": "arm64",
                "k7.2-arm64": "arm64"}
    shown = {s.environment: row[arch].text for s, row in zip(table.subjects, table.rows,
                                                             strict=True)}
    assert shown == expected
    rows = list(csvrows(render_csv(table)))
    assert sorted(r["arch"] for r in rows) == sorted(expected.values())
    meta = {m["environment"]: (m["abi"], m["arch"], m["group"])
            for m in report.meta["environments"]}
    assert meta["k7.2-arm64"] == meta["k6.1-arm64"] == ("aarch64", "arm64", "arm64")
    assert meta["k6.1-hpet"] == ("x86_64", "amd64", "qemu")


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The first Markdown table of a page, a dict per row keyed by its header cells."""
    lines = markdown_tables(markdown)[0]
    header = markdown_cells(lines[0])
    return [dict(zip(header, markdown_cells(line), strict=True)) for line in lines[2:]]


def csvrows(text: str):
    import csv
    import io

    return csv.DictReader(io.StringIO(text))


def test_the_section_across_architectures_is_computed_from_the_rows():
    docs = report_fixtures() + arm64_docs()
    page = render_markdown(build_report(docs))
    section = section_text(page, "architectures")
    by_abi = {row["ABI"]: row for row in table_rows(section)}
    assert set(by_abi) == {"x86\\_64", "aarch64"}  # no i386 result: no row
    arm = by_abi["aarch64"]
    censuses = [d["analysis"]["libc"]["census"]["svc"] for d in arm64_docs()]
    assert arm["libc enters with"] == f"svc ×{min(censuses)}–{max(censuses)}"
    # getrandom is in the sid kernel's vDSO (7.2) and not in bookworm's (6.1)
    assert arm["vDSO functions"] == ("clock\\_getres, clock\\_gettime, gettimeofday; "
                                     "getrandom (1/2)")
    assert arm["no syscall"] == "2/2"
    assert "svc ×" not in by_abi["x86\\_64"]["libc enters with"]


def test_arm64_rows_are_in_none_of_the_x86_64_tables():
    x86 = render_report(report_fixtures())
    both = render_report(report_fixtures() + arm64_docs())
    for anchor in ("syscall-cost", "speedup", "latency", "binary-census"):
        assert section_text(x86, anchor) == section_text(both, anchor), anchor
    assert "k6.1-arm64" not in section_text(both, "latency")
    # the guests' rows are on the page only in their own section; their files keep them
    assert "The arm64 environments (2: k6.1-arm64 †, k7.2-arm64 †) are in" in both


def test_the_page_budget_holds_with_arm64_environments():
    docs = _full_matrix() + arm64_docs()
    page = render_markdown(build_report(docs))
    assert max(len(line) for line in page.splitlines()) <= 160
    assert len(page.encode("utf-8")) < 47_000  # see test_exports' committed-page budget
    section = section_text(page, "architectures")
    assert [row["ABI"] for row in table_rows(section)] == ["x86\\_64", "i386", "aarch64"]


@pytest.mark.parametrize("hostile", HOSTILE[:-1], ids=lambda h: repr(h[:24]))
def test_hostile_text_in_an_arm64_result_is_inert(hostile):
    """Every string of an arm64 result (its rows' calls, details and reasons, its CPU, its
    vDSO's symbol names and versions) replaced by hostile text: nothing becomes markup."""
    docs = report_fixtures() + arm64_docs()
    doc = docs[-1]
    for path in string_paths(doc):
        if path[:2] in (("environment", "abi"), ("environment", "arch")) or path[-1] in (
                "status", "path", "backend", "accel"):
            continue  # the report's own choices: enums it checks, not text it shows
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = hostile
    harmless = render_report(copy.deepcopy(docs[:-1]) + [arm64_docs()[-1]])
    assert_exports_inert(docs, own_markdown=harmless, schema=False)


def test_report_json_and_html_with_arm64_results():
    from fakes import report_validator

    from vdsomatrix.report.exports import render_json
    from vdsomatrix.report.html import render_html

    report = build_report(report_fixtures() + arm64_docs())
    data = json.loads(render_json(report))
    assert list(report_validator().iter_errors(data)) == []
    ids = [table_id for section in data["sections"] for table_id in section["tables"]]
    assert {"architectures", "architectures-environments", "architectures-arm64-paths"} <= set(ids)
    page = render_html(report)
    assert 'id="architectures"' in page
