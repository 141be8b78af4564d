"""The analysis is bounded: hostile artefacts at the size cap finish within the limits with
exact counts and capped lists, and a child that passes a limit becomes a ``bounded:`` error."""

from __future__ import annotations

import base64
import json
import random
import sys
import threading
import time

import capstone
import pytest
from analysis_support import (
    HOST_LIBC,
    artefact_of,
    host_ldso,
    host_vdso,
    make_doc,
    static_musl,
    syscall_flood,
)

from vdsomatrix import processes
from vdsomatrix.analysis import (
    LIMITS,
    AnalysisLimits,
    analyse_bounded,
    analyse_result,
    worker_command,
)
from vdsomatrix.analysis.artefacts import MAX_LIBC_BYTES, MAX_VDSO_IMAGE
from vdsomatrix.analysis.limits import (
    MAX_LISTED_FUNCTIONS,
    MAX_LISTED_SITES,
    MAX_SITES_PER_FUNCTION,
)
from vdsomatrix.analysis.sweep import decode

# Half the default limits: the largest hostile artefact allowed must fit with room to spare.
TIGHT = AnalysisLimits(address_space=LIMITS.address_space // 2,
                       cpu_seconds=LIMITS.cpu_seconds // 2,
                       wall_seconds=LIMITS.wall_seconds / 2)


def _stopped(result: dict) -> str:
    assert result["vdso"] is None and result["libc"] is None and result["ldso"] is None
    assert len(result["errors"]) == 1, result["errors"]
    error = result["errors"][0]
    assert error.startswith("bounded: analysis stopped: ") and "\n" not in error
    return error


def _listed_sites(functions: list[dict]) -> int:
    return sum(len(row["sites"]) for row in functions)


def test_stripped_flood_at_the_cap_is_counted_exactly_and_listed_briefly():
    """An 8 MiB ELF of nothing but ``0f 05``, as libc and as ld.so: four million sites."""
    data, syscalls = syscall_flood(MAX_LIBC_BYTES)
    doc = make_doc()
    doc["artefacts"] = {"libc": artefact_of(data), "ldso": artefact_of(data, "dynamic-loader")}
    started = time.monotonic()
    result = analyse_bounded(doc, TIGHT)
    assert result["errors"] == []
    assert time.monotonic() - started < TIGHT.cpu_seconds
    libc = result["libc"]
    census = libc["census"]
    assert census["syscall"] == census["instructions"] == syscalls > 4_000_000
    assert census["complete"] is True and census["functions"] is None
    [row] = libc["functions"]
    assert row["name"] is None and row["syscall"] == syscalls
    assert len(row["sites"]) == MAX_SITES_PER_FUNCTION
    assert row["sites_capped"] is True and row["sites_total"] == syscalls
    assert libc["functions_capped"] is False and libc["functions_total"] == 1
    assert len(json.dumps(result)) < 64 << 10


def test_symbol_flood_at_the_cap_caps_the_function_list():
    """Every 64 bytes a function (86 000 of them), each with 32 syscalls: every count exact,
    the first MAX_LISTED_FUNCTIONS rows listed, at most MAX_LISTED_SITES sites in all."""
    data, syscalls = syscall_flood(MAX_LIBC_BYTES, every=64)
    doc = make_doc()
    doc["artefacts"] = {"libc": artefact_of(data)}
    result = analyse_bounded(doc, TIGHT)
    assert result["errors"] == []
    libc = result["libc"]
    census = libc["census"]
    functions = syscalls // 32
    assert census["syscall"] == syscalls and census["functions"] == functions
    assert census["attribution"] == "exact"
    assert libc["functions_capped"] is True and libc["functions_total"] == functions
    rows = libc["functions"]
    assert len(rows) == MAX_LISTED_FUNCTIONS
    assert [row["address"] for row in rows] == sorted(row["address"] for row in rows)
    assert all(row["syscall"] == row["sites_total"] == 32 for row in rows)
    assert _listed_sites(rows) == MAX_LISTED_SITES
    assert rows[0]["sites_capped"] is False and rows[-1]["sites_capped"] is True
    entry = libc["entry_points"]["syscall"]  # a function of 32 syscalls, walked as one
    assert entry["classification"] == "syscall" and entry["walked"] == 32
    assert len(json.dumps(result)) < 1 << 20


def test_vdso_flood_at_the_cap_caps_its_site_lists():
    data, syscalls = syscall_flood(MAX_VDSO_IMAGE, every=1024, dynamic=True)
    result = analyse_result(make_doc(vdso=data))
    vdso = result["vdso"]
    assert vdso["census"]["syscall"] == syscalls
    rows = [row for row in vdso["symbols"] if row["syscall_sites_total"] is not None]
    assert rows and all(row["syscall_sites_total"] == 512 for row in rows)
    assert all(len(row["syscall_sites"]) <= MAX_SITES_PER_FUNCTION for row in rows)
    assert sum(len(row["syscall_sites"]) for row in rows) == MAX_LISTED_SITES
    assert all(row["syscall_sites_capped"] for row in rows)
    assert all(row["syscall_fallback"] is True for row in rows)


def test_symbol_flood_lists_every_count_exactly_below_the_caps():
    """Below every cap nothing is left out, and the flags say so."""
    data, syscalls = syscall_flood(12 << 10, every=128)
    doc = make_doc()
    doc["artefacts"] = {"libc": artefact_of(data)}
    libc = analyse_result(doc)["libc"]
    rows = libc["functions"]
    assert libc["functions_capped"] is False and libc["functions_total"] == len(rows)
    assert sum(row["sites_total"] for row in rows) == _listed_sites(rows) == syscalls
    assert not any(row["sites_capped"] for row in rows)
    census = libc["census"]
    assert census["sections_capped"] is False and census["sections"] == [".text"]
    names = libc["vdso_names"]
    assert names["symbols_capped"] is False and names["symbols_total"] == 0


def test_bounded_equals_in_process_on_real_objects():
    if not HOST_LIBC.exists():
        pytest.skip(f"{HOST_LIBC} does not exist on this machine")
    doc = make_doc(vdso=host_vdso(), libc=HOST_LIBC, ldso=host_ldso())
    assert analyse_bounded(doc) == analyse_result(doc)
    musl = make_doc(vdso=host_vdso(), libc=static_musl(), role="probe-binary",
                    libc_name="musl", linkage="static")
    assert analyse_bounded(musl) == analyse_result(musl)


@pytest.mark.parametrize("doc", [None, [], {"vdso": "x"}, {"artefacts": {"libc": 5}}])
def test_bounded_garbage_documents(doc):
    assert analyse_bounded(doc) == analyse_result(doc)


# -- a child that passes a limit ----------------------------------------------------------------


def test_out_of_memory_is_a_bounded_error():
    data, _ = syscall_flood(MAX_LIBC_BYTES, every=16)
    doc = make_doc()
    doc["artefacts"] = {"libc": artefact_of(data)}
    # Enough to start Python and import the analysis, not enough for this artefact.
    error = _stopped(analyse_bounded(doc, AnalysisLimits(address_space=100 << 20)))
    assert "out of memory" in error or "died of" in error, error


def test_cpu_limit_is_a_bounded_error():
    data, _ = syscall_flood(MAX_LIBC_BYTES)
    doc = make_doc()
    doc["artefacts"] = {"libc": artefact_of(data)}
    error = _stopped(analyse_bounded(doc, AnalysisLimits(cpu_seconds=1)))
    assert "CPU time limit of 1 s" in error, error


def test_wall_clock_limit_is_a_bounded_error(monkeypatch):
    monkeypatch.setattr("vdsomatrix.analysis.worker_command",
                        lambda limits: [sys.executable, "-c", "import time; time.sleep(30)"])
    started = time.monotonic()
    error = _stopped(analyse_bounded({}, AnalysisLimits(wall_seconds=0.5)))
    assert "wall-clock limit of 0.5 s" in error
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("script, expected", [
    ("import sys; sys.stdout.write('{\"vdso\": '); sys.exit(0)", "not valid JSON"),
    ("print('[1, 2]')", "is not an analysis"),
    ("print('{\"vdso\": null, \"libc\": null, \"ldso\": null, \"errors\": [1]}')",
     "is not an analysis"),
    ("import sys; sys.stderr.write('Traceback...\\nValueError: \\x1b[31mboom\\n'); sys.exit(1)",
     "exited with status 1 (ValueError: [31mboom)"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "died of SIGSEGV"),
    ("import sys; sys.stdout.write('x' * 5000); sys.stdout.flush()", "output larger than"),
])
def test_broken_worker_is_a_bounded_error(monkeypatch, script, expected):
    monkeypatch.setattr("vdsomatrix.analysis.worker_command",
                        lambda limits: [sys.executable, "-c", script])
    error = _stopped(analyse_bounded({}, AnalysisLimits(output_bytes=4096)))
    assert expected in error, error


def test_worker_that_cannot_start_is_a_bounded_error(monkeypatch):
    monkeypatch.setattr("vdsomatrix.analysis.worker_command",
                        lambda limits: ["/nonexistent/python"])
    assert "FileNotFoundError" in _stopped(analyse_bounded({}))


@pytest.mark.parametrize("when", [0.0, 0.5])
def test_interrupt_stops_the_worker(monkeypatch, when):
    """Interrupted before the analysis starts, or while the child runs."""
    monkeypatch.setattr("vdsomatrix.analysis.worker_command",
                        lambda limits: [sys.executable, "-c", "import time; time.sleep(30)"])
    timer = threading.Timer(when, processes.stopping.set)
    timer.start()
    started = time.monotonic()
    try:
        if not when:
            timer.join()
        assert "interrupted" in _stopped(analyse_bounded({}))
    finally:
        timer.cancel()
        processes.stopping.clear()
    assert time.monotonic() - started < 10


def test_worker_output_is_what_the_runner_expects():
    """The child is the real worker module, reading its request on stdin."""
    doc = make_doc(vdso=host_vdso())
    result = analyse_bounded(doc)
    assert result["errors"] == [] and result["vdso"]["size"] == len(host_vdso())
    assert worker_command(LIMITS)[1:4] == ["-P", "-m", "vdsomatrix.analysis.worker"]


# -- windowed decoding --------------------------------------------------------------------------


@pytest.mark.parametrize("skipdata", [True, False])
def test_windowed_decoding_equals_one_pass(skipdata):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = skipdata
    rng = random.Random(7)
    code = static_musl().read_bytes()
    samples = [b"", b"\x0f", b"\x0f\x05" * 40_000 + b"\x0f", rng.randbytes(70_000),
               code[: 100_000], base64.b64encode(rng.randbytes(30_000))]
    for sample in samples:
        assert list(decode(md, sample, 0x1000)) == list(md.disasm_lite(sample, 0x1000))
