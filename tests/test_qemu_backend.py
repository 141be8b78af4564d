"""The QEMU backend: the result frame, the command line, the boot loop, and real boots.

Unit tests drive the boot loop with a fake ``qemu-system-x86_64`` (a small Python script that
writes to the serial files it is given), so every outcome (ok, panic, timeout, QEMU error,
truncated result, Ctrl-C) is checked without emulation. The tests marked ``qemu`` boot the real
bookworm kernel under QEMU; they skip on a machine without QEMU or a Docker engine and fail in
CI (CI=true), where the machine must have both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

from vdsomatrix import guest, kernels
from vdsomatrix.backends import qemu as qb
from vdsomatrix.backends.qemu import QemuBackend, kernel_cmdline, qemu_argv
from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import Environment


def frame(payload: bytes, rc: int = 0, *, digest: str | None = None) -> bytes:
    digest = digest or hashlib.sha256(payload).hexdigest()
    header = f"VDSOMATRIX-BEGIN v1 rc={rc} len={len(payload)} sha256={digest}\n".encode()
    return header + payload + b"\nVDSOMATRIX-END\n"


DOC = json.dumps({"schema": "vdsomatrix/1", "environment": {"name": "t"}}).encode() + b"\n"


# --- the frame --------------------------------------------------------------------------------


def test_complete_frame():
    got = guest.parse_frame(frame(DOC, rc=3))
    assert (got.status, got.payload, got.rc) == ("complete", DOC, 3)


def test_noise_before_the_frame_is_ignored():
    got = guest.parse_frame(b"\x00\xffSeaBIOS noise\r\nmore\n" + frame(DOC))
    assert got.status == "complete" and got.payload == DOC


def test_crlf_translation_is_undone_once():
    wire = frame(DOC).replace(b"\n", b"\r\n")
    got = guest.parse_frame(wire)
    assert got.status == "complete" and got.payload == DOC


@pytest.mark.parametrize("cut", [10, 60, 120, 150, -20, -3])
def test_truncated_frames(cut):
    wire = frame(DOC)
    got = guest.parse_frame(wire[:cut])
    assert got.status in ("truncated", "missing") and got.payload is None


def test_nothing_at_all():
    assert guest.parse_frame(b"").status == "missing"
    assert guest.parse_frame(b"random \x00 garbage\n" * 50).status == "missing"


def test_hash_mismatch_is_corrupt():
    wire = bytearray(frame(DOC))
    wire[wire.index(b"{") + 3] ^= 0x20
    assert guest.parse_frame(bytes(wire)).status == "corrupt"


def test_header_must_start_a_line():
    assert guest.parse_frame(b"xx" + frame(DOC)).status == "missing"


@pytest.mark.parametrize(
    "wire",
    [
        b"VDSOMATRIX-BEGIN v1 rc=0 len=-5 sha256=" + b"0" * 64 + b"\n",
        b"VDSOMATRIX-BEGIN v2 rc=0 len=5 sha256=" + b"0" * 64 + b"\nhello\nVDSOMATRIX-END\n",
        b"VDSOMATRIX-BEGIN v1 rc=0 len=5 sha256=nothex\n" + b"x" * 300,
        b"VDSOMATRIX-BEGIN v1 rc=0 len=999999999 sha256=" + b"0" * 64 + b"\n",
    ],
)
def test_hostile_headers_are_refused(wire):
    got = guest.parse_frame(wire)
    assert got.status in ("corrupt", "truncated") and got.payload is None


def test_payload_cannot_fake_the_end_marker():
    payload = b"\nVDSOMATRIX-END\n\nVDSOMATRIX-BEGIN v1 rc=0 len=1 sha256=" + b"0" * 64 + b"\n"
    got = guest.parse_frame(frame(payload))
    assert got.status == "complete" and got.payload == payload


def test_missing_end_marker_after_a_valid_payload():
    wire = frame(DOC).replace(b"VDSOMATRIX-END", b"SOMETHING-ELSE")
    assert guest.parse_frame(wire).status == "corrupt"


def test_first_frame_wins():
    got = guest.parse_frame(frame(b"one") + frame(b"two"))
    assert got.payload == b"one"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data):
    got = guest.parse_frame(data)
    assert got.status in ("complete", "missing", "truncated", "corrupt")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_a_prefix_is_never_mistaken_for_another_payload(payload, data):
    wire = frame(payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)))
    got = guest.parse_frame(wire[:cut])
    if got.status == "complete":
        assert got.payload == payload
    else:
        assert got.payload is None


# --- the command line -------------------------------------------------------------------------


def env(cmdline: str = "", name: str = "k6.1", build: str = "dynamic") -> Environment:
    return Environment(
        name=name, backend="qemu", suite="bookworm", kernel="bookworm", cmdline=cmdline,
        build=build,
    )  # fmt: skip


def test_default_cmdline():
    assert kernel_cmdline(env()) == (
        "console=ttyS0 panic=-1 vdsomatrix.env=k6.1 vdsomatrix.build=dynamic"
    )


def test_matrix_words_come_between_ours_and_the_guest_parameters():
    line = kernel_cmdline(env("vdso=0  vsyscall=emulate", name="k6.1-x", build="musl"))
    assert line == (
        "console=ttyS0 panic=-1 vdso=0 vsyscall=emulate vdsomatrix.env=k6.1-x vdsomatrix.build=musl"
    )


@pytest.mark.parametrize(
    "word", ["console=tty0", "panic=0", "init=/bin/sh", "rdinit=/x", "vdsomatrix.env=evil", "--"]
)
def test_reserved_words_are_refused(word):
    with pytest.raises(BadInput, match="set by the qemu backend"):
        kernel_cmdline(env(f"vdso=0 {word}"))
    assert qb.cmdline_problems(f"vdso=0 {word}") == [word]


def test_qemu_argv_tcg_and_kvm(tmp_path):
    common = dict(qemu="qemu-system-x86_64", vmlinuz=tmp_path / "vmlinuz",
                  initrd=tmp_path / "i.cpio", append="console=ttyS0",
                  console=tmp_path / "c.log", result=tmp_path / "r.log")  # fmt: skip
    argv = qemu_argv(accel="tcg", **common)
    joined = " ".join(argv)
    for part in ("-no-reboot", "-nic none", "-accel tcg", "-cpu max", "-smp 1", "-m 1024",
                 "-display none", "-nodefaults"):  # fmt: skip
        assert part in joined
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == [f"file:{tmp_path / 'c.log'}", f"file:{tmp_path / 'r.log'}"]
    assert argv[argv.index("-append") + 1] == "console=ttyS0"
    assert "-cpu host" in " ".join(qemu_argv(accel="kvm", **common))


def test_mtree_paths_escape_odd_characters():
    assert qb._mtree_path(Path("/a b/c#d")) == "/a\\040b/c\\043d"


def test_recipe_hash_follows_the_init_script(monkeypatch):
    before = qb.initramfs_recipe_hash()
    monkeypatch.setattr(guest, "INIT_SCRIPT", guest.INIT_SCRIPT + "# changed\n")
    assert qb.initramfs_recipe_hash() != before


def test_init_script_reads_what_the_backend_sets():
    for key in ("vdsomatrix.env=", "vdsomatrix.build=", "/dev/ttyS1", "VDSOMATRIX-BEGIN v1"):
        assert key in guest.INIT_SCRIPT
    assert "/opt/vdsomatrix/probes/probe.py" in guest.INIT_SCRIPT


# --- the boot loop with a fake QEMU -----------------------------------------------------------

FAKE_QEMU = textwrap.dedent(
    """\
    #!{python}
    import hashlib, os, sys, time
    argv = sys.argv[1:]
    serials = [argv[i + 1][len("file:"):] for i, a in enumerate(argv) if a == "-serial"]
    mode = os.environ.get("FAKE_QEMU_MODE", "ok")
    pidfile = os.environ.get("FAKE_QEMU_PIDFILE")
    if pidfile:
        open(pidfile, "w").write(str(os.getpid()))
    console = open(serials[0], "ab", buffering=0)
    console.write(b"Linux version 6.1.0-fake\\r\\n" + " ".join(argv).encode() + b"\\r\\n")
    def result(data):
        with open(serials[1], "ab") as fh:
            fh.write(data)
    payload = b'{{"schema": "vdsomatrix/1", "environment": {{"name": "fake"}}}}\\n'
    header = b"VDSOMATRIX-BEGIN v1 rc=%d len=%d sha256=%s\\n" % (
        int(os.environ.get("FAKE_QEMU_RC", "0")), len(payload),
        hashlib.sha256(payload).hexdigest().encode())
    good = header + payload + b"\\nVDSOMATRIX-END\\n"
    if mode == "ok":
        result(good)
    elif mode == "linger":
        result(good)
        time.sleep(600)
    elif mode == "hang":
        time.sleep(600)
    elif mode == "panic":
        console.write(b"[    3.1] Kernel panic - not syncing: Attempted to kill init!\\r\\n")
    elif mode == "truncated":
        result(good[: len(header) + 10])
    elif mode == "notjson":
        bad = b"not json"
        result(b"VDSOMATRIX-BEGIN v1 rc=0 len=8 sha256=%s\\n%s\\nVDSOMATRIX-END\\n"
               % (hashlib.sha256(bad).hexdigest().encode(), bad))
    elif mode == "error":
        sys.stderr.write("qemu-system-x86_64: -kernel: could not load kernel\\n")
        sys.exit(1)
    """
)


@pytest.fixture
def fake_qemu(tmp_path):
    path = tmp_path / "fake-qemu"
    path.write_text(FAKE_QEMU.format(python=sys.executable))
    path.chmod(0o755)
    return path


def boot(fake_qemu: Path, tmp_path: Path, deadline: float = 20.0):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    argv = qemu_argv(qemu=str(fake_qemu), accel="tcg", vmlinuz=tmp_path / "vmlinuz",
                     initrd=tmp_path / "i.cpio", append="console=ttyS0",
                     console=work / "console.log", result=work / "result.log")  # fmt: skip
    return QemuBackend(qemu=str(fake_qemu))._boot(argv, work, deadline)


def test_boot_ok(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    out = boot(fake_qemu, tmp_path)
    assert out.status == "ok" and out.document["environment"]["name"] == "fake"
    assert out.errors == []


def test_boot_ok_with_failing_probe_keeps_the_document(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    monkeypatch.setenv("FAKE_QEMU_RC", "2")
    out = boot(fake_qemu, tmp_path)
    assert out.status == "ok" and out.document is not None
    assert out.errors == ["probe exited with status 2 inside the guest"]


def test_result_in_but_no_power_off_is_killed_and_ok(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "linger")
    monkeypatch.setattr(qb, "POWER_OFF_GRACE", 0.3)
    started = time.monotonic()
    out = boot(fake_qemu, tmp_path)
    assert out.status == "ok" and time.monotonic() - started < 10


def test_panic_is_a_crash_with_the_console_tail(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "panic")
    out = boot(fake_qemu, tmp_path)
    assert out.status == "crashed" and out.document is None
    assert "Attempted to kill init" in out.errors[-1]
    assert any("Kernel panic" in line for line in out.log_tail)
    assert all("\r" not in line for line in out.log_tail)


def test_deadline_kills_the_guest(fake_qemu, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    started = time.monotonic()
    out = boot(fake_qemu, tmp_path, deadline=1.0)
    assert out.status == "timeout" and time.monotonic() - started < 10
    assert "within 1s" in out.errors[-1]
    assert out.log_tail and "Linux version" in out.log_tail[0]
    assert not _alive(int(pidfile.read_text()))


@pytest.mark.parametrize("mode, status", [("truncated", "crashed"), ("notjson", "crashed"),
                                          ("error", "failed")])  # fmt: skip
def test_bad_outcomes(fake_qemu, tmp_path, monkeypatch, mode, status):
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    out = boot(fake_qemu, tmp_path)
    assert out.status == status and out.document is None
    if mode == "error":
        assert "could not load kernel" in out.errors[-1]
    if mode == "truncated":
        assert "truncated" in out.errors[0]


def test_ctrl_c_kills_the_guest(fake_qemu, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    real_sleep = time.sleep

    def interrupt(seconds):
        if pidfile.exists():  # the guest is up: the user presses Ctrl-C
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(qb, "time", SimpleNamespace(monotonic=time.monotonic, sleep=interrupt))
    with pytest.raises(KeyboardInterrupt):
        boot(fake_qemu, tmp_path, deadline=30)
    assert not _alive(int(pidfile.read_text()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; waitpid is done by Popen.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_run_probe_labels_the_document_and_cleans_up(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    monkeypatch.setenv("VDSOMATRIX_QEMU_ACCEL", "tcg")
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(b"x")
    kernel = kernels.Kernel("bookworm", "linux-image-6.1.0-9-amd64", "6.1.27-1", "6.1.0-9-amd64",
                            "", "", folder)  # fmt: skip
    monkeypatch.setattr(kernels, "cached_kernel", lambda suite: kernel)
    backend = QemuBackend(qemu=str(fake_qemu))
    initrd = tmp_path / "i.cpio"
    initrd.write_bytes(b"0707")
    backend._initramfs["bookworm"] = initrd
    out = backend.run_probe(env("vdso=0"), deadline=30, log=lambda m: None)
    assert out.status == "ok", out.errors
    identity = out.document["environment"]
    assert identity["accel"] == "tcg" and identity["backend"] == "qemu"
    assert identity["kernel_package"] == "linux-image-6.1.0-9-amd64=6.1.27-1"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_run_probe_refuses_reserved_cmdline_without_booting(tmp_path):
    out = QemuBackend(qemu="/nonexistent/qemu").run_probe(env("console=tty0"), deadline=5)
    assert out.status == "failed" and "set by the qemu backend" in out.errors[0]


def test_availability_names_the_fix_when_qemu_is_missing():
    verdict = QemuBackend(qemu="/nonexistent/qemu-system-x86_64").availability(env())
    assert not verdict.ok
    assert "install qemu-system-x86" in verdict.reason and "setup-machine" in verdict.reason


def test_accel_can_be_forced(monkeypatch, tmp_path):
    monkeypatch.setenv("VDSOMATRIX_QEMU_ACCEL", "tcg")
    assert qb.detect_accel("whatever", tmp_path / "vmlinuz") == "tcg"


def test_guests_get_different_host_cpus(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU")
    with qb._host_cpu() as first, qb._host_cpu() as second:
        assert first != second
    with qb._host_cpu() as again:
        assert again == first


# --- real boots -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_qemu():
    """A QemuBackend with the bookworm kernel and initramfs prepared, or skip/fail."""
    if not shutil.which(qb.QEMU):
        require("QEMU", qb.INSTALL_QEMU)
    backend = QemuBackend()
    try:
        backend.prepare(env(), log=lambda m: None)
    except Exception as exc:  # no engine, no mirror, ...
        require("QEMU guest (kernel + initramfs)", str(exc))
    return backend


def expected_default_vsyscall(kernel: kernels.Kernel) -> str:
    """The vsyscall mode the kernel's own config selects when the command line says nothing."""
    config = kernel.config.read_text()
    for mode in ("none", "xonly", "emulate"):
        if f"CONFIG_LEGACY_VSYSCALL_{mode.upper()}=y" in config:
            return mode
    raise AssertionError("kernel config selects no vsyscall mode")


MAPS_PERMS = {"none": None, "emulate": "r-xp [vsyscall]", "xonly": "--xp [vsyscall]"}


def check_vsyscall(doc: dict, mode: str) -> None:
    vsyscall = doc["vsyscall"]
    assert vsyscall["mode"] == mode
    assert vsyscall["maps"] == MAPS_PERMS[mode]  # what /proc/self/maps showed in the guest
    assert vsyscall["readable"] == (mode == "emulate")
    assert vsyscall["callable"] == (mode != "none")
    for call in ("gettimeofday", "time", "getcpu"):
        legacy = row(doc, call, "vsyscall")
        if mode == "none":  # a legacy static binary calling the page dies
            assert (legacy["status"], legacy.get("signal")) == ("crashed", "SIGSEGV"), legacy
        else:
            assert legacy["status"] == "ok", legacy


def row(doc, call, path):
    (found,) = [r for r in doc["calls"] if r["call"] == call and r["path"] == path]
    return found


@pytest.mark.qemu
@pytest.mark.slow
def test_real_boots_default_and_vdso0_emulate(real_qemu):
    """Three guests, two at a time (each on its own host CPU): default, vdso=0 with
    vsyscall=emulate, and clocksource=hpet."""
    envs = [env(name="t-k6.1"), env("vdso=0 vsyscall=emulate", name="t-k6.1-vdso0"),
            env("clocksource=hpet", name="t-k6.1-hpet")]
    with ThreadPoolExecutor(2) as pool:
        default, variant, hpet = pool.map(
            lambda e: real_qemu.run_probe(e, deadline=180, log=lambda m: None), envs
        )
    kernel = kernels.cached_kernel("bookworm")
    for out in (default, variant, hpet):
        assert out.status == "ok", (out.errors, out.log_tail)
        identity = out.document["environment"]
        assert identity["backend"] == "qemu" and identity["accel"] in ("kvm", "tcg")
        assert identity["kernel_package"] == kernel.package_ref
        assert identity["kernel"]["release"] == kernel.release
        assert out.seconds < 120

    doc = default.document
    assert doc["vdso"]["present"] and doc["vdso"]["mapped"]
    assert doc["auxv"]["AT_SYSINFO_EHDR"] == doc["vdso"]["base"]
    check_vsyscall(doc, expected_default_vsyscall(kernel))

    doc = variant.document
    assert "vdso=0" in doc["environment"]["kernel"]["cmdline"].split()
    assert not doc["vdso"]["present"] and not doc["vdso"]["mapped"]
    assert "AT_SYSINFO_EHDR" not in doc["auxv"]
    check_vsyscall(doc, "emulate")
    # Without a vDSO, libc's clock_gettime has only the system call left: ptrace counts one.
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC)", "libc")["syscalls_per_call"] == 1
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC)", "vdso")["status"] == "unsupported"

    if len(os.sched_getaffinity(0)) >= 2:
        cpus = {o.document["environment"]["qemu"]["host_cpu"] for o in (default, variant)}
        assert len(cpus) == 2

    # With a clocksource user space cannot read, the vDSO itself makes the system call.
    doc = hpet.document
    kernel_facts = doc["environment"]["kernel"]
    if "hpet" not in kernel_facts["available_clocksources"]:
        pytest.skip(f"this guest offers no hpet: {kernel_facts['available_clocksources']}")
    assert kernel_facts["clocksource"] == "hpet"
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC)", "vdso")["syscalls_per_call"] == 1
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC_COARSE)", "vdso")["syscalls_per_call"] == 0


@pytest.mark.qemu
@pytest.mark.slow
def test_real_panic_and_timeout(real_qemu, tmp_path):
    """No initramfs: the kernel panics (crashed); a tiny deadline: timeout, QEMU gone."""
    kernel = kernels.cached_kernel("bookworm")
    for deadline, status in ((120, "crashed"), (1, "timeout")):
        work = tmp_path / status
        work.mkdir()
        argv = qemu_argv(qemu=qb.QEMU, accel="tcg", vmlinuz=kernel.vmlinuz, initrd=None,
                         append="console=ttyS0 panic=-1", console=work / "console.log",
                         result=work / "result.log")  # fmt: skip
        out = real_qemu._boot(argv, work, deadline=deadline)
        assert out.status == status, (out.errors, out.log_tail)
        if status == "crashed":
            assert "panicked" in out.errors[-1]
