"""The command line: exit codes and one-line errors."""

import json

import pytest

from vdsomatrix import SCHEMA
from vdsomatrix.cli import main


def test_unknown_environment_exits_2(capsys):
    assert main(["probe", "--env", "atlantis"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vdsomatrix list" in err


def test_malformed_matrix_exits_2(tmp_path, capsys):
    bad = tmp_path / "m.toml"
    bad.write_text("[[environment]]\nname = 'x'\nbackend = 'vmware'\n")
    assert main(["--matrix", str(bad), "list"]) == 2
    assert "backend" in capsys.readouterr().err


def test_report_without_results_exits_2(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "run `vdsomatrix run`" in capsys.readouterr().err


def test_report_skips_corrupt_files(tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{not json")
    good = {"schema": SCHEMA, "environment": {"name": "g", "backend": "host"}, "vdso": {},
            "vsyscall": {}, "calls": [], "errors": []}
    (tmp_path / "g.json").write_text(json.dumps(good))
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path)]) == 0
    assert "broken.json" in capsys.readouterr().err
    assert "broken.json" in (tmp_path / "REPORT.md").read_text()


def test_probe_host_writes_its_result(tmp_path):
    assert main(["probe", "--env", "host", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "host.json").read_text())
    assert doc["run"]["status"] == "ok"
    assert doc["environment"]["name"] == "host"


@pytest.mark.parametrize("argv,fragment", [
    (["probe", "host", "--deadline", "nan"], "above 0"),
    (["probe", "host", "--deadline", "inf"], "above 0"),
    (["probe", "host", "--deadline", "-1"], "above 0"),
    (["probe", "host", "--deadline", "soon"], "not a number"),
    (["images", "--jobs", "0"], "at least 1"),
    (["run", "--jobs", "two"], "not a whole number"),
    (["run", "--backend", "vmware"], "invalid choice"),
    (["report", "--format", "pdf"], "unknown format"),
    (["probe"], "name one environment"),
    (["probe", "host", "--env", "sid"], "name one environment"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    code = _exit_code(lambda: main(argv))
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def _exit_code(call) -> int:
    try:
        return call()
    except SystemExit as exc:  # argparse exits itself
        return exc.code


@pytest.mark.parametrize("make", [
    lambda tmp: tmp,  # a folder
    lambda tmp: tmp / "missing.toml",
])
def test_bad_matrix_paths_are_one_line(tmp_path, capsys, make):
    assert main(["--matrix", str(make(tmp_path)), "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--matrix" in err


def test_probe_takes_the_name_as_an_argument(tmp_path):
    assert main(["probe", "host", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "host.json").is_file()


def test_list_says_a_shared_reason_once(monkeypatch, capsys):
    from vdsomatrix.backends.base import Availability
    from vdsomatrix.backends.docker import DockerBackend

    monkeypatch.setattr(DockerBackend, "can_start",
                        lambda self: Availability(False, "no Docker engine reachable (test)"))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.count("no Docker engine reachable (test)") == 1
    from vdsomatrix.matrix import load_matrix

    docker = [e for e in load_matrix().environments.values() if e.backend == "docker"]
    assert out.count("see [1]") == len(docker)


def test_list_json_is_one_object_per_environment(capsys):
    assert main(["list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    from vdsomatrix.matrix import load_matrix

    assert [e["name"] for e in entries] == list(load_matrix().environments)
    host = entries[0]
    assert host["backend"] == "host" and host["runs_here"] is True and host["tags"] == ["host"]


def test_env_globs_select_in_matrix_order():
    from vdsomatrix.cli import _select
    from vdsomatrix.matrix import load_matrix

    matrix = load_matrix()
    chosen = [e.name for e in _select(matrix, ["k6.1-vsyscall-*", "host"], [])]
    assert chosen == ["host", "k6.1-vsyscall-emulate", "k6.1-vsyscall-xonly",
                      "k6.1-vsyscall-none"]


def test_a_labelled_run_records_its_machine(tmp_path):
    assert main(["probe", "host", "--label", "ci-amd", "--out", str(tmp_path)]) == 0
    machine = json.loads((tmp_path / "host.json").read_text())["run"]["machine"]
    assert machine["id"] == machine["label"] == "ci-amd"
    assert machine["kernel"] and "hypervisor" in machine and isinstance(
        machine["mitigations"], dict)
