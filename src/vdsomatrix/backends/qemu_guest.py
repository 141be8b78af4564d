"""The inside of a QEMU guest: its /init, the kernel command line that configures it, and the
frame that carries the probe's JSON out.

The guest's root file system is an initramfs made from a probe image (see initramfs.py); the
kernel runs :data:`INIT_SCRIPT` as PID 1. It mounts proc, sys and devtmpfs, reads the
environment's name, the probe build, the helper's time budget and whether it runs in a new time
namespace from the kernel command line (``vdsomatrix.env=``, ``vdsomatrix.build=``,
``vdsomatrix.budget=``, ``vdsomatrix.timens=1``: names with a dot are never
passed on to init or confused with the kernel's own options), runs the probe with the command
line of :func:`vdsomatrix.contract.probe_argv`, writes its JSON to the result port (the second
serial port, ttyS1; on arm64 a 16550 on PCI, ttyS0, named by ``vdsomatrix.port=``) and powers
off.

On the result port the result is framed, so that the host can tell a complete document from a
truncated or damaged one (a guest killed at its deadline, a kernel panic in the middle of the
write)::

    VDSOMATRIX-BEGIN v1 rc=<probe exit status> len=<bytes> sha256=<hex of the bytes>\\n
    <exactly len bytes: the probe's stdout>
    \\nVDSOMATRIX-END\\n

Everything the guest prints otherwise (kernel messages, the probe's stderr) goes to the console
(ttyS0; ttyAMA0 on arm64), which the host keeps only as a log tail. The host reads the result
port as it grows (:class:`ResultPort`): every byte once, and no more than :data:`PORT_LIMIT` of
them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from vdsomatrix import contract
from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import BackendName, Build

BEGIN = b"VDSOMATRIX-BEGIN"
END = b"VDSOMATRIX-END"
CLOSING = b"\n" + END + b"\n"
# A probe document is 1-2 MB; the guest's is held to the same cap as every other backend's.
MAX_PAYLOAD = contract.MAX_OUTPUT
# What the host reads from the result port at most: a payload whose newlines the tty turned
# into CR-LF takes up to twice its size, plus room for noise before the header.
PORT_LIMIT = 2 * MAX_PAYLOAD + (1 << 20)
HEADER_MAX = 200  # bytes a header line may take
TRAILER_WINDOW = 64  # bytes after the payload that are looked at for the end marker
_HEADER = re.compile(
    rb"VDSOMATRIX-BEGIN v1 rc=(?P<rc>-?[0-9]{1,5}) len=(?P<len>[0-9]{1,9}) "
    rb"sha256=(?P<sha>[0-9a-f]{64})\r?\n"
)

# --- the kernel command line -----------------------------------------------------------------

# Kernel command-line keys the backend sets itself; a matrix cmdline must not set them.
RESERVED_PARAMS = ("console", "panic", "rdinit", "init", "root", "initrd")
RESERVED_PREFIX = "vdsomatrix."


def cmdline_problems(cmdline: str) -> list[str]:
    """Words of a matrix cmdline that would override what the backend itself sets."""
    problems = []
    for word in cmdline.split():
        key = word.split("=", 1)[0]
        if key in RESERVED_PARAMS or key.startswith(RESERVED_PREFIX) or word == "--":
            problems.append(word)
    return problems


def check_cmdline(env) -> None:
    """BadInput when ``env``'s matrix cmdline sets what the backend sets itself, or asks the
    guest for what its /init cannot do."""
    bad = cmdline_problems(env.cmdline)
    if bad:
        raise BadInput(
            f"{env.name}: cmdline word(s) {' '.join(bad)} are set by the qemu backend itself; "
            "remove them from the matrix"
        )
    if env.time_namespace and env.runtimes:
        # The runtimes' command line (contract.runtimes_argv) has no time namespace.
        raise BadInput(f"{env.name}: `time_namespace` is for the C helper's builds, not the "
                       "runtimes build; remove one of them from the matrix")


# Words that only make the boot faster (before the matrix's words, which win): the crypto API's
# self-tests of every algorithm the kernel registers take 0.3-0.4 s of a 6.1 guest under TCG
# (benchmarks/guest_boot.py), and test nothing the probe measures (no clock, vDSO or system call
# path; the kernel's random number generator does not go through the crypto API).
BOOT_SPEED = ("cryptomgr.notests",)


# The guest's console and result port (their tty names), by the kernel's architecture: an x86
# PC's first two 8250 UARTs; on arm64's `virt` board (one UART, a PL011) the PL011 and a 16550
# on PCI (the board's only 8250, so ttyS0), see backend.qemu_argv.
PORTS = {"arm64": ("ttyAMA0", "ttyS0")}
DEFAULT_PORTS = ("ttyS0", "ttyS1")
# What /init accepts as vdsomatrix.port (a shell case pattern), and takes when none is given.
PORT_PATTERN = "ttyS[0-9]|ttyAMA[0-9]|hvc[0-9]"


def ports(arch: str) -> tuple[str, str]:
    """(console, result port) of a guest whose kernel is of Debian architecture ``arch``."""
    return PORTS.get(arch, DEFAULT_PORTS)


def kernel_cmdline(env, budget: int) -> str:
    """The full kernel command line of ``env``'s guest: ours, then the matrix's words, then
    the guest's parameters (name, build, ``budget``: the helper's seconds, see
    contract.helper_budget, ``vdsomatrix.timens=1`` for a time namespace, and the result
    port's tty where it is not /init's default, ttyS1)."""
    check_cmdline(env)
    if not isinstance(budget, int) or budget < 1:
        raise BadInput(f"{env.name}: helper budget {budget!r} is not a positive whole number")
    console, port = ports(env.kernel.arch if env.kernel else "amd64")
    words = [f"console={console}", "panic=-1", *BOOT_SPEED, *env.cmdline.split()]
    words += [f"vdsomatrix.env={env.name}", f"vdsomatrix.build={env.build}",
              f"vdsomatrix.budget={budget}"]
    if port != DEFAULT_PORTS[1]:
        words.append(f"vdsomatrix.port={port}")
    if env.time_namespace:
        words.append("vdsomatrix.timens=1")
    return " ".join(words)


# --- the guest's /init -----------------------------------------------------------------------

# The helper's seconds when the command line carries no valid budget (the backend always sends
# one): short enough that a hung helper still leaves the probe time to report.
FALLBACK_BUDGET = 60
# Shell variables of /init that stand in for the per-guest values of the probe's command line.
_VARIABLE = re.compile(r"\$\{(?:name|build|budget)\}")


def probe_command(*, runtimes: bool = False, time_namespace: bool = False) -> str:
    """The probe's command line (contract.probe_argv, or contract.runtimes_argv for the
    ``runtimes`` build) as a line of POSIX shell; ``time_namespace``: the helper runs in one.

    Every argument is double-quoted; the per-guest values are the variables ``${name}``,
    ``${build}`` and ``${budget}``, checked by /init before use. Nothing else in an argument may
    mean anything to the shell inside double quotes.
    """
    common = dict(python="python3", probe=contract.PROBE_IN_IMAGE, name="${name}",
                  backend=BackendName.QEMU, budget="${budget}")
    # The libc and loader stay in the guest: the host reads them from the initramfs it made
    # (backend.py, contract.resolve_artefacts), instead of a megabyte through the serial port.
    common = dict(common, artefacts_by_digest=True)
    if runtimes:
        argv = contract.runtimes_argv(runtimes=contract.RUNTIMES_IN_IMAGE,
                                      syscount=contract.SYSCOUNT_IN_IMAGE, **common)
    else:
        argv = contract.probe_argv(helper=contract.HELPER_IN_IMAGE.format(build="${build}"),
                                   time_namespace=time_namespace, **common)
    for arg in map(str, argv):
        literal = _VARIABLE.sub("", arg)
        if any(ch in literal for ch in '"\\`$'):
            raise ValueError(f"probe argument {arg!r} cannot be written in double quotes")
    return " ".join(f'"{arg}"' for arg in argv)


# Reads and checks the guest's parameters from $cmdline (the words of /proc/cmdline); a part of
# INIT_SCRIPT on its own so that it can be run and tested outside a guest.
READ_PARAMETERS = r"""name=unnamed
build=dynamic
budget=@FALLBACK_BUDGET@
timens=0
port=@DEFAULT_PORT@
set -f  # the words are data: no file name expansion
for word in $cmdline; do
    case "$word" in
        vdsomatrix.env=*) name=${word#vdsomatrix.env=} ;;
        vdsomatrix.build=*) build=${word#vdsomatrix.build=} ;;
        vdsomatrix.budget=*) budget=${word#vdsomatrix.budget=} ;;
        vdsomatrix.timens=*) timens=${word#vdsomatrix.timens=} ;;
        vdsomatrix.port=*) port=${word#vdsomatrix.port=} ;;
    esac
done
set +f
case "$name" in *[!a-z0-9._-]*|"") say "bad environment name"; name=unnamed ;; esac
case "$build" in @BUILDS@) ;; *) say "bad build"; build=dynamic ;; esac
# Digits only, no leading zero, at most 5 of them.
case "$budget" in ""|*[!0-9]*|0*|??????*) say "bad helper budget"; budget=@FALLBACK_BUDGET@ ;; esac
case "$timens" in 0|1) ;; *) say "bad timens"; timens=0 ;; esac
case "$port" in @PORTS@) ;; *) say "bad result port"; port=@DEFAULT_PORT@ ;; esac
""".replace("@FALLBACK_BUDGET@", str(FALLBACK_BUDGET)).replace("@BUILDS@", "|".join(Build)) \
    .replace("@PORTS@", PORT_PATTERN).replace("@DEFAULT_PORT@", DEFAULT_PORTS[1])

# The programs /init runs (besides python3, and the shell's builtins): the guest's initramfs
# keeps them and what they load (contents.py), so a program added to the script goes here too.
INIT_PROGRAMS = ("sh", "mount", "mkdir", "chmod", "cat", "uname", "stty", "wc", "sha256sum",
                 "cut", "sync", "poweroff", "sleep")

# PID 1 of every guest. POSIX sh (dash on Debian); only coreutils, mount and stty are used, all
# in every minbase root file system. It must never exit: the kernel would panic.
_INIT_TEMPLATE = r"""#!/bin/sh
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

cmdline=$(cat /proc/cmdline)
@READ_PARAMETERS@

say "running the probe ($build, helper budget ${budget}s) for $name on $(uname -r)"
out=/tmp/vdsomatrix-result.json
if [ "$build" = @RUNTIMES@ ]; then
    @RUNTIMES_COMMAND@ >"$out"
elif [ "$timens" = 1 ]; then
    @TIMENS_COMMAND@ >"$out"
else
    @PROBE_COMMAND@ >"$out"
fi
rc=$?
say "probe exited with status $rc"

# Raw mode: no newline translation on the way out, or the length and hash would not match.
stty -F "/dev/$port" raw -echo 2>/dev/null || say "stty failed; the host will undo CR-LF"
len=$(wc -c <"$out")
sum=$(sha256sum "$out" | cut -d' ' -f1)
{
    printf 'VDSOMATRIX-BEGIN v1 rc=%d len=%d sha256=%s\n' "$rc" "$len" "$sum"
    cat "$out"
    printf '\nVDSOMATRIX-END\n'
} >"/dev/$port"
say "result written ($len bytes)"
halt_guest
"""


def render_init_script() -> str:
    return (_INIT_TEMPLATE.replace("@READ_PARAMETERS@", READ_PARAMETERS.rstrip("\n"))
            .replace("@PROBE_COMMAND@", probe_command())
            .replace("@RUNTIMES_COMMAND@", probe_command(runtimes=True))
            .replace("@TIMENS_COMMAND@", probe_command(time_namespace=True))
            .replace("@RUNTIMES@", str(Build.RUNTIMES)))


INIT_SCRIPT = render_init_script()


# --- the result frame ------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """What was found on the result port.

    ``status``: "complete" (payload intact), "missing" (no header at all), "truncated" (the header
    promised more bytes than arrived, or the end marker is missing), "corrupt" (the bytes arrived
    but do not match their hash, the header is malformed, or the port carried more than
    :data:`PORT_LIMIT`). ``payload`` is set only when complete.
    """

    status: str
    payload: bytes | None = None
    rc: int | None = None
    problem: str = ""


def _find_header(data: bytes | bytearray, start: int = 0) -> int:
    """Offset of the first BEGIN marker at the start of a line at or after ``start``, or -1."""
    pos = data.find(BEGIN, start)
    while pos > 0 and data[pos - 1 : pos] != b"\n":
        pos = data.find(BEGIN, pos + 1)
    return pos


class FrameParser:
    """The first result frame in the bytes of the result port, fed as they arrive.

    Each byte is looked at once: the header is searched for in new bytes only, the payload is
    hashed as it arrives, and after it only :data:`TRAILER_WINDOW` bytes are kept. Bytes before
    the header are ignored (firmware or kernel noise on the port). The payload is taken by its
    announced length, so its content can never fake an end marker. If the header line ends in
    CR-LF, the guest's tty translated newlines despite being told not to: the translation is
    undone once, and the hash decides. Once the verdict cannot change any more (``decided``),
    further bytes are ignored.
    """

    def __init__(self, limit: int = PORT_LIMIT):
        self.limit = limit
        self.received = 0
        self._head = bytearray()  # the bytes up to the end of the header line
        self._searched = 0  # where in _head the search for the header goes on
        self._header_at = -1
        self._length: int | None = None
        self._rc: int | None = None
        self._digest = ""
        self._crlf = False
        self._held_cr = False  # a CR at the end of a chunk: its LF may come in the next one
        self._payload = bytearray()
        self._sha = hashlib.sha256()
        self._hash_ok: bool | None = None
        self._after = bytearray()
        self._verdict: Frame | None = None

    @property
    def decided(self) -> bool:
        return self._verdict is not None

    def feed(self, data: bytes) -> None:
        if self._verdict is not None or not data:
            return
        room = self.limit - self.received
        over = len(data) > room
        data = data[:room]
        self.received += len(data)
        if self._length is None:
            self._feed_head(data)
        else:
            self._feed_body(data)
        if over and self._verdict is None:
            self._verdict = Frame("corrupt", rc=self._rc, problem=(
                f"more than {self.limit >> 20} MiB on the result port without a complete result"))

    def _feed_head(self, data: bytes) -> None:
        self._head += data
        if self._header_at < 0:
            self._header_at = _find_header(self._head, self._searched)
            if self._header_at < 0:
                self._searched = max(0, len(self._head) - len(BEGIN))
                return
        start = self._header_at
        if self._head.find(b"\n", start, start + HEADER_MAX) < 0:
            if len(self._head) - start >= HEADER_MAX:
                self._malformed()
            return
        match = _HEADER.match(self._head, start)
        if not match:
            self._malformed()
            return
        self._rc, self._length = int(match["rc"]), int(match["len"])
        self._digest = match["sha"].decode()
        if self._length > MAX_PAYLOAD:
            self._verdict = Frame("corrupt", rc=self._rc,
                                  problem=f"result of {self._length} bytes announced: too big")
            return
        self._crlf = match[0].endswith(b"\r\n")
        rest = bytes(self._head[match.end() :])
        self._head = bytearray()
        self._feed_body(rest)

    def _malformed(self) -> None:
        line = bytes(self._head[self._header_at : self._header_at + 120]).split(b"\n", 1)[0]
        self._verdict = Frame("corrupt", problem=f"malformed result header {line[:100]!r}")

    def _feed_body(self, data: bytes) -> None:
        if self._crlf:
            if self._held_cr:
                data = b"\r" + data
            self._held_cr = data.endswith(b"\r")
            data = (data[:-1] if self._held_cr else data).replace(b"\r\n", b"\n")
        missing = self._length - len(self._payload)
        if missing:
            part = data[:missing]
            self._payload += part
            self._sha.update(part)
            data = data[missing:]
        if len(self._payload) < self._length:
            return
        if self._hash_ok is None:
            self._hash_ok = self._sha.hexdigest() == self._digest
            if not self._hash_ok:
                self._verdict = Frame("corrupt", rc=self._rc,
                                      problem="result does not match its sha256")
                return
        self._after += data[: TRAILER_WINDOW - len(self._after)]
        trailer = bytes(self._after).replace(b"\r", b"")
        if trailer.startswith(CLOSING):
            self._verdict = Frame("complete", payload=bytes(self._payload), rc=self._rc)
        elif not CLOSING.startswith(trailer):
            self._verdict = Frame("corrupt", rc=self._rc, problem="no end marker after the result")

    @property
    def complete(self) -> bool:
        """Whether the bytes so far hold a complete frame (the last newline may be missing)."""
        if self._verdict is not None:
            return self._verdict.status == "complete"
        return self._hash_ok is True and self._after.replace(b"\r", b"") == CLOSING[:-1]

    def frame(self) -> Frame:
        """The verdict on the bytes fed so far."""
        if self._verdict is not None:
            return self._verdict
        if self._length is None:
            if self._header_at >= 0:
                return Frame("truncated", problem="result header cut short")
            return Frame("missing", problem="no result header on the result port")
        if len(self._payload) < self._length:
            return Frame("truncated", rc=self._rc, problem=(
                f"result cut short: {len(self._payload)} of {self._length} bytes arrived"))
        if self.complete:
            return Frame("complete", payload=bytes(self._payload), rc=self._rc)
        return Frame("truncated", rc=self._rc, problem="result end marker cut short")


def parse_frame(data: bytes) -> Frame:
    """Check one result frame in the raw bytes of the result port; never raises."""
    parser = FrameParser()
    parser.feed(data)
    return parser.frame()


class ResultPort:
    """The file QEMU writes the result port to, read as it grows: new bytes only, each once,
    into a :class:`FrameParser`, and nothing after its verdict is decided."""

    CHUNK = 1 << 20

    def __init__(self, path: Path, limit: int = PORT_LIMIT):
        self.path = path
        self.parser = FrameParser(limit)
        self._file = None

    def poll(self) -> bool:
        """Read what arrived since the last call; True once a complete frame is there."""
        if self._file is None:
            try:
                self._file = open(self.path, "rb", buffering=0)
            except OSError:
                return False
        while not self.parser.decided:
            chunk = self._file.read(self.CHUNK)
            if not chunk:
                break
            self.parser.feed(chunk)
        return self.parser.complete

    def frame(self) -> Frame:
        self.poll()
        return self.parser.frame()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
