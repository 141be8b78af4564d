"""judge() on what real runs did: loaders' real messages, real execve errors, real faults."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import program_docs
import pytest
from program_builds import compile_c, host_vsyscall_mode
from program_fixtures import *  # noqa: F403 (the programs built here)

from vdsomatrix.program.elf import analyse_program, read_program
from vdsomatrix.program.verdict import (
    MAX_STDERR_LINES,
    RunOutcome,
    judge,
    loader_error,
    outcome_from_dict,
    stderr_tail,
)

# Captured once (2026-12, Docker 20.10 engine of the development machine) with
#   docker run --rm --network none -v DIR:/p:ro -w /p vdsomatrix-probe:bullseye-<hash> ./hello
# where hello is HELLO_C built here against glibc 2.36: bullseye's ld.so (glibc 2.31) says
# this, and the container exits with status 1 (not 127).
BULLSEYE_GLIBC_2_34 = ("./hello: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not "
                       "found (required by ./hello)\n")
# The same engine's runc, when the execve of the container's command fails (exit status 1):
# a file of random bytes, and a musl-dynamic program in the bullseye-i386 image (which has
# /lib/ld-musl-i386.so.1 but no /lib/ld-musl-x86_64.so.1).
RUNC_ENOEXEC = "exec ./garbage: exec format error\n"
RUNC_ENOENT = "exec ./hello-musl-dyn: no such file or directory\n"
# dash, asked to run the same two files in the same images (exit status 126 and 127).
DASH_ENOEXEC = "sh: 1: ./garbage: Exec format error\n"
DASH_ENOENT = "sh: 1: ./hello-musl-dyn: not found\n"


def run(path: Path, *args: str, env: dict | None = None) -> RunOutcome:
    """Run a program on this host as a runner would, without a tracer."""
    try:
        done = subprocess.run([str(path), *args], capture_output=True, timeout=60,
                              env={**os.environ, **(env or {})})
    except OSError as exc:
        return RunOutcome(exec_errno=exc.errno)
    if done.returncode < 0:
        return RunOutcome(signal=-done.returncode, stderr=done.stderr)
    return RunOutcome(exit_status=done.returncode, stderr=done.stderr)


def traced(launcher: Path, path: Path) -> RunOutcome:
    """Run under the ptrace launcher, which adds si_addr and the instruction pointer."""
    done = subprocess.run([str(launcher), str(path)], capture_output=True, text=True,
                          timeout=60)
    line = done.stdout.strip().splitlines()[-1]
    if m := re.fullmatch(r"signal (\d+) addr (\S+) ip (\S+)", line):
        return RunOutcome(signal=int(m[1]), fault_address=int(m[2], 16),
                          fault_ip=int(m[3], 16), stderr=done.stderr)
    if m := re.fullmatch(r"signal (\d+)", line):
        return RunOutcome(signal=int(m[1]))
    return RunOutcome(exit_status=int(line.split()[1]), stderr=done.stderr)


def test_bullseye_loader_message_is_a_missing_symbol_version():
    verdict = judge(RunOutcome(exit_status=1, stderr=BULLSEYE_GLIBC_2_34))
    assert verdict.kind == "loader-error"
    assert verdict.missing == "GLIBC_2.34"
    assert verdict.cause == ("symbol version GLIBC_2.34 not found in /lib/x86_64-linux-gnu/"
                             "libc.so.6 (required by ./hello)")


def test_glibc_missing_library_and_missing_symbol_for_real(libfoo_programs):
    program = libfoo_programs["glibc"]
    missing = judge(run(program))
    assert (missing.kind, missing.missing, missing.exit_status) == (
        "loader-error", "libfoo.so.1", 127)
    assert "cannot open shared object" in missing.cause
    bad = program.parent / "bad"
    no_symbol = judge(run(program, env={"LD_LIBRARY_PATH": str(bad)}))
    assert (no_symbol.kind, no_symbol.missing) == ("loader-error", "foo")
    good = judge(run(program, env={"LD_LIBRARY_PATH": str(program.parent / "good")}))
    assert good.kind == "passed"


def test_musl_missing_library_and_missing_symbol_for_real(libfoo_programs):
    if not Path("/lib/ld-musl-x86_64.so.1").exists():
        pytest.skip("musl's loader is not installed on this host")
    program = libfoo_programs["musl"]
    missing = judge(run(program))
    assert (missing.kind, missing.missing) == ("loader-error", "libfoo.so.1")
    assert "musl's loader" in missing.cause and "No such file or directory" in missing.cause
    no_symbol = judge(run(program, env={"LD_LIBRARY_PATH": str(program.parent / "bad")}))
    assert (no_symbol.kind, no_symbol.missing) == ("loader-error", "foo")
    assert "musl's loader" in no_symbol.cause


def test_missing_interpreter_is_a_real_enoent_named_by_its_path(musl_missing_loader):
    facts = analyse_program(read_program(musl_missing_loader), "noloader")
    outcome = run(musl_missing_loader)
    assert outcome.exec_errno == errno.ENOENT  # the kernel's answer, not a guess
    verdict = judge(outcome, program=facts)
    assert verdict.kind == "cannot-execute" and verdict.exec_errno == "ENOENT"
    assert verdict.missing == "/lib/ld-musl-vdsomatrix-absent.so.1"
    assert verdict.cause == "missing interpreter /lib/ld-musl-vdsomatrix-absent.so.1 (ENOENT)"


def test_foreign_machine_is_a_real_enoexec(tmp_path, glibc_dynamic):
    data = bytearray(read_program(glibc_dynamic))
    struct.pack_into("<H", data, 18, 21)  # e_machine = EM_PPC64: no binfmt handler here
    foreign = tmp_path / "ppc64"
    foreign.write_bytes(bytes(data))
    foreign.chmod(0o755)
    facts = analyse_program(bytes(data), "ppc64")
    outcome = run(foreign)
    assert outcome.exec_errno == errno.ENOEXEC
    verdict = judge(outcome, program_docs.bookworm_xonly(), facts)
    assert verdict.kind == "cannot-execute"
    assert verdict.cause == ("the kernel refused the file format (ENOEXEC): the program is "
                             "for EM_PPC64, the kernel is x86_64")


def test_not_executable_is_a_real_eacces(tmp_path, exits_3):
    copy = tmp_path / "no-x"
    shutil.copy(exits_3, copy)
    copy.chmod(0o644)
    verdict = judge(run(copy))
    if os.geteuid() == 0 and verdict.kind != "cannot-execute":
        pytest.skip("root may execute a file without x bits here")
    assert (verdict.kind, verdict.exec_errno) == ("cannot-execute", "EACCES")


def test_failed_exit_status_with_its_stderr(exits_3):
    verdict = judge(run(exits_3))
    assert verdict.kind == "failed" and verdict.exit_status == 3
    assert verdict.cause == "exited with status 3 (expected 0): bad input"
    assert judge(RunOutcome(exit_status=3), program_docs.bookworm_xonly()).kind == "failed"
    assert judge(RunOutcome(exit_status=3, expected_exit=3)).kind == "passed"


def test_vsyscall_call_runs_or_dies_as_the_host_mode_says(vsyscall_static, fault_launcher):
    mode = host_vsyscall_mode()
    env = program_docs.bookworm_xonly()
    env["vsyscall"]["mode"] = mode
    verdict = judge(traced(fault_launcher, vsyscall_static), env)
    if mode == "none":
        assert verdict.kind == "crashed" and verdict.fault_address == "0xffffffffff600400"
        assert verdict.cause == ("SIGSEGV at 0xffffffffff600400: a vsyscall call (time) under "
                                 "vsyscall=none")
    else:
        assert verdict.kind == "passed"


def test_a_read_of_the_vsyscall_page_is_a_real_fault_with_its_address(vsyscall_read,
                                                                       fault_launcher):
    mode = host_vsyscall_mode()
    if mode == "emulate":
        pytest.skip("the page is readable under vsyscall=emulate")
    env = program_docs.bookworm_xonly()
    env["vsyscall"]["mode"] = mode
    outcome = traced(fault_launcher, vsyscall_read)
    assert outcome.signal == signal.SIGSEGV and outcome.fault_address == 0xFFFFFFFFFF600000
    assert outcome.fault_ip != outcome.fault_address  # a read, not a call
    verdict = judge(outcome, env)
    assert verdict.kind == "crashed" and verdict.signal == "SIGSEGV"
    assert verdict.cause.startswith("SIGSEGV at 0xffffffffff600000: a read of the vsyscall page"
                                    f" under vsyscall={mode}")


def test_null_dereference_for_real(builds, fault_launcher):
    program = compile_c(builds, "null-write", "int main(void) { *(volatile int *)0 = 1; }\n",
                        "gcc", "-O0")
    untraced = judge(run(program))
    assert untraced.kind == "crashed"
    assert untraced.cause == "killed by SIGSEGV (faulting address not known)"
    verdict = judge(traced(fault_launcher, program))
    assert verdict.cause == "SIGSEGV at 0x0: a null pointer dereference"


def test_vsyscall_fault_named_under_none_from_a_launcher_report():
    env = program_docs.bookworm_none()
    outcome = outcome_from_dict({"signal": "SEGV", "fault_address": "0xffffffffff600400",
                                 "fault_ip": "0xffffffffff600400"})
    verdict = judge(outcome, env)
    assert verdict.cause == ("SIGSEGV at 0xffffffffff600400: a vsyscall call (time) under "
                             "vsyscall=none")
    unknown_mode = judge(outcome, program_docs.arm64())
    assert "mode is unknown" in unknown_mode.cause


@pytest.mark.parametrize("stderr, status, errno_name", [
    (RUNC_ENOEXEC, 1, "ENOEXEC"), (RUNC_ENOENT, 1, "ENOENT"),
    (DASH_ENOEXEC, 126, "ENOEXEC"), (DASH_ENOENT, 127, "ENOENT"),
])
def test_runtime_and_shell_exec_failures(stderr, status, errno_name, musl_dynamic):
    facts = analyse_program(read_program(musl_dynamic), "hello-musl-dyn")
    verdict = judge(RunOutcome(exit_status=status, stderr=stderr), program=facts)
    assert (verdict.kind, verdict.exec_errno) == ("cannot-execute", errno_name)
    assert verdict.cause.endswith("(from the runtime's message)")
    if errno_name == "ENOENT":
        assert verdict.missing == "/lib/ld-musl-x86_64.so.1"


def test_precedence_oom_then_timeout_then_exec_then_signal():
    both = RunOutcome(oom_killed=True, timed_out=True, signal=9)
    assert judge(both).kind == "killed-for-memory"
    assert judge(RunOutcome(timed_out=True, signal=9, seconds=30)).cause == (
        "did not finish before the deadline after 30 s; killed")
    assert judge(RunOutcome(signal="SIGKILL")).kind == "crashed"


def test_a_loader_message_counts_only_with_a_failure_status():
    assert judge(RunOutcome(exit_status=0, stderr=BULLSEYE_GLIBC_2_34)).kind == "passed"
    assert judge(RunOutcome(signal=11, stderr=BULLSEYE_GLIBC_2_34)).kind == "crashed"


def test_hostile_stderr_is_bounded_and_inert():
    flood = b"\x1b[2J\x1b]0;owned\x07" * 100_000 + b"\xff\xfe\n" * 1000 + b"last \x9b line"
    tail = stderr_tail(flood)
    assert len(tail) <= MAX_STDERR_LINES and all(len(line) <= 300 for line in tail)
    assert not any(ch in "".join(tail) for ch in "\x1b\x07\x9b")
    verdict = judge(RunOutcome(exit_status=2, stderr=flood))
    assert verdict.kind == "failed" and "\x1b" not in verdict.cause
    assert loader_error(("x" * 10_000,)) is None


def test_outcome_from_hostile_json():
    outcome = outcome_from_dict({"exit_status": "0", "signal": True, "timed_out": "yes",
                                 "fault_address": "zz", "stderr": 5, "expected_exit": None})
    assert outcome == RunOutcome()
    assert outcome_from_dict(["not", "a", "dict"]) == RunOutcome()
    assert judge(outcome).kind == "failed"  # neither a status nor a signal
