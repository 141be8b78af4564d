"""The probe on arm64 (aarch64): probe.py's facts off x86, and the C helper cross-compiled with
the same build.sh and run once under qemu-user.

qemu-user is a sanity check only, never a result: there QEMU emulates the kernel (and, in
recent versions, a vDSO of its own) and refuses ptrace. It shows that the helper builds for
aarch64, starts, prints its document, and says "not on this architecture" where it must. The
real arm64 results come from arm64 kernels under qemu-system-aarch64 (tests/data/result-*-arm64
.json; tests/report/test_architectures_section.py checks them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_support import _workdir, need

ROOT = Path(__file__).resolve().parents[2]
PROBES_DIR = ROOT / "src" / "vdsomatrix" / "probes"
sys.path.insert(0, str(PROBES_DIR))
import probe  # noqa: E402

NOT_THIS_ARCH = "not on this architecture"
# The rows that exist only on x86: (call, path).
X86_ONLY = {("getppid", "int80"), ("getppid", "kernel_vsyscall"), ("gettimeofday", "vsyscall"),
            ("time", "vsyscall"), ("getcpu", "vsyscall")}

ARM64_CPUINFO = """processor\t: 0
BogoMIPS\t: 125.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
"""


def test_no_vsyscall_mode_off_x86():
    """No [vsyscall] line means "none" on x86 (switched off) and nothing at all elsewhere."""
    assert probe.vsyscall_mode([], "x86_64") == "none"
    assert probe.vsyscall_mode([], "aarch64") is None
    assert probe.vsyscall_mode([]) == "none"  # the machine unknown: as before


def test_arm64_cpu_model_from_midr_fields():
    cpu = probe.cpu_info(probe.cpuinfo_first_block(ARM64_CPUINFO))
    assert cpu["model"] == "implementer 0x41 part 0xd0c r3p1"
    assert cpu["vendor"] == "0x41" and cpu["flags"] == []
    assert probe.arm64_cpu_model({"CPU implementer": "0x41"}) is None


@pytest.fixture(scope="module")
def arm64_helpers() -> Path:
    """The helper built for aarch64 by probes/build.sh (dynamic, static, syscount) with the
    cross compiler: what the arm64 image's native cc compiles, from the same sources."""
    cc = need("aarch64-linux-gnu-gcc")
    out = _workdir() / "arm64-helpers"
    done = subprocess.run(["sh", str(PROBES_DIR / "build.sh"), str(out), "dynamic",
                           "static", "syscount"], env={**os.environ, "CC": cc},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_the_helpers_are_aarch64_executables(arm64_helpers):
    objdump = need("aarch64-linux-gnu-objdump")
    for name in ("vdsoprobe-dynamic", "vdsoprobe-static", "syscount"):
        head = subprocess.run([objdump, "-f", str(arm64_helpers / name)], capture_output=True,
                              text=True, check=True, timeout=60).stdout
        assert "elf64-littleaarch64" in head, head
    # the raw system call and the breakpoint are the arm64 instructions, not x86's
    text = subprocess.run([objdump, "-d", str(arm64_helpers / "vdsoprobe-dynamic")],
                          capture_output=True, text=True, check=True, timeout=120).stdout
    assert "\tsvc\t#0x0" in text and "\tbrk\t#0x0" in text


@pytest.fixture(scope="module")
def qemu_user_document(arm64_helpers) -> dict:
    qemu = need("qemu-aarch64-static")
    done = subprocess.run([qemu, str(arm64_helpers / "vdsoprobe-static"), "--batches", "31",
                           "--min-batch-ns", "1000", "--row-deadline", "20"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_helper_runs_under_qemu_user_and_says_what_is_not_there(qemu_user_document):
    doc = qemu_user_document
    assert doc["abi"] == "aarch64"
    assert doc["vsyscall_read"] == {"readable": False, "reason": NOT_THIS_ARCH}
    rows = doc["calls"] + doc["entry_costs"]
    by_key = {(r["call"], r["path"]): r for r in rows}
    assert len(by_key) == len(rows)
    for key in X86_ONLY | {("cpuid", "instruction")}:
        assert by_key[key]["status"] == "unsupported", key
        assert by_key[key]["reason"] == NOT_THIS_ARCH, key
    # arm64's table has no time system call; its vDSO no time or getcpu function
    assert by_key[("time", "syscall")]["reason"].startswith(NOT_THIS_ARCH)
    for key in (("getppid", "syscall"), ("clock_gettime(CLOCK_MONOTONIC)", "syscall"),
                ("getrandom", "syscall"), ("clock_getres(CLOCK_MONOTONIC)", "syscall"),
                ("signal round trip", "syscall"), ("signal round trip", "brk")):
        assert by_key[key]["status"] == "ok", (key, by_key[key])
    assert "svc #0" in by_key[("getppid", "syscall")]["detail"]
    for row in rows:  # every row measured, or not there with a reason
        assert row["status"] in ("ok", "unsupported"), row
        assert row["status"] == "ok" or row["reason"], row
    vdso_rows = [r for r in rows if r["path"] == "vdso"]
    assert all(r["detail"].startswith("__kernel_") and "LINUX_2.6.39" in r["detail"]
               for r in vdso_rows)
