"""`vdsomatrix test` with a fake engine: its input errors, the container it asks for, the table
and the JSON document, the exit code, and what it does with hostile output."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import program_docs as docs
import pytest
from fakes import FakeClient, FakeImage, markdown_cells, markdown_tables

from vdsomatrix import cli, runner
from vdsomatrix.matrix import BackendName, Build, load_matrix
from vdsomatrix.program import containers, summary, testing


def launcher_doc(**fields) -> dict:
    doc = {"launcher": "vdsomatrix-launch/1", "program": "/vdsomatrix/program/prog",
           "traced": True, "method": "seccomp-trace", "exec_errno": None, "exit_status": 0,
           "signal": None, "fault_address": None, "fault_ip": None, "timed_out": False,
           "seconds": 0.01, "processes": 1, "threads": 0,
           "syscalls": {"59": 1, "231": 1, "9999": 2, "x": 5}, "syscalls_total": 4,
           "vsyscall_traps": 0,
           "output": {"stdout": {"passed": 6, "dropped": 0},
                      "stderr": {"passed": 0, "dropped": 0}}, "errors": []}
    return {**doc, **fields}


@pytest.fixture
def engine(monkeypatch, tmp_path):
    """A fake engine whose containers print ``engine.document`` (set by the test) as the
    launcher's; every environment counts as prepared; cwd is an empty folder."""
    state = {"client": None, "document": launcher_doc(), "stderr": b"", "exit_code": 0}

    def factory(timeout=None):
        stdout = json.dumps(state["document"]).encode() if state["document"] else b""
        state["client"] = FakeClient(stdout=stdout, stderr=state["stderr"],
                                     exit_code=state["exit_code"])
        return state["client"]

    monkeypatch.setattr(testing, "docker_client", factory)
    # The probe's profile, whatever this machine's engine and default.json (seccomp.py's tests)
    monkeypatch.setattr(containers.seccomp, "build",
                        lambda kind, **kw: SimpleNamespace(text=f"{{\"profile\": \"{kind}\"}}"))
    monkeypatch.setattr(testing, "find_image", lambda client, tag: FakeImage(tag))
    monkeypatch.setattr(runner, "prepare", lambda env, rebuild, log: None)
    monkeypatch.chdir(tmp_path)
    return state


@pytest.fixture
def program(tmp_path) -> Path:
    path = tmp_path / "prog"
    path.write_bytes(Path("/bin/true").read_bytes())
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["test", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path, words", [("/nonexistent/prog", "cannot open"),
                                         ("/tmp", "is a directory"),
                                         ("/dev/null", "not a regular file")])
def test_a_path_that_is_no_program_file_is_bad_input(capsys, path, words):
    code, out, err = run_cli(capsys, path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and words in err and err.startswith("vdsomatrix: ")


def test_a_missing_file_option_or_format_is_bad_input(capsys, program):
    code, _, err = run_cli(capsys, str(program), "--file", "/nonexistent/data")
    assert code == 2 and "--file /nonexistent/data" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, str(program), "--format", "html")
    assert code == 2 and "--format html" in err
    code, _, err = run_cli(capsys, str(program), "--env", "no-such-env")
    assert code == 2 and "unknown environment" in err


def test_everything_after_the_double_dash_is_the_programs():
    args = cli._parse(cli.build_parser(), ["test", "P", "--env", "x", "--", "a", "--env", "-b"])
    assert (args.program, args.env, args.arguments) == ("P", ["x"], ["a", "--env", "-b"])
    assert cli._parse(cli.build_parser(), ["test", "P", "a"]).arguments == ["a"]


def test_the_default_environments_are_one_per_userland_image():
    envs = testing.default_environments(load_matrix(None))
    names = [e.name for e in envs]
    assert "bookworm" in names and "bookworm-i386" in names
    assert all(e.backend == BackendName.DOCKER and e.build == Build.DYNAMIC for e in envs)
    assert not any(e.time_namespace or e.seccomp != "probe" or e.runtimes for e in envs)


def test_a_passing_program_in_a_confined_container(capsys, engine, program, tmp_path):
    out_file = tmp_path / "out" / "t.json"
    code, out, err = run_cli(capsys, str(program), "--env", "bookworm", "--out", str(out_file),
                             "--", "one", "two")
    assert code == 0, err
    [table] = markdown_tables(out)
    assert markdown_cells(table[2])[:3] == ["prog", "bookworm", "passed"]
    [created] = engine["client"].created
    command = created["command"]
    assert "/opt/vdsomatrix/bin/launch" in command and "--result-fd" in command
    assert command[-3:] == ["/vdsomatrix/program/prog", "one", "two"]
    [(host, mount)] = created["volumes"].items()
    assert mount == {"bind": "/vdsomatrix/program", "mode": "ro"}
    assert not Path(host).exists(), "the staged folder is removed afterwards"
    assert created["read_only"] and created["user"] == "65534:65534"
    assert created["network_mode"] == "none" and created["cap_drop"] == ["ALL"]
    assert "noexec" in created["tmpfs"]["/tmp"] and created["pids_limit"] > 0
    assert created["mem_limit"] and 'seccomp={"profile": "probe"}' in created["security_opt"]
    assert engine["client"].removed, "the container is removed"
    doc = json.loads(out_file.read_text())
    assert doc["schema"] == "vdsomatrix-test/1"
    assert doc["program"]["arguments"] == ["one", "two"]
    assert doc["program"]["facts"]["kind"] == "elf"
    [entry] = doc["environments"]
    assert entry["verdict"]["kind"] == "passed" and entry["status"] == "ran"
    assert entry["launcher"]["syscalls"] == {"59": 1, "231": 1, "9999": 2}
    assert entry["launcher"]["syscalls_by_name"] == {"execve": 1, "exit_group": 1,
                                                     "syscall_9999": 2}
    assert entry["prediction"]["kind"] == "unknown"
    assert "run `vdsomatrix probe bookworm` first" in entry["prediction"]["reason"]
    assert doc["summary"]["exit_code"] == 0


def test_the_document_goes_to_reports_tests_by_default(capsys, engine, program, tmp_path):
    code, _, _ = run_cli(capsys, str(program), "--env", "bookworm", "--format", "json")
    assert code == 0
    assert json.loads((tmp_path / "reports" / "tests" / "prog.json").read_text())


def test_the_expected_exit_status_decides(capsys, engine, program):
    engine["document"] = launcher_doc(exit_status=3)
    code, out, err = run_cli(capsys, str(program), "--env", "bookworm", "--format", "md")
    assert code == 1 and "expected 0" in out and "did not pass" in err
    code, out, _ = run_cli(capsys, str(program), "--env", "bookworm", "--expect-exit", "3",
                           "--format", "md")
    assert code == 0 and "| passed" in out


def test_guests_are_skipped_not_yet(capsys, engine, program):
    code, out, _ = run_cli(capsys, str(program), "--env", "k6.1", "--env", "bookworm",
                           "--format", "md")
    assert code == 0
    row = next(r for r in markdown_tables(out)[0] if "k6.1" in r)
    assert "skipped" in row and "not yet: containers only" in row
    code, _, err = run_cli(capsys, str(program), "--env", "k6.1", "--format", "md")
    assert code == 1 and "ran nowhere" in err


def test_hostile_output_is_made_inert(capsys, engine, program, tmp_path):
    engine["document"] = launcher_doc(exit_status=1, errors=["\x1b[2Jgone\nline"],
                                      method="<b>x</b>" * 20)
    engine["stderr"] = b"\x1b]0;owned\x07| <img src=x> [link](http://evil.example) **b**\n"
    code, out, _ = run_cli(capsys, str(program), "--env", "bookworm", "--out",
                           str(tmp_path / "h.json"))
    assert code == 1
    assert "\x1b" not in out and "\x07" not in out and "<img" not in out
    assert "](http://" not in out and "\\*\\*b\\*\\*" in out
    [table] = markdown_tables(out)
    assert len(markdown_cells(table[2])) == 6, "a | in the cause opens no cell"
    doc = json.loads((tmp_path / "h.json").read_text())
    launcher = doc["environments"][0]["launcher"]
    [error] = launcher["errors"]
    assert "\x1b" not in error and "\n" not in error and "gone" in error
    assert len(launcher["method"]) <= 40


def test_no_document_from_the_launcher_is_a_failure_saying_why(capsys, engine, program):
    engine["document"] = None
    engine["exit_code"] = 137
    code, out, _ = run_cli(capsys, str(program), "--env", "bookworm", "--format", "md")
    assert code == 1 and "no verdict: the launcher wrote no document" in out


def test_the_prediction_comes_from_the_probe_result(capsys, engine, program, tmp_path):
    result = docs.bookworm_xonly()
    result["environment"]["name"] = "bookworm"
    (tmp_path / "reports" / "results").mkdir(parents=True)
    (tmp_path / "reports" / "results" / "bookworm.json").write_text(json.dumps(result))
    engine["document"] = launcher_doc(exit_status=127)
    engine["stderr"] = (b"/vdsomatrix/program/prog: /lib/x86_64-linux-gnu/libc.so.6: version "
                        b"`GLIBC_2.99' not found (required by /vdsomatrix/program/prog)\n")
    code, out, _ = run_cli(capsys, str(program), "--env", "bookworm", "--format", "md")
    assert code == 1
    cells = markdown_cells(markdown_tables(out)[0][2])
    assert cells[2] == "loader-error" and cells[4] == "passed"
    assert cells[5].startswith("**yes**")


def test_a_file_neither_elf_nor_script_still_runs(tmp_path, engine):
    text = tmp_path / "notes.txt"
    text.write_text("just words\n")
    program = testing.load_program(text, arguments=[], files=[], expected_exit=0, timeout=5)
    assert program.facts["kind"] == "not-executable"
    engine["document"] = launcher_doc(exit_status=None, exec_errno="ENOEXEC")
    env = load_matrix(None).get("bookworm")
    [test] = testing.run_everywhere(program, [env], results_dir=tmp_path)
    assert (test.verdict.kind, test.verdict.exec_errno) == ("cannot-execute", "ENOEXEC")
    assert "neither an ELF file nor a #! script" in test.verdict.cause


def test_files_are_staged_beside_the_program_readable_by_all(tmp_path):
    data = tmp_path / "input.dat"
    data.write_text("x")
    folder = tmp_path / "stage"
    folder.mkdir()
    name = containers.stage(folder, "my prog;rm", b"\x7fELF", [data])
    assert name == "program"
    assert (folder / "input.dat").stat().st_mode & 0o004
    assert (folder / "program").stat().st_mode & 0o111
    with pytest.raises(Exception, match="already there"):
        containers.stage(folder, "x", b"", [data, data])


def test_i386_counts_are_not_named_with_the_x86_64_table():
    assert summary.by_name({"1": 1}, "i386") is None
    assert summary.by_name({"1": 1, "other": 2}, "amd64") == {"write": 1, "other": 2}
