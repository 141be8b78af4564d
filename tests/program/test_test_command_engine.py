"""`vdsomatrix test` for real: programs built here at test time, run through the command line
in the bookworm probe image (and bullseye's and bookworm-i386's when this machine has them
built), each run leaving no container of this test process behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import program_docs as docs
import pytest
from program_builds import EXEC_FROM_TMP_SH, host_vsyscall_mode, i386_exit0
from program_fixtures import *  # noqa: F403 (the programs built here)

from vdsomatrix import cli
from vdsomatrix.engine.container import PIDS_LIMIT
from vdsomatrix.engine.leftovers import OWNER_PID
from vdsomatrix.images import probe_image
from vdsomatrix.matrix import load_matrix
from vdsomatrix.program.containers import OUTPUT_CAP

pytestmark = pytest.mark.engine


def needs_image(env_name: str) -> None:
    """Skip unless the probe image of ``env_name`` is built here (bookworm is built on demand
    by the command itself; the others would take minutes)."""
    built, reason = probe_image.image_status(load_matrix(None).get(env_name).userland)
    if not built:
        pytest.skip(f"{env_name}: {reason}")


@pytest.fixture
def vtest(engine, tmp_path, monkeypatch, capsys):
    """Run `vdsomatrix test PROGRAM ARGS...` in an empty folder: (exit code, table, the one
    environment's entry of the JSON document); then check that no container of ours is left."""
    monkeypatch.chdir(tmp_path)

    def run(program: Path, *options: str, env: str = "bookworm"):
        out = tmp_path / f"{program.name}.json"
        code = cli.main(["test", str(program), "--env", env, "--out", str(out), *options])
        table, _ = capsys.readouterr()
        mine = engine.containers.list(all=True, filters={"label": f"{OWNER_PID}={os.getpid()}"})
        assert mine == [], f"containers left behind: {[c.name for c in mine]}"
        [entry] = json.loads(out.read_text())["environments"]
        return code, table, entry

    return run


def test_a_passing_program(vtest, glibc_dynamic):
    code, table, entry = vtest(glibc_dynamic)
    assert code == 0 and "| passed" in table
    assert entry["verdict"]["stderr_tail"] == ["hello"]
    launcher = entry["launcher"]
    assert launcher["traced"] is True and launcher["syscalls_by_name"]["execve"] == 1
    assert launcher["processes"] == 1


def test_the_expected_exit_status(vtest, exits_3):
    code, _, entry = vtest(exits_3, "--expect-exit", "3")
    assert code == 0 and entry["verdict"]["kind"] == "passed"
    code, table, entry = vtest(exits_3)
    assert code == 1 and entry["verdict"]["kind"] == "failed"
    assert "exited with status 3 (expected 0): bad input" in entry["verdict"]["cause"]


def test_a_static_vsyscall_caller(vtest, vsyscall_static):
    code, _, entry = vtest(vsyscall_static)
    if host_vsyscall_mode() == "none":
        assert entry["verdict"]["kind"] == "crashed"
        return
    assert code == 0 and entry["verdict"]["kind"] == "passed"
    assert entry["launcher"]["vsyscall_traps"] > 0


def test_a_null_dereference(vtest, null_deref):
    code, _, entry = vtest(null_deref)
    assert code == 1
    verdict = entry["verdict"]
    assert (verdict["kind"], verdict["signal"], verdict["fault_address"]) == (
        "crashed", "SIGSEGV", "0x0")
    assert "null pointer dereference" in verdict["cause"]


def test_a_glibc_2_34_program_in_bullseye(vtest, glibc_dynamic, tmp_path):
    needs_image("bullseye")
    results = tmp_path / "reports" / "results"
    results.mkdir(parents=True)
    (results / "bullseye.json").write_text(json.dumps(docs.bullseye_dynamic()))
    code, table, entry = vtest(glibc_dynamic, env="bullseye")
    assert code == 1
    verdict, prediction = entry["verdict"], entry["prediction"]
    assert (verdict["kind"], verdict["missing"]) == ("loader-error", "GLIBC_2.34")
    assert (prediction["kind"], prediction["missing"]) == ("loader-error", "GLIBC_2.34")
    assert entry["disagreement"] is None and "GLIBC\\_2.34" in table


def test_i386_programs_in_the_i386_userland(vtest, tmp_path):
    needs_image("bookworm-i386")
    program = tmp_path / "exit0-i386"
    program.write_bytes(i386_exit0())
    code, _, entry = vtest(program, env="bookworm-i386")
    assert code == 0 and entry["verdict"]["kind"] == "passed"
    assert entry["launcher"]["syscalls_by_name"] is None  # i386 numbers, not named


def test_a_fork_bomb_is_bounded_by_the_pids_limit(vtest, fork_bomb):
    code, _, entry = vtest(fork_bomb, "--timeout", "30")
    # Every process of the tree forks for 3 s and then exits 0: most forks are refused.
    assert code == 0 and entry["verdict"]["kind"] == "passed"
    assert 1 < entry["launcher"]["processes"] <= PIDS_LIMIT


def test_a_writer_without_end_is_bounded(vtest, endless_writer):
    code, _, entry = vtest(endless_writer, "--timeout", "4")
    assert code == 1 and entry["verdict"]["kind"] == "timed-out"
    stdout = entry["launcher"]["output"]["stdout"]
    assert stdout["passed"] <= OUTPUT_CAP and stdout["dropped"] > 0


def test_a_sleeper_times_out_at_its_timeout(vtest, sleeper):
    code, _, entry = vtest(sleeper, "--timeout", "3")
    assert code == 1 and entry["verdict"]["kind"] == "timed-out"
    assert 2.5 < entry["seconds"] < 3 + 20


def test_nothing_written_can_be_run(vtest, tmp_path):
    script = tmp_path / "exec-from-tmp"
    script.write_text(EXEC_FROM_TMP_SH)
    code, _, entry = vtest(script)
    assert code == 1 and entry["verdict"]["kind"] == "cannot-execute"
    assert entry["verdict"]["exec_errno"] == "EACCES"


def test_a_file_neither_elf_nor_script_runs_and_the_kernel_refuses_it(vtest, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("just words\n")
    code, _, entry = vtest(notes)
    assert code == 1
    assert (entry["verdict"]["kind"], entry["verdict"]["exec_errno"]) == (
        "cannot-execute", "ENOEXEC")
    assert entry["prediction"]["kind"] == "cannot-execute"  # from the ELF facts alone
