"""Userlands of an architecture this machine's CPU does not run: built through qemu-user.

An arm64 suite's image is made on an x86_64 host for its QEMU guests (never run as a container:
see matrix.GUEST_ONLY). Two steps of that run arm64 programs on the host: debootstrap's second
stage (dpkg and maintainer scripts in the chroot) and the RUN step of images/Dockerfile (gcc,
python3). The host's kernel hands those programs to ``qemu-aarch64`` through binfmt_misc, once
qemu-user-static is installed and its entry registered with the F flag (the interpreter is
opened at registration, so it also works inside a chroot or a container that lacks it).

Whether that works is found by running one: :data:`AARCH64_EXIT0`, an aarch64 program that only
calls exit(0), then the registration's flags are read for F. Once per process.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct
import subprocess
import tempfile
from pathlib import Path

from vdsomatrix import processes
from vdsomatrix.paths import cache_dir

# The Debian architectures a CPU of each kind (uname -m) runs natively.
NATIVE = {"x86_64": ("amd64", "i386"), "aarch64": ("arm64",)}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
INSTALL = ("install qemu-user-static and register its binfmt_misc entries "
           "(`bash .ci/setup-machine` as root does both)")

# The smallest aarch64 program: an ELF64 header, one PT_LOAD segment, and exit(0) through
# svc #0 (mov x0, #0; mov x8, #93 (exit); svc #0).
_AARCH64_BASE = 0x400000
_AARCH64_CODE = struct.pack("<III", 0xD2800000, 0xD2800BA8, 0xD4000001)
_AARCH64_SIZE = 64 + 56 + len(_AARCH64_CODE)
AARCH64_EXIT0 = (
    b"\x7fELF\x02\x01\x01" + bytes(9)  # ELFCLASS64, little-endian, version 1, SysV
    + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, _AARCH64_BASE + 120, 64, 0, 0, 64, 56, 1, 0, 0,
                  0)  # ET_EXEC, EM_AARCH64, entry after the headers, one program header
    + struct.pack("<IIQQQQQQ", 1, 5, 0, _AARCH64_BASE, _AARCH64_BASE, _AARCH64_SIZE,
                  _AARCH64_SIZE, 0x1000)  # PT_LOAD, R+X, the whole file
    + _AARCH64_CODE
)
PROGRAMS = {"arm64": AARCH64_EXIT0}


def host_machine() -> str:
    return platform.machine()


def emulated(arch: str) -> bool:
    """Whether programs of Debian architecture ``arch`` need emulation on this machine."""
    return arch not in NATIVE.get(host_machine(), ())


def exec_exit0(folder: Path, program_bytes: bytes, *, timeout: float
               ) -> tuple[bool, int | None] | None:
    """Exec ``program_bytes``, a program that only calls exit(0), from ``folder``: (whether the
    kernel took its format, its exit status or None when it did not exit within ``timeout``),
    or None when this folder cannot tell (not writable, mounted noexec). Shared by the checks
    for foreign architectures here and for 32-bit x86 (backend.ia32_support)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="exec-check.", dir=folder) as tmp:
            program = Path(tmp) / "exit0"
            program.write_bytes(program_bytes)
            program.chmod(0o700)
            try:
                proc = processes.spawn([str(program)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except OSError as exc:
                if exc.errno == errno.ENOEXEC:
                    return False, None
                return None  # EACCES on a noexec mount, and the like: try elsewhere
            return True, processes.wait(proc, timeout)
    except OSError:
        return None


def _run(folder: Path, program_bytes: bytes) -> tuple[bool, str] | None:
    """:func:`exec_exit0` as (ran and exited 0, what happened), or None."""
    done = exec_exit0(folder, program_bytes, timeout=20.0)
    if done is None:
        return None
    taken, code = done
    if not taken:
        return False, "the kernel refuses to exec them (Exec format error)"
    if code == 0:
        return True, ""
    what = "did not exit within 20 s" if code is None else f"exited with status {code}"
    return False, f"a program that only calls exit(0) {what}"


def _registered_without_fix(machine_magic: bytes) -> list[str]:
    """The enabled binfmt_misc entries that match ``machine_magic`` (an ELF header's first 20
    bytes) but lack the F flag: they would fail inside a chroot or a container."""
    found = []
    try:
        entries = [p for p in BINFMT.iterdir() if p.name not in ("register", "status")]
    except OSError:
        return []
    for entry in entries:
        try:
            lines = entry.read_text().splitlines()
            fields = dict(line.split(" ", 1) for line in lines if " " in line)
            magic = bytes.fromhex(fields.get("magic", ""))
            mask = bytes.fromhex(fields.get("mask", "")) or b"\xff" * len(magic)
            offset = int(fields.get("offset", "0"))
        except (OSError, ValueError):
            continue
        if "enabled" not in lines or offset != 0 or not magic:
            continue
        head = machine_magic[: len(magic)]
        matches = len(head) == len(magic) and all(
            (h & m) == (g & m) for h, g, m in zip(head, magic, mask, strict=False))
        if matches and "F" not in fields.get("flags:", ""):
            found.append(entry.name)
    return found


@functools.cache
def emulation_support(arch: str) -> tuple[bool, str]:
    """(True, "") when this machine runs ``arch``'s programs (natively, or through a qemu-user
    registered with binfmt_misc so that it works in a chroot and a container), else
    (False, a one-line reason saying what to install)."""
    if not emulated(arch):
        return True, ""
    program = PROGRAMS.get(arch)
    if program is None:
        return False, f"vdsomatrix cannot build {arch} userlands on a {host_machine()} machine"
    prefix = f"this {host_machine()} machine cannot run {arch} programs"
    answer = None
    for folder in (Path(tempfile.gettempdir()), cache_dir() / "tmp"):
        answer = _run(folder, program)
        if answer is not None:
            break
    if answer is None:
        return False, f"{prefix}: no folder here lets a program run; {INSTALL}"
    runs, why = answer
    if not runs:
        mounted = (BINFMT / "status").exists()
        where = "" if mounted else " (binfmt_misc is not mounted)"
        return False, f"{prefix}: {why}{where}; {INSTALL}"
    unfixed = _registered_without_fix(program[:20])
    if unfixed:
        return False, (f"{prefix} in a chroot or container: the binfmt_misc entry "
                       f"{', '.join(unfixed)} lacks the F flag; {INSTALL}")
    return True, ""
