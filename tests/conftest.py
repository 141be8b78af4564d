"""Shared fixtures.

``real_qemu``: a QemuBackend with bookworm's kernel and initramfs prepared (the 6.1 guests of
the real-boot tests), or skip/fail as ``engine`` does.

``host_doc``: the probe's document on this machine, once per build for the whole session (the
host probe takes a while; several test files read it).

``engine``: a Docker SDK client for a running engine. Tests that need one are marked
``@pytest.mark.engine`` and take this fixture; without an engine they are skipped, except in CI
(``CI=true``), where a missing engine is a failure: CI machines are set up to have one.
"""

from __future__ import annotations

import os
import time

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(what: str, reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI) a test that needs ``what``."""
    message = f"{what} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: this machine must provide it)", pytrace=False)
    pytest.skip(message)


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its (new) parent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def all_dead(pids: list[int], within: float = 5) -> bool:
    """Whether every one of ``pids`` is dead within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(dead(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def engine():
    """A pinged Docker client (docker.from_env), or skip/fail as above."""
    try:
        from vdsomatrix.engine.client import docker_client

        client = docker_client(timeout=600)
    except Exception as exc:  # the SDK missing, no engine, ...
        require("Docker engine", str(exc))
    yield client
    client.close()


@pytest.fixture(scope="session", params=["dynamic", "static", "musl"])
def host_doc(request):
    """The host backend's probe document for one build (the real helper, on this machine)."""
    from vdsomatrix.backends.host import HostBackend
    from vdsomatrix.matrix import BackendName, Build, Environment

    backend = HostBackend()
    env = Environment(name=f"host-{request.param}", backend=BackendName.HOST,
                      build=Build(request.param))
    if not backend.availability(env).ok:
        pytest.fail(backend.availability(env).reason)
    backend.prepare(env, log=lambda m: None)
    outcome = backend.run_probe(env, deadline=240)
    assert outcome.status == "ok", outcome.errors + outcome.log_tail
    outcome.document["run"] = {"status": "ok"}
    return outcome.document


@pytest.fixture(scope="session")
def real_qemu():
    """A QemuBackend with the bookworm kernel and initramfs prepared, or skip/fail."""
    import shutil

    from vdsomatrix.backends import qemu as qb
    from vdsomatrix.backends.qemu import QemuBackend
    from vdsomatrix.matrix import BackendName, Environment, KernelSpec, Suite

    if not shutil.which(qb.QEMU):
        require("QEMU", qb.INSTALL_QEMU)
    bookworm = Suite("bookworm", "bookworm")
    backend = QemuBackend()
    try:
        backend.prepare(Environment(name="k6.1", backend=BackendName.QEMU, userland=bookworm,
                                    kernel=KernelSpec("bookworm")), log=lambda m: None)
    except Exception as exc:  # no engine, no mirror, ...
        require("QEMU guest (kernel + initramfs)", str(exc))
    return backend
