"""The section "32-bit code" (issue 12): i386 environments, and the x86_64 tables without them."""

from __future__ import annotations

import csv
import io
import json

from fakes import markdown_tables, report_fixtures, report_validator
from i386_docs import HOSTILE, hostile_doc, i386_doc, i386_docs

from vdsomatrix.report import build_report
from vdsomatrix.report.exports import (
    render_csv,
    render_disassembly,
    render_json,
    render_markdown,
    table_snippet,
    write_exports,
)
from vdsomatrix.report.html import render_html

# The tables that answer for x86_64 processes alone: their rows and bytes must not move when
# 32-bit environments join the report.
X86_ONLY = ("syscall-cost", "speedup", "libc-path", "binary-census")


def section_text(page: str, anchor: str) -> str:
    start = page.index(f'<a id="{anchor}"></a>')
    return page[start:page.index('<a id="', start + 10)]


def x86_parts(report, table_id: str) -> list[str]:
    table = next(t for t in report.tables() if t.id == table_id)
    return [table_snippet(part) for group, _, part in table.parts() if group != "i386"]


def test_the_x86_64_tables_are_byte_identical_with_i386_environments_added():
    alone = build_report(report_fixtures())
    mixed = build_report(report_fixtures() + i386_docs())
    x86_tables = [t.id for t in alone.tables()
                  if t.id in X86_ONLY or t.id.startswith("latency-")]
    assert len(x86_tables) > 10
    for table_id in x86_tables:
        before = next(t for t in alone.tables() if t.id == table_id)
        after = next(t for t in mixed.tables() if t.id == table_id)
        assert table_snippet(after) == table_snippet(before), table_id
        assert render_csv(after) == render_csv(before), table_id
    # The entry points and the syscall() listings are of every libc: the 64-bit ones as they
    # were, the 32-bit ones added.
    before = next(t for t in alone.tables() if t.id == "binary-entry-points")
    after = next(t for t in mixed.tables() if t.id == "binary-entry-points")
    assert set(render_csv(before).splitlines()) <= set(render_csv(after).splitlines())
    assert len(render_csv(after).splitlines()) > len(render_csv(before).splitlines())
    assert render_disassembly(alone).count("```") <= render_disassembly(mixed).count("```")
    # the vDSO and vsyscall tables have the 32-bit rows in a group of their own: the others
    # are as they were
    for table_id in ("vdso", "vsyscall"):
        assert x86_parts(mixed, table_id) == x86_parts(alone, table_id)
    for section in ("syscall-cost", "speedup", "latency"):
        assert section_text(render_markdown(mixed), section) == \
            section_text(render_markdown(alone), section)


def test_a_report_without_i386_environments_has_no_32_bit_section():
    report = build_report(report_fixtures())
    assert report.section("i386") is None
    page = render_markdown(report)
    assert "32-bit" not in page and "__kernel_vsyscall" not in page.replace("\\", "")
    assert all(e["abi"] == "x86_64" for e in report.meta["environments"])


def test_the_vdso_and_vsyscall_tables_show_the_32_bit_rows_as_such():
    report = build_report(report_fixtures() + i386_docs())
    vsyscall = next(t for t in report.tables() if t.id == "vsyscall")
    groups = {group: [row[0].text for row in part.rows] for group, _, part in vsyscall.parts()}
    assert groups["i386"] == ["bookworm-i386", "bookworm-i386-musl", "bookworm-i386-static"]
    part = next(p for g, _, p in vsyscall.parts() if g == "i386")
    legacy = part.rows[0][part.columns.index("legacy binary runs")]
    assert (legacy.text, legacy.status, legacy.strong) == ("unsupported", "unsupported", False)
    assert legacy.detail == "no vsyscall page for 32-bit processes"
    page = render_markdown(report)
    assert "**32-bit userlands in containers (this machine's kernel, IA32 emulation)**" in page
    symbols = next(t for t in report.tables() if t.id == "vdso-symbols")
    assert "vDSO 3b2a1f00 (32-bit)" in symbols.columns and "vDSO e95baaea" in symbols.columns
    assert {e["environment"]: (e["group"], e["abi"]) for e in report.meta["environments"]}[
        "bookworm-i386"] == ("i386", "i386")


def test_the_32_bit_section():
    report = build_report(report_fixtures() + i386_docs(),
                          order=["bookworm-musl", "bookworm-i386", "bookworm-i386-static",
                                 "bookworm-i386-musl", "k6.1-hpet"])
    section = report.section("i386")
    assert section.title == "32-bit code"
    assert [t.id for t in section.tables] == ["i386", "i386-paths", "i386-kernel-vsyscall",
                                             "i386-census"]
    assert [t.on_page for t in section.tables] == [True, False, False, False]
    paths = section.tables[0]
    # the two ways into the kernel, then what the page's vDSO and vsyscall tables leave out
    assert paths.columns == ["environment", "getppid int $0x80", "getppid vDSO", "vDSO",
                             "vsyscall"]
    first = paths.rows[0]
    assert [v.text for v in first] == ["bookworm-i386", "4812 ns syscall", "4650 ns syscall",
                                       "5 functions", "unsupported"]
    assert (first[1].number, first[1].mechanism, first[1].unit) == (4812.0, "syscall", "ns")
    assert paths.notes == ["vDSO: its functions include clock_gettime64 in all 3."]
    # every call by every path, clock_gettime64 among them, no vsyscall rows
    every = section.tables[1]
    assert "clock_gettime64(CLOCK_MONOTONIC) · int $0x80" in every.columns
    assert not any("vsyscall" in c and "__kernel" not in c for c in every.columns)
    assert len(set(every.keys)) == len(every.keys)
    assert every.parts()[0][2].columns[1:] == ["bookworm-i386", "bookworm-i386-static",
                                               "bookworm-i386-musl"]
    entry = section.tables[2]
    assert [r[2].text for r in entry.rows] == ["sysenter"] * 3
    assert entry.rows[0][3].text.startswith("push ecx; push edx; push ebp; mov ebp, esp; sysenter")
    census = {r[0].text: [v.text for v in r[2:]] for r in section.tables[3].rows}
    assert census["bookworm-i386"] == ["812", "2", "0", "0", "640"]
    assert census["bookworm-i386-musl"] == ["—", "97", "0", "0", "88"]
    assert section.intro[1] == ("The vDSO's __kernel_vsyscall, decoded from each process's live "
                                "copy, enters the kernel with sysenter in all 3.")

    page = render_markdown(report)
    text = section_text(page, "i386")
    assert "## 32-bit code" in text and "(tables/i386-paths.md)" in text
    assert "(tables/i386-census.md)" in text and "(tables/i386-kernel-vsyscall.md)" in text
    assert "clock\\_gettime64 ·" not in text  # the long table is linked, not shown
    assert max(len(line) for line in text.splitlines() if line.startswith("|")) <= 160
    assert len(text.encode()) < 2500
    assert page.index('<a id="latency"></a>') < page.index('<a id="i386"></a>') < \
        page.index('<a id="binary-symbols"></a>')
    assert "**\\_\\_kernel\\_vsyscall**: the 32-bit vDSO's way into the kernel" in page


def test_what_kernel_vsyscall_executes_comes_from_the_analysis_not_the_cpu():
    amd = i386_doc("trixie-i386", enters="syscall")  # the fixture's CPU says AuthenticAMD
    intel = i386_doc("trixie-i386-static", enters="sysenter")
    assert amd["environment"]["cpu"]["vendor"] == intel["environment"]["cpu"]["vendor"]
    bare = i386_doc("trixie-i386-musl")
    del bare["analysis"]["vdso"]["kernel_vsyscall"]
    report = build_report([amd, intel, bare])
    assert report.section("i386").intro[1] == (
        "The vDSO's __kernel_vsyscall, decoded from each process's live copy, enters the kernel "
        "with syscall in trixie-i386; sysenter in trixie-i386-static; not decoded in "
        "trixie-i386-musl.")
    rows = {r[0].text: r for r in report.section("i386").tables[2].rows}
    assert rows["trixie-i386"][3].text.split("; ")[4] == "syscall"
    assert rows["trixie-i386-musl"][2].missing and rows["trixie-i386-musl"][3].missing
    finding = next(f for f in report.summary if f.topic == "int $0x80")
    assert finding.text.endswith(
        "; __kernel_vsyscall enters the kernel with syscall in 1, sysenter in 1 of 3 32-bit "
        "environments (decoded from the live vDSO).")


def test_at_a_glance_compares_int80_with_the_64_bit_syscall_of_the_same_machine():
    report = build_report(report_fixtures() + i386_docs())
    lines = [f"{f.topic} {f.text}" for f in report.summary]
    # one line of at a glance for 32-bit code, however many environments and machines
    assert ("int $0x80 from a 32-bit process costs 4.8 µs here (getppid, median of 3 "
            "environments), 32× the 64-bit syscall instruction (150 ns in bookworm-musl); "
            "__kernel_vsyscall enters the kernel with sysenter in 3 of 3 32-bit environments "
            "(decoded from the live vDSO).") in lines
    assert len(lines) == len(build_report(report_fixtures()).summary) + 1
    # the x86_64 findings are of the x86_64 environments (the 32-bit ones have no syscall path)
    assert any(line.startswith("A system call (getppid, raw syscall instruction) costs 150–150 "
                               "ns natively (1 environments") for line in lines)
    assert any(line.startswith("The vDSO is mapped in 5 of 5") for line in lines)
    # another machine's x86_64 result is no baseline
    elsewhere = [i386_doc("bookworm-i386", machine="elsewhere")]
    lines = [f"{f.topic} {f.text}" for f in build_report(report_fixtures() + elsewhere).summary]
    assert "int $0x80 from a 32-bit process costs 4.8 µs on elsewhere (getppid, " \
           "bookworm-i386 @ elsewhere); __kernel_vsyscall enters the kernel with sysenter in 1 " \
           "of 1 32-bit environments (decoded from the live vDSO)." in lines
    # the host's syscall when the machine has no x86_64 container
    host = report_fixtures()[0]
    host["environment"].update(name="host", backend="host")
    lines = [f"{f.topic} {f.text}" for f in build_report([host, i386_doc()]).summary]
    assert any("32× the 64-bit syscall instruction (150 ns in host);" in line
               for line in lines)


def test_readers_tolerate_what_the_analysis_has_not_written_yet():
    doc = i386_doc()
    doc["analysis"] = {"vdso": {"kernel_vsyscall": "nope"}, "libc": {"census": [1, 2]}}
    del doc["vdso"]["kernel_vsyscall_address"]
    doc["calls"] = [row for row in doc["calls"] if row["path"] != "kernel_vsyscall"] + [7, None]
    report = build_report([doc])
    assert report.problems == []
    section = report.section("i386")
    assert all(v.missing for v in section.tables[2].rows[0][1:])
    assert all(v.missing for v in section.tables[3].rows[0][2:])
    assert section.tables[0].rows[0][2].missing
    assert len(section.intro) == 1
    # an older result that says only environment.arch is read as i386 too
    old = i386_doc()
    del old["environment"]["abi"]
    assert build_report([old]).section("i386") is not None


def test_hostile_strings_stay_text_in_every_format(tmp_path):
    report = build_report(report_fixtures() + i386_docs() + [hostile_doc()])
    assert report.problems == []
    page = render_markdown(report)
    snippets = "".join(table_snippet(t) for t in report.section("i386").tables)
    for markdown in (page, snippets):
        assert "<script" not in markdown and "<b>" not in markdown
        for link in ("[x](", "[evil]("):  # no link: the brackets are escaped
            assert link not in markdown.replace("\\" + link.replace("](", "\\]("), "")
        assert "\x1b" not in markdown and "\u202e" not in markdown
        for table in markdown_tables(markdown):
            widths = {line.count("|") - line.count("\\|") for line in table}
            assert len(widths) == 1  # no cell broke out of its column
    assert "\n# " not in snippets and "\n# not a heading" not in page
    html = render_html(report)
    assert "<script>alert" not in html and "<b>call" not in html and "\u202e" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    data = json.loads(render_json(report))
    assert list(report_validator().iter_errors(data)) == []
    entry = next(t for t in data["tables"] if t["id"] == "i386-kernel-vsyscall")
    cells = next(r["cells"] for r in entry["rows"] if r["environment"] == "bookworm-i386-hostile")
    assert cells[3]["text"].startswith("<script>alert(1)</script> | [x](http://evil.example)")
    for table in report.section("i386").tables:
        list(csv.reader(io.StringIO(render_csv(table))))  # parses
    formula = i386_doc()
    formula["analysis"]["vdso"]["kernel_vsyscall"]["instructions"] = ["=HYPERLINK(1)"]
    table = build_report([formula]).section("i386").tables[2]
    assert ",'=HYPERLINK(1)" in render_csv(table)
    assert HOSTILE.split(" ")[0] not in render_csv(table)


def test_exports_write_the_section_tables_with_their_markers(tmp_path):
    report = build_report(report_fixtures() + i386_docs())
    written = {p.relative_to(tmp_path).as_posix()
               for p in write_exports(report, tmp_path, ["md", "csv", "json"])}
    for table_id in ("i386", "i386-paths", "i386-kernel-vsyscall", "i386-census"):
        assert {f"tables/{table_id}.md", f"tables/{table_id}.csv"} <= written
        snippet = (tmp_path / "tables" / f"{table_id}.md").read_text("utf-8")
        assert snippet.startswith(f"<!-- --8<-- [start:{table_id}] -->\n")
        assert snippet.endswith(f"<!-- --8<-- [end:{table_id}] -->\n")
    header, first = (tmp_path / "tables" / "i386.csv").read_text("utf-8").splitlines()[:2]
    assert header.startswith("environment,machine,group,emulated,getppid_int_0x80_ns,")
    assert "getppid_int_0x80_mechanism" in header
    assert first.startswith("bookworm-i386,,i386,false,")
    data = json.loads((tmp_path / "report.json").read_text("utf-8"))
    assert list(report_validator().iter_errors(data)) == []
    assert "i386" in [s["id"] for s in data["sections"]]


def test_a_full_matrix_of_32_bit_environments_keeps_the_section_compact():
    """Fifteen i386 environments (five suites, three builds): the section on the page stays
    small (the long tables are linked), and its table lines within 160 characters."""
    docs = [i386_doc(f"{suite}-i386{build}") for suite in
            ("bullseye", "bookworm", "trixie", "forky", "sid")
            for build in ("", "-static", "-musl")]
    page = render_markdown(build_report(report_fixtures() + docs))
    text = section_text(page, "i386")
    assert len(text.encode()) < 3600  # 15 table rows of about 140 bytes each
    assert max(len(line) for line in page.splitlines() if line.startswith("|")) <= 160


def test_the_page_leaves_the_32_bit_rows_to_the_table_files_and_says_so():
    report = build_report(report_fixtures() + i386_docs())
    page = render_markdown(report)
    for table_id in ("environments", "vdso", "vsyscall"):
        text = section_text(page, table_id)
        assert not [line for line in text.splitlines() if line.startswith("| bookworm-i386")]
        assert (f"The 32-bit userlands (3: bookworm-i386 … bookworm-i386-static) are in "
                f"[tables/{table_id}.md](tables/{table_id}.md)") in text.replace("\n", " ")
        assert "[32-bit code](#i386)" in text.replace("\n", " ")
        table = next(t for t in report.tables() if t.id == table_id)
        assert "bookworm-i386-static" in table_snippet(table)  # the file keeps every group
        assert "bookworm-i386-static" in render_csv(table)
    # the 32-bit section carries them; without table files the page shows every row
    assert "bookworm-i386-static" in section_text(page, "i386")
    assert "bookworm-i386-static" in section_text(render_markdown(report, tables=None), "vdso")


def _full_matrix() -> list[dict]:
    """36 x86_64 environments of the last full run's shape (host, 5 suites x 3 builds, 11 QEMU
    kernels, 9 runtime environments) and the 15 i386 ones, from the test fixtures."""
    import copy

    from runtime_docs import matrix

    musl, hpet = report_fixtures()[:2]
    docs = [copy.deepcopy(musl)]
    docs[0]["environment"].update(name="host", backend="host")
    suites = ("bullseye", "bookworm", "trixie", "forky", "sid")
    for name in [s + b for s in suites for b in ("", "-static", "-musl")]:
        docs.append(copy.deepcopy(musl))
        docs[-1]["environment"]["name"] = name
    for name in ("k5.10", "k6.1", "k6.12", "k7.2", "k6.1-vdso0", "k6.1-vsyscall-emulate",
                 "k6.1-vsyscall-xonly", "k6.1-vsyscall-none", "k6.1-tsc", "k6.1-hpet",
                 "k6.1-acpi_pm"):
        docs.append(copy.deepcopy(hpet))
        docs[-1]["environment"]["name"] = name
    docs += matrix()
    assert len(docs) == 36
    return docs + [i386_doc(f"{s}-i386{b}", machine=musl["run"]["machine"])
                   for s in suites for b in ("", "-static", "-musl")]


def test_a_full_matrix_with_32_bit_environments_stays_within_the_page_budget():
    page = render_markdown(build_report(_full_matrix()))
    assert max(len(line) for line in page.splitlines()) <= 160
    assert len(page.encode("utf-8")) < 44_000  # see test_exports' committed-page budget
