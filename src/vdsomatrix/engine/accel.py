"""Which accelerator guests run with: KVM when it works here, else TCG (software emulation).

KVM is tried once: a short boot that must print the kernel banner within
:data:`KVM_TRY_SECONDS` (/dev/kvm being there is not enough: nested or half-broken KVM fails
later, inside QEMU). The verdict is kept for the process, and on disk for the current host boot
(``/proc/sys/kernel/random/boot_id``) and QEMU version, since every environment is a new process
under nox. ``VDSOMATRIX_QEMU_ACCEL=kvm|tcg`` skips the detection. Under TCG absolute latencies
are emulated; only ratios mean something, so every result says which ran.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vdsomatrix import processes
from vdsomatrix.engine.guest import Guest
from vdsomatrix.paths import cache_dir
from vdsomatrix.results import write_atomic

KVM_TRY_SECONDS = 10.0
BANNER = b"Linux version"

_lock = threading.Lock()
_verdicts: dict[str, str] = {}  # qemu binary -> "kvm" or "tcg", for this process


@functools.cache
def qemu_version(qemu: str) -> str:
    try:
        done = processes.run_bounded([qemu, "--version"], timeout=10, stdout_cap=64 << 10)
    except OSError:
        return ""
    lines = [] if done.timed_out else done.stdout.decode("utf-8", "replace").splitlines()
    return lines[0].removeprefix("QEMU emulator version ").strip() if lines else ""


def memo_path() -> Path:
    return cache_dir() / "qemu-accel.json"


def known_accel(qemu: str) -> str | None:
    """The verdict already known for ``qemu`` (forced, this process's, or this host boot's memo),
    without trying anything; None when only a try can tell."""
    forced = os.environ.get("VDSOMATRIX_QEMU_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    if qemu in _verdicts:
        return _verdicts[qemu]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    try:
        saved = json.loads(memo_path().read_text())
        key = _memo_key(qemu)
        if {k: saved.get(k) for k in key} == key and saved.get("accel") in ("kvm", "tcg"):
            return saved["accel"]
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _memo_key(qemu: str) -> dict[str, str]:
    return {"boot_id": processes.boot_id(), "qemu": qemu_version(qemu)}


def detect_accel(qemu: str, try_argv: Callable[[Path], list[str]], *, log=print) -> str:
    """"kvm" when a KVM guest gets as far as printing the kernel banner, else "tcg".

    ``try_argv(console)`` is the QEMU command of that short boot, its console written to the
    file ``console``.
    """
    with _lock:
        verdict = known_accel(qemu)
        if verdict is not None:
            _verdicts.setdefault(qemu, verdict)
            return verdict
        verdict, detail = try_kvm(try_argv)
        log(f"qemu: KVM {'works' if verdict == 'kvm' else 'unusable'} ({detail}); using {verdict}")
        _verdicts[qemu] = verdict
        try:
            memo = {**_memo_key(qemu), "accel": verdict, "detail": detail}
            write_atomic(memo_path(), json.dumps(memo) + "\n")
        except OSError as exc:  # only a cache: the next process tries again
            log(f"qemu: could not keep the KVM verdict ({exc.strerror})")
        return verdict


def try_kvm(try_argv: Callable[[Path], list[str]]) -> tuple[str, str]:
    """Boot with ``try_argv`` for up to :data:`KVM_TRY_SECONDS`: ("kvm" or "tcg", why)."""
    with Guest("kvm") as guest:
        run = guest.run(try_argv(guest.console), KVM_TRY_SECONDS,
                        until=lambda booting: BANNER in booting.console_head())
    if run.ended == "until":
        return "kvm", f"kernel banner after {run.seconds:.1f}s"
    if run.ended == "exited":
        why = run.stderr_lines[-1] if run.stderr_lines else f"status {run.returncode}"
        return "tcg", f"qemu -accel kvm exited: {why}"
    return "tcg", f"no kernel banner within {KVM_TRY_SECONDS:.0f}s"
