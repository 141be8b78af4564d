"""The docker backend: the probe in a locally built image of a Debian suite, on the host's kernel.

Images are built locally (rootfs.py: debootstrap; images.py: the probe image) and never pulled;
each probe runs in a fresh, confined container (container.py) that is always removed, and that
stops by itself if vdsomatrix dies; what killed runs leave behind is found by leftovers.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vdsomatrix import contract
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome
from vdsomatrix.backends.docker import images, leftovers, runtimes
from vdsomatrix.backends.docker.container import (
    MEM_LIMIT,
    RUNTIMES_MEM_LIMIT,
    ContainerRun,
    container_kwargs,
    exit_reason,
    log_tail,
    run_container,
)
from vdsomatrix.backends.docker.engine import (
    LONG_TIMEOUT,
    NO_ENGINE,
    NOT_BUILT,
    close,
    docker_client,
    find_image,
)
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.matrix import BackendName, Environment, Suite
from vdsomatrix.text import one_line

PING_TIMEOUT = 5.0  # seconds for the availability check
API_TIMEOUT = 120.0  # seconds for ordinary engine requests (create, start, kill, remove)
# The container kills itself this long after the run's deadline: normally the run kills it
# first and reports a timeout; this is for when nobody is left to do so.
SELF_KILL_GRACE = 15.0


def _engine_version(client) -> dict[str, str | None]:
    """The engine's version, for the record (a result says what ran it); never fails a run."""
    try:
        version = client.version()
    except Exception:  # the engine went away after the run: the result still stands
        return {"version": None}
    return {"version": str(version.get("Version")), "api": str(version.get("ApiVersion"))}


class DockerBackend(Backend):
    """The probe inside a hardened container of a locally built image; never pulls."""

    name = BackendName.DOCKER
    shares_host_cpu = True
    default_deadline = 300.0
    startup_allowance = 10.0  # creating, starting and removing a container

    def __init__(self, *, client_factory: Callable[..., Any] | None = None,
                 root: Path | None = None):
        """``client_factory`` (tests) returns a Docker client and takes ``timeout=``; ``root`` is
        the checkout with images/Dockerfile and probes/."""
        self._client_factory = client_factory or docker_client
        self._root = root

    @staticmethod
    def _userland(env: Environment) -> Suite:
        if env.userland is None:
            raise EnvironmentUnavailable(
                f"{env.name}: a docker environment needs a `suite`; fix images/matrix.toml")
        return env.userland

    @contextlib.contextmanager
    def _engine(self, timeout: float) -> Iterator[Any]:
        """A client of the engine for one call (EnvironmentUnavailable when there is none),
        closed afterwards."""
        client = self._client_factory(timeout=timeout)
        try:
            yield client
        finally:
            close(client)

    def can_start(self) -> Availability:
        """Is a Docker engine reachable at all? (No environment, no image involved.)"""
        try:
            with self._engine(PING_TIMEOUT):
                pass
        except EnvironmentUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @staticmethod
    def _images(env: Environment):
        """The module that builds and names the image ``env`` runs: the probe image, or the
        probe image plus the runtime layer (runtimes.py)."""
        return runtimes if env.runtimes else images

    def availability(self, env: Environment) -> Availability:
        try:
            suite = self._userland(env)
            with self._engine(PING_TIMEOUT) as client:
                built, reason = self._images(env).image_status(suite, client=client,
                                                               root=self._root)
        except EnvironmentUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(built, "" if built else reason)

    def prepare(self, env: Environment, *, rebuild: bool = False, log=print) -> None:
        suite = self._userland(env)
        with self._engine(LONG_TIMEOUT) as client:
            self._images(env).ensure_image(suite, rebuild=rebuild, log=log, client=client,
                                           root=self._root)

    def fingerprint(self, env: Environment) -> str | None:
        # The probe image's tag is a hash of its recipe and the probe sources; the id names the
        # bytes that were built from it (a rebuild under the same tag changes it).
        with self._engine(PING_TIMEOUT) as client:
            image = find_image(client, self._images(env).image_tag(self._userland(env),
                                                                   root=self._root))
        return f"docker:{image.id}:{env.build}:{os.uname().release}" if image else None

    def clean(self, *, images: bool = False, log=print) -> None:
        """Remove probe containers (and the QEMU backend's export containers) that no live run
        owns; with ``images``, also our images that no current tag names (see leftovers.py)."""
        with self._engine(API_TIMEOUT) as client:
            leftovers.remove_orphan_containers(client, log)
            if images:
                leftovers.remove_stale_images(client, root=self._root, log=log)

    def run_probe(self, env: Environment, *, deadline: float, log=print) -> ProbeOutcome:
        started = time.monotonic()

        def outcome(status: str, errors: list[str], **fields) -> ProbeOutcome:
            return ProbeOutcome(status=status, errors=errors,
                                seconds=time.monotonic() - started, **fields)

        try:
            suite = self._userland(env)
            with self._engine(API_TIMEOUT) as client:
                tag = self._images(env).image_tag(suite, root=self._root)
                try:
                    image = find_image(client, tag)
                except Exception as exc:
                    return outcome("failed", [NO_ENGINE.format(detail=one_line(exc))],
                                   document=None)
                if image is None:
                    return outcome("failed", [f"{NOT_BUILT} ({tag} missing)"], document=None)
                remaining = deadline - (time.monotonic() - started)
                kwargs = container_kwargs(env.name, image.id, self._probe_argv(env, deadline),
                                          lifetime=remaining + SELF_KILL_GRACE,
                                          runtimes=env.runtimes)
                run = run_container(client, kwargs, timeout=remaining,
                                    stdout_cap=contract.MAX_OUTPUT, log=log)
                engine = _engine_version(client)
        except EnvironmentUnavailable as exc:
            return outcome("failed", [str(exc)], document=None)
        limit = RUNTIMES_MEM_LIMIT if env.runtimes else MEM_LIMIT
        return outcome(**self._judge(run, deadline, limit),
                       identity={"image": {"tag": tag, "id": image.id}, "engine": engine})

    def _probe_argv(self, env: Environment, deadline: float) -> list[str]:
        common = dict(python="python3", probe=contract.PROBE_IN_IMAGE, name=env.name,
                      backend=self.name,
                      budget=contract.helper_budget(deadline, self.startup_allowance))
        if env.runtimes:
            return contract.runtimes_argv(runtimes=contract.RUNTIMES_IN_IMAGE,
                                          syscount=contract.SYSCOUNT_IN_IMAGE, **common)
        return contract.probe_argv(helper=contract.HELPER_IN_IMAGE.format(build=env.build),
                                   **common)

    @staticmethod
    def _judge(run: ContainerRun, deadline: float, limit: str = MEM_LIMIT) -> dict[str, Any]:
        """What a finished container run means: status, errors, the document, the log tail."""
        tail = log_tail(run.stderr)
        if run.timed_out:
            return dict(status="timeout", document=None, log_tail=tail, errors=[
                f"the probe did not finish within {deadline:.0f} s; its container was killed"])
        if run.errors and run.exit_code is None:
            return dict(status="failed", document=None, log_tail=tail, errors=run.errors)
        if run.overflow:
            return dict(status="crashed", document=None, log_tail=tail, errors=[
                f"the probe wrote more than {contract.MAX_OUTPUT >> 20} MiB to stdout; its "
                "container was killed"])
        if run.exit_code != 0:
            why = exit_reason(run.exit_code if run.exit_code is not None else -1)
            if run.oom_killed:
                why += f" (out of memory: the container's limit is {limit})"
            return dict(status="crashed", document=None, log_tail=tail,
                        errors=[f"the probe {why}", *run.errors])
        parsed = contract.parse_output(run.stdout, "the probe's stdout")
        if parsed.document is None:
            return dict(status="crashed", document=None, log_tail=tail, errors=parsed.errors)
        return dict(status="ok", document=parsed.document, log_tail=tail,
                    errors=list(run.errors))
