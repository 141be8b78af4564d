"""benchmarks/references/reference_loop.c, the fidelity benchmark's independent reference: it
builds with the host's gcc, prints the rows the benchmark compares, and its numbers are sane.

Short loops keep this fast; the only numeric checks are orderings that fail only if the
reference were broken (a system call costs more than reading a vDSO clock; the loop's own cost is
far below any call's), never a speed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "benchmarks" / "references" / "reference_loop.c"


def load_fidelity():
    spec = importlib.util.spec_from_file_location("fidelity", ROOT / "benchmarks" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference_doc(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("no gcc on this machine")
    binary = load_fidelity().build_reference(tmp_path_factory.mktemp("fidelity"))
    done = subprocess.run([str(binary), "--loops", "5", "--loop-ms", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rows_by_key(rows):
    return {(r["call"], r["path"]): r for r in rows}


def test_shares_no_code_with_the_probe():
    text = SOURCE.read_text()
    assert "json_string" not in text and "vdsoprobe.c\"" not in text
    assert "#include \"" not in text  # no local header at all, the probe's least of all


def test_rows_are_the_probe_rows_the_benchmark_compares(reference_doc):
    fidelity = load_fidelity()
    rows = rows_by_key(reference_doc["rows"])
    assert list(rows) == fidelity.ROWS
    for key, row in rows.items():
        assert row["status"] in ("ok", "unsupported"), key
        if row["status"] == "ok":
            ns = row["ns"]
            assert 0 < ns["min"] <= ns["median"] <= ns["max"], key
            assert row["calls_per_loop"] >= 8 and row["calls_per_loop"] % 8 == 0, key
    for key in [k for k in rows if k[1] != "vdso"]:
        assert rows[key]["status"] == "ok", key  # libc and the syscall instruction always work
    variants = rows_by_key(reference_doc["variants"])
    assert ("getcpu", "syscall+node") in variants and ("getcpu", "vdso+node") in variants
    method = reference_doc["method"]
    assert method["clock"] == "CLOCK_MONOTONIC_RAW" and method["loops"] == 5
    assert method["overhead_subtracted"] is False
    assert isinstance(reference_doc["pinned_cpu"], int) and reference_doc["pinned_cpu"] >= 0


def test_vdso_found_through_the_loader(reference_doc):
    # The host is dynamic glibc on a kernel with a vDSO: dlopen(RTLD_NOLOAD) must find it.
    assert "vdso_error" not in reference_doc
    rows = rows_by_key(reference_doc["rows"])
    assert rows[("clock_gettime(CLOCK_MONOTONIC)", "vdso")]["status"] == "ok"


def test_orderings_only_a_broken_reference_could_break(reference_doc):
    rows = {k: r["ns"]["median"] for k, r in rows_by_key(reference_doc["rows"]).items()
            if r["status"] == "ok"}
    raw_getppid = rows[("getppid", "syscall")]
    # A real kernel entry costs more than the vDSO's clock read, which never leaves user space.
    assert raw_getppid > rows[("clock_gettime(CLOCK_MONOTONIC_COARSE)", "vdso")]
    assert raw_getppid > rows[("time", "vdso")]
    assert rows[("clock_gettime(CLOCK_MONOTONIC)", "syscall")] > \
        rows[("clock_gettime(CLOCK_MONOTONIC)", "vdso")]
    # The loop's own cost, claimed negligible (so not subtracted), is below every call's.
    assert reference_doc["method"]["empty_ns_per_call"] < min(rows.values())
