"""What a QEMU guest runs: its /init, and the kernel command line that configures it.

The guest's root file system is an initramfs made from a probe image (initramfs.py); the
kernel runs :data:`INIT_SCRIPT` as PID 1. It mounts proc, sys and devtmpfs, reads the
environment's name, the probe build, the helper's time budget and whether it runs in a new time
namespace from the kernel command line (``vdsomatrix.env=``, ``vdsomatrix.build=``,
``vdsomatrix.budget=``, ``vdsomatrix.timens=1``: names with a dot are never
passed on to init or confused with the kernel's own options), runs the probe with the command
line of :func:`vdsomatrix.contract.probe_argv`, writes its JSON to the result port (the second
serial port, ttyS1; on arm64 a 16550 on PCI, ttyS0, named by ``vdsomatrix.port=``), framed as
engine/frame.py reads it, and powers off.

Everything the guest prints otherwise (kernel messages, the probe's stderr) goes to the console
(ttyS0; ttyAMA0 on arm64), which the host keeps only as a log tail.
"""

from __future__ import annotations

import re

from vdsomatrix import contract
from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import BackendName, Build

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
# on PCI (the board's only 8250, so ttyS0), see backends/qemu.py's qemu_argv.
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
    # (backends/qemu.py, contract.resolve_artefacts), instead of a megabyte through the serial port.
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
# keeps them and what they load (initramfs_contents.py): a program added to the script goes
# here too.
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

