"""A run killed half-way leaves nothing behind: a real container (the engine) and a real guest
(QEMU), each started by a child process that is then killed mid-run.

SIGTERM is what ``vdsomatrix`` turns into KeyboardInterrupt (cli.py): the primitives clean up
themselves. SIGKILL leaves no chance to: a container kills itself at the end of its lifetime and
the leftovers sweep removes it (its owner is gone); QEMU dies with its parent (the parent-death
signal of processes.spawn) and the sweep of work folders removes the folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vdsomatrix.engine import leftovers
from vdsomatrix.engine.guest import WORK_PREFIX, remove_leftovers

# The child: as vdsomatrix does, SIGTERM becomes KeyboardInterrupt; prints the container's name
# once it is created, then runs `sleep 600` in it.
CONTAINER_CHILD = """\
import signal, sys
from vdsomatrix import cli
from vdsomatrix.engine.client import docker_client
from vdsomatrix.engine.container import Container
signal.signal(signal.SIGTERM, cli._interrupt)
image, lifetime = sys.argv[1], float(sys.argv[2])
client = docker_client(timeout=120)
with Container(client, image, ["sleep", "600"], name="test-killed", lifetime=lifetime) as box:
    print(box.name, flush=True)
    box.run(600, stdout_cap=1000)
"""

GUEST_CHILD = """\
import signal, sys
from pathlib import Path
from vdsomatrix import cli
from vdsomatrix.backends.qemu import QEMU, qemu_argv
from vdsomatrix.engine.guest import Guest
signal.signal(signal.SIGTERM, cli._interrupt)
vmlinuz, initrd, folder = map(Path, sys.argv[1:4])
with Guest("test-killed", folder=folder) as vm:
    print(vm.work, flush=True)
    vm.run(qemu_argv(qemu=QEMU, accel="tcg", vmlinuz=vmlinuz, initrd=initrd,
                     append="console=ttyS0 panic=-1", console=vm.console, result=vm.result),
           600)
"""


def _child(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    """The child process and the first line it printed."""
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                             text=True, env=os.environ)
    line = child.stdout.readline().strip()
    assert line, f"the child printed nothing (status {child.wait(timeout=30)})"
    return child, line


def _until(condition, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, what
        time.sleep(0.2)


# --- containers ------------------------------------------------------------------------------


def _ours(engine, pid: int) -> list[dict]:
    """The containers created by process ``pid`` of this machine (by their owner label)."""
    return engine.api.containers(all=True, filters={"label": f"{leftovers.OWNER_PID}={pid}"})


def _state(engine, name: str) -> str | None:
    found = engine.api.containers(all=True, filters={"name": name})
    return found[0]["State"] if found else None


@pytest.fixture(scope="module")
def probe_image(engine):
    from vdsomatrix.images import probe_image as images
    from vdsomatrix.matrix import load_matrix

    return images.ensure_probe_image(load_matrix().suites["bookworm"], client=engine,
                                     log=lambda line: None)


@pytest.mark.engine
def test_a_sigterm_mid_run_removes_the_container(engine, probe_image):
    child, name = _child(CONTAINER_CHILD, probe_image, "600")
    try:
        _until(lambda: _state(engine, name) == "running", 60, "the container never ran")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) != 0
        assert _ours(engine, child.pid) == [], "the interrupted run left its container"
    finally:
        child.kill()
        child.wait()


@pytest.mark.engine
def test_a_sigkill_mid_run_leaves_a_container_that_stops_itself_and_is_swept(engine,
                                                                             probe_image):
    child, name = _child(CONTAINER_CHILD, probe_image, "8")
    try:
        _until(lambda: _state(engine, name) == "running", 60, "the container never ran")
        child.kill()
        child.wait(timeout=30)
        (left,) = _ours(engine, child.pid)  # nobody was left to remove it...
        assert leftovers.orphan_reason(left, time.time()) == f"its run (pid {child.pid}) is gone"
        # ...but it kills itself at the end of its lifetime (8 s), not after `sleep 600`,
        _until(lambda: _state(engine, name) == "exited", 60, "the container outlived its life")
        inspected = engine.api.inspect_container(name)["State"]
        assert inspected["ExitCode"] == 128 + 9
        # and the sweep (vdsomatrix clean, and every run's start) removes it.
        messages = []
        removed = leftovers.remove_orphan_containers(
            engine, messages.append, where={leftovers.OWNER_PID: str(child.pid)})
        assert removed == 1 and name in messages[0]
        assert _ours(engine, child.pid) == []
    finally:
        child.kill()
        child.wait()
        for summary in _ours(engine, child.pid):
            engine.api.remove_container(summary["Id"], force=True)


# --- guests ----------------------------------------------------------------------------------


def _qemu_of(work: Path) -> list[int]:
    """Live processes whose command line names the work folder (QEMU, given its files)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(work).encode() not in (proc / "cmdline").read_bytes():
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            pids.append(int(proc.name))
    return pids


def _booting(work: Path) -> bool:
    try:
        return b"Linux version" in (work / "console.log").read_bytes()
    except OSError:
        return False


@pytest.fixture
def bookworm_boot(real_qemu):
    from vdsomatrix.images import kernels
    from vdsomatrix.matrix import KernelSpec, Suite

    kernel = kernels.cached_kernel(KernelSpec("bookworm"))
    initrd = real_qemu.initramfs.cached(Suite("bookworm", "bookworm"))
    assert kernel is not None and initrd is not None
    return str(kernel.vmlinuz), str(initrd)


@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_guest_killed_mid_boot_leaves_no_qemu_and_no_work_folder(bookworm_boot, tmp_path, sig):
    child, work = _child(GUEST_CHILD, *bookworm_boot, str(tmp_path))
    work = Path(work)
    try:
        _until(lambda: _booting(work), 120, "the guest never printed its kernel banner")
        assert _qemu_of(work), "no QEMU runs for the guest"
        os.kill(child.pid, sig)
        child.wait(timeout=60)
        # QEMU goes with its parent: the parent-death signal when SIGKILLed, Guest's own
        # clean-up on SIGTERM.
        _until(lambda: not _qemu_of(work), 15, f"QEMU outlived its run ({sig.name})")
        if sig == signal.SIGKILL:
            assert work.exists()  # nothing was left to remove it...
            assert remove_leftovers(lambda line: None, folder=tmp_path) == 1  # ...the sweep does
        assert not work.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(WORK_PREFIX)]
    finally:
        child.kill()
        child.wait()
