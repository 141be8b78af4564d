"""The report's exports: `vdsomatrix report --format/--section/--layout/--out`, the per-table
files a docs site includes, CSV with numbers apart from mechanisms, report.json against its
schema, results of several machines merged, and a readable REPORT.md of the full matrix."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path

import pytest
from fakes import markdown_tables, report_validator
from fakes import report_fixtures as fixtures

from vdsomatrix.cli import main
from vdsomatrix.report import build_report, measurements
from vdsomatrix.report.exports import (
    FORMATS,
    csv_text,
    parse_formats,
    render_csv,
    render_json,
    render_markdown,
)
from vdsomatrix.report.sections import SECTION_IDS
from vdsomatrix.results import load_results

ROOT = Path(__file__).resolve().parents[2]
# included by id by the MkDocs site
DOCS_TABLES = ("vdso", "vsyscall", "syscall-cost", "entry-cost", "latency-getrandom")
# The ones the report fixtures (results from before entry costs and getrandom rows) have.
FIXTURE_DOCS_TABLES = DOCS_TABLES[:3]


def schema_errors(data: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}"
            for e in report_validator().iter_errors(data)]


def write_results(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"{i}-{doc['environment']['name']}.json").write_text(json.dumps(doc))
    return folder


def run_report(tmp_path: Path, *extra: str, docs: list[dict] | None = None) -> tuple[int, Path]:
    results = write_results(tmp_path / "results", docs if docs is not None else fixtures())
    out = tmp_path / "out"
    return main(["report", "--results", str(results), "--out", str(out), *extra]), out


def files_under(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ the command -------------

def test_every_format_by_default(tmp_path, capsys):
    code, out = run_report(tmp_path)
    assert code == 0
    report = build_report(fixtures())
    expected = {"REPORT.md", "REPORT.html", "disassembly.md", "report.json"}
    expected |= {f"tables/{t.id}.{ext}" for t in report.tables() for ext in ("md", "csv")}
    assert files_under(out) == expected
    assert schema_errors(json.loads((out / "report.json").read_text("utf-8"))) == []
    assert f"wrote {len(expected)} files" in capsys.readouterr().err


@pytest.mark.parametrize("formats, kinds", [
    (["--format", "md"], {"md"}),
    (["--format", "csv,json"], {"csv", "json"}),
    (["--format", "csv", "--format", "json"], {"csv", "json"}),
    (["--format", " md , csv "], {"md", "csv"}),
])
def test_formats_choose_the_files(tmp_path, formats, kinds):
    code, out = run_report(tmp_path, *formats)
    assert code == 0
    written = files_under(out)
    assert ("REPORT.md" in written) == ("md" in kinds)
    assert ("disassembly.md" in written) == ("md" in kinds)
    assert ("report.json" in written) == ("json" in kinds)
    assert any(f.endswith(".csv") for f in written) == ("csv" in kinds)
    assert any(f.startswith("tables/") and f.endswith(".md") for f in written) == ("md" in kinds)
    assert "REPORT.html" not in written


@pytest.mark.parametrize("argv, fragment", [
    (["--format", "pdf"], "unknown format pdf (valid: md, html, csv, json)"),
    (["--format", "md,xml"], "unknown format xml"),
    (["--section", "nowhere"], "unknown section nowhere (valid: " + ", ".join(SECTION_IDS)),
    (["--layout", "diagonal"], "invalid choice"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    try:
        code, out = run_report(tmp_path, *argv)
    except SystemExit as exc:  # argparse exits by itself
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_parse_formats():
    assert parse_formats(None) == list(FORMATS)
    assert parse_formats(["json,md", "md"]) == ["md", "json"]
    with pytest.raises(ValueError, match="unknown format PDF"):
        parse_formats(["PDF"])


def test_html_is_rendered_from_the_same_model(tmp_path):
    code, out = run_report(tmp_path, "--format", "html")
    assert code == 0
    page = (out / "REPORT.html").read_text("utf-8")
    assert "bookworm-musl" in page and "k6.1-hpet" in page


def test_a_section_alone(tmp_path):
    code, out = run_report(tmp_path, "--section", "vdso", "--section", "syscall-cost",
                           "--format", "md,json")
    assert code == 0
    page = (out / "REPORT.md").read_text("utf-8")
    anchors = re.findall(r'<a id="([a-z0-9-]+)"></a>', page)
    # the section "syscall-cost" holds its table, the table "Why" and the linked cpu-security
    assert anchors == ["vdso", "syscall-cost", "entry-cost"]
    assert "## At a glance" not in page and "## Problems" not in page
    assert {p.name for p in (out / "tables").iterdir()} == {
        "vdso.md", "syscall-cost.md", "entry-cost.md", "cpu-security.md"}
    data = json.loads((out / "report.json").read_text("utf-8"))
    assert [t["id"] for t in data["tables"]] == ["vdso", "syscall-cost", "entry-cost",
                                                 "cpu-security"]
    assert schema_errors(data) == []


def test_layout_columns_shapes_the_page_not_the_data(tmp_path):
    code, out = run_report(tmp_path, "--layout", "columns", "--format", "md,csv")
    assert code == 0
    page = (out / "REPORT.md").read_text("utf-8")
    headers = [[c.strip() for c in t[0].strip("|").split("|")] for t in markdown_tables(page)]
    assert ["vDSO", "k6.1-hpet †"] in headers or ["environment", "k6.1-hpet †"] in headers
    records = list(csv.DictReader(io.StringIO((out / "tables" / "vdso.csv").read_text("utf-8"))))
    assert [r["environment"] for r in records] == ["bookworm-musl", "k6.1-hpet"]


# ------------------------------------------------------------------ the files ---------------

def test_each_table_file_is_a_snippet_section_by_its_id(tmp_path):
    code, out = run_report(tmp_path, "--format", "md")
    assert code == 0
    for table_id in FIXTURE_DOCS_TABLES:
        lines = (out / "tables" / f"{table_id}.md").read_text("utf-8").splitlines()
        assert lines[0] == f"<!-- --8<-- [start:{table_id}] -->"
        assert lines[-1] == f"<!-- --8<-- [end:{table_id}] -->"
        tables = markdown_tables("\n".join(lines[1:-1]))
        assert tables and all(t[0].startswith("| environment") for t in tables)


def test_csv_keeps_numbers_mechanisms_and_statuses_apart():
    report = build_report(fixtures())
    latency = next(t for t in report.tables() if t.id == "latency-gettimeofday")
    records = list(csv.DictReader(io.StringIO(render_csv(latency))))
    fields = records[0].keys()
    assert {"environment", "machine", "group", "emulated", "vdso_ns", "vdso_min_ns",
            "vdso_p90_ns", "vdso_mechanism", "vdso_status"} <= set(fields)
    hpet = next(r for r in records if r["environment"] == "k6.1-hpet")
    assert float(hpet["vdso_ns"]) > 0 and hpet["vdso_mechanism"] == "syscall"
    assert hpet["emulated"] == "true" and hpet["group"] == "qemu"
    assert (hpet["vsyscall_status"], hpet["vsyscall_detail"], hpet["vsyscall_ns"]) == (
        "crashed", "SIGSEGV", "")
    for table in report.tables():
        for record in csv.reader(io.StringIO(render_csv(table))):
            assert not any(re.search(r"\d ns\b|·", field) for field in record), record


def test_csv_text_cannot_be_a_formula():
    for text in ("=1+1", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx"):
        assert csv_text(text) == "'" + text
    assert csv_text("plain") == "plain" and csv_text("—") == ""


def test_report_json_has_the_tables_as_data_and_what_reproduces_them():
    docs = fixtures()
    musl, hpet = docs
    for doc in docs:
        doc["run"]["commit"] = "0123456789ab+dirty"
        doc["run"]["machine"] = {
            "id": "m-1", "label": None, "cpu": "AMD EPYC", "kernel": "6.18.44",
            "hypervisor": True, "mitigations": {"spectre_v2": "Mitigation: Retpolines"},
            "mitigations_param": "auto"}
    musl["environment"]["engine"] = {"version": "27.5.1"}
    musl["environment"]["description"] = "bookworm userland, musl, static"
    data = json.loads(render_json(build_report(docs)))
    assert schema_errors(data) == []
    meta = data["meta"]
    assert meta["vdsomatrix"] == ["0.1.0"] and meta["commits"] == ["0123456789ab+dirty"]
    assert meta["docker_engines"] == ["27.5.1"]
    assert meta["qemu"] == [hpet["environment"]["qemu"]["version"]]
    assert meta["machines"] == [{
        "name": "m-1", "id": "m-1", "label": None, "cpu": "AMD EPYC", "kernel": "6.18.44",
        "hypervisor": True, "mitigations": {"spectre_v2": "Mitigation: Retpolines"},
        "mitigations_param": "auto"}]
    described = {e["environment"]: e["description"] for e in meta["environments"]}
    assert described == {"bookworm-musl": "bookworm userland, musl, static", "k6.1-hpet": None}
    cost = next(t for t in data["tables"] if t["id"] == "syscall-cost")
    keys = [c["key"] for c in cost["columns"]]
    row = next(r for r in cost["rows"] if r["environment"] == "k6.1-hpet")
    cell = row["cells"][keys.index("getppid_syscall")]
    assert cell["unit"] == "ns" and cell["mechanism"] == "syscall" and cell["status"] == "ok"
    assert cell["min"] <= cell["number"] <= cell["p90"]


def test_older_results_name_their_machine_by_a_string():
    data = json.loads(render_json(build_report(fixtures())))
    assert schema_errors(data) == []
    assert data["meta"]["machines"][0]["id"] == "vm"
    assert data["machines"] == ["vm"]


# ------------------------------------------------------------------ several machines --------

def labelled(doc: dict, machine_id: str, label: str) -> dict:
    doc = copy.deepcopy(doc)
    doc["run"]["machine"] = {"id": machine_id, "label": label, "cpu": "cpu of " + label,
                             "kernel": "6.1", "hypervisor": False, "mitigations": {}}
    return doc


def test_results_of_two_machines_name_their_machine(tmp_path):
    musl, hpet = fixtures()
    docs = [labelled(musl, "ci-amd", "ci-amd"), labelled(musl, "ci-intel", "ci-intel"),
            labelled(hpet, "ci-amd", "ci-amd")]  # a --label is the id (machine.identity)
    loaded = load_results([write_results(tmp_path, docs)])
    assert len(loaded.documents) == 3  # one per (environment, machine)
    report = build_report(loaded.documents)
    assert report.machines == ["ci-amd", "ci-intel"]
    environments = report.tables()[0]
    assert environments.columns[:2] == ["environment", "machine"]
    labels = [row[0].text for row in environments.rows]
    assert labels == ["bookworm-musl @ ci-amd", "bookworm-musl @ ci-intel", "k6.1-hpet @ ci-amd †"]
    for table in report.tables():  # every row that names an environment names its machine
        for row, subject in zip(table.rows, table.subjects, strict=True):
            if subject is not None:
                assert " @ " in row[0].text and subject.machine in row[0].text
    page = render_markdown(report)
    assert "bookworm-musl @ ci-intel" in page and "on 2 machines" in page
    records = list(csv.DictReader(io.StringIO(render_csv(environments))))
    assert [(r["environment"], r["machine"]) for r in records] == [
        ("bookworm-musl", "ci-amd"), ("bookworm-musl", "ci-intel"), ("k6.1-hpet", "ci-amd")]
    data = json.loads(render_json(report))
    assert schema_errors(data) == []
    assert [m["id"] for m in data["meta"]["machines"]] == ["ci-amd", "ci-intel"]


def test_one_machine_changes_nothing():
    musl, hpet = fixtures()
    docs = [labelled(musl, "m-a", "ci-amd"), labelled(hpet, "m-a", "ci-amd")]
    report = build_report(docs)
    assert report.tables()[0].columns[1] != "machine"
    assert " @ " not in render_markdown(report)
    assert build_report(fixtures()).tables()[0].columns == report.tables()[0].columns


# ------------------------------------------------------------------ bad input ---------------

def test_a_broken_table_builder_is_a_problem_line_not_a_traceback(monkeypatch):
    def broken(results):
        raise KeyError("a bug")

    monkeypatch.setattr(measurements, "vdso_table", broken)
    report = build_report(fixtures())
    assert any("vdso could not be built: KeyError" in p.text for p in report.problems)
    assert report.section("vsyscall").tables  # the rest still stands
    page = render_markdown(report)
    assert "(this section could not be built: KeyError)" in page
    assert schema_errors(json.loads(render_json(report))) == []


# ------------------------------------------------------------------ the committed report ---

def committed(name: str) -> Path:
    path = ROOT / "reports" / name
    if not path.is_file():
        pytest.skip(f"{path} is not there: render it with `vdsomatrix report`")
    return path


def test_the_committed_report_is_readable():
    """REPORT.md of the full matrix: at most 48 KB (40 KB until the page also answered why a
    system call costs what it costs, getrandom and time namespaces; 44 KB until it also named
    each environment's architecture, compared x86_64, i386 and arm64, and had the correctness
    section: their long tables are files of their own), table lines of at most 160 characters,
    the answers first, the glossary before the first table, sections at stable anchors."""
    page = committed("REPORT.md").read_text("utf-8")
    assert len(page.encode("utf-8")) <= 48_000
    assert max(len(line) for line in page.splitlines() if line.startswith("|")) <= 160
    anchors = re.findall(r'<a id="([a-z0-9-]+)"></a>', page)
    sections = [a for a in anchors if a in SECTION_IDS]
    # each once, in the registry's order; the optional ones ("runtimes", ...) where the results
    # call for them
    assert sections == [s for s in SECTION_IDS if s in anchors]
    assert {"at-a-glance", "glossary", "environments", "vdso", "vsyscall", "syscall-cost",
            "speedup", "latency", "binary-entry-points", "method", "problems"} <= set(sections)
    assert page.index("## At a glance") < page.index("## How to read") < page.index("| ")
    assert "<pre>" not in page and "(disassembly.md)" in page
    for table_id in DOCS_TABLES:
        assert (ROOT / "reports" / "tables" / f"{table_id}.md").is_file()
    data = json.loads(committed("report.json").read_text("utf-8"))
    assert schema_errors(data) == []


def _copies(names: list[str]) -> list[dict]:
    """The first fixture (a container) under each name: rows that say the same thing."""
    docs = []
    for name in names:
        docs.append(copy.deepcopy(fixtures()[0]))
        docs[-1]["environment"]["name"] = name
    return docs


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<a id="{anchor}"></a>')
    return page[start:page.index('<a id="', start + 10)]


def test_the_page_folds_identical_rows_and_every_other_format_keeps_them():
    from vdsomatrix.report.exports import table_snippet

    names = ["c1", "c2", "c3", "c4", "c5"]
    report = build_report(_copies(names))
    page = render_markdown(report)
    libc = _section(page, "libc-path")
    rows = [line for line in libc.splitlines() if line.startswith("| c")]
    assert len(rows) == 1 and rows[0].startswith("| c1 … c5 (5) |"), rows
    assert ("Identical consecutive rows are folded on this page: 5 environments in 1 row, each "
            "named by its first and last environment and their count; "
            "[tables/libc-path.md](tables/libc-path.md) has a row per environment.") \
        in " ".join(libc.split())
    assert "c1 … c5 (5)" in _section(page, "vdso")  # a kernel property: the same vDSO
    # the vsyscall rows carry latencies: equal medians are chance, those rows never fold
    vsyscall = _section(page, "vsyscall")
    assert "folded" not in vsyscall and all(f"| {n} " in vsyscall for n in names)
    table = next(t for t in report.tables() if t.id == "libc-path")
    assert table.page_folds_identical_rows
    assert all(f"| {n} " in table_snippet(table) for n in names)
    assert len(render_csv(table).splitlines()) == 1 + len(names)
    data = json.loads(render_json(report))
    assert [r["environment"] for r in next(t for t in data["tables"]
                                           if t["id"] == "libc-path")["rows"]] == names
    assert sum(len(part.rows) for _, _, part in table.parts()) == len(names)  # HTML's view
    # no table files, nothing to link: the page shows every row
    assert "folded" not in render_markdown(report, tables=None)
    assert not any(t.page_folds_identical_rows for t in report.tables()
                   if t.id.startswith("latency-") or t.id in ("syscall-cost", "speedup"))


def test_only_consecutive_rows_with_equal_cells_fold():
    from vdsomatrix.report.model import Subject, Value, fold_identical, identical_runs

    def subject(name: str) -> Subject:
        return Subject(name, None, "docker", False, "native", name)

    yes, no = Value("user", mechanism="user", status="ok"), Value("syscall", mechanism="syscall")
    timed = Value("5 ns user", number=5.0, unit="ns", mechanism="user", status="ok")
    rows = [[Value(n), *cells] for n, cells in (
        ("a", [yes]), ("b", [yes]), ("c", [no]), ("d", [yes]), ("e", [yes]), ("f", [yes]),
        ("g", [timed]), ("h", [timed]))]
    subjects = [subject(row[0].text) for row in rows]
    assert identical_runs(rows, subjects) == [[0, 1], [2], [3, 4, 5], [6], [7]]
    folded, who = fold_identical(rows, subjects)
    assert [r[0].text for r in folded] == ["a … b (2)", "c", "d … f (3)", "g", "h"]
    assert [s.label for s in who] == ["a … b (2)", "c", "d … f (3)", "g", "h"]
    assert [r[1:] for r in folded] == [[yes], [no], [yes], [timed], [timed]]


def test_a_folded_page_in_columns_names_the_folded_column():
    report = build_report(_copies(["c1", "c2", "c3"]) + fixtures()[1:2]).with_layout("columns")
    libc = _section(render_markdown(report), "libc-path")
    header = next(line for line in libc.splitlines() if line.startswith("| "))
    assert "c1 … c3 (3)" in header and "| c2 " not in libc
    assert "Identical consecutive columns are folded on this page: 3 environments in 1 column" \
        in " ".join(libc.split())
