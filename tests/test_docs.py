"""The documentation site: mkdocs.yml and docs/ build with --strict, and the compatibility tables
page carries the tables exported to reports/tables/, included by their snippet sections."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

pytest.importorskip("mkdocs", reason="install the test extra: pip install -e '.[test]'")
pytest.importorskip("pymdownx", reason="install the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]
# The tables docs/tables.md includes, by file and section.
TABLE_IDS = ("vdso", "vsyscall", "syscall-cost", "entry-cost", "latency-getrandom",
             "architectures", "correctness", "correctness-error-paths", "runtimes")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-f", str(config), "-d", str(site)],
                          cwd=site.parent, capture_output=True, text=True, timeout=300)


def page_text(site: Path, page: str) -> str:
    """A built page's visible text: tags dropped, entities decoded, whitespace collapsed."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


def section(path: Path, section_id: str) -> list[str]:
    """The lines between a file's snippet markers for ``section_id``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if f"[start:{section_id}]" in line)
    end = next(i for i, line in enumerate(lines) if f"[end:{section_id}]" in line)
    return lines[start + 1:end]


def first_row_label(lines: list[str]) -> str:
    """The first cell of a Markdown table's first body row, as a reader sees it."""
    rows = [line for line in lines if line.lstrip().startswith("|")]
    body = [row for row in rows[1:] if not re.fullmatch(r"[\s|:\-]+", row)]
    assert body, "the table has no rows"
    cell = body[0].strip().strip("|").split("|")[0]
    return re.sub(r"\\(.)", r"\1", cell).replace("`", "").replace("*", "").strip()


def site_copy(tmp_path: Path, tables: dict[str, str]) -> Path:
    """mkdocs.yml and docs/ copied beside a reports/tables/ holding ``tables``."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    folder = project / "reports" / "tables"
    folder.mkdir(parents=True)
    for table_id, text in tables.items():
        (folder / f"{table_id}.md").write_text(text, encoding="utf-8")
    return project / "mkdocs.yml"


def exported(table_id: str, first: str) -> str:
    """A table as the exporter writes it: a section between snippet markers."""
    return (f"Text before the section, which the site leaves out ({table_id}).\n"
            f"<!-- --8<-- [start:{table_id}] -->\n"
            f"| environment | {table_id} |\n|---|---|\n| {first} | yes |\n| host | no |\n"
            f"<!-- --8<-- [end:{table_id}] -->\n")


def test_the_tables_page_includes_each_table_by_its_section(tmp_path):
    firsts = {"vdso": r"k6.1-acpi\_pm", "vsyscall": "bookworm-musl", "syscall-cost": "k5.10",
              "entry-cost": "trixie-timens", "latency-getrandom": "k6.1-nomitigations",
              "runtimes": "sid-runtimes", "architectures": "aarch64",
              "correctness": "k6.1-arm64", "correctness-error-paths": "clock_gettime"}
    config = site_copy(tmp_path, {i: exported(i, firsts[i]) for i in TABLE_IDS})
    result = build(config, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    text = page_text(tmp_path / "site", "tables")
    for table_id in TABLE_IDS:
        assert first_row_label(exported(table_id, firsts[table_id]).splitlines()) in text
        assert f"which the site leaves out ({table_id})" not in text
    assert "<table>" in (tmp_path / "site" / "tables" / "index.html").read_text()


def test_a_missing_table_fails_the_build(tmp_path):
    config = site_copy(tmp_path, {i: exported(i, "host") for i in TABLE_IDS if i != "vsyscall"})
    result = build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "reports/tables/vsyscall.md" in result.stderr


def test_a_table_without_its_section_fails_the_build(tmp_path):
    tables = {i: exported(i, "host") for i in TABLE_IDS}
    tables["vdso"] = "| environment | vdso |\n|---|---|\n| host | yes |\n"
    result = build(site_copy(tmp_path, tables), tmp_path / "site")
    assert result.returncode != 0
    assert "vdso" in result.stderr


def test_the_site_builds_with_tables_the_exporter_writes(tmp_path):
    usage = subprocess.run([sys.executable, "-m", "vdsomatrix", "report", "--help"],
                           capture_output=True, text=True, timeout=60).stdout
    if "--format" not in usage:
        pytest.skip("this vdsomatrix exports no tables (report has no --format)")
    config = site_copy(tmp_path, {})
    reports = config.parent / "reports"
    result = subprocess.run([sys.executable, "-m", "vdsomatrix", "report", "--results",
                             str(ROOT / "tests" / "data"), "--out", str(reports), "--format", "md"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    result = build(config, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    text = page_text(tmp_path / "site", "tables")
    for table_id in TABLE_IDS:
        label = first_row_label(section(reports / "tables" / f"{table_id}.md", table_id))
        assert label in text, f"{table_id}: {label!r} is not on the tables page"


def test_the_site_builds_with_the_exported_tables(tmp_path):
    tables = ROOT / "reports" / "tables"
    if not (tables / "vdso.md").is_file():
        require("exported tables", f"{tables / 'vdso.md'} is missing: export the tables with "
                "`vdsomatrix report` and commit reports/tables/")
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    text = page_text(tmp_path / "site", "tables")
    for table_id in TABLE_IDS:
        label = first_row_label(section(tables / f"{table_id}.md", table_id))
        assert label in text, f"{table_id}: {label!r} is not on the tables page"


def test_the_overview_gives_the_readmes_two_commands():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("bash .ci/setup-machine && nox\n",
                    "bash .ci/setup-machine && nox -s lint tests\n"):
        assert command in readme and command in index
