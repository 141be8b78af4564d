"""The section registry (report/sections): the one list of the report's sections, in page order;
and the report package's imports, which form no circle."""

from __future__ import annotations

import ast
import json
import re
import types
from pathlib import Path

from fakes import report_fixtures
from i386_docs import i386_docs
from runtime_docs import matrix

from vdsomatrix.report import build_report, sections
from vdsomatrix.report.exports import render_json, render_markdown
from vdsomatrix.report.model import Section, Table, Value

REPORT = Path(__file__).resolve().parents[2] / "src" / "vdsomatrix" / "report"
ANCHOR = re.compile(r'<a id="([a-z0-9-]+)"></a>')


def every_section_docs() -> list[dict]:
    """Results that call for every optional section: 32-bit, arm64, runtimes, correctness,
    getrandom."""
    data = Path(__file__).resolve().parents[1] / "data"
    docs = [json.loads(p.read_text("utf-8")) for p in sorted(data.glob("result-*.json"))]
    return docs + i386_docs() + matrix()


def test_every_section_is_listed_once_with_a_title_and_a_condition():
    modules = {p.stem for p in (REPORT / "sections").glob("*.py")} - {"__init__"}
    assert sorted(sections.SECTION_MODULES) == sorted(modules)  # none left out, none twice
    ids = [s.ID for s in sections.SECTIONS]
    assert len(ids) == len(set(ids)) and tuple(ids) == sections.SECTION_IDS
    for section in sections.SECTIONS:
        assert section.TITLE and callable(section.included) and callable(section.build)


def test_the_report_shows_its_sections_in_registry_order():
    report = build_report(every_section_docs())
    ids = [s.id for s in report.sections]
    assert ids == [i for i in sections.SECTION_IDS if i in ids]
    assert {"runtimes", "i386", "architectures"} <= set(ids)
    assert report.parts == sections.SECTION_IDS
    for section in report.sections:
        registered = next(s for s in sections.SECTIONS if s.ID == section.id)
        assert section.title == registered.TITLE
        assert all(t.section == section.id for t in section.tables)
    page = render_markdown(report)
    anchors = [a for a in ANCHOR.findall(page) if a in sections.SECTION_IDS]
    assert anchors == [i for i in sections.SECTION_IDS if i in anchors]
    assert len(anchors) == len(set(anchors))
    # the parts of the page that are not Sections take their headings from the registry too
    assert report.titles == {s.ID: s.TITLE for s in sections.SECTIONS}
    for part in ("at-a-glance", "glossary", "method", "problems"):
        assert f'<a id="{part}"></a>\n\n## {report.titles[part]}\n' in page


def test_the_optional_sections_follow_the_results():
    plain = {s.id for s in build_report(report_fixtures()).sections}
    assert not plain & {"runtimes", "i386"}
    assert "i386" in {s.id for s in build_report(report_fixtures() + i386_docs()).sections}
    alone = {s.id for s in build_report(matrix()).sections}
    assert alone == {"environments", "runtimes"}  # runtime environments alone: no C sections


def fake_section() -> types.ModuleType:
    module = types.ModuleType("fake_section")
    module.ID = "fake"
    module.TITLE = "A section added in a test"
    module.included = lambda results: True
    module.build = lambda results: Section(module.ID, module.TITLE, [
        f"{len(results.results)} results."], [Table(
            "fake-table", "Fake", module.ID, "How many results?", ["results"], ["results"],
            [[Value(str(len(results.results)), number=len(results.results), unit="count")]])])
    return module


def test_a_section_added_to_the_registry_is_in_the_report(monkeypatch):
    before = sections.SECTIONS
    at = before.index(sections.latency) + 1
    monkeypatch.setattr(sections, "SECTIONS", before[:at] + (fake_section(),) + before[at:])
    report = build_report(report_fixtures())
    ids = [s.id for s in report.sections]
    assert ids[ids.index("latency") + 1] == "fake"
    assert "fake" in report.parts
    page = render_markdown(report)
    assert page.index('<a id="latency"></a>') < page.index('<a id="fake"></a>') < \
        page.index('<a id="binary-symbols"></a>')
    assert "## A section added in a test" in page and "2 results." in page
    assert "fake-table" in render_json(report)
    assert [s.id for s in report.only(["fake"]).sections] == ["fake"]


def test_a_section_left_out_by_its_condition_is_not_built(monkeypatch):
    never = fake_section()
    never.included = lambda results: False
    never.build = lambda results: (_ for _ in ()).throw(AssertionError("built"))
    monkeypatch.setattr(sections, "SECTIONS", sections.SECTIONS + (never,))
    assert "fake" not in [s.id for s in build_report(report_fixtures()).sections]


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The report modules a file imports, anywhere in it (lazy imports in functions too);
    ``from package import name`` counts as importing the submodule when there is one."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                      else node.module for a in node.names}
    return found & modules


def test_no_report_module_imports_itself_back():
    def name(path: Path) -> str:
        dotted = "vdsomatrix." + ".".join(path.relative_to(REPORT.parent).with_suffix("").parts)
        return dotted.removesuffix(".__init__")

    files = {name(p): p for p in REPORT.rglob("*.py")}
    graph = {m: imports_of(p, set(files)) for m, p in files.items()}
    # the registry imports its section modules by name (import_module)
    graph["vdsomatrix.report.sections"] |= {s.__name__ for s in sections.SECTIONS}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    assert "vdsomatrix.report.sections.vdso" in graph
    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert circles == []
