"""The GitHub Actions workflow, checked offline: actionlint (with shellcheck on its scripts) and
GitHub's workflow schema, its shape (pinned actions, permissions, timeouts), and its two Python
steps run here on real and made-up inputs. Also the log folding it relies on (::group::)."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require
from fakes import host_env, install

from vdsomatrix import runner
from vdsomatrix.machine import check_label

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = ROOT / "src" / "vdsomatrix" / "images"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
MATRIX_WORKFLOW = ROOT / ".github" / "workflows" / "matrix.yml"


def tool(name: str) -> str:
    """A console script of the test environment (next to this Python), else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        require(name, "install the test extra: pip install -e '.[test]'")
    return found


def workflow(path: Path = MATRIX_WORKFLOW) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def step(step_id: str) -> dict:
    for job in workflow()["jobs"].values():
        for candidate in job["steps"]:
            if candidate.get("id") == step_id:
                return candidate
    raise AssertionError(f"no step with id {step_id!r} in {MATRIX_WORKFLOW.name}")


def run_python_step(step_id: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a `shell: python` step's script the way the runner does: a file run by python."""
    script = step(step_id)
    assert script.get("shell") == "python"
    path = cwd / f"{step_id}.py"
    path.write_text(script["run"], encoding="utf-8")
    return subprocess.run([sys.executable, str(path)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_there_is_a_workflow_to_check():
    assert MATRIX_WORKFLOW in WORKFLOWS


def test_actionlint_finds_nothing():
    result = subprocess.run([tool("actionlint"), "-no-color", *map(str, WORKFLOWS)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # Without shellcheck actionlint skips the `run:` scripts without a word.
    if shutil.which("shellcheck") is None:
        require("shellcheck", "the run: scripts went unchecked (apt-get install shellcheck)")


def test_workflows_match_githubs_schema():
    # The vendored schema ships inside check-jsonschema: nothing is downloaded.
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema",
                             "vendor.github-workflows", *map(str, WORKFLOWS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actions_are_pinned_by_major_version_and_jobs_are_bounded():
    document = workflow()
    assert document["permissions"] == {"contents": "read"}
    for name, job in document["jobs"].items():
        assert "timeout-minutes" in job, f"job {name} has no timeout"
        for each in job["steps"]:
            if "uses" in each:
                action, _, version = each["uses"].partition("@")
                assert action.startswith("actions/") and version[:1] == "v"
                assert version[1:].isdigit(), f"{each['uses']}: pin a major version (vN)"


def list_json(tmp_path: Path) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "vdsomatrix", "list", "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (tmp_path / "environments.json").write_text(result.stdout, encoding="utf-8")
    return json.loads(result.stdout)


def test_every_environment_runs_in_exactly_one_job_of_its_suite_or_kernel(tmp_path):
    environments = {env["name"]: env for env in list_json(tmp_path)}
    output = tmp_path / "github_output"
    result = run_python_step("groups", tmp_path, GITHUB_OUTPUT=str(output))
    assert result.returncode == 0, result.stderr
    key, _, value = output.read_text(encoding="utf-8").strip().partition("=")
    assert key == "groups"
    jobs = json.loads(value)

    placed = [name for job in jobs for name in job["environments"].split()]
    assert sorted(placed) == sorted(environments)
    for job in jobs:
        members = [environments[name] for name in job["environments"].split()]
        assert {env["backend"] for env in members} == {job["backend"]}
        if job["backend"] == "docker":
            assert len({env["suite"] for env in members}) == 1
        if job["backend"] == "qemu":
            assert len({env["kernel"] for env in members}) == 1
        assert isinstance(job["minutes"], int) and job["minutes"] > 0
        check_label(f"{job['group']}-Linux")  # the workflow's --label
    by_backend = {}
    for job in jobs:
        by_backend.setdefault(job["backend"], []).append(job["group"])
    # Each host environment (the machine, its runtimes) runs alone: it needs no image.
    assert by_backend["host"] == [n for n, e in environments.items() if e["backend"] == "host"]
    assert len(by_backend["docker"]) == len({e["suite"] for e in environments.values()
                                             if e["backend"] == "docker"})


def test_grouping_refuses_an_empty_listing(tmp_path):
    (tmp_path / "environments.json").write_text("[]", encoding="utf-8")
    result = run_python_step("groups", tmp_path, GITHUB_OUTPUT=str(tmp_path / "out"))
    assert result.returncode != 0 and "no environment" in result.stderr


REPORT = """# vdsomatrix report

3 environments.

## At a glance

- **vDSO**: mapped in 2 of 3 environments; absent in: k6.1-vdso0.
- **A system call** costs 112 ns.

## Environments

| environment | host |
|---|---|
"""


def test_summary_holds_at_a_glance_and_the_exported_tables(tmp_path):
    rendered = tmp_path / "rendered"
    (rendered / "tables").mkdir(parents=True)
    (rendered / "REPORT.md").write_text(REPORT, encoding="utf-8")
    (rendered / "tables" / "vdso.md").write_text(
        "<!-- --8<-- [start:vdso] -->\n| environment | vDSO |\n|---|---|\n| host | yes |\n"
        "<!-- --8<-- [end:vdso] -->\n", encoding="utf-8")
    summary = tmp_path / "summary.md"
    result = run_python_step("summary", tmp_path, GITHUB_STEP_SUMMARY=str(summary),
                             REPORT_DIR="rendered")
    assert result.returncode == 0, result.stderr
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## At a glance\n") and "absent in: k6.1-vdso0" in text
    assert "## Environments" not in text
    assert "### vdso" in text and "| host | yes |" in text and "--8<--" not in text


def export_report(out: Path) -> None:
    """The real report and its tables, rendered from the results in tests/data."""
    usage = subprocess.run([sys.executable, "-m", "vdsomatrix", "report", "--help"],
                           capture_output=True, text=True, timeout=60).stdout
    if "--format" not in usage:
        pytest.skip("this vdsomatrix exports no tables (report has no --format)")
    result = subprocess.run([sys.executable, "-m", "vdsomatrix", "report", "--results",
                             str(ROOT / "tests" / "data"), "--out", str(out), "--format", "md"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_summary_of_a_real_report_has_every_table_it_names(tmp_path):
    export_report(tmp_path / "rendered")
    summary = tmp_path / "summary.md"
    result = run_python_step("summary", tmp_path, GITHUB_STEP_SUMMARY=str(summary),
                             REPORT_DIR="rendered")
    assert result.returncode == 0, result.stderr
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## At a glance\n") and "<a id=" not in text
    named = re.search(r"^TABLES = (\(.*\))$", step("summary")["run"], re.MULTILINE)
    for table_id in ast.literal_eval(named.group(1)):
        assert f"### {table_id}\n" in text, f"the exporter wrote no {table_id}.md"


def test_summary_says_when_there_is_no_report(tmp_path):
    summary = tmp_path / "summary.md"
    result = run_python_step("summary", tmp_path, GITHUB_STEP_SUMMARY=str(summary),
                             REPORT_DIR="rendered")
    assert result.returncode == 0, result.stderr
    assert "No report was rendered" in summary.read_text(encoding="utf-8")


def test_nox_tags_select_the_probe_sessions_of_one_backend():
    nox = shutil.which("nox")
    if nox is None:
        require("nox", "install nox (.ci/setup-machine does)")
    matrix = _matrix()
    for backend in ("host", "docker", "qemu"):
        # --list shows only what is selected: here, what the tag selects.
        result = subprocess.run([nox, "-t", backend, "--list", "--json"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        listed = {s["session"] for s in json.loads(result.stdout)}
        assert listed == {f"probe({env.name})" for env in matrix.environments.values()
                          if env.backend == backend}


def _matrix():
    from vdsomatrix.matrix import load_matrix

    return load_matrix(IMAGES_DIR / "matrix.toml")


# ::group:: folding in the runner's log.

def test_progress_folds_only_under_github_actions(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    stream = io.StringIO()
    progress = runner.Progress(1, stream=stream)
    progress.group("prepare: images and kernels")
    progress.log("building bookworm")
    progress.end_group()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "::group::prepare: images and kernels"
    assert lines[1].endswith(" building bookworm")
    assert lines[2] == "::endgroup::"

    for value in (None, "false"):
        if value is None:
            monkeypatch.delenv("GITHUB_ACTIONS")
        else:
            monkeypatch.setenv("GITHUB_ACTIONS", value)
        stream = io.StringIO()
        progress = runner.Progress(1, stream=stream)
        progress.group("prepare")
        progress.end_group()
        assert stream.getvalue() == ""


def test_the_prepare_phase_is_folded_and_the_measurements_are_not(monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    fakes = install(monkeypatch)
    monkeypatch.setattr(fakes["host"], "prepare",
                        lambda env, *, rebuild, log: log("building the helper"))
    stream = io.StringIO()
    runner.run_environments([host_env()], tmp_path, jobs=1,
                            progress=runner.Progress(1, stream=stream))
    lines = stream.getvalue().splitlines()
    opened = lines.index("::group::prepare: images and kernels")
    closed = lines.index("::endgroup::")
    built = next(i for i, line in enumerate(lines) if line.endswith("building the helper"))
    measured = next(i for i, line in enumerate(lines) if "host: ok" in line)
    assert opened < built < closed < measured
