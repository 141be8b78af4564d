"""The machine a run happens on: what makes its numbers comparable, or not, with another's.

Recorded in every result (``run.machine``) so that results of several machines can be merged
into one report without one machine's ``host`` replacing another's, and so that a reader can
tell why a system call costs what it costs there: the CPU, the kernel, whether the machine is
itself a virtual machine, and the CPU vulnerability mitigations in force.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from vdsomatrix.text import one_line

VULNERABILITIES = Path("/sys/devices/system/cpu/vulnerabilities")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def check_label(label: str) -> str:
    """A --label: short, plain (it names the machine in file names, headers and CI jobs)."""
    if not _LABEL.match(label):
        raise ValueError("1-63 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a "
                         "letter or digit")
    return label


def _read(path: Path, limit: int = 1 << 16) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _cpu() -> dict[str, Any]:
    model = vendor = None
    flags: set[str] = set()
    for line in _read(Path("/proc/cpuinfo"), 1 << 20).splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "vendor": vendor, "count": os.cpu_count(),
            "hypervisor": "hypervisor" in flags}


def mitigations() -> dict[str, str]:
    """What the kernel says of each CPU vulnerability (sysfs), e.g. spectre_v2: "Mitigation: …"."""
    found = {}
    if VULNERABILITIES.is_dir():
        for entry in sorted(VULNERABILITIES.iterdir()):
            found[entry.name] = one_line(_read(entry).strip(), 300)
    return found


def _cmdline_mitigations() -> str | None:
    """The kernel's ``mitigations=`` parameter, if its command line sets one."""
    for word in _read(Path("/proc/cmdline")).split():
        if word.startswith("mitigations="):
            return word.partition("=")[2]
    return None


def _machine_key() -> str:
    """Stable per machine, and says nothing about it: a hash of /etc/machine-id (or the host
    name where there is none)."""
    seed = _read(Path("/etc/machine-id")).strip() or os.uname().nodename
    return hashlib.sha256(f"vdsomatrix-machine\0{seed}".encode()).hexdigest()[:8]


@functools.cache
def vdsomatrix_commit(root: Path) -> str | None:
    """The checkout's git commit (``+dirty`` with uncommitted changes), None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip()[:12] + ("+dirty" if dirty.stdout.strip() else "")


@functools.cache
def identity(label: str | None = None) -> dict[str, Any]:
    """This machine, as recorded in each result of a run (``run.machine``)."""
    uname = os.uname()
    cpu = _cpu()
    return {
        "id": label or f"m-{_machine_key()}",
        "label": label,
        "cpu": cpu["model"],
        "cpu_vendor": cpu["vendor"],
        "cpus": cpu["count"],
        "hypervisor": cpu["hypervisor"],
        "kernel": uname.release,
        "arch": uname.machine,
        "mitigations": mitigations(),
        "mitigations_param": _cmdline_mitigations(),
    }
