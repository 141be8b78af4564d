"""The report is a pure function of result documents, and hostile text stays inert."""

import json
import re
from pathlib import Path

from fakes import markdown_cells, markdown_tables

from vdsomatrix import SCHEMA
from vdsomatrix.report import build_report, render_report
from vdsomatrix.report.cells import mechanism
from vdsomatrix.report.measurements import ratio


def doc(name, backend="docker", accel=None, calls=None, **extra):
    return {
        "schema": SCHEMA,
        "environment": {"name": name, "backend": backend, "accel": accel,
                        "libc": {"name": "glibc", "version": "2.36", "linkage": "dynamic"},
                        "kernel": {"release": "6.1.0", "clocksource": "tsc"}},
        "vdso": {"present": True, "size": 8192},
        "vsyscall": {"mode": "xonly", "readable": False, "callable": True},
        "calls": calls or [],
        "errors": [],
        **extra,
    }


def ok(call, path, median, spc, faults=0.0):
    return {"call": call, "path": path, "status": "ok", "syscalls_per_call": spc,
            "faults_per_call": faults, "ns": {"min": median, "median": median, "p90": median}}


def test_mechanism_comes_from_counts_not_speed():
    assert mechanism(ok("x", "vdso", 1000.0, 0.0)) == "user"
    assert mechanism(ok("x", "vdso", 1.0, 1.0)) == "syscall"
    assert mechanism(ok("x", "vsyscall", 1.0, 0.0, faults=1.0)) == "trap"
    assert mechanism({"status": "ok", "syscalls_per_call": None}) == "?"
    # No trap counter (Docker's seccomp forbids perf_event_open): say no more than was counted.
    assert mechanism({**ok("x", "vsyscall", 500.0, 0.0), "faults_per_call": None}) == "no syscall"


def test_ratio():
    speedup = ratio(ok("c", "syscall", 120.0, 1), ok("c", "vdso", 15.0, 0))
    assert (speedup.text, speedup.number, speedup.unit, speedup.bound) == ("8.0×", 8.0, "×", None)
    assert ratio(None, ok("c", "vdso", 15.0, 0)).text == "—"
    bound = ratio(ok("t", "syscall", 80.0, 1), ok("t", "vdso", 0.01, 0))
    assert (bound.text, bound.number, bound.bound) == ("≥ 80×", 80.0, "lower")


def table_rows(markdown: str, first_column: str) -> list[list[str]]:
    """The body rows of every page table whose first header is ``first_column``."""
    rows = []
    for table in markdown_tables(markdown):
        cells = [markdown_cells(line) for line in table]
        if cells[0][0] == first_column:
            rows += cells[2:]
    return rows


def test_one_row_per_environment_in_matrix_order_grouped():
    docs = [doc("b"), doc("host", backend="host"), doc("a"), doc("k", backend="qemu", accel="tcg")]
    report = build_report(docs, order=["host", "b", "a", "k"])
    environments = report.tables()[0]
    assert [row[0].text for row in environments.rows] == ["host", "b", "a", "k †"]
    parts = environments.parts()
    assert [(group, [r[0].text for r in part.rows]) for group, _title, part in parts] == [
        ("native", ["host", "b", "a"]), ("qemu", ["k †"])]
    text = render_report(docs, order=["host", "b", "a", "k"])
    assert "**Kernels under QEMU (†: emulated time)**" in text
    natives = text.split("**Host and containers", 1)[1].split("**Kernels", 1)[0]
    assert [r[0] for r in table_rows(natives, "environment")][:3] == ["host", "b", "a"]


def test_the_columns_layout_has_a_column_per_environment():
    docs = [doc("b"), doc("host", backend="host"), doc("k", backend="qemu", accel="tcg")]
    report = build_report(docs, order=["host", "b", "k"], layout="columns")
    part = report.tables()[0].parts()[0][2]
    assert part.layout == "columns" and part.columns == ["environment", "host", "b"]
    assert [row[0].text for row in part.rows][:4] == ["userland", "arch", "libc", "kernel"]
    from vdsomatrix.report.exports import render_markdown

    page = render_markdown(report)
    headers = [row for table in markdown_tables(page)
               for row in [[c.strip() for c in table[0].strip("|").split("|")]]]
    assert ["environment", "host", "b"] in headers and ["environment", "k †"] in headers


def test_rows_show_crashes_and_unsupported():
    calls = [
        {"call": "gettimeofday", "path": "vsyscall", "status": "crashed", "signal": "SIGSEGV"},
        {"call": "time", "path": "vdso", "status": "unsupported", "reason": "no vDSO"},
    ]
    report = build_report([doc("e", calls=calls)])
    vsyscall = next(t for t in report.tables() if t.id == "vsyscall")
    row = vsyscall.rows[0]
    crash = row[vsyscall.columns.index("gettimeofday")]
    assert (crash.text, crash.status, crash.detail, crash.number) == (
        "crashed (SIGSEGV)", "crashed", "SIGSEGV", None)
    assert row[vsyscall.columns.index("legacy binary runs")].text == "no: SIGSEGV"
    time_row = next(t for t in report.tables() if t.id == "latency-time").rows[0]
    assert time_row[2].text == "unsupported" and time_row[2].detail == "no vDSO"
    text = render_report([doc("e", calls=calls)])
    assert "**no: SIGSEGV**" in text  # emphasised: a legacy binary dies here


def test_a_measured_cell_keeps_number_mechanism_and_spread_apart():
    report = build_report([doc("e", calls=[
        {**ok("getppid", "syscall", 112.0, 1), "ns": {"min": 109.0, "median": 112.0, "p90": 114.0}},
        ok("gettimeofday", "vsyscall", 387.0, 0.0, faults=1.0)])])
    cost = next(t for t in report.tables() if t.id == "syscall-cost").rows[0][1]
    assert (cost.text, cost.number, cost.unit, cost.low, cost.high, cost.mechanism) == (
        "112 (109–114)", 112.0, "ns", 109.0, 114.0, "syscall")
    trap = next(t for t in report.tables() if t.id == "vsyscall").rows[0][4]
    assert (trap.text, trap.mechanism, trap.status) == ("387 ns trap", "trap", "ok")


def test_hostile_text_is_inert():
    evil = "x|<script>alert(1)</script>[link](http://e)`code`\n# heading"
    d = doc("e", calls=[ok("getppid", "syscall", 80.0, 1)])
    d["environment"]["libc"]["version"] = evil
    d["environment"]["kernel"]["release"] = evil
    d["errors"] = [evil]
    text = render_report([d])
    assert "<script>" not in text
    assert "[link](" not in text
    assert "\n# heading" not in text
    for table in markdown_tables(text):
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1


def test_report_of_a_real_host_result_renders(tmp_path):
    from vdsomatrix.backends.host import HostBackend
    from vdsomatrix.matrix import Environment

    backend = HostBackend()
    env = Environment(name="host", backend="host")
    backend.prepare(env, log=lambda m: None)
    outcome = backend.run_probe(env, deadline=240)
    text = render_report([outcome.document])
    assert table_rows(text, "environment")[0][0] == "host"
    assert '<a id="vdso"></a>' in text
    json.dumps(outcome.document)  # serialisable as stored
    Path(tmp_path / "R.md").write_text(text)


def test_summary_is_computed_from_the_rows():
    native = doc("n", calls=[ok("getppid", "syscall", 90.0, 1),
                             ok("clock_gettime(CLOCK_MONOTONIC)", "vdso", 15.0, 0),
                             ok("clock_gettime(CLOCK_MONOTONIC)", "syscall", 135.0, 1)])
    slow_clock = doc("hpet", backend="qemu", accel="tcg", calls=[
        ok("clock_gettime(CLOCK_MONOTONIC)", "vdso", 650.0, 1),
        ok("clock_gettime(CLOCK_MONOTONIC)", "syscall", 660.0, 1),
        ok("clock_gettime(CLOCK_MONOTONIC)", "libc", 655.0, 1),
        {"call": "time", "path": "vsyscall", "status": "crashed", "signal": "SIGSEGV"}])
    no_vdso = doc("vdso0", backend="qemu", calls=[ok("getppid", "syscall", 400.0, 1)])
    no_vdso["vdso"] = {"present": False}
    text = render_report([native, slow_clock, no_vdso])
    glance = text.split("## At a glance", 1)[1].split("## How to read", 1)[0]
    assert "mapped in 2 of 3 environments; absent in: vdso0" in glance
    assert "kill the caller in 1: hpet" in glance
    assert "costs 90–90 ns natively" in glance
    assert "9.0–9.0× faster" in glance and "system call itself in: hpet" in glance
    assert "enters the kernel on every call in: hpet" in glance


def test_one_threshold_for_entering_the_kernel():
    """Half a system call per call, on average, is where every table starts saying "syscall"."""
    from vdsomatrix.report.cells import ENTERS_KERNEL, enters_kernel

    below, at = ENTERS_KERNEL - 0.01, ENTERS_KERNEL
    assert mechanism(ok("x", "libc", 20.0, below)) == "user"
    assert mechanism(ok("x", "libc", 20.0, at)) == "0.5 syscalls"
    assert (enters_kernel(ok("x", "libc", 20.0, below)), enters_kernel(ok("x", "libc", 20.0, at))
            ) == (False, True)
    assert enters_kernel({"status": "crashed", "syscalls_per_call": 1.0}) is None
    clock = "clock_gettime(CLOCK_MONOTONIC)"
    docs = [doc(name, calls=[ok(clock, "libc", 20.0, spc), ok(clock, "vdso", 20.0, spc),
                             ok(clock, "syscall", 90.0, 1.0)])
            for name, spc in (("under", below), ("at", at))]
    glance = render_report(docs).split("## How to read", 1)[0]
    assert "every call in: at." in glance and "system call itself in: at." in glance
    # the entry-point table shows the measurement beside the (here absent) static reading
    entry = next(t for t in build_report(docs).tables() if t.id == "binary-entry-points")
    cells = {row[0].text: [v.text for v in row[2:4]] for row in entry.rows}
    assert cells == {"under": ["—", "user"], "at": ["—", "0.5 syscalls"]}


def test_a_huge_median_is_written_compactly():
    from vdsomatrix.report.cells import fmt_ns

    assert fmt_ns(1e308) == "1e+308"
    assert fmt_ns(12345.6) == "12346" and fmt_ns(9.94) == "9.9"
    assert fmt_ns(10 ** 400) == fmt_ns("12") == fmt_ns(True) == "—"
