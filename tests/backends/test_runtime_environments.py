"""Language-runtime environments end to end: the real engine, the real runtime layer, real JVM,
Python, Go and Node processes in a hardened container, and counts made by syscount.

What the assertions hold to is what the environment itself says about its clock (the vDSO's
presence and the clocksource the probe read), never a fixed expectation of this machine.
"""

from __future__ import annotations

import pytest

from vdsomatrix.backends.docker import DockerBackend
from vdsomatrix.backends.host import HostBackend
from vdsomatrix.matrix import load_matrix
from vdsomatrix.results import check_document

# The clocksources whose reads the x86 vDSO serves from user space (the kernel's
# vdso_clock_mode: VDSO_CLOCKMODE_TSC and the paravirtual clocks).
VDSO_CAPABLE = {"tsc", "kvm-clock", "hyperv_clocksource_tsc_page"}


def _by_call(doc: dict) -> dict[tuple[str, str], dict]:
    return {(row.get("variant") or row["runtime"], row["call"]): row for row in doc["runtimes"]}


def _check_answers(doc: dict) -> None:
    """The shape every runtime environment's document has, and the counts that prove paths."""
    assert doc["calls"] == []  # runtime environments run no C rows
    assert check_document(doc) == []
    vdso_clock = (bool(doc["vdso"].get("present"))
                  and doc["environment"]["kernel"]["clocksource"] in VDSO_CAPABLE)
    measured = [row for row in doc["runtimes"] if row["status"] == "ok"]
    assert measured, doc["runtimes"]
    for row in measured:
        assert row["ns"]["median"] > 0, row
        assert row["syscalls_per_call"] is not None, row  # counted, not inferred
        if row["clock"] == "baseline":
            assert row["syscalls_per_call"] >= 0.9, row
        elif vdso_clock:
            assert row["syscalls_per_call"] < 0.1, row


@pytest.mark.engine
@pytest.mark.slow
def test_bookworm_runtimes_in_a_hardened_container(engine):
    env = load_matrix().environments["bookworm-runtimes"]
    backend = DockerBackend()
    backend.prepare(env, log=lambda line: None)
    outcome = backend.run_probe(env, deadline=backend.deadline(env))
    assert outcome.status == "ok", (outcome.errors, outcome.log_tail)
    doc = outcome.document
    _check_answers(doc)
    rows = _by_call(doc)
    runtimes = {row["runtime"] for row in doc["runtimes"] if row["status"] == "ok"}
    # bookworm ships all of these; the layer installed them, and each one ran.
    assert {"java", "python", "go", "node"} <= runtimes, sorted(runtimes)
    assert rows[("go-static", "time.Now()")]["status"] == "ok"
    assert rows[("go-dynamic", "time.Now()")]["status"] == "ok"
    java = [row for row in doc["runtimes"] if row["runtime"] == "java"]
    assert {row["package"] for row in java} >= {"openjdk-17-jre-headless"}


@pytest.mark.slow
def test_host_runtimes_count_what_they_claim(tmp_path):
    env = load_matrix().environments["host-runtimes"]
    backend = HostBackend()
    backend.prepare(env, log=lambda line: None)
    outcome = backend.run_probe(env, deadline=backend.deadline(env))
    assert outcome.status == "ok", (outcome.errors, outcome.log_tail)
    _check_answers(outcome.document)
    python = [row for row in outcome.document["runtimes"] if row["runtime"] == "python"]
    assert python and all(row["status"] == "ok" for row in python), python
