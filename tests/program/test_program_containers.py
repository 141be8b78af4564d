"""Real runs in the project's own bullseye images, when this machine has them: the verdict of
what the container did, beside the prediction from the image's kind of result document."""

from __future__ import annotations

import shutil
import subprocess

import program_docs as docs
import pytest
from program_builds import require
from program_fixtures import *  # noqa: F403 (the programs built here)

from vdsomatrix.program.elf import analyse_program, read_program
from vdsomatrix.program.predict import disagreement, predict
from vdsomatrix.program.verdict import RunOutcome, judge

pytestmark = pytest.mark.engine


def image(prefix: str) -> str:
    """The newest local image tagged ``vdsomatrix-probe:<prefix><hash>``, or skip."""
    if shutil.which("docker") is None:
        require("docker", "no docker client")
    done = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
                           "vdsomatrix-probe"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        require("a Docker engine", done.stderr.strip()[-200:])
    tags = [t for t in done.stdout.split() if t.split(":", 1)[1].startswith(prefix)
            and "-" not in t.split(":", 1)[1][len(prefix):]]
    if not tags:
        pytest.skip(f"no vdsomatrix-probe:{prefix}* image built on this machine")
    return tags[0]


def run_in(tag: str, program) -> RunOutcome:
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v",
                           f"{program.parent}:/p:ro", "-w", "/p", tag, f"./{program.name}"],
                          capture_output=True, timeout=300)
    return RunOutcome(exit_status=done.returncode, stderr=done.stderr)


def test_glibc_2_34_program_in_bullseye(glibc_dynamic):
    facts = analyse_program(read_program(glibc_dynamic), glibc_dynamic.name)
    verdict = judge(run_in(image("bullseye-"), glibc_dynamic), program=facts)
    assert (verdict.kind, verdict.missing) == ("loader-error", "GLIBC_2.34")
    prediction = predict(facts, docs.bullseye_dynamic())
    assert prediction.kind == "loader-error"
    assert disagreement(prediction, verdict) is None


def test_x86_64_musl_program_in_an_i386_userland(musl_dynamic):
    facts = analyse_program(read_program(musl_dynamic), musl_dynamic.name)
    verdict = judge(run_in(image("bullseye-i386-"), musl_dynamic), program=facts)
    # runc reports the failed execve: "exec ./hello-musl-dynamic: no such file or directory"
    assert (verdict.kind, verdict.exec_errno) == ("cannot-execute", "ENOENT")
    assert verdict.missing == "/lib/ld-musl-x86_64.so.1"
    i386 = docs.with_interpreters(docs.i386_userland(), "/lib/ld-linux.so.2",
                                  "/lib/ld-musl-i386.so.1")
    assert disagreement(predict(facts, i386), verdict) is None
