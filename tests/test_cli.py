"""The command line: exit codes and one-line errors."""

import json

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
