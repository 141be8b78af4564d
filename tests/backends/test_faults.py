"""Faults injected into the real engine and real QEMU: an environment that crashes, hangs, floods,
or lies, an engine that dies mid-run, and interrupts (SIGTERM, Ctrl-C) in every phase.

Afterwards nothing may be left running (checked with ps and the engine), no earlier result may
have changed (byte for byte), and vdsomatrix itself must not have crashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import require
from fakes import docker_env

from vdsomatrix import contract, runner
from vdsomatrix.backends.docker import DockerBackend
from vdsomatrix.engine import leftovers
from vdsomatrix.engine.client import LABEL
from vdsomatrix.engine.guest import WORK_PREFIX
from vdsomatrix.images.probe_image import probe_image_tag
from vdsomatrix.matrix import load_matrix
from vdsomatrix.report import render_report
from vdsomatrix.results import load_results

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _with_command(monkeypatch, script: str) -> None:
    """Make the next docker probe run ``python3 -c script`` in its real, confined container."""
    def argv(**kwargs):
        return ["python3", "-c", textwrap.dedent(script)]

    monkeypatch.setattr(contract, "probe_argv", argv)


def probe_containers(engine, owner: int | None = None) -> list:
    """The probe containers of process ``owner`` (default: this one), not those of other runs
    sharing the engine."""
    # sparse: the listing alone, no inspect of each container, which raced with a probe
    # container being removed between the two calls (NotFound, seen once in CI)
    owner = os.getpid() if owner is None else owner
    return engine.containers.list(all=True, sparse=True, filters={"label": [
        f"{LABEL}.kind=probe-run", f"{leftovers.OWNER_PID}={owner}"]})


@pytest.fixture
def bookworm(engine):
    env = load_matrix().get("bookworm")
    backend = DockerBackend()
    if not backend.availability(env).ok:
        backend.prepare(env, log=lambda m: None)
    return env


def measure(env, out: Path) -> runner.RunRecord:
    return runner.measure(env, out, deadline=20, note="fault test", log=lambda m: None)


def test_a_crashing_probe_is_a_crashed_result(engine, bookworm, monkeypatch, tmp_path):
    _with_command(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    record = measure(bookworm, tmp_path)
    doc = json.loads(record.path.read_text())
    assert record.status == "crashed" and "SIGSEGV" in " ".join(doc["errors"])
    assert probe_containers(engine) == []


def test_a_hanging_probe_times_out_and_is_removed(engine, bookworm, monkeypatch, tmp_path):
    _with_command(monkeypatch, "import time; time.sleep(600)")
    started = time.monotonic()
    record = runner.measure(bookworm, tmp_path, deadline=5, note="", log=lambda m: None)
    assert record.status == "timeout" and time.monotonic() - started < 30
    assert probe_containers(engine) == []


def test_a_flood_of_garbage_is_cut_at_the_cap(engine, bookworm, monkeypatch, tmp_path):
    _with_command(monkeypatch, """
        import os, sys
        block = os.urandom(1 << 20)
        for _ in range(64):
            sys.stdout.buffer.write(block)
    """)
    record = measure(bookworm, tmp_path)
    assert record.status == "crashed"
    assert record.path.stat().st_size < 64 << 10
    assert "MiB" in " ".join(json.loads(record.path.read_text())["errors"])
    assert probe_containers(engine) == []


HOSTILE = "<script>alert(1)</script> [x](javascript:alert(1)) \x1b[31m http://evil.example/"


def test_a_hostile_well_formed_document_is_stored_inert(engine, bookworm, monkeypatch,
                                                        tmp_path):
    doc = {
        "schema": "vdsomatrix/1",
        "environment": {"name": "evil", "libc": {"name": HOSTILE, "version": HOSTILE},
                        "userland": {"pretty_name": "# heading\n" + HOSTILE},
                        "kernel": {"release": HOSTILE}, "cpu": {"model": HOSTILE}},
        "vdso": {"present": True, "size": 8192},
        "vsyscall": {"mode": HOSTILE},
        "calls": [{"call": HOSTILE, "path": "libc", "status": "crashed", "signal": HOSTILE}],
        "errors": [HOSTILE], "method": {"batches": 31, "extra": HOSTILE},
    }
    _with_command(monkeypatch, f"import sys; sys.stdout.write({json.dumps(json.dumps(doc))})")
    record = measure(bookworm, tmp_path)
    stored = json.loads(record.path.read_text())
    assert stored["environment"]["name"] == "bookworm"  # the host names it
    loaded = load_results([tmp_path])
    page = render_report(loaded.documents)
    assert "<script" not in page and "\x1b" not in page and "http://evil" not in page
    assert not re.search(r"(?<!\\)\]\(javascript:", page)  # "\](" is an escaped bracket


@pytest.fixture
def second_engine(tmp_path):
    """A private dockerd on its own socket and data root, which a test may kill."""
    if shutil.which("dockerd") is None:
        require("dockerd", "not installed")
    root = Path("/tmp") / f"vdsomatrix-dockerd-{os.getpid()}"
    sock = root / "docker.sock"
    root.mkdir(exist_ok=True)
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
         f"--data-root={root / 'data'}", f"--exec-root={root / 'exec'}",
         f"--pidfile={root / 'dockerd.pid'}", f"--host=unix://{sock}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    import docker

    client = None
    for _ in range(60):
        try:
            client = docker.DockerClient(base_url=f"unix://{sock}", timeout=30)
            client.ping()
            break
        except Exception:
            client = None
            time.sleep(0.5)
    if client is None:
        proc.kill()
        require("a second dockerd", (root / "dockerd.log").read_text()[-300:])
    yield proc, client, f"unix://{sock}"
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)
    log.close()
    # A killed dockerd's containerd-shims outlive it (re-parented to init, one per container
    # the test ran): kill those of this private engine, known by their socket under ``root``.
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"containerd-shim-runc-v2") and any(
                str(root).encode() in arg for arg in args):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(entry.name), signal.SIGKILL)
    # A killed dockerd leaves its overlay and shm mounts behind: unmount them, deepest first.
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def test_an_engine_that_dies_mid_run_fails_its_containers_clearly(
        engine, bookworm, second_engine, monkeypatch, tmp_path):
    proc, client, url = second_engine
    # The probe image, copied into the private engine.
    image = engine.images.get(probe_image_tag(bookworm.userland))
    client.images.load(b"".join(image.save(named=True)))
    monkeypatch.setenv("DOCKER_HOST", url)
    _with_command(monkeypatch, "import time; time.sleep(60)")
    killer = threading.Timer(3.0, proc.kill)
    killer.start()
    first = measure(bookworm, tmp_path)
    second = measure(docker_env("sid"), tmp_path)
    killer.join()
    for record in (first, second):
        assert record.status == "failed"
        assert "engine" in record.message.lower()
    assert "Traceback" not in first.message


@pytest.mark.qemu
def test_guests_go_on_when_the_engine_is_gone(engine, second_engine, monkeypatch, tmp_path):
    proc, client, url = second_engine
    guest = load_matrix().get("k6.1")
    runner.prepare(guest, rebuild=False, log=lambda m: None)  # with the live engine
    monkeypatch.setenv("DOCKER_HOST", url)
    proc.kill()
    proc.wait(timeout=30)
    record = runner.measure(guest, tmp_path, deadline=240, note="", log=lambda m: None)
    assert record.status == "ok", record.message


# ------------------------------------------------------------------ interrupts, end to end ---


def _default_sigint() -> None:
    # A test run started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python keeps an ignored SIGINT ignored: the Ctrl-C these tests send would do nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _vdsomatrix(args: list[str], out: Path) -> subprocess.Popen:
    # Its own process group: os.killpg then acts as the terminal's Ctrl-C does.
    return subprocess.Popen([sys.executable, "-m", "vdsomatrix", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_default_sigint)


def _digest(path: Path) -> str:
    # Results are 1.4 MB: compared by digest, so that a failure does not make pytest diff them.
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for(proc: subprocess.Popen, needle: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline and needle not in seen:
        chunk = proc.stderr.read()
        if chunk:
            seen += chunk
        elif proc.poll() is not None:
            break
        time.sleep(0.1)
    assert needle in seen, seen.decode(errors="replace")[-2000:]
    return seen


def _leftovers(engine, run_pid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout
    # A guest's files are in a work folder named after its owner (engine/guest.py, workdirs):
    # QEMU of other runs sharing this machine is not this run's leftover.
    mine = [line for line in ps.splitlines()
            if ("qemu-system" in line and WORK_PREFIX in line and f"-{run_pid}." in line)
            or ("debootstrap" in line and "vdsomatrix" in line)]
    # a sparse listing names a container in "Names" (see probe_containers)
    return mine + [(c.attrs.get("Names") or [c.short_id])[0].lstrip("/")
                   for c in probe_containers(engine, run_pid)]


def _good_host_result(out: Path) -> bytes:
    assert subprocess.run([sys.executable, "-m", "vdsomatrix", "probe", "host", "--out",
                           str(out)], capture_output=True).returncode == 0
    return _digest(out / "host.json")


@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_the_guest_phase_leaves_nothing_and_loses_nothing(engine, tmp_path, sig):
    host_before = _good_host_result(tmp_path)
    proc = _vdsomatrix(["run", "--env", "k6.1", "--env", "k6.1-hpet", "--jobs", "2"], tmp_path)
    _wait_for(proc, b"booting", 300)
    time.sleep(2)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    assert proc.returncode == 130
    time.sleep(1)
    assert _leftovers(engine, proc.pid) == []
    assert _digest(tmp_path / "host.json") == host_before
    assert not (tmp_path / "k6.1.json").exists() and not (tmp_path / "k6.1-hpet.json").exists()


@pytest.mark.qemu
def test_an_interrupt_never_replaces_a_good_guest_result(engine, tmp_path):
    proc = _vdsomatrix(["run", "--env", "k6.1"], tmp_path)
    proc.wait(timeout=300)
    before = _digest(tmp_path / "k6.1.json")
    assert json.loads((tmp_path / "k6.1.json").read_text())["run"]["status"] == "ok"
    proc = _vdsomatrix(["run", "--env", "k6.1"], tmp_path)
    _wait_for(proc, b"booting", 120)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    assert _digest(tmp_path / "k6.1.json") == before
    assert _leftovers(engine, proc.pid) == []


def test_ctrl_c_in_the_container_phase(engine, bookworm, tmp_path):
    host_before = _good_host_result(tmp_path)
    proc = _vdsomatrix(["run", "--env", "bookworm", "--env", "sid"], tmp_path)
    _wait_for(proc, b"sid", 120)  # bookworm done, sid under way (or about to be)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130
    assert _digest(tmp_path / "host.json") == host_before
    assert _leftovers(engine, proc.pid) == []


def test_sigkill_leaves_a_container_the_next_run_sweeps(engine, bookworm, tmp_path):
    proc = _vdsomatrix(["run", "--env", "bookworm", "--deadline", "120"], tmp_path)
    for _ in range(200):
        if probe_containers(engine, proc.pid):
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert subprocess.run([sys.executable, "-m", "vdsomatrix", "clean"],
                          capture_output=True).returncode == 0
    assert probe_containers(engine, proc.pid) == []


def test_ctrl_c_during_debootstrap_stops_within_5_s(engine, bookworm, tmp_path):
    tag = probe_image_tag(bookworm.userland)
    proc = subprocess.Popen([sys.executable, "-m", "vdsomatrix", "images", "--rebuild",
                             "--suite", "bookworm"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_default_sigint)
    _wait_for(proc, b"debootstrap bookworm", 120)
    time.sleep(3)  # downloads under way
    os.killpg(proc.pid, signal.SIGINT)
    started = time.monotonic()
    proc.wait(timeout=60)
    assert time.monotonic() - started < 5
    assert _leftovers(engine, proc.pid) == []
    engine.images.get(tag)  # the image it was rebuilding is still there
    work = Path(os.environ.get("VDSOMATRIX_CACHE", Path.home() / ".cache/vdsomatrix")) / "work"
    assert not list(work.glob("bookworm.*"))
