"""One probe container: created confined, read through an attach stream, always removed.

The confinement of every probe container is decided in :func:`container_kwargs` alone:

- network mode "none": no interface but lo;
- a read-only root file system, with a small tmpfs on /tmp (noexec: the probe runs nothing from
  there, the helpers live in /opt/vdsomatrix/bin);
- an unprivileged user (nobody, 65534:65534), every capability dropped (``cap_drop=["ALL"]``,
  none added back), no-new-privileges, the probe's seccomp profile (seccomp.py: Docker's
  default plus two narrow rules, see below), a memory and a process limit, no core dumps, no
  log driver (the output is read through an attach stream, so nothing of it lands on the
  host's disk);
- a lifetime: the command runs under coreutils ``timeout -s KILL`` (itself under ``sh``), so the
  container stops by itself even when nobody is left to kill it (vdsomatrix itself killed);
  and labels naming its
  owner, by which leftovers.py tells a leftover from a container a live run still waits for.

Capabilities: none, and not root. The helper ptraces only its own children, which ask for it
with PTRACE_TRACEME and run with its credentials, so ptrace_may_access() succeeds without
CAP_SYS_PTRACE (the default seccomp profile allows ptrace on kernels >= 4.8);
sched_setaffinity() on itself needs no CAP_SYS_NICE; a process may always read its own
/proc/self/mem (the vDSO image), and whether the vsyscall page reads or faults depends on the
kernel's vsyscall mode, not on who asks. Verified on the development machine
(kernel 6.18, Docker 20.10.24) as uid 65534 with CapEff = CapBnd = 0: PTRACE_TRACEME +
PTRACE_SYSCALL + PTRACE_GETREGS, pinning to one CPU, the vDSO image and the vsyscall read all
work, and a full probe document is identical to one made as root but for ASLR addresses;
tests/test_docker_backend.py checks it on every machine.
Docker's default seccomp profile refuses perf_event_open unless the container has CAP_SYS_ADMIN
(this engine does not know CAP_PERFMON), which would leave the helper's page-fault counts (the
proof that a vsyscall call traps) null in containers. Containers therefore run with a profile
generated from the engine's own default.json (seccomp.py) that adds exactly one rule allowing
perf_event_open (still subject to the kernel's perf_event_paranoid, as for any unprivileged
process), and, in time-namespace environments, one allowing unshare() with the single argument
CLONE_NEWUSER|CLONE_NEWTIME. Neither CAP_SYS_ADMIN nor an unconfined profile: both would also
allow mounts, every other namespace, bpf and more, for two calls the probe needs. When the
engine's default.json cannot be had (seccomp.py says when), the engine's default profile is used
and the result says why (environment.seccomp.reason).

No CPU quota is set: CFS throttling would distort latency measurements, and the runner already
serialises measurements of backends that share the host's CPUs.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vdsomatrix import processes
from vdsomatrix.engine.client import (
    LABEL,
    engine_error_message,
    is_engine_error,
    quiet,
    remove_container,
)
from vdsomatrix.engine.leftovers import EXPIRES, PROBE_RUN, owner_labels
from vdsomatrix.text import one_line, plain_tail

CAPABILITIES: tuple[str, ...] = ()  # added back after cap_drop=["ALL"]: none, see above
USER = "65534:65534"  # nobody:nogroup, in every Debian base-passwd; numeric, so no lookup
MEM_LIMIT = "512m"
PIDS_LIMIT = 128
# A JVM sizes its heap from the container's limit and starts a dozen threads at least; the C
# helper needs neither. Runtime environments alone get more (a JVM that still cannot start says
# so in its row).
RUNTIMES_MEM_LIMIT = "1536m"
RUNTIMES_PIDS_LIMIT = 512
TMPFS_TMP = "rw,noexec,nosuid,nodev,size=16m,mode=1777"
STDERR_KEEP = 64 * 1024  # bytes of stderr kept (the end of it) for log_tail
LOG_TAIL_LINES = 40
WAIT_SLICE = 0.2  # seconds between looks at the deadline and at processes.stopping
# The wait request may outlive the deadline by this much before the SDK gives up on it: the
# deadline is kept by run_container, the request's own timeout only bounds a hung engine.
WAIT_REQUEST_SLACK = 30.0

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def container_kwargs(env_name: str, image: str, command: list[str], *,
                     lifetime: float, runtimes: bool = False,
                     seccomp: str | None = None, cpu: int | None = None) -> dict[str, Any]:
    """Arguments of ``client.containers.create`` for one probe container running ``command``,
    which kills itself ``lifetime`` seconds after it starts. ``seccomp`` is the text of the
    seccomp profile (seccomp.py's ``Profile.text``; the engine takes it inline), None for the
    engine's default one. ``cpu``: the one host CPU the container may run on (its cpuset), so
    that containers measured side by side never share one; None: any.

    The single place that decides how probe containers are confined; the real-engine tests run
    their checks through it with a different ``command``.
    """
    from docker.types import LogConfig, Ulimit

    seconds = max(1, math.ceil(lifetime))
    return {
        "image": image,
        # Under a shell, not as PID 1: GNU timeout 9.10 (forky, sid) exits 125 at once when it
        # is the container's PID 1; the shell passes its status (137 when killed) through.
        "command": ["sh", "-c", 'timeout -s KILL "$0" "$@"; exit $?', f"{seconds}s", *command],
        "name": f"vdsomatrix-{_UNSAFE.sub('_', env_name)[:40]}-{uuid.uuid4().hex[:8]}",
        "labels": {**PROBE_RUN, f"{LABEL}.env": env_name, **owner_labels(),
                   # when it will have killed itself, being started right after its creation
                   EXPIRES: str(math.ceil(time.time()) + seconds)},
        "hostname": "vdsomatrix",
        "user": USER,
        "working_dir": "/",
        "environment": {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": TMPFS_TMP},
        "cap_drop": ["ALL"],
        **({"cap_add": list(CAPABILITIES)} if CAPABILITIES else {}),
        "security_opt": ["no-new-privileges", *([f"seccomp={seccomp}"] if seccomp else [])],
        "mem_limit": RUNTIMES_MEM_LIMIT if runtimes else MEM_LIMIT,
        "memswap_limit": RUNTIMES_MEM_LIMIT if runtimes else MEM_LIMIT,
        "pids_limit": RUNTIMES_PIDS_LIMIT if runtimes else PIDS_LIMIT,
        **({"cpuset_cpus": str(cpu)} if cpu is not None else {}),
        "ulimits": [Ulimit(name="core", soft=0, hard=0)],
        "log_config": LogConfig(type="none"),
        "auto_remove": False,
        "stdin_open": False,
        "tty": False,
    }


@dataclass
class ContainerRun:
    """What one container did: exit code (None if it never finished), its output, and why not."""

    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""  # the last STDERR_KEEP bytes
    timed_out: bool = False
    overflow: bool = False  # stdout passed the cap; the container was killed
    oom_killed: bool = False
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Reader:
    """Drains the attach stream in a thread: stdout up to a cap, the tail of stderr.

    It reads to the end whatever happens: a container whose output is not read blocks in its
    writes, and the engine then cannot stop it (a kill waits for the streams). Past the cap it
    only sets ``overflow``; the waiting thread kills the container.
    """

    def __init__(self, stream, cap: int):
        self.stream, self.cap = stream, cap
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow = False
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="attach", daemon=True)

    def _run(self) -> None:
        try:
            for out, err in self.stream:
                if out and not self.overflow:
                    if len(self.stdout) + len(out) > self.cap:
                        self.overflow = True
                    else:
                        self.stdout += out
                if err:
                    self.stderr += err
                    if len(self.stderr) > 2 * STDERR_KEEP:
                        del self.stderr[:-STDERR_KEEP]
        except Exception as exc:  # the stream breaks when the container is killed or removed
            self.error = one_line(exc)


class _Waiter:
    """``container.wait()`` in a thread, so that the caller can keep an eye on the deadline and
    on an interrupt while the engine holds the request open."""

    def __init__(self, container, request_timeout: float):
        self.done = threading.Event()
        self.status: dict | None = None
        self.error: BaseException | None = None
        self._container, self._timeout = container, request_timeout
        threading.Thread(target=self._run, name="wait", daemon=True).start()

    def _run(self) -> None:
        try:
            self.status = self._container.wait(timeout=self._timeout)
        except BaseException as exc:  # handed to the caller, which decides what it means
            self.error = exc
        finally:
            self.done.set()


def _attach(client, container_id: str, stdout_cap: int) -> _Reader:
    """Start reading the container's output (before it starts, so that nothing is missed)."""
    stream = client.api.attach(
        container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
    )
    reader = _Reader(stream, stdout_cap)
    reader.thread.start()
    return reader


def _wait_for_exit(client, container, reader: _Reader, run: ContainerRun,
                   deadline: float) -> None:
    """Wait until the container exits (its code in ``run``) or ``deadline`` (time.monotonic())
    passes (``run.timed_out``, the container killed); kill it as soon as its output passes the
    cap. On an interrupt (processes.stopping) the container is killed and Interrupted raised; an
    engine that fails the wait raises."""
    def kill() -> None:
        quiet(lambda: client.api.kill(container.id))

    waiter = _Waiter(container, max(0.0, deadline - time.monotonic()) + WAIT_REQUEST_SLACK)
    killed_for_overflow = False
    while not waiter.done.wait(WAIT_SLICE):
        if processes.stopping.is_set():
            kill()
            raise processes.Interrupted("interrupted while the probe ran")
        if time.monotonic() >= deadline:
            run.timed_out = True
            kill()
            return
        if reader.overflow and not killed_for_overflow:
            killed_for_overflow = True
            kill()
    if waiter.error is not None:
        raise waiter.error
    status = waiter.status or {}
    run.exit_code = int(status.get("StatusCode", -1))
    error = status.get("Error")
    message = error.get("Message") if isinstance(error, dict) else error
    if message:
        run.errors.append(f"engine: {one_line(message)}")


def run_container(client, kwargs: dict[str, Any], *, timeout: float,
                  stdout_cap: int, log: Callable[[str], Any] = print) -> ContainerRun:
    """Create, start and wait for one container; it is always removed, whatever happens.

    The output is read through an attach stream opened before the start. After ``timeout``
    seconds, or as soon as stdout passes ``stdout_cap`` bytes, the container is killed. An
    engine that fails (refuses, goes away, runs out of space) gives a run with ``errors`` and no
    exit code; an interrupt (processes.stopping) raises Interrupted within WAIT_SLICE seconds.
    """
    started = time.monotonic()
    run = ContainerRun()
    container_id: str | None = None
    reader: _Reader | None = None
    try:
        container = client.containers.create(**kwargs)
        container_id = container.id
        reader = _attach(client, container_id, stdout_cap)
        container.start()
        _wait_for_exit(client, container, reader, run, deadline=started + timeout)
        reader.thread.join(timeout=10)
        if not run.timed_out:
            quiet(container.reload)
            run.oom_killed = bool((container.attrs.get("State") or {}).get("OOMKilled"))
    except Exception as exc:
        if not is_engine_error(exc):
            raise
        run.errors.append(engine_error_message(exc))
    finally:
        # Also on an interrupt: a probe container never outlives its run.
        remove_container(client, container_id or kwargs.get("name"), log)
        if reader is not None:
            reader.thread.join(timeout=2)
        run.seconds = time.monotonic() - started
    if reader is not None:
        run.stdout, run.stderr = bytes(reader.stdout), bytes(reader.stderr)
        run.overflow = reader.overflow
        if reader.error and run.exit_code is not None and not run.overflow:
            run.errors.append(f"the output stream broke: {reader.error}")
    return run


def log_tail(stderr: bytes, lines: int = LOG_TAIL_LINES) -> list[str]:
    return plain_tail(stderr[-STDERR_KEEP:], lines)


def exit_reason(code: int) -> str:
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exited with status {code}"
