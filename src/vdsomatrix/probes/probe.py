#!/usr/bin/env python3
"""The in-environment half of vdsomatrix: collect facts, run the C helper, print one JSON document.

Standard library only, and Python 3.9 compatible (bullseye's python3): this file runs inside
every userland of the matrix, however old. It never fails as a whole: every fact it cannot read
becomes a line in "errors" and the rest of the document is still printed.

    python3 probe.py --helper PATH/vdsoprobe-dynamic --name ENV --backend BACKEND
    python3 probe.py --runtimes DIR --syscount PATH/syscount --name ENV --backend BACKEND

The second form is the runtime mode (issue 11): instead of the C helper, the language runtimes
found here (Java, Python, Node.js, Go, Rust) run the timing programs of DIR (probes/runtimes/),
each call timed in the runtime and its system calls counted with syscount ("runtimes" rows);
runtime_rows.py, next to this file, does that part.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import platform
import re
import shlex
import struct
import subprocess
import sys
import time
import zlib

# The runtime mode lives next to this file: run as a script, its folder is sys.path[0] (in the
# images, in QEMU guests and on the host alike).
import runtime_rows
from runtime_rows import dpkg_version

SCHEMA = "vdsomatrix/1"
AT_NULL, AT_BASE, AT_SYSINFO_EHDR, AT_HWCAP2 = 0, 7, 33, 26
AT_SYSINFO = 32  # i386 only: the address of the vDSO's __kernel_vsyscall
AUXV_NAMES = {3: "AT_PHDR", 6: "AT_PAGESZ", 7: "AT_BASE", 16: "AT_HWCAP", 17: "AT_CLKTCK",
              25: "AT_RANDOM", 26: "AT_HWCAP2", 32: "AT_SYSINFO", 33: "AT_SYSINFO_EHDR",
              51: "AT_MINSIGSTKSZ"}
# This process's word size: the kernel writes auxv in the process's own ABI (4-byte words for a
# 32-bit python3 in an i386 userland, even on a 64-bit kernel).
WORD = struct.calcsize("P")
X86_MACHINES = ("x86_64", "amd64", "i386", "i486", "i586", "i686")
ARM64_MACHINES = ("aarch64", "arm64")
NOT_THIS_ARCH = "not on this architecture"
MAX_ARTEFACT = 8 << 20  # the host analyses no more (analysis/artefacts.py); a libc is ~2 MB


# ----------------------------------------------------------------------------- parsers --------

def parse_auxv(data, word=None):
    """Auxiliary vector entries as {type: value} up to AT_NULL.

    ``word`` is the size of one auxv word, 8 or 4 bytes (default: this process's, WORD).
    A trailing partial entry is ignored and reported; a missing AT_NULL terminator is reported.
    """
    word = word or WORD
    if word not in (4, 8):
        raise ValueError("auxv word size must be 4 or 8, not %r" % (word,))
    problems = []
    entries = {}
    pair = 2 * word
    usable = len(data) - len(data) % pair
    if usable != len(data):
        problems.append("auxv: %d trailing bytes ignored (truncated entry)" % (len(data) - usable))
    fmt = "<QQ" if word == 8 else "<II"
    terminated = False
    for off in range(0, usable, pair):
        a_type, a_val = struct.unpack_from(fmt, data, off)
        if a_type == AT_NULL:
            terminated = True
            break
        entries.setdefault(a_type, a_val)
    if not terminated:
        problems.append("auxv: no AT_NULL terminator in %d bytes" % len(data))
    return entries, problems


def own_abi(machine, word=None):
    """This process's ABI, "x86_64" or "i386", from its word size on an x86 machine (uname says
    x86_64 to a 32-bit process on a 64-bit kernel); "aarch64" for a 64-bit process on arm64;
    None elsewhere (a 32-bit arm process is not one the matrix runs)."""
    if machine in ARM64_MACHINES:
        return "aarch64" if (word or WORD) == 8 else None
    if machine not in X86_MACHINES:
        return None
    return "x86_64" if (word or WORD) == 8 else "i386"


def parse_maps(text):
    """/proc/<pid>/maps lines as dicts; lines that do not parse are returned as problems."""
    mappings = []
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(None, 5)
        try:
            if len(fields) < 5:
                raise ValueError("too few fields")
            start_s, end_s = fields[0].split("-", 1)
            start, end = int(start_s, 16), int(end_s, 16)
            perms = fields[1]
            if end < start or len(perms) != 4:
                raise ValueError("bad range or permissions")
            mappings.append({
                "start": start, "end": end, "perms": perms,
                "offset": int(fields[2], 16), "dev": fields[3], "inode": int(fields[4]),
                "path": fields[5].strip() if len(fields) > 5 else "",
            })
        except ValueError as exc:
            problems.append("maps line %d unreadable (%s): %r" % (lineno, exc, line[:120]))
    return mappings, problems


def vsyscall_mode(mappings, machine=None):
    """The vsyscall mode as /proc/self/maps shows it.

    r-x: the page is readable and calls are emulated ("emulate"; the old "native" mode, removed
    in Linux 4.4, looked the same); --x: execute-only emulation ("xonly", upstream's default since
    5.3); no [vsyscall] line: "none". Off x86 (``machine`` not an x86 one) there is no vsyscall
    page to switch off: None, not "none".
    """
    if machine is not None and machine not in X86_MACHINES:
        return None
    for m in mappings:
        if m["path"] == "[vsyscall]":
            if m["perms"].startswith("r"):
                return "emulate"
            if m["perms"][2] == "x":
                return "xonly"
            return "unknown (%s)" % m["perms"]
    return "none"


def parse_os_release(text):
    info = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        info[key] = words[0] if words else ""
    return info


# ----------------------------------------------------------------------------- collectors -----

def read_text(path, errors, limit=1 << 20):
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError as exc:
        errors.append("cannot read %s: %s" % (path, exc.strerror or exc))
        return None


def read_memory(start, size):
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        mem.seek(start)
        return mem.read(size)


def cpuinfo_first_block(text):
    """The first processor's fields of /proc/cpuinfo text ({"vendor_id": ..., "flags": ...}):
    every other processor repeats them. Read once, for both cpu_info and cpu_security."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the blank line after the first processor's block
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields


def arm64_cpu_model(cpuinfo):
    """arm64's /proc/cpuinfo has no "model name": its MIDR fields, as the kernel prints them
    ("implementer 0x41 part 0xd0c r0p1"), or None."""
    implementer, part = cpuinfo.get("CPU implementer"), cpuinfo.get("CPU part")
    if not implementer or not part:
        return None
    return ("implementer %s part %s r%sp%s" % (
        implementer, part, cpuinfo.get("CPU variant", "?").replace("0x", ""),
        cpuinfo.get("CPU revision", "?")))[:200]


def cpu_info(cpuinfo):
    """``cpuinfo``: the first processor's fields (cpuinfo_first_block)."""
    wanted = {"constant_tsc", "nonstop_tsc", "tsc_known_freq", "rdtscp", "hypervisor", "tsc",
              "vsyscall"}
    if "model name" not in cpuinfo and "CPU implementer" in cpuinfo:  # arm64
        return {"model": arm64_cpu_model(cpuinfo), "vendor": cpuinfo.get("CPU implementer"),
                "flags": [], "count": os.cpu_count()}
    return {"model": cpuinfo.get("model name"), "vendor": cpuinfo.get("vendor_id"),
            "flags": sorted(set(cpuinfo.get("flags", "").split()) & wanted),
            "count": os.cpu_count()}


def clocksource(errors):
    base = "/sys/devices/system/clocksource/clocksource0/"
    current = read_text(base + "current_clocksource", errors)
    available = read_text(base + "available_clocksource", errors)
    return (current or "").strip() or None, (available or "").split()


VULNERABILITIES = "/sys/devices/system/cpu/vulnerabilities"
SMALL_READ = 4096  # every cpu_security file is a line; an environment cannot make us read more
MAX_VULNERABILITIES = 64  # 6.18 lists ~25
MAX_BUGS = 64


def mitigations_word(cmdline):
    """The value of the last ``mitigations=`` word of a kernel command line (the kernel parses
    them in order, so the last wins), or None: the kernel's built-in default."""
    value = None
    for word in cmdline.split():
        if word.startswith("mitigations="):
            value = word[len("mitigations="):]
    return value


def cpu_security(cmdline, cpuinfo):
    """What the running kernel says of the CPU's vulnerabilities and its mitigations
    (``cpuinfo``: the first processor's fields of /proc/cpuinfo, cpuinfo_first_block).

    In a container these are the host kernel's, which is right: the container runs on it. Each
    file is read up to SMALL_READ bytes and at most MAX_VULNERABILITIES of them; nothing here
    goes to "errors" (an old kernel without the folder is a fact, given as the reason).
    """
    facts = {"vulnerabilities": None, "vulnerabilities_reason": None,
             "mitigations_cmdline": mitigations_word(cmdline), "cmdline_source": "/proc/cmdline",
             "hypervisor": None, "cpu_vendor": None, "cpu_model": None, "cpu_bugs": None}
    try:
        names = sorted(os.listdir(VULNERABILITIES))
    except OSError as exc:
        names = None
        facts["vulnerabilities_reason"] = "cannot list %s: %s%s" % (
            VULNERABILITIES, exc.strerror or exc,
            " (the kernel predates 4.15, or /sys is not mounted)"
            if exc.errno == errno.ENOENT else "")
    if names is not None:
        found, unread = {}, []
        for entry in names[:MAX_VULNERABILITIES]:
            text = read_text(os.path.join(VULNERABILITIES, entry), unread, SMALL_READ)
            if text is not None:
                found[entry[:100]] = text.strip()
        facts["vulnerabilities"] = found
        notes = unread[:3]
        if len(names) > MAX_VULNERABILITIES:
            notes.append("%d files, only the first %d read" % (len(names), MAX_VULNERABILITIES))
        facts["vulnerabilities_reason"] = "; ".join(notes) or None
    if "vendor_id" in cpuinfo:
        facts["cpu_vendor"] = cpuinfo["vendor_id"][:200]
    if "model name" in cpuinfo:
        facts["cpu_model"] = cpuinfo["model name"][:200]
    if "flags" in cpuinfo:
        facts["hypervisor"] = "hypervisor" in cpuinfo["flags"].split()
    if "bugs" in cpuinfo:
        facts["cpu_bugs"] = cpuinfo["bugs"].split()[:MAX_BUGS]
    return facts


# Time namespaces (Linux 5.6): the helper can run with CLOCK_MONOTONIC and CLOCK_BOOTTIME
# shifted, which makes the vDSO read its clocks through the namespace's own vvar page.
CLONE_NEWTIME = 0x80
CLONE_NEWUSER = 0x10000000
TIMENS_OFFSETS_NS = {"monotonic": 10 * 86400 * 10**9, "boottime": 20 * 86400 * 10**9}
NO_TIMENS = "not offered by this kernel: no /proc/self/ns/time (Linux 5.6 added time namespaces)"
# What a child process prints: its two shifted clocks, in nanoseconds.
_CHILD_CLOCKS = ("import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC), "
                 "time.clock_gettime_ns(time.CLOCK_BOOTTIME))")


def _unshare(flags):
    """unshare(2) through libc (os.unshare is Python 3.12+); an OSError when refused."""
    import ctypes  # only here: a probe that is not asked for a namespace never loads it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _map_own_ids():
    """In a new user namespace, map this process's uid and gid to themselves (the one mapping
    an unprivileged process may write), so that its children are not the overflow uid, which
    may create no file. None when done, else why not (not fatal: the clocks do not need it)."""
    uid, gid = os.geteuid(), os.getegid()
    problems = []
    for path, text in (("/proc/self/uid_map", "%d %d 1\n" % (uid, uid)),
                       ("/proc/self/setgroups", "deny\n"),
                       ("/proc/self/gid_map", "%d %d 1\n" % (gid, gid))):
        try:
            _write(path, text)
        except OSError as exc:
            problems.append("cannot write %s: %s" % (path, exc.strerror or exc))
    return "; ".join(problems) or None


def _errname(exc):
    return errno.errorcode.get(exc.errno, "errno %s" % exc.errno)


def enter_time_namespace():
    """Put this process's future children in a new time namespace with MONOTONIC shifted by
    10 days and BOOTTIME by 20, and check in a child that they are. Never raises.

    Root (a guest's /init) unshares the time namespace alone; anyone else needs a user
    namespace with it (CLONE_NEWUSER|CLONE_NEWTIME in one call: the only unshare the
    containers' seccomp profile lets through). This process stays in its own time namespace:
    only its children enter the new one, the first of them fixing the offsets.
    """
    result = {"requested": True, "entered": False, "how": None, "reason": None,
              "offsets_ns": dict(TIMENS_OFFSETS_NS), "observed_shift_ns": None,
              "offsets_applied": False}
    try:
        if not os.path.exists("/proc/self/ns/time"):
            result["reason"] = NO_TIMENS
            return result
        tries = [(CLONE_NEWUSER | CLONE_NEWTIME, "unshare(CLONE_NEWUSER|CLONE_NEWTIME)")]
        if os.geteuid() == 0:  # root without CAP_SYS_ADMIN still gets the second form
            tries.insert(0, (CLONE_NEWTIME, "unshare(CLONE_NEWTIME)"))
        refused = []
        for flags, how in tries:
            try:
                _unshare(flags)
            except OSError as exc:
                refused.append("%s (%s) for %s" % (_errname(exc), exc.strerror, how))
                continue
            result["entered"], result["how"] = True, how
            if flags & CLONE_NEWUSER:
                result["id_map_problem"] = _map_own_ids()
            break
        if not result["entered"]:
            result["reason"] = "unshare refused: " + "; ".join(refused)
            return result
        try:
            _write("/proc/self/timens_offsets", "monotonic %d 0\nboottime %d 0\n" % (
                TIMENS_OFFSETS_NS["monotonic"] // 10**9, TIMENS_OFFSETS_NS["boottime"] // 10**9))
        except OSError as exc:
            result["reason"] = ("cannot write /proc/self/timens_offsets: %s (%s); the children "
                                "run in the namespace unshifted" % (_errname(exc), exc.strerror))
            return result
        result.update(verify_time_namespace())
    except Exception as exc:  # noqa: BLE001 - the probe must print its document whatever happens
        result["reason"] = "time namespace set-up failed: %s: %s" % (type(exc).__name__, exc)
    return result


def verify_time_namespace():
    """Whether a child sees the offsets: its MONOTONIC and BOOTTIME must lie between this
    process's readings just before and just after it ran, each plus the offset."""
    clocks = (time.CLOCK_MONOTONIC, time.CLOCK_BOOTTIME)
    before = [time.clock_gettime_ns(c) for c in clocks]
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD_CLOCKS],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        after = [time.clock_gettime_ns(c) for c in clocks]
        child = [int(word) for word in done.stdout.split()[:2]]
        if done.returncode != 0 or len(child) != 2:
            raise ValueError("exit status %d, %r" % (done.returncode,
                                                     done.stderr[-200:].decode("utf-8", "replace")))
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"reason": "cannot check the offsets in a child process: %s" % exc}
    shifts, applied = {}, True
    for i, name in enumerate(("monotonic", "boottime")):
        # The shift as seen: the child's clock less the parent's before it started (the offset
        # plus the child's start-up, at most the bracket's width more).
        shifts[name] = child[i] - before[i]
        offset = TIMENS_OFFSETS_NS[name]
        applied = applied and before[i] + offset <= child[i] <= after[i] + offset
    out = {"observed_shift_ns": shifts, "offsets_applied": applied,
           "bracket_ns": after[0] - before[0]}
    if not applied:
        out["reason"] = "the child's clocks are not shifted by the offsets written"
    return out


# --artefacts-by-digest (the QEMU guests): artefacts carry their digest, not their bytes.
ARTEFACTS_BY_DIGEST = False


def artefact(path, role, errors):
    """A file shipped back compressed for the host's analysis (pyelftools and capstone there).

    The probe stays stdlib-only and small, so it reads no ELF itself: the host analyses the
    bytes, and the analysis can be redone from the result file without re-probing.

    With ARTEFACTS_BY_DIGEST the bytes stay here: the host holds a copy of every file of this
    environment (a guest's initramfs is made on the host) and takes that copy when its SHA-256
    and size equal these, sparing a serial port a megabyte and an emulated CPU the compression.
    "file" is the path with every symbolic link resolved: the copy's name in the host's archive.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_ARTEFACT + 1)
    except OSError as exc:
        errors.append("cannot read %s for analysis: %s" % (path, exc.strerror or exc))
        return {"path": path, "role": role, "error": str(exc)}
    if len(data) > MAX_ARTEFACT:
        return {"path": path, "role": role, "error": "larger than %d bytes" % MAX_ARTEFACT}
    out = {"path": path, "role": role, "size": len(data),
           "sha256": hashlib.sha256(data).hexdigest()}
    if ARTEFACTS_BY_DIGEST:
        out["by_digest"] = True
        out["file"] = os.path.realpath(path)
    else:
        out["zlib_base64"] = base64.b64encode(zlib.compress(data, 9)).decode("ascii")
    return out


def run_helper(helper, errors, timeout, args=()):
    try:
        proc = subprocess.run([helper, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        errors.append("helper %s did not finish within %d s" % (helper, timeout))
        return None
    except OSError as exc:
        errors.append("cannot run helper %s: %s" % (helper, exc.strerror or exc))
        return None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        how = ("killed by signal %d" % -proc.returncode if proc.returncode < 0
               else "exited %d" % proc.returncode)
        errors.append("helper %s %s: %s" % (helper, how, " | ".join(tail)))
        return None
    try:
        return json.loads(proc.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        errors.append("helper %s printed no valid JSON: %s" % (helper, exc))
        return None


# The helper's correctness checks (correctness.c): their time budget in ms. The checks stop by
# time, not by count, so a guest under TCG makes fewer of them in about the same time.
CORRECTNESS_BUDGET_MS = 300


def correctness(helper, errors, timeout):
    """The helper's `--correctness` run: agreement of the paths, across CPUs, error paths."""
    out = run_helper(helper, errors, min(timeout, 120),
                     ("--correctness", str(CORRECTNESS_BUDGET_MS)))
    found = out.get("correctness") if isinstance(out, dict) else None
    if out is not None and not isinstance(found, dict):
        errors.append("helper %s --correctness printed no correctness object: rebuild it with "
                      "probes/build.sh" % helper)
    return found if isinstance(found, dict) else None


def own_libc(mappings, auxv):
    """This Python's libc and loader, from its own mappings (the runtime mode runs no C helper)."""
    libc = {"name": None, "version": None, "linkage": "dynamic" if auxv.get(AT_BASE) else "static"}
    for m in mappings:
        base = os.path.basename(m["path"])
        if "path" not in libc and (base == "libc.so.6" or re.match(r"libc-[0-9.]+\.so$", base) or
                                   base.startswith("ld-musl-") or base.startswith("libc.musl-")):
            libc["path"] = m["path"]
        if auxv.get(AT_BASE) and m["start"] == auxv[AT_BASE] and m["path"].startswith("/"):
            libc["ldso_path"] = m["path"]
    try:
        confstr = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        confstr = None
    if confstr and confstr.startswith("glibc "):
        libc["name"], libc["version"] = "glibc", confstr.split()[1]
        libc["version_source"] = "os.confstr(CS_GNU_LIBC_VERSION) in python3"
    elif "ld-musl" in libc.get("path", "") or "musl" in libc.get("path", ""):
        libc["name"] = "musl"
        version = dpkg_version("musl")
        if version:
            libc["version"] = version.split("-")[0]
            libc["version_source"] = "dpkg: musl %s" % version
    return libc


# The smallest i386 program: an ELF32 header, one PT_LOAD segment, and exit(0) through
# int $0x80 (mov $1, %eax; xor %ebx, %ebx; int $0x80). Whether this kernel runs 32-bit code is
# found out by running it, not by reading the kernel's configuration: ia32_emulation=0 (6.7+)
# or a kernel without IA32 emulation refuses the exec with ENOEXEC.
I386_LOAD = 0x08048000
I386_CODE = bytes.fromhex("b801000000" "31db" "cd80")
I386_EXIT0 = (
    b"\x7fELF\x01\x01\x01" + bytes(9)
    + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, I386_LOAD + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    + struct.pack("<IIIIIIII", 1, 0, I386_LOAD, I386_LOAD, 84 + len(I386_CODE),
                  84 + len(I386_CODE), 5, 0x1000)
    + I386_CODE
)


def ia32_exec(errors):
    """Whether a 32-bit program runs here: {"runs": bool, "error": text or None}.

    The program is written to a memfd and run through /proc/self/fd, so a /tmp mounted noexec
    (the containers' is) does not decide the answer. None in a 32-bit process (it is one).
    """
    if WORD == 4 or os.uname().machine not in X86_MACHINES:
        return None  # off x86 there is no 32-bit x86 code to run
    try:
        fd = os.memfd_create("vdsomatrix-i386-exit0", 0)
    except (AttributeError, OSError) as exc:
        errors.append("ia32 check: no memfd (%s)" % exc)
        return None
    try:
        os.write(fd, I386_EXIT0)
        done = subprocess.run(["/proc/self/fd/%d" % fd], pass_fds=(fd,), timeout=10,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, "errno %s" % exc.errno)
        return {"runs": False, "error": "%s: %s" % (name, exc.strerror)}
    except subprocess.TimeoutExpired:
        return {"runs": False, "error": "did not exit within 10 s"}
    finally:
        os.close(fd)
    if done.returncode == 0:
        return {"runs": True, "error": None}
    how = ("killed by signal %d" % -done.returncode if done.returncode < 0
           else "exited %d" % done.returncode)
    return {"runs": False, "error": "the exec worked, the program " + how}


def read_auxv_and_maps(errors):
    """This process's auxiliary vector (as a dict) and its mappings."""
    auxv_raw = b""
    try:
        with open("/proc/self/auxv", "rb") as fh:
            auxv_raw = fh.read()
    except OSError as exc:
        errors.append("cannot read /proc/self/auxv: %s" % (exc.strerror or exc))
    auxv, problems = parse_auxv(auxv_raw, WORD)
    errors.extend(problems)
    maps_text = read_text("/proc/self/maps", errors) or ""
    mappings, problems = parse_maps(maps_text)
    errors.extend(problems)
    return auxv, mappings


def environment_facts(name, backend, uname, errors):
    """The "environment" of the document, before the helper has run (libc: None)."""
    os_release = parse_os_release(read_text("/etc/os-release", []) or
                                  read_text("/usr/lib/os-release", errors) or "")
    cmdline = (read_text("/proc/cmdline", errors) or "").strip()
    cpuinfo = cpuinfo_first_block(read_text("/proc/cpuinfo", errors) or "")
    current_cs, available_cs = clocksource(errors)
    return {
        "name": name,
        "backend": backend,
        "userland": {
            "id": os_release.get("ID"), "version_id": os_release.get("VERSION_ID"),
            "codename": os_release.get("VERSION_CODENAME"),
            "pretty_name": os_release.get("PRETTY_NAME"),
        },
        "python": platform.python_version(),
        "abi": own_abi(uname.machine),  # the helper's own, once it has run
        "libc": None,
        "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine,
                   "cmdline": cmdline, "clocksource": current_cs,
                   "available_clocksources": available_cs},
        "cpu": cpu_info(cpuinfo),
        "accel": None,  # filled in by the backend that knows (qemu: kvm or tcg)
        "ia32": ia32_exec(errors),
        "cpu_security": cpu_security(cmdline, cpuinfo),
    }


def vdso_facts(auxv, mappings, errors):
    """The "vdso" of the document: where AT_SYSINFO_EHDR says it is, and its image."""
    base = auxv.get(AT_SYSINFO_EHDR)
    vdso_maps = [m for m in mappings if m["path"] == "[vdso]"]
    vdso = {"present": bool(base), "base": base, "size": None, "image": None,
            "source": "AT_SYSINFO_EHDR in /proc/self/auxv",
            "mapped": bool(vdso_maps), "vvar_mapped": any(m["path"] == "[vvar]" for m in mappings),
            # i386: where AT_SYSINFO says __kernel_vsyscall is (a 64-bit process gets none)
            "kernel_vsyscall_address": ("%#x" % auxv[AT_SYSINFO]) if auxv.get(AT_SYSINFO)
            else None}
    if not base:
        return vdso
    region = [m for m in vdso_maps if m["start"] == base]
    if not region:
        errors.append("AT_SYSINFO_EHDR=%#x but no [vdso] mapping starts there" % base)
        return vdso
    size = region[0]["end"] - region[0]["start"]
    vdso["size"] = size
    try:
        vdso["image"] = base64.b64encode(read_memory(base, size)).decode("ascii")
    except OSError as exc:
        errors.append("cannot copy the vDSO out of memory: %s" % (exc.strerror or exc))
    return vdso


def vsyscall_facts(mappings, machine):
    """The "vsyscall" of the document as the maps show it; the helper fills in the rest."""
    vsyscall = {"mode": vsyscall_mode(mappings, machine), "readable": None, "callable": None,
                "maps": next(("%s %s" % (m["perms"], m["path"]) for m in mappings
                              if m["path"] == "[vsyscall]"), None)}
    if machine not in X86_MACHINES:
        vsyscall["reason"] = NOT_THIS_ARCH
    return vsyscall


def helper_libc(helper_out):
    """The helper's libc, with the musl version it cannot tell itself from dpkg."""
    libc = helper_out.get("libc") or {}
    if libc.get("name") == "musl" and not libc.get("version"):
        version = dpkg_version("musl")
        if version:
            libc["version"] = version.split("-")[0]
            libc["version_source"] = "dpkg: musl %s" % version
    elif libc.get("version"):
        libc["version_source"] = "gnu_get_libc_version()"
    return libc


def ship_libc_and_loader(doc, libc, fallback, errors):
    """The libc's bytes (``fallback``, the probe binary, when it has no file of its own) and
    the loader's, where glibc looks most vDSO symbols up (not when the loader is the libc itself:
    musl's ld-musl is its libc.so)."""
    if libc.get("path"):
        doc["artefacts"]["libc"] = artefact(libc["path"], "shared-object", errors)
    elif fallback:
        doc["artefacts"]["libc"] = artefact(fallback, "probe-binary", errors)
    ldso = libc.get("ldso_path")
    if isinstance(ldso, str) and ldso and not (
            libc.get("path") and os.path.realpath(ldso) == os.path.realpath(libc["path"])):
        doc["artefacts"]["ldso"] = artefact(ldso, "dynamic-loader", errors)


def apply_helper(doc, helper, helper_out, errors):
    """What the C helper printed, into the document."""
    libc = helper_libc(helper_out)
    doc["environment"]["libc"] = libc
    abi = helper_out.get("abi")
    if abi:
        if doc["environment"]["abi"] and abi != doc["environment"]["abi"]:
            errors.append("the helper's ABI (%s) is not this python3's (%s): auxv and the "
                          "vDSO image are python3's" % (abi, doc["environment"]["abi"]))
        doc["environment"]["abi"] = abi
    doc["calls"] = helper_out.get("calls", [])
    doc["entry_costs"] = helper_out.get("entry_costs", [])
    doc["vdso_getrandom"] = helper_out.get("vdso_getrandom")
    doc["method"] = helper_out.get("method")
    doc["method"]["pinned_cpu"] = helper_out.get("pinned_cpu")
    read = helper_out.get("vsyscall_read") or {}
    doc["vsyscall"]["readable"] = read.get("readable")
    doc["vsyscall"]["read_signal"] = read.get("signal")
    calls = [c for c in doc["calls"] if c.get("path") == "vsyscall"]
    if calls:
        doc["vsyscall"]["callable"] = all(c.get("status") == "ok" for c in calls)
    # A static helper is its libc (linked in), and has no loader.
    dynamic = libc.get("linkage") == "dynamic"
    ship_libc_and_loader(doc, libc if dynamic else {}, os.path.realpath(helper), errors)


def python_libc(doc, mappings, auxv, errors):
    """No C helper (runtime mode): the libc (and loader) this Python loaded stand for the
    environment's, so that the host's analysis of libc and the loader still has its bytes."""
    libc = own_libc(mappings, auxv)
    doc["environment"]["libc"] = libc
    if not libc.get("path"):
        errors.append("runtime mode: no libc found in this Python's mappings")
    ship_libc_and_loader(doc, libc, None, errors)


def collect(helper, name, backend, helper_timeout, runtimes=None, syscount=None,
            time_namespace=False):
    errors = []
    started = time.monotonic()
    doc = {"schema": SCHEMA, "errors": errors}
    uname = os.uname()
    auxv, mappings = read_auxv_and_maps(errors)
    doc["environment"] = environment_facts(name, backend, uname, errors)
    doc["vdso"] = vdso_facts(auxv, mappings, errors)
    doc["vsyscall"] = vsyscall_facts(mappings, uname.machine)
    doc["auxv"] = {AUXV_NAMES.get(k, str(k)): v for k, v in sorted(auxv.items())
                   if k in AUXV_NAMES}
    doc["calls"] = []
    doc["artefacts"] = {}
    if time_namespace:
        # After every fact above (they are this process's own) and before the first child:
        # the helper (or the runtimes) then run in the new namespace.
        doc["environment"]["time_namespace"] = enter_time_namespace()
    helper_out = run_helper(helper, errors, helper_timeout) if helper else None
    if helper:
        # What is left of the helper's budget (the run above may have used most of it).
        left = max(5, int(helper_timeout - (time.monotonic() - started)))
        doc["correctness"] = correctness(helper, errors, left)
    if helper is None and runtimes is None:
        errors.append("no helper given: latency rows not measured")
    if helper_out is not None:
        apply_helper(doc, helper, helper_out, errors)
    if runtimes is not None:
        if helper_out is None:
            python_libc(doc, mappings, auxv, errors)
        budget = max(1.0, helper_timeout - (time.monotonic() - started))
        doc["runtimes"], doc["runtimes_method"] = runtime_rows.collect(runtimes, syscount,
                                                                       budget, errors)
    return doc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helper", help="path of the compiled vdsoprobe helper (optional "
                        "with --runtimes)")
    parser.add_argument("--runtimes", metavar="DIR", help="runtime mode: the timing programs "
                        "and manifest.json of probes/runtimes, built (runtimes rows)")
    parser.add_argument("--syscount", metavar="PATH", help="the system-call counter (syscount) "
                        "that counts the runtime rows' system calls")
    parser.add_argument("--name", default="unnamed", help="environment name to record")
    parser.add_argument("--backend", default="host", help="backend name to record")
    parser.add_argument("--helper-timeout", type=int, default=240,
                        help="seconds for the C helper, or for the whole runtime mode")
    parser.add_argument("--time-namespace", action="store_true", help="run the helper in a "
                        "new time namespace, MONOTONIC +10 days and BOOTTIME +20 days")
    parser.add_argument("--artefacts-by-digest", action="store_true", help="ship the libc and "
                        "loader by SHA-256 and size only: the host has a copy of them")
    args = parser.parse_args(argv)
    global ARTEFACTS_BY_DIGEST
    ARTEFACTS_BY_DIGEST = args.artefacts_by_digest
    runtimes = os.path.abspath(args.runtimes) if args.runtimes else None
    doc = collect(args.helper, args.name, args.backend, args.helper_timeout, runtimes,
                  args.syscount, args.time_namespace)
    json.dump(doc, sys.stdout, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
