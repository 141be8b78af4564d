"""The one container primitive: :class:`Container`, created confined, run with a deadline, its
output read bounded, always removed.

Every container vdsomatrix makes is one: probe runs (the docker backend, :func:`run_container`),
the runtime layer's build container (images/runtimes.py, committed as an image), and the
created, never started containers whose files are copied out (the probe image's dpkg status,
images/runtimes.py; a whole image's export for an initramfs, images/initramfs.py). Leaving its
``with`` block, whatever happened (an exception, KeyboardInterrupt, an interrupt of the run:
processes.stopping), removes it; a container whose owner was SIGKILLed still kills itself at the
end of its lifetime and carries the labels by which leftovers.py's sweep removes it.

How a container is confined is a :class:`Confinement`, passed explicitly: :data:`PROBE` (and
:func:`probe_confinement`) for probe runs and never started containers, the runtime build's own
(root, a writable root) in images/runtimes.py. What every container gets whatever its
confinement, in :func:`container_kwargs` alone: network mode "none" (no interface but lo),
no-new-privileges, no core dumps, no log driver (the output is read through an attach stream,
so nothing of it lands on the host's disk), the owner labels and the expiry label
(leftovers.py), and a lifetime: the command runs under coreutils ``timeout -s KILL`` (itself
under ``sh``), so the container stops by itself even when nobody is left to kill it.

The probe's confinement (:data:`PROBE`):

- a read-only root file system, with a small tmpfs on /tmp (noexec: the probe runs nothing from
  there, the helpers live in /opt/vdsomatrix/bin);
- an unprivileged user (nobody, 65534:65534), every capability dropped (``cap_drop=["ALL"]``,
  none added back), the probe's seccomp profile (seccomp.py: Docker's default plus two narrow
  rules, see below), a memory and a process limit.

Capabilities: none, and not root. The helper ptraces only its own children, which ask for it
with PTRACE_TRACEME and run with its credentials, so ptrace_may_access() succeeds without
CAP_SYS_PTRACE (the default seccomp profile allows ptrace on kernels >= 4.8);
sched_setaffinity() on itself needs no CAP_SYS_NICE; a process may always read its own
/proc/self/mem (the vDSO image), and whether the vsyscall page reads or faults depends on the
kernel's vsyscall mode, not on who asks. Verified on the development machine
(kernel 6.18, Docker 20.10.24) as uid 65534 with CapEff = CapBnd = 0: PTRACE_TRACEME +
PTRACE_SYSCALL + PTRACE_GETREGS, pinning to one CPU, the vDSO image and the vsyscall read all
work, and a full probe document is identical to one made as root but for ASLR addresses;
tests/backends/test_docker_backend.py checks it on every machine.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
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
from vdsomatrix.errors import VdsomatrixError
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
# deadline is kept by Container.run, the request's own timeout only bounds a hung engine.
WAIT_REQUEST_SLACK = 30.0
CHUNK = 1 << 20  # bytes per read of a copy or an export

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


class TooLarge(VdsomatrixError):
    """A copy out of a container passed the limit its caller set."""


@dataclass(frozen=True)
class Confinement:
    """How one container is confined, beyond what every container gets (container_kwargs).

    ``seccomp``: the text of a seccomp profile (seccomp.py's ``Profile.text``; the engine takes
    it inline), None for the engine's default one. ``cpu``: the one host CPU the container may
    run on (its cpuset), so that containers measured side by side never share one; None: any.
    ``volumes``: (host path, path inside, "ro" or "rw") bind mounts.
    """

    user: str = USER
    read_only: bool = True
    drop_capabilities: bool = True
    seccomp: str | None = None
    mem_limit: str = MEM_LIMIT
    pids_limit: int = PIDS_LIMIT
    tmpfs_tmp: str = TMPFS_TMP
    cpu: int | None = None
    volumes: tuple[tuple[str, str, str], ...] = ()
    environment: tuple[tuple[str, str], ...] = (("LANG", "C.UTF-8"),
                                                ("PYTHONDONTWRITEBYTECODE", "1"))


PROBE = Confinement()  # also for containers that are never started (files copied out of them)


def probe_confinement(*, runtimes: bool = False, seccomp: str | None = None,
                      cpu: int | None = None) -> Confinement:
    """The probe's confinement; ``runtimes``: the language-runtime build's larger limits."""
    return replace(PROBE, seccomp=seccomp, cpu=cpu,
                   mem_limit=RUNTIMES_MEM_LIMIT if runtimes else MEM_LIMIT,
                   pids_limit=RUNTIMES_PIDS_LIMIT if runtimes else PIDS_LIMIT)


def container_kwargs(name: str, image: str, command: list[str], *, lifetime: float,
                     confinement: Confinement = PROBE,
                     kind: dict[str, str] = PROBE_RUN) -> dict[str, Any]:
    """Arguments of ``client.containers.create`` for one container running ``command``, which
    kills itself ``lifetime`` seconds after it starts; ``name`` names it (with a random suffix)
    and is its ``org.vdsomatrix.env`` label, ``kind`` its kind label (leftovers.py sweeps both
    kinds).

    The single place that decides how containers are made; the real-engine tests run their
    checks through it with a different ``command``.
    """
    from docker.types import LogConfig, Ulimit

    seconds = max(1, math.ceil(lifetime))
    c = confinement
    return {
        "image": image,
        # Under a shell, not as PID 1: GNU timeout 9.10 (forky, sid) exits 125 at once when it
        # is the container's PID 1; the shell passes its status (137 when killed) through.
        "command": ["sh", "-c", 'timeout -s KILL "$0" "$@"; exit $?', f"{seconds}s", *command],
        "name": f"vdsomatrix-{_UNSAFE.sub('_', name)[:40]}-{uuid.uuid4().hex[:8]}",
        "labels": {**kind, f"{LABEL}.env": name, **owner_labels(),
                   # when it will have killed itself, being started right after its creation
                   EXPIRES: str(math.ceil(time.time()) + seconds)},
        "hostname": "vdsomatrix",
        "user": c.user,
        "working_dir": "/",
        **({"environment": dict(c.environment)} if c.environment else {}),
        "network_mode": "none",
        "read_only": c.read_only,
        "tmpfs": {"/tmp": c.tmpfs_tmp},
        **({"volumes": {host: {"bind": inside, "mode": mode} for host, inside, mode in c.volumes}}
           if c.volumes else {}),
        **({"cap_drop": ["ALL"]} if c.drop_capabilities else {}),
        **({"cap_add": list(CAPABILITIES)} if c.drop_capabilities and CAPABILITIES else {}),
        "security_opt": ["no-new-privileges", *([f"seccomp={c.seccomp}"] if c.seccomp else [])],
        "mem_limit": c.mem_limit,
        "memswap_limit": c.mem_limit,
        "pids_limit": c.pids_limit,
        **({"cpuset_cpus": str(c.cpu)} if c.cpu is not None else {}),
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
    stdout: bytes = b""  # the first stdout_cap bytes (the last STDERR_KEEP without a cap)
    stderr: bytes = b""  # the last STDERR_KEEP bytes
    timed_out: bool = False
    overflow: bool = False  # stdout passed the cap; the container was killed
    oom_killed: bool = False
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    name: str = ""  # the container's name
    # The engine's failure behind ``errors`` when there is one, for callers that raise it.
    engine_error: BaseException | None = field(default=None, repr=False, compare=False)


Watch = Callable[[bytes | None, bytes | None], Any]


class _Reader:
    """Drains the attach stream in a thread: stdout up to a cap, the tail of stderr.

    It reads to the end whatever happens: a container whose output is not read blocks in its
    writes, and the engine then cannot stop it (a kill waits for the streams). Past the cap it
    only sets ``overflow``; the waiting thread kills the container. Without a cap (None) only
    stdout's tail is kept, as stderr's. ``watch(out, err)`` sees every chunk as it arrives.
    """

    def __init__(self, stream, cap: int | None, watch: Watch | None = None):
        self.stream, self.cap, self.watch = stream, cap, watch
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow = False
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="attach", daemon=True)

    @staticmethod
    def _keep_tail(buffer: bytearray, data: bytes) -> None:
        buffer += data
        if len(buffer) > 2 * STDERR_KEEP:
            del buffer[:-STDERR_KEEP]

    def _run(self) -> None:
        try:
            for out, err in self.stream:
                if self.watch is not None:
                    self.watch(out, err)
                if out and self.cap is None:
                    self._keep_tail(self.stdout, out)
                elif out and not self.overflow:
                    if len(self.stdout) + len(out) > self.cap:
                        self.overflow = True
                    else:
                        self.stdout += out
                if err:
                    self._keep_tail(self.stderr, err)
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


class Container:
    """One container's lifetime, as a context manager::

        with Container(client, image, command, name=env.name, lifetime=300,
                       confinement=probe_confinement(cpu=2)) as box:
            run = box.run(timeout=290, stdout_cap=contract.MAX_OUTPUT)

    Entering creates it (:func:`container_kwargs`; not started), leaving removes it, whatever
    happened. In between: :meth:`run` (start and wait, once), :meth:`put_archive`,
    :meth:`get_archive`, :meth:`export`, :meth:`commit`.
    """

    def __init__(self, client, image: str, command: list[str], *, name: str, lifetime: float,
                 confinement: Confinement = PROBE, kind: dict[str, str] = PROBE_RUN,
                 log: Callable[[str], Any] = print):
        self.client, self.log = client, log
        self.kwargs = container_kwargs(name, image, command, lifetime=lifetime,
                                       confinement=confinement, kind=kind)
        self.name: str = self.kwargs["name"]
        self._container = None
        self._reader: _Reader | None = None

    @property
    def id(self) -> str | None:
        return self._container.id if self._container is not None else None

    def __enter__(self) -> Container:
        try:
            self._container = self.client.containers.create(**self.kwargs)
        except BaseException:
            # The engine may have made it before the request failed or was interrupted.
            remove_container(self.client, self.name, self.log)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        """Kill and remove the container (force); once, and a missing one is fine."""
        if self._container is None:
            return
        container, self._container = self._container, None
        remove_container(self.client, container.id, self.log)
        if self._reader is not None:
            self._reader.thread.join(timeout=2)

    def _created(self):
        if self._container is None:
            raise RuntimeError("a Container exists only inside its `with` block")
        return self._container

    def run(self, timeout: float, *, stdout_cap: int | None,
            watch: Watch | None = None) -> ContainerRun:
        """Start the container and wait until it exits or ``timeout`` seconds pass (then it is
        killed: ``timed_out``), or its stdout passes ``stdout_cap`` bytes (killed at once:
        ``overflow``). The output is read through an attach stream opened before the start.
        An engine that fails (refuses, goes away, runs out of space) gives a run with
        ``errors`` and no exit code; an interrupt (processes.stopping) kills it and raises
        Interrupted within WAIT_SLICE seconds."""
        container = self._created()
        started = time.monotonic()
        run = ContainerRun(name=self.name)
        try:
            self._reader = _attach(self.client, container.id, stdout_cap, watch)
            container.start()
            _wait_for_exit(self.client, container, self._reader, run,
                           deadline=started + timeout)
            self._reader.thread.join(timeout=10)
            if not run.timed_out:
                quiet(container.reload)
                run.oom_killed = bool((container.attrs.get("State") or {}).get("OOMKilled"))
        except Exception as exc:
            if not is_engine_error(exc):
                raise
            run.errors.append(engine_error_message(exc))
            run.engine_error = exc
            quiet(lambda: self.client.api.kill(container.id))  # its output stream ends too
            if self._reader is not None:
                self._reader.thread.join(timeout=2)
        reader = self._reader
        if reader is not None:
            run.stdout, run.stderr = bytes(reader.stdout), bytes(reader.stderr)
            run.overflow = reader.overflow
            if reader.error and run.exit_code is not None and not run.overflow:
                run.errors.append(f"the output stream broke: {reader.error}")
        run.seconds = time.monotonic() - started
        return run

    def put_archive(self, path: str, data: bytes) -> None:
        """Unpack the tar archive ``data`` into the folder ``path`` of the container."""
        if not self._created().put_archive(path, data):
            raise VdsomatrixError(f"the engine refused to copy files into {self.name}:{path}")

    def get_archive(self, path: str, limit: int) -> bytes:
        """``path`` of the container as a tar archive (the engine's), at most ``limit`` bytes
        (more raises TooLarge)."""
        stream, _ = self._created().get_archive(path, chunk_size=CHUNK)
        return b"".join(self._bounded(stream, limit, f"{path} of {self.name}"))

    def export(self, limit: int) -> Iterator[bytes]:
        """The container's whole file system as the chunks of a tar stream, at most ``limit``
        bytes (more raises TooLarge); an interrupt raises Interrupted."""
        yield from self._bounded(self._created().export(chunk_size=CHUNK), limit,
                                 f"the export of {self.name}")

    @staticmethod
    def _bounded(chunks, limit: int, what: str) -> Iterator[bytes]:
        total = 0
        for chunk in chunks:
            processes.check_stopping()
            total += len(chunk)
            if total > limit:
                raise TooLarge(f"{what} is larger than {limit >> 20} MiB")
            yield chunk

    def commit(self, repository: str, tag: str, conf: dict[str, Any]) -> None:
        """Make the container's file system an image ``repository:tag`` with ``conf``."""
        self._created().commit(repository=repository, tag=tag, conf=conf)


def _attach(client, container_id: str, stdout_cap: int | None, watch: Watch | None) -> _Reader:
    """Start reading the container's output (before it starts, so that nothing is missed)."""
    stream = client.api.attach(
        container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
    )
    reader = _Reader(stream, stdout_cap, watch)
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
            raise processes.Interrupted(f"interrupted while {run.name} ran")
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


def run_container(client, image: str, command: list[str], *, name: str, lifetime: float,
                  timeout: float, stdout_cap: int, confinement: Confinement = PROBE,
                  log: Callable[[str], Any] = print) -> ContainerRun:
    """One :class:`Container` created, run (see :meth:`Container.run`) and removed; an engine
    that fails to create it gives a run with ``errors`` too."""
    box = Container(client, image, command, name=name, lifetime=lifetime,
                    confinement=confinement, log=log)
    started = time.monotonic()
    try:
        with box:
            run = box.run(timeout, stdout_cap=stdout_cap)
    except Exception as exc:
        if not is_engine_error(exc):
            raise
        run = ContainerRun(name=box.name, errors=[engine_error_message(exc)], engine_error=exc)
    run.seconds = time.monotonic() - started
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
