"""Issue 16, correctness: the helper's checks on this machine, cross-checked by an independent
checker (tests/abi_crosscheck.py: ctypes, libc's syscall(), the vDSO found with pyelftools,
nothing shared with probes/), and the report's section from result documents."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import report_fixtures as fixtures
from hostile_support import HOSTILE, assert_exports_inert

from vdsomatrix.backends.qemu import qemu_argv
from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import load_matrix, parse_matrix
from vdsomatrix.report import build_report, render_report
from vdsomatrix.report.correctness import outcome_text
from vdsomatrix.report.exports import render_markdown, table_snippet
from vdsomatrix.results import check_document

CHECKER = Path(__file__).resolve().parents[1] / "abi_crosscheck.py"
KEY = ("call", "input", "path")


@pytest.fixture(scope="module")
def checked() -> dict:
    done = subprocess.run([sys.executable, str(CHECKER)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def independent(checked) -> dict[tuple, dict]:
    return {tuple(r[k] for k in KEY): r for r in checked["error_paths"]}


def verdict(row: dict) -> tuple:
    """What a path did with bad input, as both checkers say it."""
    if row["status"] == "crashed":
        return ("crashed", row.get("signal"))
    if row["status"] == "returned":
        return ("returned", row.get("ret"), row.get("errno"))
    return (row["status"],)


def test_the_error_paths_agree_with_an_independent_checker(host_doc, independent):
    """Every (call, bad input, path) the probe tried on this machine gives the verdict the
    independent checker gets: the system call and the vDSO for every build of the helper, and
    libc for the dynamic build (the libc the checker's ctypes loads)."""
    rows = host_doc["correctness"]["error_paths"]
    build = host_doc["environment"]["name"].removeprefix("host-")
    compared = 0
    for row in rows:
        if row["path"] == "libc" and build != "dynamic":
            continue
        theirs = independent.get(tuple(row[k] for k in KEY))
        assert theirs is not None, f"the independent checker has no {tuple(row[k] for k in KEY)}"
        assert verdict(row) == verdict(theirs), (row, theirs)
        compared += 1
    assert compared >= 40
    # the difference the table exists to show is there, as both measured it
    null = {p: verdict(independent[("clock_gettime", "NULL result pointer", p)])
            for p in ("syscall", "vdso")}
    if null["vdso"] != ("not_offered",):
        assert null["syscall"] != null["vdso"]


def test_the_clock_verdicts_agree_with_an_independent_checker(host_doc, checked):
    """Which clocks the kernel offers, and for each that it does, pass or fail of its readings
    through the vDSO between system calls: the same in both checkers."""
    probe = {c["check"].removeprefix("clock_gettime(").removesuffix(")"): c["status"]
             for c in host_doc["correctness"]["checks"]
             if c["kind"] == "agreement" and c["check"].startswith("clock_gettime(")}
    assert probe == checked["clocks"]


def test_the_checks_ran_on_this_machine(host_doc):
    found = host_doc["correctness"]
    assert check_document(host_doc) == []
    checks = {c["check"]: c for c in found["checks"]}
    mono = checks["clock_gettime(CLOCK_MONOTONIC)"]
    assert mono["status"] == "pass" and mono["made"] > 0 and mono["failed"] == 0, mono
    assert checks["getcpu pinned to each CPU"]["status"] in ("pass", "fail", "not_run")
    for c in found["checks"]:
        if c["status"] == "not_offered":
            assert "rejects clock id" in c["reason"] and c["made"] == 0
        elif c["status"] in ("pass", "fail"):
            assert c["made"] > 0, c
    assert len(found["cpus"]) >= 1


def correctness_doc(text: str = "CLOCK_MONOTONIC", failed: int = 0, signal: str = "SIGSEGV"):
    return {
        "budget_ms": 300, "elapsed_ms": 200.0, "cpus": [0, 1],
        "checks": [
            {"check": f"clock_gettime({text})", "kind": "agreement",
             "status": "fail" if failed else "pass", "paths": "syscall vdso libc",
             "made": 1000, "failed": failed, "rounds": 250, "reason": None,
             "first_failure": f"syscall 5.000000010, then vdso 5.000000001: {text}"
             if failed else None},
            {"check": "CLOCK_MONOTONIC across CPUs", "kind": "cross_cpu", "status": "not_run",
             "paths": "vdso", "made": 0, "failed": 0, "rounds": 0, "reason": text},
        ],
        "error_paths": [
            {"call": "clock_gettime", "input": "NULL result pointer", "path": "syscall",
             "status": "returned", "ret": -1, "errno": "EFAULT"},
            {"call": "clock_gettime", "input": "NULL result pointer", "path": "vdso",
             "status": "crashed", "signal": signal, "signo": 11},
            {"call": "clock_gettime", "input": text, "path": "libc", "status": "not_offered",
             "reason": text},
        ],
    }


def with_correctness(docs: list[dict], **kw) -> list[dict]:
    for i, doc in enumerate(docs):
        doc["correctness"] = correctness_doc(**{**kw, "failed": kw.get("failed", 0) if i else 0})
    return docs


def test_older_results_without_the_key_have_no_section():
    page = render_report(fixtures())
    assert 'id="correctness"' not in page
    report = build_report(with_correctness(fixtures()))
    assert report.section("correctness") is not None
    assert any(f.topic == "Correctness" for f in report.summary)


def test_a_failure_is_loud_with_its_first_readings():
    docs = with_correctness(fixtures(), failed=3)
    assert all(check_document(d) == [] for d in docs)
    report = build_report(docs)
    page = render_markdown(report)
    section = page.split("## Correctness", 1)[1].split("\n## ", 1)[0]
    assert "5.000000010" in section and "3 of 1000" in section  # the evidence, on the page
    (glance,) = [f for f in report.summary if f.topic == "Correctness"]
    assert "FAILED in 1 of 2" in glance.text


def test_a_failed_check_is_named_whole_at_a_glance():
    """Seen on the first full page: "bookworm-static (time() vs gettimeofday();" lost its
    closing parenthesis to the shortening of clock names."""
    docs = with_correctness(fixtures(), failed=3)
    for check in docs[1]["correctness"]["checks"]:
        check["check"] = "time() vs gettimeofday()"
    (glance,) = [f for f in build_report(docs).summary if f.topic == "Correctness"]
    assert "(time() vs gettimeofday())" in glance.text


def test_error_rows_that_agree_everywhere_are_one_row():
    docs = with_correctness(fixtures())
    report = build_report(docs)
    (table,) = [t for t in report.tables() if t.id == "correctness-error-paths"]
    null_rows = [r for r in table.rows if r[1].text == "NULL result pointer"]
    assert [[v.text for v in r[2:]] for r in null_rows] == [["-1 EFAULT", "SIGSEGV", "—", "all 2"]]
    # one environment dies differently: two rows, each naming its environments
    docs[1]["correctness"]["error_paths"][1]["signal"] = "SIGBUS"
    (table,) = [t for t in build_report(docs).tables() if t.id == "correctness-error-paths"]
    null_rows = [r for r in table.rows if r[1].text == "NULL result pointer"]
    assert sorted(r[3].text for r in null_rows) == ["SIGBUS", "SIGSEGV"]
    assert all(not r[5].text.startswith("all") for r in null_rows)
    assert "SIGBUS" in table_snippet(table)


@pytest.mark.parametrize("row, shown", [
    ({"path": "syscall", "status": "returned", "ret": -1, "errno": "EFAULT"}, "-1 EFAULT"),
    ({"path": "vdso", "status": "returned", "ret": -22, "errno": "EINVAL"}, "-EINVAL"),
    ({"path": "vdso", "status": "returned", "ret": 0, "errno": None}, "0"),
    ({"path": "vdso", "status": "crashed", "signal": "SIGSEGV"}, "SIGSEGV"),
    ({"path": "libc", "status": "not_offered"}, "not offered"),
    ({"path": "libc", "status": "returned", "ret": "x"}, "?"),
    (None, "—"),
])
def test_outcome_text(row, shown):
    assert outcome_text(row) == shown


def test_hostile_text_in_the_correctness_results_is_inert():
    """Check names, reasons, readings, inputs and signals an environment printed reach every
    export only as inert text."""
    for text in HOSTILE:
        harmless = render_report(with_correctness(fixtures(), text="harmless", failed=1,
                                                  signal="harmless"))
        docs = with_correctness(fixtures(), text=text, failed=1, signal=text)
        assert_exports_inert(copy.deepcopy(docs), own_markdown=harmless)


def test_malformed_correctness_fields_still_render():
    for broken in (None, [], "x", {"checks": "x", "error_paths": {}},
                   {"checks": [None, 1, {"status": 5, "made": "many", "failed": -3}],
                    "error_paths": [{"call": {}, "input": None}]}):
        docs = fixtures()
        docs[0]["correctness"] = broken
        assert "could not be built" not in render_report(docs)


# ------------------------------------------------- the two-vCPU guest (the check across CPUs) ---

QEMU_ENTRY = {"name": "k", "backend": "qemu", "suite": "bookworm", "kernel": "bookworm"}


@pytest.mark.parametrize("entry, message", [
    ({**QEMU_ENTRY, "cpus": 0}, "`cpus` must be a whole number from 1 to 4"),
    ({**QEMU_ENTRY, "cpus": 9}, "`cpus` must be a whole number"),
    ({**QEMU_ENTRY, "cpus": True}, "`cpus` must be a whole number"),
    ({**QEMU_ENTRY, "cpus": "2"}, "`cpus` must be a whole number"),
    ({"name": "d", "backend": "docker", "suite": "bookworm", "cpus": 2}, "qemu backend only"),
])
def test_guest_cpus_misuse(entry, message):
    with pytest.raises(BadInput, match=message):
        parse_matrix({"suites": {"bookworm": {}}, "environment": [entry]}, Path("m.toml"))


def test_guest_cpus_reach_the_qemu_command_line(tmp_path):
    matrix = parse_matrix({"suites": {"bookworm": {}}, "environment": [
        {**QEMU_ENTRY, "name": "one"}, {**QEMU_ENTRY, "name": "two", "cpus": 2}]},
        Path("m.toml"))
    assert (matrix.environments["one"].cpus, matrix.environments["two"].cpus) == (1, 2)
    common = dict(qemu="qemu-system-x86_64", accel="tcg", vmlinuz=tmp_path / "vmlinuz",
                  initrd=None, append="", console=tmp_path / "c.log", result=None)
    argv = qemu_argv(**common, cpus=2)
    assert argv[argv.index("-smp") + 1] == "2"
    assert qemu_argv(**common)[argv.index("-smp") + 1] == "1"


def test_the_shipped_matrix_has_one_two_vcpu_guest_and_only_one():
    """Two vCPUs change a TCG guest's clock source (the TSC fails the kernel's synchronisation
    check and the HPET takes over), so only the variant made for the check across CPUs has them,
    with tsc=reliable."""
    several = [e for e in load_matrix().environments.values() if e.cpus != 1]
    assert [(e.name, e.cpus, e.cmdline) for e in several] == [("k6.1-smp2", 2, "tsc=reliable")]


@pytest.mark.qemu
@pytest.mark.slow
def test_real_two_vcpu_guest_runs_the_check_across_cpus(real_qemu):
    """k6.1-smp2 boots with two vCPUs: the helper sees both, pins getcpu to each, and runs the
    CLOCK_MONOTONIC check across CPUs through the vDSO on the TSC, which tsc=reliable keeps."""
    outcome = real_qemu.run_probe(load_matrix().get("k6.1-smp2"), deadline=180,
                                  log=lambda m: None)
    assert outcome.status == "ok", (outcome.errors, outcome.log_tail)
    doc = outcome.document
    assert outcome.identity["qemu"]["vcpus"] == 2
    assert doc["environment"]["kernel"]["clocksource"] == "tsc"
    found = doc["correctness"]
    assert found["cpus"] == [0, 1]
    checks = {c["kind"]: c for c in found["checks"]}
    assert checks["cross_cpu"]["status"] in ("pass", "fail") and checks["cross_cpu"]["made"] > 0
    assert checks["cross_cpu"]["paths"] == "vdso"
    assert checks["getcpu"]["status"] in ("pass", "fail") and checks["getcpu"]["made"] > 0
