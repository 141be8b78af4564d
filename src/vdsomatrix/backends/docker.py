"""The docker backend: the probe in a locally built image of a Debian suite, on the host's kernel.

Containers are created from the probe image (see vdsomatrix.images) and never pulled. They are
hardened so that a probe, or anything pretending to be one, can do little harm and nothing that
the measurement does not need:

- network mode "none": no interface but lo;
- a read-only root file system, with a small tmpfs on /tmp (noexec: the probe runs nothing from
  there, the helpers live in /opt/vdsomatrix/bin);
- every capability dropped (``cap_drop=["ALL"]``, none added back), no-new-privileges, the
  engine's default seccomp profile, a memory and a process limit, no core dumps, no log driver
  (the output is read through an attach stream, so nothing of it lands on the host's disk).

Capabilities: none. The helper ptraces only its own children, which ask for it with
PTRACE_TRACEME and run with its credentials, so ptrace_may_access() succeeds without
CAP_SYS_PTRACE (the default seccomp profile allows ptrace on kernels >= 4.8), and
sched_setaffinity() on itself needs no CAP_SYS_NICE. Verified on the development machine
(kernel 6.18, Docker 20.10.24): PTRACE_TRACEME + PTRACE_SYSCALL + PTRACE_GETREGS and pinning to
one CPU work with CapEff = CapBnd = 0; tests/test_docker_backend.py checks it on every machine.
One measurement is lost on purpose: the default seccomp profile refuses perf_event_open unless
the container has CAP_SYS_ADMIN (this engine does not know CAP_PERFMON), so the helper's
page-fault counts (vsyscall emulation traps) are null in Docker environments, with the reason
recorded. CAP_SYS_ADMIN is far too broad to grant for that; the host environment measures the
same kernel with the counter.

No CPU quota is set: CFS throttling would distort latency measurements, and the runner already
serialises measurements of backends that share the host's CPUs.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdsomatrix import images
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome, plain_tail
from vdsomatrix.errors import EnvironmentUnavailable, VdsomatrixError
from vdsomatrix.matrix import Environment, Suite

PROBE_PY = "/opt/vdsomatrix/probes/probe.py"
HELPER = "/opt/vdsomatrix/bin/vdsoprobe-{build}"
CAPABILITIES: tuple[str, ...] = ()  # added back after cap_drop=["ALL"]: none, see above
MEM_LIMIT = "512m"
PIDS_LIMIT = 128
TMPFS_TMP = "rw,noexec,nosuid,nodev,size=16m,mode=1777"
STDOUT_CAP = 64 * 1024 * 1024  # bytes of JSON accepted from one probe
STDERR_KEEP = 64 * 1024  # bytes of stderr kept (the end of it) for log_tail
LOG_TAIL_LINES = 40
PING_TIMEOUT = 5.0  # seconds for the availability check
API_TIMEOUT = 120.0  # seconds for ordinary engine requests (create, start, kill, remove)

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def probe_command(env: Environment, deadline: float | None = None) -> list[str]:
    """What the container runs for ``env``: the probe with the helper of the env's build.

    With a ``deadline`` the probe gives its helper a little less, so that a hanging helper still
    leaves a (partial) document rather than a killed container.
    """
    command = [
        "python3", PROBE_PY,
        "--helper", HELPER.format(build=env.build),
        "--name", env.name,
        "--backend", "docker",
    ]
    if deadline is not None:
        command += ["--helper-timeout", str(max(1, int(deadline) - 10))]
    return command


def _container_kwargs(env_name: str, image: str, command: list[str]) -> dict[str, Any]:
    """Arguments of ``client.containers.create`` for one probe container.

    The single place that decides how probe containers are confined; the real-engine tests run
    their checks through it with a different ``command``.
    """
    from docker.types import LogConfig, Ulimit

    return {
        "image": image,
        "command": command,
        "name": f"vdsomatrix-{_UNSAFE.sub('_', env_name)[:40]}-{uuid.uuid4().hex[:8]}",
        "labels": {f"{images.LABEL}.kind": "probe-run", f"{images.LABEL}.env": env_name},
        "hostname": "vdsomatrix",
        "user": "0:0",
        "working_dir": "/",
        "environment": {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": TMPFS_TMP},
        "cap_drop": ["ALL"],
        **({"cap_add": list(CAPABILITIES)} if CAPABILITIES else {}),
        "security_opt": ["no-new-privileges"],
        "mem_limit": MEM_LIMIT,
        "memswap_limit": MEM_LIMIT,
        "pids_limit": PIDS_LIMIT,
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
    """Drains the attach stream in a thread: stdout up to a cap, the tail of stderr."""

    def __init__(self, stream, cap: int, on_overflow: Callable[[], None]):
        self.stream, self.cap, self.on_overflow = stream, cap, on_overflow
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            for out, err in self.stream:
                if out and not self.overflow:
                    if len(self.stdout) + len(out) > self.cap:
                        self.overflow = True
                        self.on_overflow()
                    else:
                        self.stdout += out
                if err:
                    self.stderr += err
                    if len(self.stderr) > 2 * STDERR_KEEP:
                        del self.stderr[:-STDERR_KEEP]
        except Exception as exc:  # the stream breaks when the container is killed or removed
            self.error = f"{type(exc).__name__}: {exc}"


def _close(client) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        _quiet(close)


def _quiet(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:
        pass


def remove_container(client, ref: str | None, log: Callable[[str], Any] = print) -> None:
    """Force-remove a container by id or name; a missing container is fine."""
    import docker.errors

    if not ref:
        return
    for attempt in range(3):
        try:
            client.api.remove_container(ref, force=True, v=True)
            return
        except docker.errors.NotFound:
            return
        except Exception as exc:  # "removal already in progress", a busy engine, ...
            if attempt == 2:
                log(f"warning: could not remove container {ref}: {exc}")
                return
            time.sleep(0.5)


def _is_engine_error(exc: BaseException) -> bool:
    import docker.errors
    import requests

    return isinstance(
        exc, (docker.errors.DockerException, requests.exceptions.RequestException,
              VdsomatrixError, ConnectionError)
    )


def run_container(client, kwargs: dict[str, Any], *, timeout: float,
                  stdout_cap: int = STDOUT_CAP, log: Callable[[str], Any] = print) -> ContainerRun:
    """Create, start and wait for one container; it is always removed, whatever happens.

    The output is read through an attach stream opened before the start. After ``timeout``
    seconds, or as soon as stdout passes ``stdout_cap`` bytes, the container is killed.
    """
    import requests

    started = time.monotonic()
    run = ContainerRun()
    container_id: str | None = None
    reader: _Reader | None = None
    thread: threading.Thread | None = None
    try:
        container = client.containers.create(**kwargs)
        container_id = container.id
        stream = client.api.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
        )
        reader = _Reader(stream, stdout_cap,
                         on_overflow=lambda: _quiet(lambda: client.api.kill(container_id)))
        thread = threading.Thread(target=reader.run, name=f"attach-{kwargs.get('name')}",
                                  daemon=True)
        thread.start()
        container.start()
        remaining = timeout - (time.monotonic() - started)
        try:
            if remaining <= 0:
                raise requests.exceptions.ReadTimeout("deadline passed before the start")
            status = container.wait(timeout=remaining)
            run.exit_code = int(status.get("StatusCode", -1))
            error = status.get("Error")
            message = error.get("Message") if isinstance(error, dict) else error
            if message:
                run.errors.append(f"engine: {message}")
        except requests.exceptions.RequestException:
            if time.monotonic() - started < timeout - 1:
                raise  # not our deadline: the engine stopped answering
            run.timed_out = True
            _quiet(lambda: client.api.kill(container_id))
        thread.join(timeout=10)
        if not run.timed_out:
            _quiet(container.reload)
            run.oom_killed = bool((container.attrs.get("State") or {}).get("OOMKilled"))
    except Exception as exc:
        if not _is_engine_error(exc):
            raise
        explanation = getattr(exc, "explanation", None) or str(exc)
        run.errors.append(f"Docker engine error: {' '.join(str(explanation).split())[:300]}")
    finally:
        # Also on KeyboardInterrupt: a probe container never outlives its run.
        remove_container(client, container_id or kwargs.get("name"), log)
        if thread is not None:
            thread.join(timeout=2)
        run.seconds = time.monotonic() - started
    if reader is not None:
        run.stdout, run.stderr, run.overflow = bytes(reader.stdout), bytes(reader.stderr), \
            reader.overflow
    return run


def _log_tail(stderr: bytes, lines: int = LOG_TAIL_LINES) -> list[str]:
    return plain_tail(stderr[-STDERR_KEEP:], lines)


def _exit_reason(code: int) -> str:
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exited with status {code}"


class DockerBackend(Backend):
    """The probe inside a hardened container of a locally built image; never pulls."""

    name = "docker"
    shares_host_cpu = True

    def __init__(self, suites: Mapping[str, Suite] | None = None, *,
                 client_factory: Callable[..., Any] | None = None, root: Path | None = None):
        """``suites`` maps suite names to Suites (default: images/matrix.toml); ``client_factory``
        (tests) returns a Docker client and takes ``timeout=``; ``root`` is the checkout with
        images/Dockerfile and probes/."""
        self._suites = dict(suites) if suites is not None else None
        self._client_factory = client_factory or images.docker_client
        self._root = root
        self._lock = threading.Lock()

    def _suite(self, env: Environment) -> Suite:
        if not env.suite:
            raise EnvironmentUnavailable(
                f"{env.name}: a docker environment needs a `suite`; fix images/matrix.toml"
            )
        with self._lock:
            if self._suites is None:
                from vdsomatrix.matrix import load_matrix

                try:
                    self._suites = dict(load_matrix().suites)
                except VdsomatrixError:
                    self._suites = {}
        return self._suites.get(env.suite) or Suite(name=env.suite, script=env.suite)

    def can_start(self) -> Availability:
        """Is a Docker engine reachable at all? (No environment, no image involved.)"""
        try:
            _close(self._client_factory(timeout=PING_TIMEOUT))
        except EnvironmentUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(True)

    def availability(self, env: Environment) -> Availability:
        try:
            suite = self._suite(env)
            client = self._client_factory(timeout=PING_TIMEOUT)
        except EnvironmentUnavailable as exc:
            return Availability(False, str(exc))
        try:
            built, reason = images.image_status(suite, client=client, root=self._root)
        finally:
            _close(client)
        return Availability(built, "" if built else reason)

    def prepare(self, env: Environment, *, rebuild: bool = False, log=print) -> None:
        suite = self._suite(env)
        client = self._client_factory(timeout=600)
        try:
            images.ensure_probe_image(suite, rebuild=rebuild, log=log, client=client,
                                      root=self._root)
        finally:
            _close(client)

    def run_probe(self, env: Environment, *, deadline: float, log=print) -> ProbeOutcome:
        started = time.monotonic()

        def outcome(status: str, errors: list[str], document=None, tail=()) -> ProbeOutcome:
            return ProbeOutcome(document=document, status=status, errors=errors,
                                log_tail=list(tail), seconds=time.monotonic() - started)

        try:
            suite = self._suite(env)
            client = self._client_factory(timeout=API_TIMEOUT)
        except EnvironmentUnavailable as exc:
            return outcome("failed", [str(exc)])
        try:
            return self._run(env, suite, client, deadline, started, outcome, log)
        finally:
            _close(client)

    def _run(self, env, suite, client, deadline, started, outcome, log) -> ProbeOutcome:
        tag = images.probe_image_tag(suite, root=self._root)
        try:
            image = images._find_image(client, tag)
        except Exception as exc:
            return outcome("failed", [images.NO_ENGINE.format(detail=" ".join(str(exc).split()))])
        if image is None:
            return outcome("failed", [f"{images.NOT_BUILT} ({tag} missing)"])

        kwargs = _container_kwargs(env.name, image.id, probe_command(env, deadline))
        remaining = deadline - (time.monotonic() - started)
        run = run_container(client, kwargs, timeout=remaining, log=log)
        tail = _log_tail(run.stderr)
        if run.timed_out:
            return outcome("timeout", [f"the probe did not finish within {deadline:.0f} s; "
                                       "its container was killed"], tail=tail)
        if run.errors and run.exit_code is None:
            return outcome("failed", run.errors, tail=tail)
        if run.overflow:
            return outcome("crashed", [f"the probe wrote more than {STDOUT_CAP >> 20} MiB to "
                                       "stdout; its container was killed"], tail=tail)
        if run.exit_code != 0:
            why = _exit_reason(run.exit_code if run.exit_code is not None else -1)
            if run.oom_killed:
                why += f" (out of memory: the container's limit is {MEM_LIMIT})"
            return outcome("crashed", [f"the probe {why}", *run.errors], tail=tail)
        try:
            document = json.loads(run.stdout.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return outcome("crashed", [f"the probe's stdout is not UTF-8 ({exc.reason} at byte "
                                       f"{exc.start} of {len(run.stdout)})"], tail=tail)
        except json.JSONDecodeError as exc:
            what = "nothing" if not run.stdout.strip() else f"{len(run.stdout)} bytes"
            return outcome("crashed", [f"the probe's stdout is not valid JSON ({exc.msg} at line "
                                       f"{exc.lineno} column {exc.colno}; it printed {what})"],
                           tail=tail)
        if not isinstance(document, dict):
            return outcome("crashed", ["the probe's stdout is JSON but not an object"], tail=tail)
        environment = document.setdefault("environment", {})
        if not isinstance(environment, dict):
            return outcome("crashed", ["the probe's document has an `environment` that is not "
                                       "an object"], tail=tail)
        environment["backend"] = self.name
        environment["image"] = {"tag": tag, "id": image.id}
        return outcome("ok", list(run.errors), document=document, tail=tail)
