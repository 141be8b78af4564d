"""The report is a pure function of result documents, and hostile text stays inert."""

import json
from pathlib import Path

from vdsomatrix import SCHEMA
from vdsomatrix.report import render_report
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
    assert ratio(ok("c", "syscall", 120.0, 1), ok("c", "vdso", 15.0, 0)).startswith("8.0×")
    assert ratio(None, ok("c", "vdso", 15.0, 0)) == "—"
    assert ratio(ok("t", "syscall", 80.0, 1), ok("t", "vdso", 0.01, 0)).startswith("> 80×")


def test_one_column_per_environment_in_matrix_order():
    docs = [doc("b"), doc("host", backend="host"), doc("a"), doc("k", backend="qemu", accel="tcg")]
    text = render_report(docs, order=["host", "b", "a", "k"])
    env_header = next(line for line in text.splitlines() if line.startswith("| environment"))
    assert [c.strip() for c in env_header.strip("|").split("|")][1:] == ["host", "b", "a"]
    assert "| k †" in text  # emulated guests are marked
    assert "Kernels under QEMU" in text


def test_rows_show_crashes_and_unsupported():
    calls = [
        {"call": "gettimeofday", "path": "vsyscall", "status": "crashed", "signal": "SIGSEGV"},
        {"call": "time", "path": "vdso", "status": "unsupported", "reason": "no vDSO"},
    ]
    text = render_report([doc("e", calls=calls)])
    assert "crashed (SIGSEGV)" in text
    assert "unsupported" in text
    assert "**no**: SIGSEGV" in text


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
    for line in text.splitlines():
        if line.startswith("| libc"):
            assert line.count(" | ") == 1  # the | inside the value is escaped


def test_report_of_a_real_host_result_renders(tmp_path):
    from vdsomatrix.backends.host import HostBackend
    from vdsomatrix.matrix import Environment

    backend = HostBackend()
    env = Environment(name="host", backend="host")
    backend.prepare(env, log=lambda m: None)
    outcome = backend.run_probe(env, deadline=240)
    text = render_report([outcome.document])
    assert "| vDSO mapped (AT_SYSINFO_EHDR)" in text
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
    glance = text.split("## At a glance", 1)[1].split("## Environments", 1)[0]
    assert "mapped in 2 of 3 environments; absent in: vdso0" in glance
    assert "kill the caller in 1: hpet" in glance
    assert "costs 90–90 ns natively" in glance
    assert "9.0–9.0× faster" in glance and "system call itself in: hpet" in glance
    assert "enters the kernel on every call in: hpet" in glance


def test_one_threshold_for_entering_the_kernel():
    """Half a system call per call, on average, is where every table starts saying "syscall"."""
    from vdsomatrix.report.binary import render_analysis
    from vdsomatrix.report.cells import ENTERS_KERNEL, enters_kernel, read_results

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
    glance = render_report(docs).split("## Environments", 1)[0]
    assert "every call in: at." in glance and "system call itself in: at." in glance
    # section 6 shows the measurement beside the (here absent) static reading
    entry_rows = {line.split("|")[1].strip(): line
                  for line in render_analysis(read_results(docs)).splitlines()
                  if line.startswith(("| under ", "| at "))
                  and "measured" in line}
    assert "—; measured: no syscall" in entry_rows["under"]
    assert "—; measured: syscall" in entry_rows["at"]


def test_a_huge_median_is_written_compactly():
    from vdsomatrix.report.cells import fmt_ns

    assert fmt_ns(1e308) == "1e+308"
    assert fmt_ns(12345.6) == "12346" and fmt_ns(9.94) == "9.9"
    assert fmt_ns(10 ** 400) == fmt_ns("12") == fmt_ns(True) == "—"
