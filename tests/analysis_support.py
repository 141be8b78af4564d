"""Helpers for the binary-analysis tests: real inputs made at test time, objdump as the oracle.

Nothing here is committed binary data: the vDSO is copied out of this very process, the static
binaries are compiled into a temporary folder once per test run, and ``objdump`` (binutils) is
the independent reference the analysis must agree with.
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest

AT_SYSINFO_EHDR = 33
HOST_LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")

PROGRAM = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec ts;
    struct timeval tv;
    if (argc > 5) /* a vDSO name the program itself mentions, as the probe's own lookups do */
        puts("__vdso_time");
    clock_gettime(CLOCK_MONOTONIC, &ts);
    gettimeofday(&tv, NULL);
    printf("%ld %ld %ld\n", (long)syscall(SYS_getpid), (long)time(NULL), (long)ts.tv_sec);
    return argv[0] == NULL;
}
"""


def need(tool: str) -> str:
    """Path of a tool the test needs; skip without it, but fail in CI (env var CI set)."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):  # as conftest.py
            pytest.fail(f"{message} (CI is set: this machine must provide it)", pytrace=False)
        pytest.skip(message)
    return path


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="vdsomatrix-analysis-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def host_vdso() -> bytes:
    """The vDSO of this process: AT_SYSINFO_EHDR from auxv, size from maps, bytes from mem."""
    auxv = Path("/proc/self/auxv").read_bytes()
    base = None
    for i in range(0, len(auxv) - 15, 16):
        key, value = struct.unpack_from("<QQ", auxv, i)
        if key == AT_SYSINFO_EHDR:
            base = value
    if not base:
        pytest.skip("this kernel maps no vDSO (no AT_SYSINFO_EHDR)")
    size = None
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("[vdso]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start == base:
                size = end - start
    assert size, "AT_SYSINFO_EHDR points at no [vdso] mapping"
    with open("/proc/self/mem", "rb") as mem:
        mem.seek(base)
        return mem.read(size)


@functools.cache
def host_vdso_file() -> Path:
    path = _workdir() / "vdso.so"
    path.write_bytes(host_vdso())
    return path


@functools.cache
def _build(compiler: str, name: str) -> Path:
    cc = need(compiler)
    src = _workdir() / "probe.c"
    src.write_text(PROGRAM)
    out = _workdir() / name
    proc = subprocess.run([cc, "-O2", "-static", "-o", str(out), str(src)],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"{compiler} -static failed: {proc.stderr[-2000:]}")
    return out


def static_glibc() -> Path:
    return _build("gcc", "probe-static-glibc")


def static_musl() -> Path:
    return _build("musl-gcc", "probe-static-musl")


@functools.cache
def stripped_musl() -> Path:
    out = _workdir() / "probe-static-musl-stripped"
    subprocess.run([need("strip"), "-o", str(out), str(static_musl())], check=True, timeout=60)
    return out


# An IFUNC shaped like glibc 2.41's time() / gettimeofday(): the resolver returns the pointer
# ld.so left in GLRO(dl_vdso_*) (a field of _rtld_global_ro, reached through the GOT), or, when
# that is NULL, libc code that makes the system call. HOME names the object it reads.
IFUNC_LIBRARY = r"""
struct home { char pad[0x310]; void *vdso_time; void *vdso_gettimeofday; };
extern struct home HOME;

static long time_syscall(long *t)
{
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "0"(201L), "D"(t) : "rcx", "r11", "memory");
    return r;
}

static long gettimeofday_syscall(void *tv, void *tz)
{
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "0"(96L), "D"(tv), "S"(tz) : "rcx", "r11", "memory");
    return r;
}

static void *time_resolver(void)
{
    void *p = HOME.vdso_time;
    return p ? p : (void *)time_syscall;
}

static void *gettimeofday_resolver(void)
{
    void *p = HOME.vdso_gettimeofday;
    return p ? p : (void *)gettimeofday_syscall;
}

long time(long *) __attribute__((ifunc("time_resolver")));
long gettimeofday(void *, void *) __attribute__((ifunc("gettimeofday_resolver")));
"""


@functools.cache
def ifunc_library(home: str = "_rtld_global_ro") -> Path:
    """A shared object whose time/gettimeofday IFUNC resolvers return ``home``'s pointers."""
    cc = need("gcc")
    src = _workdir() / f"ifunc-{home}.c"
    src.write_text(IFUNC_LIBRARY.replace("HOME", home))
    out = _workdir() / f"libifunc-{home}.so"
    proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"gcc -shared failed: {proc.stderr[-2000:]}")
    return out


def host_ldso() -> Path:
    """The dynamic loader this machine's dynamic programs run under (PT_INTERP, resolved)."""
    path = Path("/lib64/ld-linux-x86-64.so.2")
    if not path.exists():
        pytest.skip(f"{path} does not exist on this machine")
    return path.resolve()


def libc_artefact(path: Path, role: str) -> dict:
    data = path.read_bytes()
    return {"path": str(path), "role": role, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "zlib_base64": base64.b64encode(zlib.compress(data, 6)).decode("ascii")}


def make_doc(name: str = "host", vdso: bytes | None = None, libc: Path | None = None,
             role: str = "shared-object", libc_name: str = "glibc",
             linkage: str = "dynamic", ldso: Path | None = None) -> dict:
    """A result document shaped like the probe's, around the given bytes."""
    doc: dict = {
        "schema": "vdsomatrix/1",
        "environment": {"name": name, "libc": {"name": libc_name, "version": "test",
                                               "linkage": linkage}},
        "vdso": {"present": vdso is not None, "size": None if vdso is None else len(vdso),
                 "image": None if vdso is None else base64.b64encode(vdso).decode("ascii")},
        "artefacts": {},
        "errors": [],
    }
    if libc is not None:
        doc["artefacts"]["libc"] = libc_artefact(libc, role)
    if ldso is not None:
        doc["artefacts"]["ldso"] = libc_artefact(ldso, "dynamic-loader")
    return doc


# -- objdump as the oracle ----------------------------------------------------------------------

_T_LINE = re.compile(r"^([0-9a-f]+) (.{7}) (\S+)\t([0-9a-f]+)\s+(.*)$")
_D_LINE = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")


def objdump_T(path: Path) -> list[dict]:
    """``objdump -T`` rows: value, binding, type letter, section, size, version, hidden, name."""
    out = subprocess.run([need("objdump"), "-T", str(path)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    rows = []
    started = False
    for line in out.splitlines():
        if line.startswith("DYNAMIC SYMBOL TABLE"):
            started = True
            continue
        m = _T_LINE.match(line) if started else None
        if not m:
            continue
        value, flags, section, size, rest = m.groups()
        words = rest.split()
        version, name = (words[0], words[1]) if len(words) == 2 else (None, words[0])
        hidden = bool(version) and version.startswith("(") and version.endswith(")")
        if hidden:
            version = version[1:-1]
        if flags[1] == "w":
            binding = "WEAK"
        else:
            binding = {"l": "LOCAL", "g": "GLOBAL", "u": "GNU_UNIQUE", "!": "?"}.get(flags[0])
        rows.append({"value": int(value, 16), "binding": binding,
                     "ifunc": flags[4] == "i", "kind": flags[6], "section": section,
                     "size": int(size, 16), "version": version, "hidden": hidden, "name": name})
    return rows


def type_letter(sym_type: str) -> str:
    """The last objdump flag character for a symbol type."""
    return {"FUNC": "F", "GNU_IFUNC": "F", "OBJECT": "O", "FILE": "f"}.get(sym_type, " ")


def objdump_entry_sites(path: Path, start: int | None = None, stop: int | None = None,
                        ) -> dict[int, str]:
    """Address -> kind of every syscall / sysenter / int $0x80 that ``objdump -d`` shows."""
    cmd = [need("objdump"), "-d", "-w", "--no-show-raw-insn", str(path)]
    if start is not None:
        cmd.append(f"--start-address={start:#x}")
    if stop is not None:
        cmd.append(f"--stop-address={stop:#x}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    sites = {}
    for line in out.splitlines():
        m = _D_LINE.match(line)
        if not m:
            continue
        text = m.group(2).split("#", 1)[0].strip()
        words = text.split()
        if not words:
            continue
        if words[-1] == "syscall" and len(words) <= 3:
            sites[int(m.group(1), 16)] = "syscall"
        elif words[-1] == "sysenter" and len(words) <= 3:
            sites[int(m.group(1), 16)] = "sysenter"
        elif re.fullmatch(r"(\S+ )*int\s+\$0x80", text):
            sites[int(m.group(1), 16)] = "int80"
    return sites


def analysis_sites(libc_analysis: dict) -> dict[int, str]:
    """Address -> kind of every site the libc analysis found (from its function list)."""
    return {site["address"]: site["kind"]
            for fn in libc_analysis["functions"] for site in fn["sites"]}


# -- hostile input ------------------------------------------------------------------------------

FLOOD_BASE = 0x400000
FLOOD_TEXT = 0x1000  # file offset (and offset from FLOOD_BASE) of .text


def syscall_flood(size: int, every: int = 0, dynamic: bool = False) -> tuple[bytes, int]:
    """An x86-64 ELF of at most ``size`` bytes whose .text is nothing but ``0f 05`` (syscall),
    and the number of syscall instructions in it.

    With ``every``, a sized FUNC symbol starts every ``every`` bytes of code (in .dynsym when
    ``dynamic``, as a vDSO has them, else .symtab): as many as fit, so that the symbol tables
    and the code share the size. The first ones are named like the entry points.
    """
    shstrtab = b"\0.text\0.symtab\0.strtab\0.shstrtab\0.dynsym\0"
    overhead = FLOOD_TEXT + len(shstrtab) + 8 + 5 * 64 + 24 + 1  # + null symbol, empty name
    names = ["syscall", "clock_gettime", "gettimeofday", "time"]
    if every:
        count = (size - overhead) // (24 + 8 + every)  # entry, name (up to 7 bytes + NUL), code
        text_size = count * every
    else:
        count, text_size = 0, (size - overhead) & ~1
    strtab = bytearray(b"\0")
    symbols = bytearray(24)  # the null symbol
    for i in range(count):
        name = names[i] if i < len(names) else f"f{i:x}"
        offset = len(strtab)
        strtab += name.encode() + b"\0"
        # st_name, st_info (GLOBAL FUNC), st_other, st_shndx (.text), st_value, st_size
        symbols += struct.pack("<IBBHQQ", offset, 0x12, 0, 1,
                               FLOOD_BASE + FLOOD_TEXT + i * every, every)
    text = b"\x0f\x05" * (text_size // 2)
    sym_off = FLOOD_TEXT + len(text)
    str_off = sym_off + len(symbols)
    shstr_off = str_off + len(strtab)
    sh_off = (shstr_off + len(shstrtab) + 7) & ~7
    elf_header = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, bytes(7),
        2, 62, 1, FLOOD_BASE + FLOOD_TEXT,  # ET_EXEC, EM_X86_64, version, entry
        64, sh_off, 0, 64, 56, 1, 64, 5, 4)  # phoff, shoff, flags, sizes, counts, shstrndx
    program_header = struct.pack("<IIQQQQQQ", 1, 5, FLOOD_TEXT, FLOOD_BASE + FLOOD_TEXT,
                                 FLOOD_BASE + FLOOD_TEXT, len(text), len(text), 0x1000)

    def section(name: int, kind: int, flags: int, addr: int, offset: int, length: int,
                link: int = 0, info: int = 0, align: int = 1, entsize: int = 0) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, flags, addr, offset, length, link, info,
                           align, entsize)

    table_name, table_type = (shstrtab.index(b".dynsym"), 11) if dynamic else (7, 2)
    sections = (bytes(64)
                + section(1, 1, 0x6, FLOOD_BASE + FLOOD_TEXT, FLOOD_TEXT, len(text), align=16)
                + section(table_name, table_type, 0, 0, sym_off, len(symbols), link=3, info=1,
                          align=8, entsize=24)
                + section(15, 3, 0, 0, str_off, len(strtab))
                + section(23, 3, 0, 0, shstr_off, len(shstrtab)))
    out = bytearray(elf_header + program_header)
    out += bytes(FLOOD_TEXT - len(out))
    out += text + symbols + strtab + shstrtab
    out += bytes(sh_off - len(out))
    out += sections
    assert len(out) <= size, (len(out), size)
    return bytes(out), len(text) // 2


def artefact_of(data: bytes, role: str = "probe-binary") -> dict:
    """An artefact entry as the probe ships it, around ``data``."""
    return {"path": "/hostile", "role": role, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "zlib_base64": base64.b64encode(zlib.compress(data, 1)).decode("ascii")}
