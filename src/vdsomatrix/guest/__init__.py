"""The inside of a QEMU guest: its /init, and the frame that carries the probe's JSON out.

The guest's root file system is an initramfs made from a probe image (see backends/qemu.py); the
kernel runs :data:`INIT_SCRIPT` as PID 1. It mounts proc, sys and devtmpfs, reads which probe
build to run and the environment's name from the kernel command line (``vdsomatrix.env=`` and
``vdsomatrix.build=``: names with a dot are never passed on to init or confused with the kernel's
own options), runs the probe, writes its JSON to the second serial port (ttyS1) and powers off.

On ttyS1 the result is framed, so that the host can tell a complete document from a truncated or
damaged one (a guest killed at its deadline, a kernel panic in the middle of the write)::

    VDSOMATRIX-BEGIN v1 rc=<probe exit status> len=<bytes> sha256=<hex of the bytes>\\n
    <exactly len bytes: the probe's stdout>
    \\nVDSOMATRIX-END\\n

Everything the guest prints otherwise (kernel messages, the probe's stderr) goes to ttyS0, the
console, which the host keeps only as a log tail.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

BEGIN = b"VDSOMATRIX-BEGIN"
END = b"VDSOMATRIX-END"
MAX_PAYLOAD = 64 << 20  # a probe document is tens of KiB; anything near this is not one
_HEADER = re.compile(
    rb"VDSOMATRIX-BEGIN v1 rc=(?P<rc>-?[0-9]{1,5}) len=(?P<len>[0-9]{1,9}) "
    rb"sha256=(?P<sha>[0-9a-f]{64})\r?\n"
)
# Kernel command-line keys the backend sets itself; a matrix cmdline must not set them.
RESERVED_PARAMS = ("console", "panic", "rdinit", "init", "root", "initrd")
RESERVED_PREFIX = "vdsomatrix."

# PID 1 of every guest. POSIX sh (dash on Debian); only coreutils, mount and stty are used, all
# in every minbase root file system. It must never exit: the kernel would panic.
INIT_SCRIPT = r"""#!/bin/sh
# vdsomatrix guest init: PID 1 of a QEMU guest booted by the vdsomatrix qemu backend.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
TMPDIR=/tmp
LANG=C.UTF-8
export PATH HOME TMPDIR LANG

say() { echo "vdsomatrix-init: $*"; }

halt_guest() {
    sync
    echo o >/proc/sysrq-trigger 2>/dev/null
    poweroff -f 2>/dev/null
    # Never return: PID 1 exiting is a kernel panic, which the host would read as a crash.
    while :; do sleep 60; done
}

mount -t proc -o nosuid,nodev,noexec proc /proc || say "cannot mount /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || say "cannot mount /sys"
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || say "cannot mount /dev"
mkdir -p /dev/pts /dev/shm /tmp
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
chmod 1777 /tmp

name=unnamed
build=dynamic
for word in $(cat /proc/cmdline); do
    case "$word" in
        vdsomatrix.env=*) name=${word#vdsomatrix.env=} ;;
        vdsomatrix.build=*) build=${word#vdsomatrix.build=} ;;
    esac
done
case "$name" in *[!a-z0-9._-]*|"") say "bad environment name"; name=unnamed ;; esac
case "$build" in dynamic|static|musl) ;; *) say "bad build '$build'"; build=dynamic ;; esac

say "running the probe ($build) for $name on $(uname -r)"
out=/tmp/vdsomatrix-result.json
python3 /opt/vdsomatrix/probes/probe.py --helper "/opt/vdsomatrix/bin/vdsoprobe-$build" \
    --name "$name" --backend qemu >"$out"
rc=$?
say "probe exited with status $rc"

# Raw mode: no newline translation on the way out, or the length and hash would not match.
stty -F /dev/ttyS1 raw -echo 2>/dev/null || say "stty failed; the host will undo CR-LF"
len=$(wc -c <"$out")
sum=$(sha256sum "$out" | cut -d' ' -f1)
{
    printf 'VDSOMATRIX-BEGIN v1 rc=%d len=%d sha256=%s\n' "$rc" "$len" "$sum"
    cat "$out"
    printf '\nVDSOMATRIX-END\n'
} >/dev/ttyS1
say "result written ($len bytes)"
halt_guest
"""


@dataclass(frozen=True)
class Frame:
    """What was found on the result port.

    ``status``: "complete" (payload intact), "missing" (no header at all), "truncated" (the header
    promised more bytes than arrived, or the end marker is missing), "corrupt" (the bytes arrived
    but do not match their hash, or the header is malformed). ``payload`` is set only when complete.
    """

    status: str
    payload: bytes | None = None
    rc: int | None = None
    problem: str = ""


def _find_header(data: bytes) -> int:
    """Offset of the first BEGIN marker at the start of a line, or -1."""
    pos = data.find(BEGIN)
    while pos > 0 and data[pos - 1 : pos] != b"\n":
        pos = data.find(BEGIN, pos + 1)
    return pos


def parse_frame(data: bytes) -> Frame:
    """Check one result frame in the raw bytes of the result port; never raises.

    Bytes before the header are ignored (firmware or kernel noise on the port). The payload is
    taken by its announced length, so its content can never fake an end marker. If the guest's
    tty translated newlines to CR-LF despite being told not to, the translation is undone once
    and the hash decides.
    """
    start = _find_header(data)
    if start < 0:
        return Frame("missing", problem="no result header on the result port")
    match = _HEADER.match(data, start)
    if not match:
        line = data[start : start + 120].split(b"\n", 1)[0]
        if b"\n" not in data[start : start + 200] and len(data) - start < 200:
            return Frame("truncated", problem="result header cut short")
        return Frame("corrupt", problem=f"malformed result header {line[:100]!r}")
    rc, length, digest = int(match["rc"]), int(match["len"]), match["sha"].decode()
    if length > MAX_PAYLOAD:
        return Frame("corrupt", rc=rc, problem=f"result of {length} bytes announced: too big")
    body = data[match.end() :]
    attempts = [body]
    if b"\r\n" in body:
        attempts.append(body.replace(b"\r\n", b"\n"))
    short = None
    for candidate in attempts:
        if len(candidate) < length:
            short = short or f"result cut short: {len(candidate)} of {length} bytes arrived"
            continue
        payload = candidate[:length]
        if hashlib.sha256(payload).hexdigest() != digest:
            continue
        trailer = candidate[length : length + 64].replace(b"\r", b"")
        closing = b"\n" + END + b"\n"
        if not (trailer.startswith(closing) or trailer == closing[:-1]):
            if closing.startswith(trailer):
                return Frame("truncated", rc=rc, problem="result end marker cut short")
            return Frame("corrupt", rc=rc, problem="no end marker after the result")
        return Frame("complete", payload=payload, rc=rc)
    if short and all(len(c) < length for c in attempts):
        return Frame("truncated", rc=rc, problem=short)
    return Frame("corrupt", rc=rc, problem="result does not match its sha256")
