"""The package as a user installs it: a wheel built from this tree, installed into a fresh
virtualenv outside the checkout, run from an empty directory. It must carry everything it needs
(the probe's sources, the image recipes, the default matrix) and probe one real environment
(the host: the helper compiled from the wheel's own sources)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    # Nothing of the checkout may leak in: with PYTHONPATH pointing at src/, pip would take the
    # checkout's metadata for an installed vdsomatrix and install nothing.
    return {k: v for k, v in os.environ.items() if k not in ("VDSOMATRIX_ROOT", "PYTHONPATH")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, timeout=600, env=_clean_env())
    (found,) = out.glob("vdsomatrix-*.whl")
    return found


def test_the_wheel_carries_the_probe_recipes_and_matrix(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"vdsomatrix/probes/probe.py", "vdsomatrix/probes/build.sh",
              "vdsomatrix/probes/vdsoprobe.c", "vdsomatrix/probes/syscount.c",
              "vdsomatrix/probes/runtimes/build.sh", "vdsomatrix/images/Dockerfile",
              "vdsomatrix/images/run-base.Dockerfile", "vdsomatrix/images/matrix.toml",
              "vdsomatrix/images/build_only_packages.py",
              "vdsomatrix/schema/result.schema.json"}
    assert wanted <= names, sorted(wanted - names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Every probe source of the checkout is in the wheel, so the image tags agree.
    sources = {f"vdsomatrix/{p.relative_to(ROOT / 'src' / 'vdsomatrix').as_posix()}"
               for p in (ROOT / "src" / "vdsomatrix" / "probes").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sources <= names, sorted(sources - names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(the venv's vdsomatrix script, an empty working directory outside the checkout)."""
    venv = tmp_path_factory.mktemp("venv")
    work = tmp_path_factory.mktemp("empty")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, timeout=900, cwd=work, env=_clean_env())
    assert (venv / "bin" / "vdsomatrix").is_file()
    assert not (work / "probes").exists() and ROOT not in work.parents
    return venv / "bin" / "vdsomatrix", work


def _run(installed, *args, timeout=600):
    script, work = installed
    return subprocess.run([str(script), *args], cwd=work, env=_clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_the_installed_tool_lists_the_matrix_from_an_empty_directory(installed):
    done = _run(installed, "list", "--json")
    assert done.returncode == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)}
    assert {"host", "bookworm", "k6.1"} <= names


def test_the_installed_tool_probes_the_host_from_an_empty_directory(installed):
    done = _run(installed, "probe", "host")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = installed[1] / "reports" / "results" / "host.json"
    doc = json.loads(result.read_text())
    assert doc["run"]["status"] == "ok"
    assert doc["environment"]["name"] == "host"
    assert any(row["status"] == "ok" for row in doc["calls"])
    # The installed copy is not a checkout: no commit can be named.
    assert doc["run"].get("commit") is None
