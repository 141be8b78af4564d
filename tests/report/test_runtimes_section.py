"""The report's runtime section (issue 11): "does Java use the fast syscalls?", answered from the
rows of the runtime environments (``host-runtimes``, ``<suite>-runtimes``, ``k6.1-…-runtimes``),
which carry no C rows.

The documents are built per the shared contract by :mod:`runtime_docs`.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from fakes import report_fixtures as fixtures
from hostile_support import (
    HOSTILE,
    MEDLEY,
    assert_csv_safe,
    assert_html_inert,
    assert_json_valid,
    assert_markup_inert,
    assert_snippet_inert,
)
from runtime_docs import matrix, row, runtime_doc, suite_rows, variant_rows

from vdsomatrix.report import build_report, runtimes
from vdsomatrix.report.exports import render_csv, render_json, render_markdown, table_snippet
from vdsomatrix.report.html import figures, render_html

RUNTIME_TABLES = ("runtimes", "runtimes-monotonic", "runtimes-wall", "runtimes-baseline",
                  "runtimes-versions", "runtimes-rows")


def order(docs):
    return [d["environment"]["name"] for d in docs]


def report_of(docs, **options):
    return build_report(docs, order=order(docs), **options)


def answer_of(docs) -> str:
    section = report_of(docs).section("runtimes")
    assert section is not None
    return section.intro[0]


def table(report, table_id):
    return next(t for t in report.tables() if t.id == table_id)


def cell(report, table_id, environment, column):
    t = table(report, table_id)
    rows = {s.environment: r for r, s in zip(t.rows, t.subjects, strict=True)}
    return rows[environment][t.columns.index(column)]


def entering(docs, name):
    """The documents with the runtime rows of ``name`` replaced by rows that enter the kernel."""
    for doc in docs:
        if doc["environment"]["name"] == name:
            doc["runtimes"] = suite_rows(doc["environment"]["suite"] or "bookworm",
                                         enters=True, ns=300.0)
    return docs


# ------------------------------------------------------------------ the answer ---------------

def test_every_environment_in_user_space():
    docs = [runtime_doc(f"{s}-runtimes", suite_rows(s), suite=s)
            for s in ("bullseye", "bookworm", "trixie")]
    assert answer_of(docs) == ("Java 11, 17, 21 and 25 read the clock without a system call in "
                               "every environment measured (3).")


def test_vdso0_and_hpet_enter_the_kernel():
    assert answer_of(matrix()) == (
        "Java 11, 17, 21 and 25 read the clock without a system call in 7 of 9 environments; "
        "in k6.1-vdso0-runtimes (vdso=0) and k6.1-clocksource-hpet-runtimes (clocksource=hpet) "
        "every call enters the kernel (1.00 system calls per call).")


def test_java_entering_the_kernel_where_nobody_expected_it():
    docs = entering(matrix(), "trixie-runtimes")
    text = answer_of(docs)
    assert "in 6 of 9 environments" in text
    assert text.endswith("; in trixie-runtimes, k6.1-vdso0-runtimes (vdso=0) and "
                         "k6.1-clocksource-hpet-runtimes (clocksource=hpet) every call enters "
                         "the kernel (1.00 system calls per call).")
    # a version that enters the kernel wherever it ran is named
    docs = entering([runtime_doc(f"{s}-runtimes", suite_rows(s), suite=s)
                     for s in ("bookworm", "trixie")], "trixie-runtimes")
    assert answer_of(docs) == (
        "Java 17 reads the clock without a system call in 1 of 2 environments "
        "(bookworm-runtimes); in trixie-runtimes Java 21 and 25 enter the kernel on every call "
        "(1.00 system calls per call).")


def test_a_crashed_jvm_is_said():
    docs = matrix()
    bookworm = next(d for d in docs if d["environment"]["name"] == "bookworm-runtimes")
    for r in bookworm["runtimes"]:
        if r["runtime"] == "java":
            r.update(status="crashed", reason="SIGSEGV in the JIT", ns=None,
                     syscalls_per_call=None, counted=None)
    text = answer_of(docs)
    assert "in 6 of 8 environments" in text  # bookworm measured no Java call
    assert text.endswith("; Java 17 crashed in bookworm-runtimes.")
    report = report_of(docs)
    value = cell(report, "runtimes", "bookworm-runtimes", "Java")
    assert (value.text, value.status, value.detail, value.strong) == (
        "crashed", "crashed", "SIGSEGV in the JIT", True)
    assert "Java 17 crashed in bookworm-runtimes: SIGSEGV in the JIT" in table(
        report, "runtimes").notes
    glance = {f.topic: f.text for f in report.summary}
    assert glance["Java's System.nanoTime()"].endswith("; crashed in bookworm-runtimes.")


def test_no_java_at_all():
    docs = [runtime_doc("bookworm-runtimes", [r for r in suite_rows("bookworm")
                                              if r["runtime"] != "java"])]
    assert answer_of(docs) == ("Java was not measured: no runtime environment has Java rows.")
    report = report_of(docs)
    assert "Java" not in table(report, "runtimes").columns
    assert not any(f.topic.startswith("Java") for f in report.summary)


def test_java_not_shipped():
    docs = [runtime_doc("bookworm-runtimes", [row(
        "java", "openjdk", "Java", None, None, status="not_shipped", version=None,
        package=None, reason="no JRE in this suite")])]
    assert answer_of(docs) == ("Java is not shipped in bookworm-runtimes (no JRE in this "
                               "suite).")


def test_only_the_host():
    docs = [runtime_doc("host-runtimes", suite_rows("bookworm"), backend="host", suite=None)]
    assert answer_of(docs) == ("Java 17 reads the clock without a system call in the one "
                               "environment measured (host-runtimes).")
    glance = {f.topic: f.text for f in report_of(docs).summary}
    assert glance == {
        "Java's System.nanoTime()": "makes no system call in the one environment measured "
                                    "(host-runtimes).",
        "Python, Go, Node.js and Rust": "(time.monotonic_ns(), time.Now(), "
                                        "process.hrtime.bigint(), Instant::now()) make no system "
                                        "call in the one environment measured (host-runtimes)."}


def test_some_calls_in_some_not():
    rows = variant_rows("java", "openjdk-8", "Java 8", version="1.8.0_412", package="openjdk-8")
    for r in rows:
        if r["call"] == "System.currentTimeMillis()":
            r.update(syscalls_per_call=1.0, syscalls_by_name={"gettimeofday": 1.0})
    text = answer_of([runtime_doc("host-runtimes", rows, backend="host", suite=None)])
    assert text == ("In host-runtimes only some calls stay out of the kernel: Java 8 "
                    "System.currentTimeMillis() enters it (1.00 system calls per call), Java 8 "
                    "System.nanoTime() and Java 8 Instant.now() do not.")


def test_not_counted_is_not_a_guess():
    docs = [runtime_doc("bookworm-runtimes", suite_rows("bookworm"))]
    for r in docs[0]["runtimes"]:
        r.update(syscalls_per_call=None, counted=None, count_error="ptrace: EPERM")
    assert answer_of(docs) == ("Java 17 ran but its system calls could not be counted in "
                               "bookworm-runtimes.")
    value = cell(report_of(docs), "runtimes", "bookworm-runtimes", "Java")
    assert (value.text, value.mechanism) == ("22 ns ?", "?")


def test_without_runtime_environments_there_is_no_section():
    report = build_report(fixtures())
    assert report.section("runtimes") is None
    assert "runtimes" not in render_markdown(report)
    assert not any("Java" in f.topic for f in report.summary)


# ------------------------------------------------------------------ the tables ---------------

def test_summary_table_cells_and_time():
    report = report_of(matrix())
    summary = table(report, "runtimes")
    assert summary.columns == ["environment", "Java", "Python", "Go", "Node.js", "Rust",
                               "time (s)"]
    assert [s.environment for s in summary.subjects][:2] == ["host-runtimes", "bullseye-runtimes"]
    assert cell(report, "runtimes", "host-runtimes", "Java").text == "22 ns no syscall"
    trixie = cell(report, "runtimes", "trixie-runtimes", "Java")  # Java 21 and 25
    assert (trixie.text, trixie.mechanism) == ("22 ns no syscall", "no syscall")
    assert trixie.detail == "Java 21: 22 ns no syscall; Java 25: 22 ns no syscall"
    vdso0 = cell(report, "runtimes", "k6.1-vdso0-runtimes", "Go")
    assert (vdso0.text, vdso0.mechanism) == ("400 ns 2 syscalls", "2 syscalls")
    rust = cell(report, "runtimes", "bullseye-runtimes", "Rust")
    assert (rust.text, rust.status, rust.detail) == ("not shipped", "not_shipped",
                                                     "not shipped by bullseye")
    seconds = cell(report, "runtimes", "bullseye-runtimes", "time (s)")
    assert (seconds.number, seconds.unit) == (2 * 4 * 4.0 + 4 * 1.5 + 2 * 2 * 1.5 + 4 * 1.5,
                                              "s")
    records = list(csv.DictReader(io.StringIO(render_csv(summary))))
    bullseye = next(r for r in records if r["environment"] == "bullseye-runtimes")
    assert (bullseye["rust_status"], bullseye["rust_detail"]) == ("not_shipped",
                                                                  "not shipped by bullseye")
    assert bullseye["java_mechanism"] == "no syscall" and bullseye["time_s"] == "50"


def test_one_table_per_clock_a_column_per_environment():
    report = report_of(matrix())
    ids = [t.id for t in report.section("runtimes").tables]
    assert ids == list(RUNTIME_TABLES)
    monotonic = table(report, "runtimes-monotonic")
    assert monotonic.layout == "columns" and monotonic.fixed_layout
    parts = monotonic.parts()
    assert [group for group, _, _ in parts] == ["runtimes-native", "runtimes-qemu"]
    native = parts[0][2]
    assert native.columns[1:] == ["host-runtimes", "bullseye-runtimes", "bookworm-runtimes",
                                  "trixie-runtimes", "forky-runtimes", "sid-runtimes"]
    labels = [r[0].text for r in native.rows]
    assert labels[:5] == ["Java 11 · System.nanoTime()", "Java 17 · System.nanoTime()",
                          "Java 21 · System.nanoTime()", "Java 25 · System.nanoTime()",
                          "Python · time.monotonic_ns()"]
    assert "Go dynamic · time.Now()" in labels and "Rust · Instant::now()" in labels
    rust = native.rows[labels.index("Rust · Instant::now()")]
    assert rust[2].text == "not shipped"  # bullseye: the runtime's one row names no call
    qemu = [r[0].text for r in parts[1][2].rows]  # a call no guest has is no row there
    assert qemu[0] == "Java 17 · System.nanoTime()" and "Java 11 · System.nanoTime()" not in qemu
    assert any("Go's time.Now() reads both" in n for n in monotonic.notes)
    assert any("it is in the monotonic clock table" in n
               for n in table(report, "runtimes-wall").notes)
    # the report's layout does not turn them
    assert table(report_of(matrix(), layout="columns"), "runtimes-wall").layout == "columns"
    assert table(report_of(matrix(), layout="rows"), "runtimes-wall").layout == "columns"
    baseline = table(report, "runtimes-baseline")
    assert all(v.mechanism == "syscall" for r in baseline.rows for v in r[1:] if v.mechanism)


def test_exact_counts_are_in_csv_json_and_the_long_table():
    report = report_of(matrix())
    rows = table(report, "runtimes-rows")
    records = list(csv.DictReader(io.StringIO(render_csv(rows))))
    hpet = [r for r in records if r["environment"] == "k6.1-clocksource-hpet-runtimes"
            and r["call"] == "System.nanoTime()"]
    assert len(hpet) == 1
    assert (hpet[0]["syscalls_per_call"], hpet[0]["syscalls_by_name"], hpet[0]["how_mechanism"],
            hpet[0]["median_ns"], hpet[0]["version"]) == (
        "1", "clock_gettime 1.00", "syscall", "400", "17.0.13+11-Debian-1")
    assert "n=20000: 5123 at n, 25123 at 2n" in hpet[0]["counted"]
    assert rows.notes[-1].startswith("Method: Each runtime program warms up")  # the probe's
    snippet = table_snippet(rows)
    assert "clock\\_gettime 1.00" in snippet and "1.000" in snippet
    data = json.loads(render_json(report))
    monotonic = next(t for t in data["tables"] if t["id"] == "runtimes-monotonic")
    assert monotonic["layout"] == "columns"
    host = next(r for r in monotonic["rows"] if r["environment"] == "host-runtimes")
    java = host["cells"][[c["title"] for c in monotonic["columns"]].index(
        "Java 17 · System.nanoTime()")]
    assert java["detail"] == "Java 17 17.0.13+11-Debian-1: 0.00 system calls per call"
    versions = table(report, "runtimes-versions")
    bullseye = [[v.text for v in r] for r, s in zip(versions.rows, versions.subjects,
                                                   strict=True)
                if s.environment == "bullseye-runtimes"]
    assert bullseye[0][:4] == ["bullseye-runtimes", "Java 11", "11.0.13+11-Debian-1",
                               "openjdk-11-jre-headless"]
    assert bullseye[-1][1:5] == ["Rust", "—", "—", "not shipped"]


def test_the_c_tables_and_figures_are_unchanged_by_runtime_environments():
    alone = build_report(fixtures())
    both = build_report(fixtures() + matrix())
    skip = {"environments", "runtimes"}
    for section in alone.sections:
        if section.id in skip:
            continue
        other = both.section(section.id)
        assert [t.id for t in other.tables] == [t.id for t in section.tables]
        for a, b in zip(section.tables, other.tables, strict=True):
            assert (b.columns, b.rows, b.subjects, b.notes) == (a.columns, a.rows, a.subjects,
                                                                a.notes), a.id
        assert other.intro == section.intro and other.listings == section.listings
    assert both.summary[:len(alone.summary)] == alone.summary
    assert both.method_lines == alone.method_lines
    drawn_alone, _ = figures(alone)
    drawn_both, _ = figures(both)
    assert {k: [p.svg for p in v] for k, v in drawn_both.items()} == {
        k: [p.svg for p in v] for k, v in drawn_alone.items()}
    # ... and they are in the environment list
    environments = table(both, "environments")
    assert "k6.1-vdso0-runtimes" in [s.environment for s in environments.subjects]
    meta = {e["environment"]: e for e in both.meta["environments"]}
    assert meta["k6.1-vdso0-runtimes"]["build"] == "runtimes"


def test_the_section_alone_and_its_page():
    report = report_of(fixtures() + matrix()).only(["runtimes"])
    page = render_markdown(report)
    assert [line for line in page.splitlines() if line.startswith("## ")] == [
        "## Language runtimes: do they take the fast path?"]
    assert "(tables/runtimes-monotonic.md)" in page and "(tables/runtimes-rows.md)" in page
    assert "Java 11, 17, 21 and 25 read the clock" in page
    assert max(len(line) for line in page.splitlines() if line.startswith("|")) <= 160


def test_report_json_validates():
    report = report_of(fixtures() + matrix())
    data = assert_json_valid(render_json(report))
    assert [t["id"] for t in data["tables"] if t["section"] == "runtimes"] == list(RUNTIME_TABLES)


# ------------------------------------------------------------------ hostile text -------------

def hostile_matrix(text: str) -> list[dict]:
    docs = matrix()
    for i, doc in enumerate(docs):
        doc["runtimes_method"] = text
        for j, r in enumerate(doc["runtimes"]):
            if j % 3 == 0:
                r["version"] = text
            if j % 4 == 1:
                r["package"] = text
            if j % 5 == 2:
                r["label"] = text
            if j % 7 == 3:
                r["status"], r["reason"] = "not_shipped", text
            if j % 11 == 4:
                r["call"] = text
            if j % 13 == 5:
                r["syscalls_by_name"] = {text: 1.0}
            if i == 2 and j == 0:
                r["runtime"] = text
                r["warmup"] = text
                r["count_error"] = text
    return docs


@pytest.mark.parametrize("text", [*HOSTILE, MEDLEY], ids=lambda h: repr(h[:24]))
def test_hostile_versions_and_reasons_are_inert(text):
    docs = hostile_matrix(text)
    report = report_of(docs)
    assert not any("could not be built" in p.text for p in report.problems)
    page = render_markdown(report)
    assert_markup_inert(page)
    headings = [line for line in page.splitlines() if line.startswith("#")]
    assert all(not line.startswith("#") or line.startswith(("# vdsomatrix", "## ", "### "))
               for line in headings)
    assert "## injected" not in headings and "# heading" not in headings
    for t in report.section("runtimes").tables:
        assert_snippet_inert(table_snippet(t), t.id)
        assert_csv_safe(render_csv(t))
    assert_json_valid(render_json(report))
    assert_html_inert(render_html(report))


def test_hostile_structure_does_not_break_the_section():
    docs = matrix()
    docs[0]["runtimes"] = [1, "x", None, {"runtime": ["java"], "ns": "fast",
                                          "syscalls_per_call": "many", "seconds": 10 ** 400},
                           {"runtime": "java", "status": "ok", "call": "System.nanoTime()",
                            "clock": "monotonic", "ns": {"median": float("nan")},
                            "syscalls_per_call": float("inf"), "syscalls_by_name": [1]}]
    docs[1]["runtimes"] = "not a list"
    docs[2]["runtimes_method"] = {"a": 1}
    report = report_of(docs)
    assert not any("could not be built" in p.text for p in report.problems)
    assert_markup_inert(render_markdown(report))
    assert_json_valid(render_json(report))
    for t in report.section("runtimes").tables:
        assert_csv_safe(render_csv(t))


def test_versions_phrase():
    assert runtimes.versions(["Java 17", "Java 8", "Java 21"]) == "Java 8, 17 and 21"
    assert runtimes.versions(["Go 1.19 static", "Go 1.19 dynamic"]) == \
        "Go 1.19 dynamic and static"
    assert runtimes.versions([f"Java {v}" for v in (8, 11, 17, 21, 25)]) == \
        "Java 8 to 25 (5 versions)"
    assert runtimes.fmt_time(22.4) == "22 ns" and runtimes.fmt_time(1234.0) == "1.2 µs"
    assert runtimes.fmt_span([21.0, 25.0]) == "21–25 ns"


def test_every_environment_enters_the_kernel():
    docs = [runtime_doc("k6.1-vdso0-runtimes", suite_rows("bookworm", enters=True),
                        backend="qemu", cmdline="vdso=0", accel="tcg")]
    assert answer_of(docs) == ("Java 17 enters the kernel on every clock read in "
                               "k6.1-vdso0-runtimes (vdso=0), 1.00 system calls per call.")
    glance = {f.topic: f.text for f in report_of(docs).summary}
    assert glance["Java's System.nanoTime()"] == "enters the kernel in k6.1-vdso0-runtimes."
    # runtime environments alone: the environment list and their section, no empty C tables
    assert [s.id for s in report_of(docs).sections] == ["environments", "runtimes"]
    assert report_of(docs).method_lines == []  # the C rows' method: the section says its own
