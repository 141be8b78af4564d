"""Child processes that cannot outlive vdsomatrix, and that stop when the run is interrupted.

Every long-running child (the probe on the host, debootstrap, QEMU) is started here: in a process
group of its own (so that Ctrl-C on the terminal reaches vdsomatrix alone, which then stops its
children in order instead of having them die half-way through a write), with the kernel's
parent-death signal set (so that even a SIGKILL of vdsomatrix takes them down), and killed as a
whole group on a deadline or an interrupt. A process is named by its pid and start time within
one boot (:func:`start_time`, :func:`boot_id`): what leftovers are told from live runs by.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
# Set by the runner when the run is interrupted (Ctrl-C, SIGTERM, SIGHUP): loops that wait on a
# child or an engine check it and give up within a fraction of a second.
stopping = threading.Event()


class Interrupted(Exception):
    """The run was interrupted while this work was under way; its result must not be stored."""


def check_stopping() -> None:
    if stopping.is_set():
        raise Interrupted("interrupted")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """Popen in a new session that the kernel kills if vdsomatrix dies.

    The parent-death signal fires when the *thread* that forked exits: callers wait for the
    child in the thread that started it (every caller here does).
    """
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)


def kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL, to the whole process group ``proc`` leads; reaps ``proc``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            # The leader is gone; members of its group may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def wait(proc: subprocess.Popen, timeout: float, *, grace: float = 2.0) -> int | None:
    """Wait for ``proc`` up to ``timeout`` s; None (and the group killed) on a timeout.

    An interrupt (see :data:`stopping`) kills the group within 0.2 s and raises Interrupted.
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            check_stopping()
            if time.monotonic() >= deadline:
                kill_group(proc, grace)
                return None
    except BaseException:
        kill_group(proc, grace)
        raise


def start_time(pid: int | str = "self") -> str | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat);
    None when there is no such process. With its pid it names one process, never a later one
    that got the same pid. Any other failure to read it raises: whoever asks must then assume
    the process is alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    return stat.rsplit(")", 1)[1].split()[19]


@functools.cache
def boot_id() -> str:
    """This boot of this machine ("" when unknown): pids and start times mean something only
    within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass
class Completed:
    returncode: int | None
    stdout: bytes
    stderr: bytes  # the last ``stderr_keep`` bytes
    timed_out: bool = False
    overflow: bool = False  # stdout passed its cap; the child was killed


def run_bounded(argv: list[str], *, timeout: float, stdout_cap: int,
                stderr_keep: int = 64 << 10, env: dict | None = None,
                stdin=subprocess.DEVNULL) -> Completed:
    """Run ``argv`` to its end, keeping at most ``stdout_cap`` bytes of stdout (more kills it)
    and the tail of stderr; the whole group is killed on the deadline or an interrupt (which
    raises Interrupted). ``stdin`` is a file the child reads, never a pipe this side writes,
    so that neither side can block the other."""
    proc = spawn(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = bytearray(), bytearray()
    timed_out = overflow = False
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                check_stopping()
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=min(left, 0.2)):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if key.data is err and len(err) > 2 * stderr_keep:
                        del err[:-stderr_keep]
                    if key.data is out and len(out) > stdout_cap:
                        overflow = True
                        break
                if overflow:
                    break
        if timed_out or overflow:
            kill_group(proc)
            code = proc.returncode
        else:
            code = wait(proc, max(0.1, deadline - time.monotonic()))
            timed_out = code is None
    except BaseException:
        kill_group(proc)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return Completed(code, bytes(out[:stdout_cap]), bytes(err[-stderr_keep:]), timed_out,
                     overflow)
