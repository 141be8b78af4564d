"""probes/syscount.c, the system-call counter of the runtime rows, for real.

syscount is built with the host's cc (through probes/build.sh) and run on small C programs whose
system calls are known exactly: the counts, threads and children followed, signals passed on,
exit codes and fatal signals, the timeout and SIGTERM killing the whole tree, errors. Each
counting test runs with both methods (the seccomp filter, and the PTRACE_SYSCALL fallback with
and without PTRACE_GET_SYSCALL_INFO). The last test runs it in a hardened probe container.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import all_dead, require

ROOT = Path(__file__).resolve().parents[2]
PROBES_DIR = ROOT / "src" / "vdsomatrix" / "probes"
NR_GETPPID, NR_KILL, NR_EXECVE = "110", "62", "59"
NR_RT_SIGRETURN, NR_RT_SIGPROCMASK = "15", "14"
METHODS = {"": "seccomp-trace", "ptrace-syscall": "ptrace-syscall",
           "ptrace-syscall-regs": "ptrace-syscall"}

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="syscount's numbers are x86_64's")

# `calls MODE N`: N raw getppid calls, plus whatever MODE adds; exits 0 when all went as planned.
CALLS_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long n;
static volatile int handled;
static sigjmp_buf back;

static void *calls(void *arg) {
    long i;
    for (i = 0; i < n; i++)
        syscall(SYS_getppid);
    return arg;
}
static void on_usr1(int sig) { handled++; }
static void on_segv(int sig) { handled++; siglongjmp(back, 1); }

int main(int argc, char **argv) {
    const char *mode = argv[1];
    long i;
    n = atol(argv[2]);
    printf("this line must not reach syscount's stdout\n");
    fflush(stdout);
    if (!strcmp(mode, "plain")) {
        calls(NULL);
    } else if (!strcmp(mode, "threads")) {           /* argv[3] threads, each N calls, and main */
        int k = atoi(argv[3]);
        pthread_t t[200];
        for (i = 0; i < k; i++)
            if (pthread_create(&t[i], NULL, calls, NULL)) return 3;
        calls(NULL);
        for (i = 0; i < k; i++)
            pthread_join(t[i], NULL);
    } else if (!strcmp(mode, "fork")) {              /* a child: N calls, then exec plain N */
        int status;
        pid_t pid = fork();
        if (pid == 0) {
            calls(NULL);
            execl(argv[0], argv[0], "plain", argv[2], (char *)NULL);
            _exit(4);
        }
        calls(NULL);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 5;
    } else if (!strcmp(mode, "vfork")) {             /* the vfork child execs plain N */
        int status;
        pid_t pid = vfork();
        if (pid == 0) {
            execl(argv[0], argv[0], "plain", argv[2], (char *)NULL);
            _exit(4);
        }
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 5;
    } else if (!strcmp(mode, "usr1")) {              /* N signals, each handled */
        signal(SIGUSR1, on_usr1);
        for (i = 0; i < n; i++)
            kill(getpid(), SIGUSR1);
        return handled == n ? 0 : 6;
    } else if (!strcmp(mode, "segv")) {              /* N faults, each handled, as a JVM does */
        signal(SIGSEGV, on_segv);
        for (i = 0; i < n; i++)
            if (!sigsetjmp(back, 1))
                *(volatile int *)0 = 1;
        return handled == n ? 0 : 6;
    } else if (!strcmp(mode, "stop")) {              /* stops itself, is continued */
        raise(SIGSTOP);
    } else if (!strcmp(mode, "crash")) {
        *(volatile int *)0 = 1;
    } else if (!strcmp(mode, "exit")) {
        return (int)n;
    } else if (!strcmp(mode, "escape")) {            /* a child leaves the process group */
        pid_t pid = fork();
        if (pid == 0) {
            setsid();
            pause();
            _exit(0);
        }
        fprintf(stderr, "pids %d %ld\n", getpid(), (long)pid);
        pause();
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> Path:
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    out = tmp_path_factory.mktemp("syscount")
    subprocess.run(["sh", str(PROBES_DIR / "build.sh"), str(out), "syscount"], check=True,
                   capture_output=True)
    (out / "calls.c").write_text(CALLS_C)
    subprocess.run([cc, "-O2", "-pthread", "-o", str(out / "calls"), str(out / "calls.c")],
                   check=True)
    probe = subprocess.run([str(out / "syscount"), "--", "true"], capture_output=True, text=True)
    doc = json.loads(probe.stdout)
    if doc["error"] and "ptrace refused" in doc["error"]:
        require("ptrace", doc["error"])
    return out


def syscount(bins: Path, *args: str, method: str = "", timeout: float = 120) -> dict:
    env = dict(os.environ, SYSCOUNT_METHOD=method)
    done = subprocess.run([str(bins / "syscount"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout  # one document, nothing of PROGRAM's
    doc = json.loads(done.stdout)
    assert set(doc) == {"counts", "total", "exit_code", "signal", "timed_out", "error", "method"}
    assert doc["total"] == sum(doc["counts"].values())
    return doc


def calls(bins: Path, mode: str, n: int, *extra: str, method: str = "", **kw) -> dict:
    return syscount(bins, "--", str(bins / "calls"), mode, str(n), *extra, method=method, **kw)


def ok(doc: dict, method: str) -> dict:
    assert (doc["exit_code"], doc["signal"], doc["timed_out"], doc["error"]) == (0, None, False,
                                                                                   None), doc
    assert doc["method"] == METHODS[method]
    return doc["counts"]


@pytest.mark.parametrize("method", METHODS)
def test_a_single_thread_is_counted_exactly(bins, method):
    n = 1000
    small, big = ok(calls(bins, "plain", n, method=method), method), \
        ok(calls(bins, "plain", 2 * n, method=method), method)
    assert small[NR_GETPPID] == n and big[NR_GETPPID] == 2 * n
    assert small[NR_EXECVE] == 1  # PROGRAM's execve, and none of syscount's own set-up
    # Everything else is the same start-up and exit: the difference is exactly N getppid.
    assert sum(big.values()) - sum(small.values()) == n
    assert {k: v for k, v in big.items() if k != NR_GETPPID} == \
        {k: v for k, v in small.items() if k != NR_GETPPID}


@pytest.mark.parametrize("method", METHODS)
def test_every_thread_is_followed(bins, method):
    # 100 threads: more than the tid table's first allocation.
    for threads in (1, 100):
        n = 500
        small = ok(calls(bins, "threads", n, str(threads), method=method), method)
        big = ok(calls(bins, "threads", 2 * n, str(threads), method=method), method)
        assert small[NR_GETPPID] == n * (threads + 1)
        assert big[NR_GETPPID] - small[NR_GETPPID] == n * (threads + 1)


@pytest.mark.parametrize("method", METHODS)
def test_forks_vforks_and_their_execs_are_followed(bins, method):
    n = 300
    counts = ok(calls(bins, "fork", n, method=method), method)
    assert counts[NR_GETPPID] == 3 * n  # the parent, the child, the child's exec'd program
    assert counts[NR_EXECVE] == 2
    counts = ok(calls(bins, "vfork", n, method=method), method)
    assert counts[NR_GETPPID] == n and counts[NR_EXECVE] == 2


@pytest.mark.parametrize("method", METHODS)
def test_signals_are_delivered_not_swallowed(bins, method):
    n = 1000
    counts = ok(calls(bins, "usr1", n, method=method), method)  # exit 6 if one was lost
    assert counts[NR_KILL] == n and counts[NR_RT_SIGRETURN] == n
    counts = ok(calls(bins, "segv", n, method=method), method)  # handled faults, as in a JVM
    assert counts[NR_RT_SIGPROCMASK] >= n  # siglongjmp out of each handler restores the mask


@pytest.mark.parametrize("method", METHODS)
def test_a_program_that_stops_itself_goes_on(bins, method):
    ok(calls(bins, "stop", 0, method=method, timeout=30), method)


@pytest.mark.parametrize("method", METHODS)
def test_exit_code_and_fatal_signal(bins, method):
    doc = calls(bins, "exit", 7, method=method)
    assert (doc["exit_code"], doc["signal"], doc["error"]) == (7, None, None)
    doc = calls(bins, "crash", 0, method=method)
    assert (doc["exit_code"], doc["signal"], doc["error"]) == (None, "SIGSEGV", None)
    assert doc["counts"][NR_EXECVE] == 1 and doc["method"] == METHODS[method]


def test_timeout_kills_the_whole_tree_and_keeps_the_counts(bins, tmp_path):
    pids = tmp_path / "pids"
    script = f"sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    started = time.monotonic()
    doc = syscount(bins, "--timeout", "1.5", "--", "sh", "-c", script, timeout=30)
    assert time.monotonic() - started < 5
    assert doc["timed_out"] is True and doc["signal"] == "SIGKILL" and doc["exit_code"] is None
    assert doc["error"] is None and doc["counts"][NR_EXECVE] >= 2 and doc["total"] > 20
    numbers = [int(p) for p in pids.read_text().split()]
    assert len(numbers) == 2 and all_dead(numbers)


def test_a_child_that_left_the_process_group_is_killed_too(bins):
    proc = subprocess.Popen([str(bins / "syscount"), "--timeout", "1", "--", str(bins / "calls"),
                             "escape", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=30)
    doc = json.loads(out)
    assert doc["timed_out"] is True
    line = next(line for line in err.splitlines() if line.startswith("pids "))
    assert all_dead([int(p) for p in line.split()[1:]])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_kills_the_tree_and_prints_what_was_counted(bins, tmp_path, sig):
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}.tmp; mv {pids}.tmp {pids}; exec sleep 100"
    proc = subprocess.Popen([str(bins / "syscount"), "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # let sh exec sleep
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    doc = json.loads(out)
    assert doc["timed_out"] is False and doc["signal"] == "SIGKILL"
    assert doc["error"] == f"interrupted by {sig.name}: the traced tree was killed"
    assert doc["counts"][NR_EXECVE] >= 3  # sh, mv, sleep (and the PATH search's failures)
    assert all_dead([int(pids.read_text())])


def test_exec_failures_are_reported(bins, tmp_path):
    doc = syscount(bins, "--", str(tmp_path / "missing"))
    assert doc["error"] == f"exec failed: {tmp_path / 'missing'}: No such file or directory"
    assert (doc["exit_code"], doc["signal"], doc["timed_out"]) == (None, None, False)
    missing = "no-such-program-anywhere-on-path"
    doc = syscount(bins, "--", missing)
    assert doc["error"] == f"exec failed: {missing}: No such file or directory"
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    doc = syscount(bins, "--", str(plain))
    assert doc["error"] == f"exec failed: {plain}: Permission denied"


def test_program_found_on_path_and_without_dashes(bins):
    doc = syscount(bins, "sh", "-c", "exit 3")
    assert doc["exit_code"] == 3 and doc["error"] is None


@pytest.mark.parametrize("args", [[], ["--"], ["--timeout", "x", "--", "true"],
                                  ["--timeout", "0", "--", "true"], ["--bogus", "--", "true"]])
def test_usage_errors_exit_2_and_print_nothing(bins, args):
    done = subprocess.run([str(bins / "syscount"), *args], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == "" and "usage: syscount" in done.stderr


# ---------------------------------------------------------------- in a probe container -------


@pytest.mark.engine
@pytest.mark.slow
def test_seccomp_trace_works_as_nobody_in_a_hardened_container(engine):
    from vdsomatrix.engine.container import Container
    from vdsomatrix.images import probe_image as images
    from vdsomatrix.matrix import load_matrix

    image = images.ensure_probe_image(load_matrix().suites["bookworm"], client=engine)
    command = ["/opt/vdsomatrix/bin/syscount", "--", "python3", "-c", "import os; os.getppid()"]
    box = Container(engine, image, command, name="test-syscount", lifetime=60)
    kwargs = box.kwargs
    assert kwargs["user"].startswith("65534") and kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    with box:
        run = box.run(60, stdout_cap=1 << 16)
    assert run.exit_code == 0, (run.errors, run.stderr[-2000:])
    doc = json.loads(run.stdout)
    assert (doc["exit_code"], doc["error"], doc["method"]) == (0, None, "seccomp-trace")
    assert doc["counts"][NR_GETPPID] >= 1 and doc["counts"][NR_EXECVE] == 1
