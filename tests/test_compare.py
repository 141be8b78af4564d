"""`vdsomatrix compare`: behaviour and latency changes between two runs.

The fixtures are real results of two full runs on the same machine (tests/data/compare/baseline
and .../fresh: the host, a static-musl container, and guests under TCG with the vsyscall page
emulated, without a vDSO, and on kernel 6.12), with the shipped bytes and the libc and loader
analysis removed: compare reads the rows, the environment, and ``analysis.vdso``, which stay.
Variants are made by editing copies of them.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import pytest
from fakes import markdown_cells as cells
from fakes import markdown_tables

from vdsomatrix.cli import build_parser, main
from vdsomatrix.compare import FAIL_ON, FLOOR_NS, compare, exit_code, render, summary
from vdsomatrix.errors import BadInput
from vdsomatrix.report.cells import call_row, read_results

DATA = Path(__file__).parent / "data" / "compare"
BASELINE, FRESH = DATA / "baseline", DATA / "fresh"


@functools.cache
def _run(folder: Path) -> tuple[dict, ...]:
    return tuple(json.loads(p.read_text("utf-8")) for p in sorted(folder.glob("*.json")))


def run(folder: Path = FRESH) -> list[dict]:
    return copy.deepcopy(list(_run(folder)))


def env(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["environment"]["name"] == name)


def row(doc: dict, call: str, path: str) -> dict:
    found = call_row(read_results([doc])[0], call, path)
    assert found is not None
    return found


def write(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (folder / f"{doc['environment']['name']}.json").write_text(json.dumps(doc))
    return folder


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["compare", *argv])
    except SystemExit as exc:  # argparse's own exits
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(markdown: str) -> list[str]:
    """The data rows of every table (no header, no ruler)."""
    return [line for t in markdown_tables(markdown) for line in t[2:]]


def unescaped_pipes(line: str) -> int:
    return line.replace("\\|", "").count("|")


# ------------------------------------------------------------------ the same run twice -------

def test_a_run_compared_with_itself_has_no_changes(capsys):
    code, out, err = cli(capsys, str(FRESH), str(FRESH), "--fail-on", "latency")
    assert code == 0, err
    assert out.splitlines()[0] == ("No behaviour changes, no latency changes in 5 "
                                   "environments")
    assert not table_rows(out)
    assert err == ""


def test_a_single_result_file_on_each_side(capsys):
    code, out, _ = cli(capsys, str(BASELINE / "host.json"), str(FRESH / "host.json"))
    assert code == 0
    assert out.startswith("No behaviour changes") and "in 1 environment\n" in out


# ------------------------------------------------------------------ behaviour ----------------

def test_vsyscall_mode_changed_is_named_and_exits_1(tmp_path, capsys):
    new = run()
    env(new, "k6.1-vsyscall-emulate")["vsyscall"]["mode"] = "xonly"
    code, out, err = cli(capsys, str(FRESH), str(write(tmp_path / "new", new)))
    assert code == 1
    assert out.startswith("1 behaviour change, no latency changes in 5 environments")
    assert [cells(line) for line in table_rows(out)] == [
        ["k6.1-vsyscall-emulate", "vsyscall mode", "emulate", "xonly"]]
    assert err.count("\n") == 1 and "--fail-on behaviour" in err


def test_fail_on_none_never_fails(tmp_path, capsys):
    new = run()
    env(new, "host")["vsyscall"]["callable"] = False
    code, out, _ = cli(capsys, str(FRESH), str(write(tmp_path / "new", new)), "--fail-on",
                       "none")
    assert code == 0
    assert "vsyscall callable" in out


def test_a_vdso_symbol_removed(tmp_path):
    new = run()
    analysis = env(new, "host")["analysis"]["vdso"]
    analysis["symbols"] = [s for s in analysis["symbols"]
                           if s["name"] not in ("time", "__vdso_time")]
    comparison = compare(run(), new)
    [change] = comparison.behaviour
    assert (change.environment, change.what) == ("host", "vDSO functions only in one run")
    assert change.old == "__vdso_time, time" and change.new == "—"


def test_no_analysis_means_no_symbol_comparison():
    new = run()
    del env(new, "host")["analysis"]
    assert compare(run(), new).behaviour == []


def test_a_call_that_now_enters_the_kernel(tmp_path):
    new = run()
    row(env(new, "host"), "clock_gettime(CLOCK_MONOTONIC)", "vdso")["syscalls_per_call"] = 1.0
    comparison = compare(run(), new)
    [change] = comparison.behaviour
    assert (change.what, change.old, change.new) == (
        "clock_gettime(CLOCK_MONOTONIC) · vdso", "user", "syscall")
    assert exit_code(comparison, "behaviour") == 1


def test_a_vsyscall_call_that_no_longer_traps():
    new = run()
    row(env(new, "k6.1-vsyscall-emulate"), "time", "vsyscall")["faults_per_call"] = 0.0
    [change] = compare(run(), new).behaviour
    assert (change.old, change.new) == ("trap", "user")


def test_traps_not_counted_is_not_a_change():
    # The container could not open a perf counter in one run: "no syscall" against "user"
    # says nothing about what the call did.
    new = run()
    row(env(new, "host"), "time", "vdso")["faults_per_call"] = None
    assert compare(run(), new).behaviour == []


def test_a_row_that_now_crashes():
    new = run()
    crashed = row(env(new, "k6.1-vsyscall-emulate"), "getcpu", "vsyscall")
    crashed.update(status="crashed", signal="SIGSEGV", ns=None, syscalls_per_call=None,
                   faults_per_call=None)
    [change] = compare(run(), new).behaviour
    assert (change.what, change.old, change.new) == ("getcpu · vsyscall", "trap",
                                                     "crashed (SIGSEGV)")


def test_a_failed_run_is_one_change_not_thirty():
    new = run()
    failed = env(new, "k6.12")
    failed.update(calls=[], vdso={}, vsyscall={})
    failed["run"]["status"] = "timeout"
    [change] = compare(run(), new).behaviour
    assert (change.environment, change.what, change.old, change.new) == (
        "k6.12", "run status", "ok", "timeout")


def test_the_same_change_everywhere_is_one_row():
    old, new = run(), run()
    for before, after in zip(old, new, strict=True):
        before["environment"]["kernel"]["release"] = "9.9.8"
        after["environment"]["kernel"]["release"] = "9.9.9"
    comparison = compare(old, new)
    assert len(comparison.behaviour) == 5
    assert summary(comparison).startswith("5 behaviour changes")
    [line] = table_rows(render(comparison))
    assert "bookworm-musl, host, k6.1-vdso0, k6.1-vsyscall-emulate, k6.12" in line


def test_environments_in_one_run_only_are_listed_not_counted(capsys, tmp_path):
    old, new = run(), run()
    old = [d for d in old if d["environment"]["name"] != "k6.12"]
    new = [d for d in new if d["environment"]["name"] != "host"]
    code, out, _ = cli(capsys, str(write(tmp_path / "old", old)),
                       str(write(tmp_path / "new", new)))
    assert code == 0
    assert out.splitlines()[0] == ("No behaviour changes, no latency changes in 3 environments "
                                   "(1 only in OLD, 1 only in NEW)")
    assert "Only in OLD (not compared): host." in out
    assert "Only in NEW (not compared): k6.12." in out


# ------------------------------------------------------------------ latency ------------------

def _shift(doc: dict, call: str, path: str, *, by: float, spread: float | None = None) -> None:
    """Move a row's median by the factor ``by``; ``spread`` sets min and p90 around it."""
    ns = row(doc, call, path)["ns"]
    median = ns["median"] * by
    if spread is None:
        ns.update(min=ns["min"] * by, median=median, p90=ns["p90"] * by)
    else:
        ns.update(min=median * (1 - spread), median=median, p90=median * (1 + spread))


def test_a_change_outside_the_spread_is_reported():
    new = run()
    _shift(env(new, "host"), "getppid", "syscall", by=1.3)
    comparison = compare(run(), new)
    [change] = comparison.latency
    assert (change.environment, change.call, change.path) == ("host", "getppid", "syscall")
    assert change.relative == pytest.approx(0.3)
    assert exit_code(comparison, "behaviour") == 0
    assert exit_code(comparison, "latency") == 1
    out = render(comparison)
    assert "| +30%" in out and "no behaviour changes, 1 latency change" in out.lower()


def test_a_change_inside_the_spread_is_not():
    new = run()
    # Median 30% up, but this run was noisy: its min–p90 range reaches into the old one.
    _shift(env(new, "host"), "getppid", "syscall", by=1.3, spread=0.3)
    assert compare(run(), new).latency == []


def test_below_a_nanosecond_is_noise():
    # A real pair: clock_gettime(COARSE) by the vDSO went 1.4 -> 2.2 ns in bookworm-musl
    # between the two runs, ranges apart, +50%: still below the floor.
    old, new = env(run(BASELINE), "bookworm-musl"), env(run(FRESH), "bookworm-musl")
    before = row(old, "clock_gettime(CLOCK_MONOTONIC_COARSE)", "vdso")["ns"]
    after = row(new, "clock_gettime(CLOCK_MONOTONIC_COARSE)", "vdso")["ns"]
    assert after["min"] > before["p90"] and after["median"] / before["median"] > 1.4
    assert after["median"] - before["median"] < FLOOR_NS
    moved = {(c.call, c.path) for c in compare([old], [new]).latency}
    assert ("clock_gettime(CLOCK_MONOTONIC_COARSE)", "vdso") not in moved


def test_the_threshold_option(tmp_path, capsys):
    new = run()
    _shift(env(new, "host"), "getppid", "syscall", by=1.15)
    new_dir = str(write(tmp_path / "new", new))
    code, out, _ = cli(capsys, str(FRESH), new_dir, "--fail-on", "latency")
    assert code == 1 and "1 latency change" in out and "more than 10%" in out
    code, out, _ = cli(capsys, str(FRESH), new_dir, "--fail-on", "latency", "--threshold", "20%")
    assert code == 0 and "no latency changes" in out and "more than 20%" in out


def test_latency_is_compared_only_for_rows_ok_in_both_runs():
    new = run()
    crashed = row(env(new, "host"), "getppid", "int80")
    crashed.update(status="crashed", signal="SIGSEGV", ns=None)
    comparison = compare(run(), new)
    assert comparison.latency == [] and len(comparison.behaviour) == 1


def test_a_long_comparison_is_folded_and_bounded(monkeypatch):
    monkeypatch.setattr("vdsomatrix.compare.ROWS_AT_MOST", 40)
    new = run()
    for doc in new:
        for measured in doc["calls"]:
            if measured["status"] == "ok":
                _shift(doc, measured["call"], measured["path"], by=3)
    comparison = compare(run(), new)
    assert len(comparison.latency) > 40
    out = render(comparison)
    shown, folded = markdown_tables(out)
    assert len(shown) == 2 + 15 and len(folded) == 2 + 25
    assert "<details><summary>25 more latency changes</summary>" in out
    assert f"And {len(comparison.latency) - 40} more latency changes, not listed." in out


def test_baseline_against_fresh():
    """The two real runs: no behaviour changed; kernel 6.12 under TCG got slower on every
    clock read (a shift of 16 to 18 ns, far outside both runs' ranges)."""
    comparison = compare(run(BASELINE), run(FRESH))
    assert comparison.behaviour == []
    moved = {(c.environment, c.call, c.path) for c in comparison.latency}
    assert ("k6.12", "time", "vdso") in moved
    assert ("k6.12", "gettimeofday", "vdso") in moved
    # host time · vdso went 0.6 -> 0.0 ns: -100%, ranges apart, below the floor.
    assert ("host", "time", "vdso") not in moved
    out = render(comparison)
    assert "| k6.12 †" in out and "† emulated (QEMU TCG)" in out
    k612 = next(c for c in comparison.latency if c.call == "time" and c.path == "vdso")
    assert k612.emulated == (True, True)


# ------------------------------------------------------------------ machines -----------------

def _on_machine(docs: list[dict], machine) -> list[dict]:
    for doc in docs:
        doc["run"]["machine"] = machine
    return docs


def test_runs_on_different_machines_are_said_so():
    old = _on_machine(run(), {"id": "alpha", "cpu": "x"})
    new = _on_machine(run(), {"id": "beta"})
    _shift(env(new, "host"), "getppid", "syscall", by=1.3)
    comparison = compare(old, new)
    [change] = comparison.latency
    assert change.machines == ("alpha", "beta")
    out = render(comparison)
    assert "host (machines alpha → beta)" in out
    assert "Runs on different machines" in out


def test_same_machine_skips_latency_across_machines():
    old = _on_machine(run(), "alpha")  # older results: the id as a string
    new = _on_machine(run(), {"id": "beta"})
    _shift(env(new, "host"), "getppid", "syscall", by=1.3)
    comparison = compare(old, new, same_machine=True)
    assert comparison.latency == []
    assert "Latency not compared" in render(comparison)


def test_same_machine_keeps_runs_of_one_machine():
    old = _on_machine(run(), {"id": "alpha"})
    new = _on_machine(run(), "alpha")
    _shift(env(new, "host"), "getppid", "syscall", by=1.3)
    [change] = compare(old, new, same_machine=True).latency
    assert change.machines is None


def _host_on(machine: str, doc: dict | None = None) -> dict:
    host = copy.deepcopy(doc or env(run(), "host"))
    host["run"]["machine"] = {"id": machine}
    return host


def test_a_folder_of_several_machines_is_paired_machine_by_machine():
    moved = _host_on("a")
    _shift(moved, "getppid", "syscall", by=1.3)
    comparison = compare([_host_on("a"), _host_on("b")], [moved])
    assert comparison.environments == ["host @ a"]
    assert comparison.only_old == ["host @ b"]
    [change] = comparison.latency
    assert change.environment == "host @ a" and change.machines is None


def test_several_machines_and_none_shared_is_bad_input():
    with pytest.raises(BadInput) as caught:
        compare([_host_on("a"), _host_on("b")], [_host_on("c"), _host_on("d")])
    assert str(caught.value) == ("OLD and NEW have no environment in common on the same "
                                 "machine: OLD has host @ a, host @ b; NEW has host @ c, "
                                 "host @ d")


# ------------------------------------------------------------------ bad input ----------------

def test_no_environment_in_common(tmp_path, capsys):
    old = [env(run(), "host")]
    new = [env(run(), "k6.12"), env(run(), "k6.1-vdso0")]
    code, out, err = cli(capsys, str(write(tmp_path / "old", old)),
                         str(write(tmp_path / "new", new)))
    assert code == 2 and out == ""
    assert err == ("vdsomatrix: OLD and NEW have no environment in common: OLD has host; "
                   "NEW has k6.1-vdso0, k6.12\n")


def test_the_cli_offers_every_fail_on():
    compare_parser = build_parser()._subparsers._group_actions[0].choices["compare"]
    [fail_on] = [a for a in compare_parser._actions if a.dest == "fail_on"]
    assert tuple(fail_on.choices) == FAIL_ON


@pytest.mark.parametrize("argv,fragment", [
    (["missing", str(FRESH)], "OLD missing: no such file or folder"),
    ([str(FRESH), "missing"], "NEW missing: no such file or folder"),
    ([str(FRESH), "EMPTY"], "NEW EMPTY: no usable result files; give a folder"),
    ([str(FRESH), str(FRESH), "--fail-on", "regressions"], "invalid choice"),
    ([str(FRESH), str(FRESH), "--threshold", "0"], "above 0"),
    ([str(FRESH), str(FRESH), "--threshold", "nan"], "above 0"),
    ([str(FRESH), str(FRESH), "--threshold", "lots"], "not a percentage"),
    ([str(FRESH), str(FRESH), "--threshold=-5%"], "above 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and fragment in err


def test_an_unreadable_folder(tmp_path, capsys, monkeypatch):
    locked = write(tmp_path / "locked", run())
    # As if it were mode 000 (which root could read anyway).
    monkeypatch.setattr("vdsomatrix.compare.os.access", lambda path, mode: path != locked)
    code, _, err = cli(capsys, str(locked), str(FRESH))
    assert code == 2
    assert err == f"vdsomatrix: OLD {locked}: not readable; check its permissions\n"


def test_corrupt_files_are_skipped_one_line_each(tmp_path, capsys):
    old = write(tmp_path / "old", run())
    (old / "broken.json").write_text("{not json")
    (old / "wrong.json").write_text(json.dumps({"schema": "vdsomatrix/1"}))
    code, out, err = cli(capsys, str(old), str(FRESH))
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 2
    assert "skipped OLD: " in lines[0] and "broken.json" in lines[0]
    assert "wrong.json" in lines[1]
    assert "in 5 environments" in out


def test_only_corrupt_files_is_bad_input(tmp_path, capsys):
    (tmp_path / "broken.json").write_text("[")
    code, _, err = cli(capsys, str(FRESH), str(tmp_path))
    assert code == 2
    assert err.splitlines()[-1].endswith(
        "no usable result files (1 skipped, see above); give a folder that `vdsomatrix run` "
        "wrote (reports/results)")


def test_out_writes_the_markdown(tmp_path, capsys):
    target = tmp_path / "comment.md"
    code, out, err = cli(capsys, str(BASELINE), str(FRESH), "--out", str(target))
    assert code == 0 and out == ""
    assert str(target) in err
    assert target.read_text().startswith("No behaviour changes, ")


# ------------------------------------------------------------------ hostile input ------------

HOSTILE_NAME = "<script>x</script>|[a](http://evil.example)`# h"


def test_hostile_strings_stay_escaped():
    old, new = run(), run()
    for doc in (env(old, "host"), env(new, "host")):
        doc["environment"]["name"] = HOSTILE_NAME
    hostile = env(new, HOSTILE_NAME)
    hostile["environment"]["libc"]["version"] = "<img src=x onerror=alert(1)>"
    hostile["analysis"]["vdso"]["symbols"].append({"name": "| evil | [x](http://e.example)",
                                                   "type": "FUNC"})
    crashed = row(hostile, "getppid", "int80")
    crashed.update(status="crashed", signal="\x1b[31mSIG|SEGV\u202e", ns=None)
    hostile["calls"].append({"call": "*bold*|`code`", "path": "vdso", "status": "unsupported"})
    _shift(hostile, "getppid", "syscall", by=2)
    for doc in old + new:
        doc["run"]["machine"] = {"id": "<b>m</b>|"} if doc in old else {"id": "www.evil.example"}

    out = render(compare(old, new))
    for raw in ("<script>", "<img", "<b>", "http://", "www.evil", "\x1b", "\u202e", "*bold*",
                "`code`"):
        assert raw not in out, raw
    assert not re.search(r"(?<!\\)\]\(", out)  # no link: every "]" before a "(" is escaped
    assert "&lt;script&gt;" in out and "&lt;img src=x" in out
    rows = table_rows(out)
    assert any("SIG\\|SEGV" in line for line in rows)
    for t in markdown_tables(out):
        columns = unescaped_pipes(t[0])
        assert all(unescaped_pipes(line) == columns for line in t), t


def test_hostile_names_in_the_no_common_error_are_inert():
    old = [env(run(), "host")]
    old[0]["environment"]["name"] = "\x1b[2Jevil\nline"
    with pytest.raises(BadInput) as caught:
        compare(old, [env(run(), "k6.12")])
    message = str(caught.value)
    assert "\x1b" not in message and "\n" not in message


def test_a_runtime_call_that_now_enters_the_kernel_is_a_behaviour_change():
    from runtime_docs import runtime_doc, suite_rows

    old = [runtime_doc("bookworm-runtimes", suite_rows("bookworm"))]
    new = [runtime_doc("bookworm-runtimes", suite_rows("bookworm", enters=True))]
    comparison = compare(old, new)
    changed = {change.what: (change.old, change.new) for change in comparison.behaviour}
    assert changed["System.nanoTime() · openjdk-17"] == ("no syscall", "syscall")
    # the baseline entered the kernel in both runs: not a change
    assert "Thread.yield() · openjdk-17" not in changed
    assert exit_code(comparison, "behaviour") == 1
    assert compare(old, copy.deepcopy(old)).behaviour == []
