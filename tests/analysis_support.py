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
from conftest import require

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


def objdump_T(path: Path, objdump: str = "objdump") -> list[dict]:
    """``objdump -T`` rows: value, binding, type letter, section, size, version, hidden, name.
    ``objdump``: the binutils that reads the file's machine (aarch64-linux-gnu-objdump)."""
    out = subprocess.run([need(objdump), "-T", str(path)], capture_output=True, text=True,
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


def assert_symbols_match(got: list[dict], expected: list[dict]) -> None:
    """The analysis's symbols (``got``) are objdump -T's (``expected``, see objdump_T): the same
    names, versions and hidden flags in order, and for each the same value, size, binding,
    type letter and section."""
    assert [(s["name"], s["version"], s["version_hidden"]) for s in got] == \
        [(r["name"], r["version"], r["hidden"]) for r in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["value"] == theirs["value"], mine["name"]
        assert mine["size"] == theirs["size"], mine["name"]
        assert mine["binding"] == theirs["binding"], mine["name"]
        assert type_letter(mine["type"]) == theirs["kind"], mine["name"]
        assert mine["section"] == theirs["section"], mine["name"]


def objdump_entry_sites(path: Path, start: int | None = None, stop: int | None = None,
                        objdump: str = "objdump") -> dict[int, str]:
    """Address -> kind of every syscall / sysenter / int $0x80 (and, in 32-bit code,
    ``call *%gs:0x10``; in AArch64 code, ``svc``) that ``objdump -d`` shows."""
    cmd = [need(objdump), "-d", "-w", "--no-show-raw-insn", str(path)]
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
        if words == ["svc"]:  # AArch64: "svc #0x0" (the immediate went with the "#")
            sites[int(m.group(1), 16)] = "svc"
        elif words[-1] == "syscall" and len(words) <= 3:
            sites[int(m.group(1), 16)] = "syscall"
        elif words[-1] == "sysenter" and len(words) <= 3:
            sites[int(m.group(1), 16)] = "sysenter"
        elif re.fullmatch(r"(\S+ )*int\s+\$0x80", text):
            sites[int(m.group(1), 16)] = "int80"
        elif re.fullmatch(r"(\S+ )*call\s+\*%gs:0x10", text):  # i386: to __kernel_vsyscall
            sites[int(m.group(1), 16)] = "kernel_vsyscall"
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


# -- 32-bit x86 (i386) --------------------------------------------------------------------------

AT_SYSINFO = 32  # auxv: the address of __kernel_vsyscall (i386 only)
# What the kernel patches into __kernel_vsyscall at boot (the on-disk vdso32.so holds nops there,
# before the int $0x80 landing pad): sysenter on Intel, syscall on AMD and Hygon.
PATCHED_ENTRIES = (b"\x0f\x34", b"\x0f\x05")


# A whole i386 program, so that no 32-bit toolchain is needed: write(1, esp, 1) (says it is
# running), read(0, esp, 1) (waits until stdin closes), exit(0).
_WAIT32_CODE = bytes.fromhex(
    "b804000000" "bb01000000" "89e1" "ba01000000" "cd80"
    "b803000000" "31db" "89e1" "ba01000000" "cd80"
    "b801000000" "31db" "cd80")


def _wait32_elf() -> bytes:
    base, headers = 0x08048000, 52 + 32
    ehdr = struct.pack("<4sBBBBB7sHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 0, bytes(7),
                       2, 3, 1, base + headers, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    size = headers + len(_WAIT32_CODE)
    phdr = struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)  # PT_LOAD R+X
    return ehdr + phdr + _WAIT32_CODE


@functools.cache
def unpatched_vdso32() -> bytes:
    """The live 32-bit vDSO with the instruction the kernel patched into __kernel_vsyscall
    turned back into the nops it replaced: the image as the kernel's vdso32.so holds it on
    disk (made here, so that no kernel binary is copied into the project)."""
    from vdsomatrix.analysis.elfimage import ElfImage

    data, base, sysinfo = live_vdso32()
    start = sysinfo - base
    sym = next(s for s in ElfImage(data).symbols("SHT_DYNSYM", 100)
               if s.name == "__kernel_vsyscall")
    window = data[start:start + max(sym.size, 16)]
    for entry in PATCHED_ENTRIES:
        at = window.find(entry)
        if at >= 0:
            return data[:start + at] + b"\x90" * len(entry) + data[start + at + len(entry):]
    pytest.fail(f"no sysenter or syscall in the live __kernel_vsyscall: {window.hex()}")


def live_vdso32() -> tuple[bytes, int, int]:
    """The 32-bit vDSO this kernel maps into a 32-bit process, copied from the live process
    (as the probe does: patched at boot), with AT_SYSINFO_EHDR and AT_SYSINFO of that process.
    Needs a kernel that runs 32-bit code (IA32 emulation); a failure in CI."""
    program = _workdir() / "wait32"
    program.write_bytes(_wait32_elf())
    program.chmod(0o755)
    try:
        proc = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError as exc:  # ENOEXEC: no IA32 emulation, or ia32_emulation=0
        require("32-bit code (IA32 emulation)", f"cannot run an i386 program: {exc}")
    try:
        if proc.stdout.read(1) == b"":
            pytest.fail("the i386 program exited before it said it runs")
        auxv = Path(f"/proc/{proc.pid}/auxv").read_bytes()
        aux = dict(struct.iter_unpack("<II", auxv[: len(auxv) // 8 * 8]))
        base = aux.get(AT_SYSINFO_EHDR)
        if not base:
            pytest.fail("the 32-bit process has no vDSO (AT_SYSINFO_EHDR)")
        size = None
        for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines():
            if line.endswith("[vdso]"):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if start == base:
                    size = end - start
        assert size, "AT_SYSINFO_EHDR points at no [vdso] mapping"
        with open(f"/proc/{proc.pid}/mem", "rb") as mem:
            mem.seek(base)
            data = mem.read(size)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return data, base, aux.get(AT_SYSINFO, 0)


# Where each Debian architecture's libc6 puts libc.so.6 (its multiarch triplet).
LIBC6_TRIPLETS = {"i386": "i386-linux-gnu", "arm64": "aarch64-linux-gnu"}


def libc6_folder(root: Path, arch: str) -> Path:
    """The folder of an unpacked libc6 that holds libc.so.6: lib/<triplet>, or usr/lib/<triplet>
    in the suites whose packages install below /usr only (trixie and later)."""
    for base in ("lib", "usr/lib"):
        folder = root / base / LIBC6_TRIPLETS[arch]
        if (folder / "libc.so.6").exists():
            return folder
    return root / "lib" / LIBC6_TRIPLETS[arch]


def i386_libc6(suite: str) -> Path:
    """The root of Debian ``suite``'s libc6:i386 package, unpacked (see debian_libc6)."""
    return debian_libc6(suite, "i386")


@functools.cache
def debian_libc6(suite: str, arch: str) -> Path:
    """The root of Debian ``suite``'s libc6:``arch`` package, unpacked (downloaded once into the
    vdsomatrix cache, signed index and package checked by apt). Skips when the mirror cannot
    be reached, but fails in CI. libc.so.6 is in ``libc6_folder(root, arch)``."""
    from vdsomatrix.debian import packages
    from vdsomatrix.debian.apt import AptFailed, PrivateApt
    from vdsomatrix.paths import cache_dir, file_lock

    home = cache_dir() / "test-data" / f"libc6-{arch}-{suite}"
    done = home / "unpacked"
    if libc6_folder(done, arch).exists():
        return done
    home.mkdir(parents=True, exist_ok=True)
    with file_lock(home.parent / f"libc6-{arch}-{suite}.lock"):
        if libc6_folder(done, arch).exists():
            return done
        try:
            apt = PrivateApt(suite, arch)
        except Exception as exc:
            require("a Debian mirror", str(exc))
        with tempfile.TemporaryDirectory(prefix="apt-", dir=home) as tmp:
            root = Path(tmp)
            try:
                apt.update()
                index = packages.read_index(apt.packages_index(),
                                            packages.names_matching("libc6"))
                libc6 = packages.newest(index, (arch,)).get("libc6")
                if libc6 is None:
                    require(f"libc6 in {suite}'s {arch} index on {apt.mirror}", "not there")
                debs = apt.download([("libc6", libc6["Version"])], root / "download")
            except AptFailed as exc:
                require(f"the {suite} {arch} packages on {apt.mirror}", str(exc))
            assert len(debs) == 1, debs
            staging = root / "unpacked"
            subprocess.run([need("dpkg-deb"), "-x", str(debs[0]), str(staging)], check=True,
                           timeout=300)
            (staging / "deb").write_text(debs[0].name + "\n")
            if done.exists():
                shutil.rmtree(done)
            staging.rename(done)
    return done
