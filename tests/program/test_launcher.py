"""probes/launch.c, the in-environment launcher of a user's program, for real.

The launcher is built with probes/build.sh (as test_syscount.py builds syscount) and runs real
programs compiled here: exits, crashes (a NULL dereference, a read and a call of the vsyscall
page), exec failures, and hostile ones (a fork bomb, an endless writer, a sleeper, one that kills
its parent, one that scribbles on fds 3..20). Its document goes through verdict.py's
outcome_from_dict and judge, the host's reading of it. Cross-builds: musl-gcc -static, and an
aarch64 static build under qemu-user (no ptrace there: the untraced fallback).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import all_dead
from program_builds import compile_c, host_vsyscall_mode, i386_exit0, require

from vdsomatrix.program.verdict import judge, outcome_from_dict

ROOT = Path(__file__).resolve().parents[2]
PROBES_DIR = ROOT / "src" / "vdsomatrix" / "probes"
NR_EXECVE, NR_TIME = "59", "201"
FIELDS = {"launcher", "program", "traced", "method", "exec_errno", "exec_errno_number",
          "exit_status", "signal", "fault_address", "fault_ip", "timed_out", "seconds",
          "processes", "threads", "syscalls", "syscalls_total", "vsyscall_traps", "output",
          "errors"}

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="the system-call numbers and vsyscall page are x86_64's")

EXIT_C = "#include <stdlib.h>\nint main(int c, char **v) { return c > 1 ? atoi(v[1]) : 0; }\n"
STDERR_C = ('#include <stdio.h>\nint main(void) { puts("to stdout"); '
            'fputs("bad input\\n", stderr); return 3; }\n')
NULL_C = "int main(void) { return *(volatile int *)0; }\n"
# N calls of time() through the vsyscall page, as glibc < 2.14's static binaries made them.
VSYSCALL_CALLS_C = """\
#include <stdlib.h>
typedef long (*time_fn)(long *);
int main(int argc, char **argv) {
    time_fn f = (time_fn)0xffffffffff600400UL;
    int i, n = atoi(argv[1]);
    for (i = 0; i < n; i++)
        if (f(0) <= 0) return 1;
    return 0;
}
"""
VSYSCALL_READ_C = ("int main(void) { return *(volatile unsigned char *)0xffffffffff600000UL "
                   "== 0x48 ? 0 : 3; }\n")
# Forks until fork fails (the pids limit), each child pausing; the first process then exits 0.
FORK_BOMB_C = """\
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    pid_t self = getpid();
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) break;
        if (pid == 0) continue;      /* the child forks on too */
    }
    if (getpid() != self) for (;;) pause();
    usleep(200000);
    return 0;
}
"""
# N children that pause for ever; then the first process exits 0.
FORK_N_C = """\
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int i, n = atoi(argv[1]);
    for (i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) return 4;
        if (pid == 0) for (;;) pause();
    }
    return 0;
}
"""
WRITER_C = """\
#include <string.h>
#include <unistd.h>
int main(void) {
    static char b[65536];
    memset(b, 'x', sizeof b);
    for (;;) { if (write(1, b, sizeof b) < 0) return 9; if (write(2, b, 512) < 0) return 9; }
}
"""
# SIGKILLs its parent, then writes its pid where the test can find it and sleeps.
KILL_PARENT_C = """\
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "w");
    fprintf(f, "%d\\n", (int)getpid());
    fclose(f);
    kill(getppid(), SIGKILL);
    sleep(30);
    return 0;
}
"""
# Signals its parent as daemons do (readiness, a request to stop), then exits 5.
SIGNAL_PARENT_C = """\
#include <signal.h>
#include <unistd.h>
int main(void) {
    int sigs[] = {SIGUSR1, SIGTERM, SIGHUP, SIGINT, SIGALRM, SIGUSR2, SIGPIPE}, i;
    for (i = 0; i < 7; i++) { kill(getppid(), sigs[i]); usleep(10000); }
    return 5;
}
"""
# Writes garbage to fds 3..20 and closes them; exits with how many writes succeeded.
GARBAGE_FDS_C = """\
#include <unistd.h>
int main(void) {
    int fd, n = 0;
    for (fd = 3; fd <= 20; fd++) if (write(fd, "}{garbage\\n", 10) == 10) n++;
    for (fd = 3; fd <= 20; fd++) close(fd);
    return n;
}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("launcher")


def build_launcher(out: Path, cc: str | None = None) -> Path:
    env = dict(os.environ, **({"CC": cc} if cc else {}))
    done = subprocess.run(["sh", str(PROBES_DIR / "build.sh"), str(out), "launch"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "launch"


@pytest.fixture(scope="module")
def launcher(work) -> Path:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        require("cc", "no C compiler")
    path = build_launcher(work / "bin")
    doc, _ = run(path, "--", "true", where=work)
    if not doc["traced"]:
        require("ptrace", "; ".join(doc["errors"]))
    return path


@pytest.fixture(scope="module")
def progs(work) -> dict[str, Path]:
    sources = {"exit": (EXIT_C, ()), "stderr": (STDERR_C, ()), "null": (NULL_C, ()),
               "vsyscall-calls": (VSYSCALL_CALLS_C, ("-static",)),
               "vsyscall-read": (VSYSCALL_READ_C, ()), "fork-bomb": (FORK_BOMB_C, ()),
               "fork-n": (FORK_N_C, ()), "writer": (WRITER_C, ("-O2",)),
               "kill-parent": (KILL_PARENT_C, ()),
               "signal-parent": (SIGNAL_PARENT_C, ()), "garbage-fds": (GARBAGE_FDS_C, ())}
    folder = work / "progs"
    folder.mkdir(exist_ok=True)
    return {name: compile_c(folder, name, source, "gcc", *flags)
            for name, (source, flags) in sources.items()}


def run(launcher: Path, *args: str, where: Path, timeout: float = 60, env: dict | None = None,
        prefix: tuple[str, ...] = ()) -> tuple[dict, subprocess.CompletedProcess]:
    """The launcher with --result FILE: its document and the launcher's own streams."""
    result = where / f"result-{uuid.uuid4().hex}.json"
    done = subprocess.run([*prefix, str(launcher), "--result", str(result), *args],
                          capture_output=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    text = result.read_text()
    assert text.count("\n") == 1 and text.endswith("}\n"), text  # one document
    doc = json.loads(text)
    assert set(doc) == FIELDS, doc
    assert doc["syscalls_total"] == sum(doc["syscalls"].values())
    return doc, done


def verdict(doc: dict, stderr: bytes = b""):
    return judge(outcome_from_dict({**doc, "stderr": stderr}))


# --------------------------------------------------------------------- ordinary programs ------


def test_exit_status_and_the_program_streams_passed_through(launcher, progs, work):
    doc, done = run(launcher, "--", str(progs["exit"]), where=work)
    assert (doc["exit_status"], doc["signal"], doc["exec_errno"], doc["timed_out"]) == \
        (0, None, None, False)
    assert doc["traced"] is True and doc["method"] == "seccomp-trace" and doc["errors"] == []
    assert doc["processes"] == 1 and doc["syscalls"][NR_EXECVE] == 1
    assert doc["vsyscall_traps"] == 0
    assert verdict(doc).kind == "passed"
    doc, done = run(launcher, "--", str(progs["stderr"]), where=work)
    assert doc["exit_status"] == 3 and doc["signal"] is None
    # the program's own streams, and nothing else, on the launcher's
    assert (done.stdout, done.stderr) == (b"to stdout\n", b"bad input\n")
    assert doc["output"] == {"stdout": {"passed": 10, "dropped": 0},
                             "stderr": {"passed": 10, "dropped": 0}}
    judged = verdict(doc, done.stderr)
    assert judged.kind == "failed" and "bad input" in judged.cause


def test_a_null_dereference_is_a_crash_at_address_zero(launcher, progs, work):
    doc, _ = run(launcher, "--", str(progs["null"]), where=work)
    assert (doc["exit_status"], doc["signal"], doc["fault_address"]) == (None, "SIGSEGV", "0x0")
    ip = int(doc["fault_ip"], 16)
    assert 0x1000 <= ip < 0xffffffffff600000  # in the program's text, not at the address
    judged = verdict(doc)
    assert judged.kind == "crashed" and judged.cause == "SIGSEGV at 0x0: a null pointer dereference"


@pytest.mark.parametrize("calls", [1, 5])
def test_emulated_vsyscall_calls_are_counted_as_traps(launcher, progs, work, calls):
    if host_vsyscall_mode() == "none":
        pytest.skip("this kernel has no vsyscall page (vsyscall=none): a call would crash")
    doc, _ = run(launcher, "--", str(progs["vsyscall-calls"]), str(calls), where=work)
    assert doc["exit_status"] == 0 and doc["signal"] is None
    assert doc["vsyscall_traps"] == calls
    # the emulation passes through seccomp as the time system call: one per call
    assert doc["syscalls"][NR_TIME] == calls


def test_ptrace_syscall_cannot_see_vsyscalls_and_says_so(launcher, progs, work):
    if host_vsyscall_mode() == "none":
        pytest.skip("this kernel has no vsyscall page")
    env = dict(os.environ, LAUNCH_METHOD="ptrace-syscall")
    doc, _ = run(launcher, "--", str(progs["vsyscall-calls"]), "3", where=work, env=env)
    assert doc["method"] == "ptrace-syscall" and doc["exit_status"] == 0
    assert doc["vsyscall_traps"] is None and NR_TIME not in doc["syscalls"]
    assert any("vsyscall_traps unknown" in e for e in doc["errors"])


def test_a_read_of_the_vsyscall_page_faults_at_the_page_with_the_ip_elsewhere(launcher, progs,
                                                                              work):
    if host_vsyscall_mode() == "emulate":
        pytest.skip("vsyscall=emulate: the page is readable here")
    doc, _ = run(launcher, "--", str(progs["vsyscall-read"]), where=work)
    assert (doc["signal"], doc["fault_address"]) == ("SIGSEGV", "0xffffffffff600000")
    assert doc["fault_ip"] is not None and int(doc["fault_ip"], 16) < 0xffffffffff600000
    judged = verdict(doc)
    assert judged.kind == "crashed" and "a read of the vsyscall page" in judged.cause


def test_exec_failures_are_named(launcher, work):
    folder = work / "exec"
    folder.mkdir(exist_ok=True)
    no_interp = compile_c(folder, "no-interp", EXIT_C, "gcc",
                          "-Wl,--dynamic-linker=/nonexistent/ld-linux-x86-64.so.2")
    not_elf = folder / "not-elf"
    not_elf.write_bytes(b"\x00\x01garbage, neither ELF nor #!\n")
    not_elf.chmod(0o755)
    not_exec = folder / "not-exec"
    not_exec.write_text("#!/bin/sh\nexit 0\n")
    not_exec.chmod(0o644)
    for path, name, number in ((no_interp, "ENOENT", 2), (not_elf, "ENOEXEC", 8),
                               (not_exec, "EACCES", 13), (folder / "missing", "ENOENT", 2)):
        doc, _ = run(launcher, "--", str(path), where=work)
        assert (doc["exec_errno"], doc["exec_errno_number"]) == (name, number), path
        assert (doc["exit_status"], doc["signal"]) == (None, None)
        assert verdict(doc).kind == "cannot-execute"


def test_cwd_and_a_program_found_on_path(launcher, work):
    doc, done = run(launcher, "--cwd", str(work), "--", "sh", "-c", "pwd; exit 4", where=work)
    assert doc["exit_status"] == 4 and done.stdout.decode().strip() == str(work)
    doc, _ = run(launcher, "--cwd", str(work / "no-such-dir"), "--", "true", where=work)
    assert doc["exit_status"] is None and any(e.startswith("--cwd:") for e in doc["errors"])


# ---------------------------------------------------------------------- hostile programs ------


def pids_cgroup(limit: int) -> Path | None:
    """A fresh cgroup-v1 pids cgroup with pids.max = limit, where this machine lets us make one."""
    base = Path("/sys/fs/cgroup/pids")
    if os.geteuid() != 0 or not (base / "cgroup.procs").exists():
        return None
    group = base / f"vdsomatrix-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(limit))
    except OSError:
        return None
    return group


def test_a_fork_bomb_under_a_pids_limit_gets_its_verdict_and_leaves_nothing(launcher, progs,
                                                                             work):
    limit = 40
    group = pids_cgroup(limit)
    if group is None:
        pytest.skip("no pids cgroup can be made here (not root, or no cgroup v1 pids)")
    try:
        result = work / "fork-bomb.json"
        # the launcher itself enters the group: the tree counts against the limit with it
        script = f'echo $$ > {group}/cgroup.procs && exec "$@"'
        done = subprocess.run(["sh", "-c", script, "sh", str(launcher), "--timeout", "20",
                               "--result", str(result), "--", str(progs["fork-bomb"])],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        doc = json.loads(result.read_text())
        assert (doc["exit_status"], doc["timed_out"]) == (0, False), doc
        # the supervisor and the tracer take two of the limit's pids
        assert limit - 2 - 5 <= doc["processes"] <= limit - 2
        assert int((group / "pids.current").read_text()) == 0
    finally:
        group.rmdir()


def test_every_child_is_counted_and_killed_when_the_program_exits(launcher, progs, work):
    doc, _ = run(launcher, "--", str(progs["fork-n"]), "100", where=work, timeout=60)
    assert doc["exit_status"] == 0 and doc["processes"] == 101
    left = subprocess.run(["pgrep", "-f", str(progs["fork-n"])], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_an_endless_writer_is_capped_timed_out_and_still_reported(launcher, progs, work):
    started = time.monotonic()
    doc, done = run(launcher, "--timeout", "1.5", "--output-cap", "4096", "--",
                    str(progs["writer"]), where=work)
    assert time.monotonic() - started < 6
    assert len(done.stdout) == 4096 and set(done.stdout) == {ord("x")}
    assert len(done.stderr) == 4096
    out = doc["output"]
    assert out["stdout"]["passed"] == 4096 and out["stdout"]["dropped"] > 1 << 20
    assert out["stderr"]["passed"] == 4096 and out["stderr"]["dropped"] > 0
    assert (doc["timed_out"], doc["signal"], doc["exit_status"]) == (True, "SIGKILL", None)
    assert verdict(doc).kind == "timed-out"


def test_a_sleeper_and_its_children_are_killed_at_the_deadline(launcher, work):
    pids = work / "sleeper-pids"
    script = f"sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    started = time.monotonic()
    doc, _ = run(launcher, "--timeout", "1", "--", "sh", "-c", script, where=work)
    assert time.monotonic() - started < 5 and 1 <= doc["seconds"] < 5
    assert doc["timed_out"] is True and doc["signal"] == "SIGKILL"
    assert doc["processes"] == 2
    numbers = [int(p) for p in pids.read_text().split()]
    assert len(numbers) == 2 and all_dead(numbers)


def test_a_program_that_kills_its_parent_is_still_reported(launcher, progs, work):
    pid_file = work / "kill-parent.pid"
    doc, _ = run(launcher, "--", str(progs["kill-parent"]), str(pid_file), where=work)
    # its parent is the tracer: its death took the traced tree with it, the supervisor saw it
    assert doc["signal"] == "SIGKILL" and doc["exit_status"] is None
    assert doc["traced"] is None and doc["syscalls"] == {}  # the tracer's report was lost
    assert any("the tracer (the program's parent) ended by SIGKILL" in e for e in doc["errors"])
    assert all_dead([int(pid_file.read_text())])


def test_signals_to_its_parent_do_not_end_the_run(launcher, progs, work):
    doc, _ = run(launcher, "--", str(progs["signal-parent"]), where=work)
    assert (doc["exit_status"], doc["signal"], doc["traced"]) == (5, None, True), doc
    assert doc["errors"] == [] and doc["syscalls"]["62"] == 7  # its seven kill calls


def test_a_stop_signal_to_the_launcher_kills_the_tree_and_still_reports(launcher, work):
    pids = work / "stopped-pids"
    result = work / "stopped.json"
    proc = subprocess.Popen([str(launcher), "--result", str(result), "--", "sh", "-c",
                             f"echo $$ > {pids}.tmp; mv {pids}.tmp {pids}; exec sleep 100"])
    deadline = time.monotonic() + 20
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    doc = json.loads(result.read_text())
    assert (doc["timed_out"], doc["signal"]) == (False, "SIGKILL")
    assert "interrupted by SIGTERM: the program's tree was killed" in doc["errors"]
    assert all_dead([int(pids.read_text())])


def test_fds_3_to_20_hold_nothing_of_the_launcher(launcher, progs, work):
    # a leaked descriptor of the caller's too
    leak_r, leak_w = os.pipe()
    try:
        doc, _ = run(launcher, "--", str(progs["garbage-fds"]), where=work)
        assert doc["exit_status"] == 0  # not one of its writes found a descriptor
        result_r, result_w = os.pipe()
        done = subprocess.run([str(launcher), "--result-fd", str(result_w), "--",
                               str(progs["garbage-fds"])], pass_fds=(result_w, leak_w),
                              capture_output=True, timeout=60)
        os.close(result_w)
        with os.fdopen(result_r) as channel:
            text = channel.read()
        assert done.returncode == 0 and json.loads(text)["exit_status"] == 0
    finally:
        os.close(leak_r)
        os.close(leak_w)


@pytest.mark.parametrize("args", [[], ["--"], ["--timeout", "0", "--", "true"],
                                  ["--result-fd", "1", "--", "true"],
                                  ["--output-cap", "-1", "--", "true"], ["--bogus", "x", "true"]])
def test_usage_errors_exit_2(launcher, args):
    done = subprocess.run([str(launcher), "--result", "/dev/null", *args], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == "" and "usage: launch" in done.stderr


def test_without_a_result_channel_it_refuses_to_start(launcher):
    done = subprocess.run([str(launcher), "--", "true"], capture_output=True, text=True)
    assert done.returncode == 2 and "no result channel" in done.stderr


def i386_program(folder: Path, name: str, code: bytes) -> Path:
    """program_builds' hand-made static i386 program with its 9 code bytes replaced."""
    image = i386_exit0()
    assert len(code) == 9
    path = folder / name
    path.write_bytes(image[:-9] + code)
    path.chmod(0o755)
    return path


def test_a_32_bit_program_under_the_64_bit_launcher(launcher, work):
    exit0 = i386_program(work, "i386-exit0", i386_exit0()[-9:])
    doc, _ = run(launcher, "--", str(exit0), where=work)
    if doc["exec_errno"] == "ENOEXEC":
        pytest.skip("this kernel runs no 32-bit programs (no IA32 emulation)")
    # execve is entered in 64-bit mode; the exit by int $0x80 is another table's call
    assert doc["exit_status"] == 0 and doc["syscalls"] == {NR_EXECVE: 1, "other": 1}
    # mov 0x0, %eax: a read of address 0 by the instruction at the entry point (0x08048054)
    crash = i386_program(work, "i386-null", bytes.fromhex("a100000000") + b"\x90" * 4)
    doc, _ = run(launcher, "--", str(crash), where=work)
    assert (doc["signal"], doc["fault_address"], doc["fault_ip"]) == \
        ("SIGSEGV", "0x0", "0x8048054")


# -------------------------------------------------------------------------- other builds ------


def test_a_musl_static_launcher_traces_as_well(work, progs):
    if shutil.which("musl-gcc") is None:
        require("musl-gcc", "musl-tools is not installed")
    musl = build_launcher(work / "musl", "musl-gcc -static")
    doc, _ = run(musl, "--", str(progs["null"]), where=work)
    assert doc["traced"] is True and doc["fault_address"] == "0x0"
    assert doc["syscalls"][NR_EXECVE] == 1


def test_under_qemu_user_there_is_no_ptrace_and_the_program_still_gets_a_verdict(work):
    qemu = shutil.which("qemu-aarch64-static")
    if shutil.which("aarch64-linux-gnu-gcc") is None or qemu is None:
        require("aarch64-linux-gnu-gcc and qemu-aarch64-static", "not installed")
    arm = build_launcher(work / "aarch64", "aarch64-linux-gnu-gcc -static")
    folder = work / "aarch64-progs"
    folder.mkdir(exist_ok=True)
    exit3 = compile_c(folder, "exit", STDERR_C, "aarch64-linux-gnu-gcc", "-static")
    null = compile_c(folder, "null", NULL_C, "aarch64-linux-gnu-gcc", "-static")
    # PROGRAM through qemu again: qemu-user runs a foreign execve natively on the host
    doc, done = run(arm, "--", qemu, str(exit3), where=work, prefix=(qemu,))
    assert doc["traced"] is False and doc["exit_status"] == 3 and done.stdout == b"to stdout\n"
    assert any("PTRACE_TRACEME refused" in e for e in doc["errors"])
    assert (doc["processes"], doc["vsyscall_traps"], doc["syscalls"]) == (None, None, {})
    doc, _ = run(arm, "--", qemu, str(null), where=work, prefix=(qemu,))
    assert doc["signal"] == "SIGSEGV" and doc["fault_address"] is None
    doc, _ = run(arm, "--", str(work / "missing"), where=work, prefix=(qemu,))
    assert doc["exec_errno"] == "ENOENT"
    doc, _ = run(arm, "--timeout", "1", "--", "sleep", "30", where=work, prefix=(qemu,))
    assert doc["timed_out"] is True and doc["signal"] == "SIGKILL"
