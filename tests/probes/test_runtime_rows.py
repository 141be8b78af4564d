"""The probe's runtime mode (issue 11, probes/runtime_rows.py): the count diff, syscall names,
row shapes, missing and crashing runtimes (fake programs in tmp_path), and the real thing on this
host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require
from fakes import load_probe

from vdsomatrix.results import check_document

ROW_KEYS = {"runtime", "variant", "label", "version", "package", "call", "clock", "status",
            "reason", "ns", "rounds", "iterations", "warmup", "syscalls_per_call",
            "syscalls_by_name", "counted", "count_error", "seconds"}


probe, runtime_rows = load_probe()
SLEEP = shutil.which("sleep") or "/bin/sleep"  # before any test empties PATH


# ----------------------------------------------------------------------------- pure -----------

def test_count_diff_baseline_is_one_and_vdso_call_is_zero():
    n = 10000
    # Start-up and the fixed warm-up are the same in both runs; only the loop's calls differ.
    base = {"0": 40, "9": 120, "202": 31, "110": 20000}
    baseline_2n = dict(base, **{"110": 20000 + n})
    assert runtime_rows.count_diff(dict(base, **{"110": 20000 + n}),
                                   dict(base, **{"110": 20000 + 2 * n}),
                                   n) == (1.0, {"getppid": 1.0})
    assert runtime_rows.count_diff(base, base, n) == (0.0, {})
    assert runtime_rows.count_diff(base, baseline_2n, n)[1] == {"getppid": 1.0}


def test_count_diff_noise_is_clamped_and_small_numbers_left_out():
    n = 10000
    first = {"202": 50, "35": 300, "228": 0}
    second = {"202": 40, "35": 320, "228": 600}  # 600/N = 0.06 per call: kept; 20/N: dropped
    per_call, by_name = runtime_rows.count_diff(first, second, n)
    assert per_call == 0.061
    assert by_name == {"clock_gettime": 0.06}
    per_call, by_name = runtime_rows.count_diff({"202": 90}, {"202": 10}, n)  # fewer in the 2N run
    assert per_call == 0.0 and by_name == {}


def test_syscall_names():
    assert runtime_rows.syscall_name("228") == "clock_gettime"
    assert runtime_rows.syscall_name(24) == "sched_yield"
    assert runtime_rows.syscall_name("110") == "getppid"
    assert runtime_rows.syscall_name("999") == "syscall_999"
    assert runtime_rows.syscall_name("other") == "syscall_other"
    assert runtime_rows.count_diff({}, {"other": 5000}, 1000)[1] == {"syscall_other": 5.0}


def test_one_line_removes_control_characters_and_is_bounded():
    text = "Exception in thread \x1b[31m\"main\"\r\n\tat Foo\x00\x07" + "x" * 1000
    line = runtime_rows.one_line(text)
    assert "\x1b" not in line and "\n" not in line and "\x00" not in line
    assert len(line) <= runtime_rows.TAIL_CHARS
    assert runtime_rows.stderr_tail(b"a\nb\nsink 42\n") == "a | b"


def test_ns_summary():
    assert runtime_rows.ns_summary([5, 1, 3, 2, 4, 7, 6]) == {"min": 1, "median": 4, "p90": 7}
    assert runtime_rows.ns_summary([2.0, 1.0]) == {"min": 1.0, "median": 1.5, "p90": 2.0}


def test_labels_come_from_the_versions():
    def label(runtime, variant, version):
        return runtime_rows.runtime_label({"runtime": runtime, "variant": variant,
                                           "version": version, "label": "?"})
    assert label("go", "go-static", "go1.19.8 static") == "Go 1.19 static"
    assert label("go", "go-dynamic", "go1.22.2 dynamic") == "Go 1.22 dynamic"
    assert label("node", "node", "v18.19.0") == "Node.js 18"
    assert label("rust", "rust", "rustc 1.63.0") == "Rust 1.63"
    assert label("rust", "rust", None) == "?"


# ----------------------------------------------------------------------------- fakes ----------

FAKE_OK = """#!/bin/sh
# A runtime program that answers like the real ones, without timing anything.
q='"'
case $1 in
time) echo "{${q}call${q}: ${q}$2${q}, ${q}ns_per_call${q}: [3, 1, 2, 2, 2, 2, 9]," \
           "${q}iterations${q}: $3, ${q}warmup_calls${q}: $(($3 * 5))," \
           "${q}warmup_ns${q}: 600000000, ${q}version${q}: ${q}$FAKE_VERSION${q}}" ;;
loop) echo "{${q}call${q}: ${q}$2${q}, ${q}iterations${q}: $3}" ;;
calls) echo '[]' ;;
esac
"""

FAKE_SYSCOUNT = """#!{python}
# A syscount that prints the contract's JSON: a baseline call (ppid, yield) makes one getppid
# per iteration, the rest none; start-up makes the same 500 calls every time.
import json, sys
args = sys.argv[sys.argv.index("--") + 1:]
n, call = int(args[-1]), args[-2]
counts = {{"9": 200, "202": 300}}
if "ppid" in call or "parent_id" in call or "yield" in call:
    counts["110"] = n
sig = {signal!r}
print(json.dumps({{"counts": counts, "total": sum(counts.values()), "exit_code": None if sig else 0,
                  "signal": sig, "timed_out": False, "error": None, "method": "fake"}}))
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty runtimes directory, no JVMs, nothing on PATH, a fake python and syscount."""
    rdir = tmp_path / "runtimes"
    rdir.mkdir()
    (rdir / "timing.py").write_text("# stands for the real one\n")
    (rdir / "timing.js").write_text("// stands for the real one\n")
    jvm_root = tmp_path / "jvm"
    jvm_root.mkdir()
    monkeypatch.setattr(runtime_rows, "JVM_ROOT", str(jvm_root))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("FAKE_VERSION", "9.9.9")
    fake_python = _script(tmp_path / "bin" / "python3", FAKE_OK.replace(
        "#!/bin/sh", "#!/bin/sh\nshift 2  # -I timing.py"))

    def syscount(signal=None):
        return str(_script(tmp_path / "bin" / f"syscount-{signal}",
                           FAKE_SYSCOUNT.format(python=sys.executable, signal=signal)))

    def rows(manifest=None, syscount_path=None, budget=60):
        if manifest is not None:
            (rdir / "manifest.json").write_text(json.dumps(manifest))
        errors = []
        result, method = runtime_rows.collect(str(rdir), syscount_path, budget, errors,
                                              factor=1.0, python=str(fake_python))
        assert method == runtime_rows.RUNTIMES_METHOD
        return result, errors

    return {"rdir": rdir, "jvm_root": jvm_root, "rows": rows, "syscount": syscount,
            "tmp": tmp_path}


def _by(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def test_every_row_has_the_contract_shape_and_missing_runtimes_say_why(sandbox):
    rows, errors = sandbox["rows"]({"suite": "bullseye",
                                    "not_shipped": {"rust": "not shipped by bullseye"}})
    assert errors == []
    for row in rows:
        assert set(row) == ROW_KEYS
    # Missing runtimes: one row per call, with the reason.
    rust = _by(rows, runtime="rust")
    assert [r["call"] for r in rust] == [c for c, _, _ in runtime_rows.RUNTIME_CALLS["rust"]]
    assert {(r["status"], r["reason"]) for r in rust} == {
        ("not_shipped", "not shipped by bullseye")}
    java = _by(rows, runtime="java")
    assert len(java) == 4 and {r["status"] for r in java} == {"not_installed"}
    assert "apt-get install default-jre-headless" in java[0]["reason"]
    go = _by(rows, runtime="go")
    assert {r["variant"] for r in go} == {"go-static", "go-dynamic"} and len(go) == 4
    assert all(r["status"] == "not_installed" and "golang-go" in r["reason"] for r in go)
    assert {r["status"] for r in _by(rows, runtime="node")} == {"not_installed"}
    for row in rows:
        if row["status"] != "ok":
            assert row["ns"] is None and row["syscalls_per_call"] is None
    # The fake python ran: timed (no syscount given: not counted, and it says so).
    python = _by(rows, runtime="python")
    assert {r["status"] for r in python} == {"ok"}
    assert python[0]["ns"] == {"min": 1, "median": 2, "p90": 9}
    assert python[0]["rounds"] == 7 and python[0]["version"] == "9.9.9"
    iterations = python[0]["iterations"]
    assert python[0]["warmup"] == f"5 rounds of {iterations} calls (0.6 s)"
    assert python[0]["count_error"].startswith("not counted") and python[0]["counted"] is None
    doc = {"schema": "vdsomatrix/1", "environment": {"name": "t"}, "vdso": {}, "vsyscall": {},
           "calls": [], "errors": [], "runtimes": rows,
           "runtimes_method": runtime_rows.RUNTIMES_METHOD}
    assert check_document(doc) == []


def test_counts_come_from_the_n_and_2n_runs(sandbox):
    rows, _ = sandbox["rows"]({}, sandbox["syscount"]())
    python = {r["call"]: r for r in _by(rows, runtime="python")}
    assert python["os.getppid()"]["syscalls_per_call"] == 1.0
    assert python["os.getppid()"]["syscalls_by_name"] == {"getppid": 1.0}
    assert python["os.getppid()"]["counted"]["total_2n"] - python["os.getppid()"]["counted"][
        "total_n"] == python["os.getppid()"]["counted"]["n"]
    assert python["time.monotonic_ns()"]["syscalls_per_call"] == 0.0
    assert python["time.monotonic_ns()"]["syscalls_by_name"] == {}
    assert all(r["count_error"] is None for r in python.values())


def test_a_program_killed_under_syscount_is_a_count_error_not_a_crash(sandbox):
    rows, _ = sandbox["rows"]({}, sandbox["syscount"]("SIGSEGV"))
    row = _by(rows, runtime="python")[0]
    assert row["status"] == "ok" and row["syscalls_per_call"] is None
    assert "SIGSEGV" in row["count_error"]


def test_a_crashing_java_is_a_row_and_the_rest_still_completes(sandbox):
    home = sandbox["jvm_root"] / "java-11-openjdk-amd64"
    (home).mkdir()
    (home / "release").write_text('JAVA_VERSION="11.0.22"\n')
    _script(home / "bin" / "java", "#!/bin/sh\n"
            "printf 'starting\\n# A fatal error \\033[31mhas been detected\\r\\n"
            "SIGSEGV (0xb) at pc=0x0\\n' >&2\nkill -SEGV $$\n")
    (sandbox["jvm_root"] / "default-java").symlink_to(home)  # the same JVM: one variant
    (sandbox["rdir"] / "Timing.class").write_bytes(b"\xca\xfe\xba\xbe")
    rows, _ = sandbox["rows"]({}, sandbox["syscount"]())
    java = _by(rows, runtime="java")
    assert len(java) == 4
    assert {(r["variant"], r["label"], r["status"]) for r in java} == {
        ("openjdk-11", "Java 11", "crashed")}
    reason = java[0]["reason"]
    assert "killed by SIGSEGV" in reason and "has been detected" in reason
    assert "\x1b" not in reason and "\n" not in reason and "\r" not in reason
    assert java[0]["ns"] is None and java[0]["seconds"] is not None
    assert {r["status"] for r in _by(rows, runtime="python")} == {"ok"}


def test_a_jvm_without_timing_class_and_a_manifest_jvm_that_is_gone_are_errors(sandbox):
    home = sandbox["jvm_root"] / "java-17-openjdk-amd64"
    _script(home / "bin" / "java", "#!/bin/sh\necho 'openjdk version \"17.0.9\" 2023' >&2\n")
    rows, _ = sandbox["rows"]({"java": [{"major": "21", "package": "openjdk-21-jre-headless",
                                         "home": "/nonexistent/jvm/java-21"}]})
    java = _by(rows, runtime="java")
    assert {(r["variant"], r["status"]) for r in java} == {("openjdk-17", "error"),
                                                          ("openjdk-21", "error")}
    assert "Timing.class was not built" in _by(java, variant="openjdk-17")[0]["reason"]
    assert "has no bin/java" in _by(java, variant="openjdk-21")[0]["reason"]


def test_a_hanging_program_is_a_timeout_within_the_budget(sandbox, monkeypatch):
    monkeypatch.setattr(runtime_rows, "PROCESS_CAP", 1.5)
    _script(sandbox["rdir"] / "timing-go-static", f"#!/bin/sh\nexec {SLEEP} 60\n")
    start = time.monotonic()
    rows, _ = sandbox["rows"]({}, None, budget=4)
    assert time.monotonic() - start < 15
    go = _by(rows, variant="go-static")
    assert [r["status"] for r in go] == ["timeout", "timeout"]
    assert "did not finish" in go[0]["reason"]
    # The budget was spent: what comes after says so instead of running.
    later = [r for r in rows if r["runtime"] in ("rust",)]
    assert later and all(r["status"] in ("not_installed", "timeout") for r in later)


def test_budget_spent_before_a_row(sandbox):
    rows, _ = sandbox["rows"]({}, None, budget=0)
    python = _by(rows, runtime="python")
    assert {r["status"] for r in python} == {"timeout"}
    assert "budget" in python[0]["reason"]


def test_probe_cli_accepts_runtimes_without_helper(sandbox, capsys):
    # No helper, an empty runtimes directory: the facts are collected, the rows say why.
    assert probe.main(["--runtimes", str(sandbox["rdir"]), "--name", "t",
                       "--helper-timeout", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calls"] == [] and doc["runtimes"] and doc["runtimes_method"]
    assert not any("no helper given" in e for e in doc["errors"])
    assert doc["environment"]["libc"]["name"] in ("glibc", "musl")
    assert "libc" in doc["artefacts"]
    assert check_document(doc) == []


# ----------------------------------------------------------------------------- real -----------

ROOT = Path(__file__).resolve().parents[2]
PROBES_DIR = ROOT / "src" / "vdsomatrix" / "probes"
VDSO_CLOCKSOURCES = {"tsc", "kvm-clock", "hyperv_clocksource_tsc_page", "arch_sys_counter"}


def _host_has_vdso_clock() -> bool:
    """A vDSO is mapped (AT_SYSINFO_EHDR) and the clocksource is one the vDSO reads itself."""
    try:
        current = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        clocksource = current.read_text().strip()
        entries, _ = probe.parse_auxv(Path("/proc/self/auxv").read_bytes())
    except OSError:
        return False
    return clocksource in VDSO_CLOCKSOURCES and bool(entries.get(probe.AT_SYSINFO_EHDR))


@pytest.fixture(scope="module")
def host_document(tmp_path_factory):
    out = tmp_path_factory.mktemp("runtimes")
    built = subprocess.run(["sh", str(PROBES_DIR / "runtimes" / "build.sh"), str(out)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    bin_dir = tmp_path_factory.mktemp("bin")
    if not shutil.which(os.environ.get("CC", "cc")):
        require("a C compiler", "cannot build syscount")
    made = subprocess.run(["sh", str(PROBES_DIR / "build.sh"), str(bin_dir), "syscount"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(PROBES_DIR / "probe.py"), "--runtimes",
                           str(out), "--syscount", str(bin_dir / "syscount"), "--name",
                           "host-runtimes", "--helper-timeout", "600"],
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    doc = json.loads(proc.stdout)
    doc["_wall"] = time.monotonic() - started
    doc["_build"] = json.loads((out / "build.json").read_text())
    return doc


def test_host_runtime_document_is_valid(host_document):
    doc = {k: v for k, v in host_document.items() if not k.startswith("_")}
    assert check_document(doc) == []
    assert doc["calls"] == []
    assert doc["artefacts"]["libc"].get("zlib_base64")
    assert all(set(r) == ROW_KEYS for r in doc["runtimes"])


@pytest.mark.parametrize("runtime", ["python", "java", "node", "go", "rust"])
def test_host_runtime_uses_the_fast_path(host_document, runtime):
    rows = _by(host_document["runtimes"], runtime=runtime)
    assert rows
    if runtime != "python" and all(r["status"] in ("not_installed", "error") for r in rows):
        pytest.skip(f"{runtime} is not on this host: {rows[0]['reason']}")
    vdso = _host_has_vdso_clock()
    for row in rows:
        assert row["status"] == "ok", row
        assert row["ns"]["min"] > 0 and row["seconds"] > 0
        assert row["count_error"] is None, row
        if row["clock"] == "baseline":
            assert row["syscalls_per_call"] >= 0.5, row
        elif vdso:
            assert row["syscalls_per_call"] < 0.5, row
