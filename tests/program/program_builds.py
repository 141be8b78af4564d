"""Real programs for the program-analysis tests, built with this host's compilers at test time.

Each build is skipped (failed in CI) when its compiler is missing. ``fault_launcher`` is a tiny
C tracer of the kind the runner half needs: it runs a program under ptrace and reports the
terminating signal with its si_addr and the instruction pointer, which no exit status carries.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
# time() through a function pointer to the vsyscall page, as glibc < 2.14 compiled it into
# static binaries: runs where the page is executable (xonly, emulate), SIGSEGV where it is not.
VSYSCALL_CALL_C = """\
typedef long (*time_fn)(long *);
int main(void) { time_fn f = (time_fn)0xffffffffff600400UL; return f(0) > 0 ? 0 : 1; }
"""
# The address kept in data and called only with an argument: a pointer, not a call site.
VSYSCALL_POINTER_C = """\
typedef long (*gettimeofday_fn)(void *, void *);
gettimeofday_fn volatile vsyscall_gettimeofday = (gettimeofday_fn)0xffffffffff600000UL;
int main(int argc, char **argv) {
    (void)argv;
    return argc > 1 ? (int)vsyscall_gettimeofday(0, 0) : 0;
}
"""
# A read of the vsyscall page: SIGSEGV under xonly and none alike, at the page's first byte.
VSYSCALL_READ_C = """\
int main(void) { return *(volatile unsigned char *)0xffffffffff600000UL == 0x48 ? 0 : 3; }
"""
EXIT_C = "#include <stdio.h>\nint main(void) { fputs(\"bad input\\n\", stderr); return 3; }\n"
# Hostile programs for `vdsomatrix test`: each must end with a verdict and leave nothing behind.
NULL_DEREF_C = "int main(void) { volatile int *p = 0; return *p; }\n"
# Every process forks for 3 s (from the first one's start), then exits: the pids limit refuses
# most forks; the tree ends by itself.
FORK_BOMB_C = """\
#include <time.h>
#include <unistd.h>
int main(void) {
    time_t end = time(0) + 3;
    while (time(0) < end) fork();
    return 0;
}
"""
ENDLESS_WRITER_C = """\
#include <string.h>
#include <unistd.h>
int main(void) {
    char line[4096];
    memset(line, 'y', sizeof line);
    for (;;) write(1, line, sizeof line);
}
"""
SLEEPER_C = "#include <unistd.h>\nint main(void) { for (;;) sleep(1000); }\n"
# What the program could write it could not run: the one writable place, /tmp, is noexec.
EXEC_FROM_TMP_SH = "#!/bin/sh\ncp /bin/true /tmp/t && chmod 755 /tmp/t && exec /tmp/t\n"
LIBFOO_C = "int foo(void) { return 7; }\n"
LIBBAR_C = "int bar(void) { return 8; }\n"
USES_FOO_C = "int foo(void);\nint main(void) { return foo() == 7 ? 0 : 1; }\n"
CXX_C = '#include <iostream>\n#include <string>\nint main() { std::string s("hi"); ' \
        'std::cout << s << std::endl; return 0; }\n'
GO_MAIN = 'package main\n\nimport (\n\t"fmt"\n\t"time"\n)\n\n' \
          'func main() { fmt.Println("hello", time.Now().Unix() > 0) }\n'
# ptrace launcher: PTRACE_TRACEME in the child, then every signal stop in the parent: a fatal
# one (SEGV, BUS, ILL, FPE, TRAP) is reported with si_addr and rip, then the child is killed.
FAULT_LAUNCHER_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[1], argv + 1);
        _exit(255);
    }
    int status, sig = 0;
    while (waitpid(pid, &status, 0) == pid) {
        if (WIFEXITED(status)) { printf("exit %d\n", WEXITSTATUS(status)); return 0; }
        if (WIFSIGNALED(status)) { printf("signal %d\n", WTERMSIG(status)); return 0; }
        sig = WSTOPSIG(status);
        if (sig == SIGTRAP && !(status >> 16)) sig = 0;  /* the stop at exec */
        if (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) {
            siginfo_t info; struct user_regs_struct regs;
            ptrace(PTRACE_GETSIGINFO, pid, 0, &info);
            ptrace(PTRACE_GETREGS, pid, 0, &regs);
            printf("signal %d addr %#lx ip %#llx\n", sig, (unsigned long)info.si_addr,
                   regs.rip);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 0;
        }
        ptrace(PTRACE_CONT, pid, 0, (void *)(long)sig);
    }
    return 1;
}
"""


def require(what: str, reason: str) -> None:
    """Skip a test that needs ``what`` (fail it in CI, whose machines must provide it)."""
    message = f"{what} unavailable: {reason}"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message} (CI=true: this machine must provide it)", pytrace=False)
    pytest.skip(message)


def i386_exit0() -> bytes:
    """The smallest static i386 program, written by hand (no multilib here): an ELF32 header,
    one PT_LOAD, and ``mov $1, %eax; xor %ebx, %ebx; int $0x80`` (exit(0))."""
    base, code = 0x08048000, bytes.fromhex("b801000000" "31db" "cd80")
    size = 52 + 32 + len(code)
    header = (b"\x7fELF\x01\x01\x01" + bytes(9)
              + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, base + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0))
    segment = struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)
    return header + segment + code


def compile_c(folder: Path, name: str, source: str, compiler: str, *flags: str,
              suffix: str = ".c", libs: tuple[str, ...] = ()) -> Path:
    """``compiler flags -o folder/name source libs``; skipped when the compiler is missing."""
    if shutil.which(compiler) is None:
        require(compiler, "not installed on this host")
    src = folder / f"{name}{suffix}"
    src.write_text(source)
    out = folder / name
    done = subprocess.run([compiler, *flags, "-o", str(out), str(src), *libs],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{compiler} {name}: {done.stderr[-2000:]}"
    return out


def shared_library(folder: Path, name: str, source: str, compiler: str) -> Path:
    """A shared library with the soname libfoo.so.1 (whatever its file name)."""
    return compile_c(folder, name, source, compiler, "-shared", "-fPIC",
                     "-Wl,-soname,libfoo.so.1")


def go_static(folder: Path, name: str = "hello-go") -> Path:
    if shutil.which("go") is None:
        require("go", "golang-go is not installed")
    (folder / "gosrc").mkdir(exist_ok=True)
    (folder / "gosrc" / "main.go").write_text(GO_MAIN)
    env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "off", "HOME": str(folder),
           "GOCACHE": str(folder / "gocache"), "GOPATH": str(folder / "gopath")}
    out = folder / name
    done = subprocess.run(["go", "build", "-o", str(out), "main.go"], cwd=folder / "gosrc",
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"go build: {done.stderr[-2000:]}"
    return out


def host_vsyscall_mode() -> str:
    """This host's vsyscall mode as the probe reads it from /proc/self/maps."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("[vsyscall]"):
            perms = line.split()[1]
            return "xonly" if perms.startswith("--x") else "emulate"
    return "none"
