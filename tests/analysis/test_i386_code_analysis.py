"""32-bit x86 (i386): the vDSO of a 32-bit process and Debian's i386 libcs, against binutils.

Inputs: the 32-bit vDSO this kernel maps into a 32-bit process (copied live, as the probe does,
so that __kernel_vsyscall is the code the kernel patched in at boot), the unpatched vdso32.so
of two Debian kernels (tests/data), and the libc6:i386 packages of bullseye and bookworm
(downloaded once into the cache; without the mirror these tests skip, in CI they fail).
objdump (binutils, which reads elf32-i386 on any x86-64 Debian) is the oracle.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pytest
from analysis_support import (
    _workdir,
    analysis_sites,
    assert_symbols_match,
    host_vdso,
    i386_libc6,
    live_vdso32,
    make_doc,
    need,
    objdump_entry_sites,
    objdump_T,
    unpatched_vdso32,
)

from vdsomatrix.analysis import analyse_bounded, analyse_result
from vdsomatrix.analysis.elfimage import ElfImage
from vdsomatrix.analysis.entrypoints import CLASSES

SUITES = ("bullseye", "bookworm")
VDSOS = ("live", "unpatched")


def _vdso_bytes(which: str) -> bytes:
    return live_vdso32()[0] if which == "live" else unpatched_vdso32()


def _vdso_file(which: str) -> Path:
    path = _workdir() / f"vdso32-{which}.so"
    path.write_bytes(_vdso_bytes(which))
    return path


def _vdso_analysis(which: str) -> dict:
    result = analyse_result(make_doc(name=f"vdso32-{which}", vdso=_vdso_bytes(which)))
    assert result["errors"] == [], result["errors"]
    assert json.loads(json.dumps(result)) == result
    return result["vdso"]


def _objdump_intel(path: Path, start: int, stop: int) -> list[str]:
    """The instructions ``objdump -d -M intel`` shows in [start, stop), spaces removed."""
    out = subprocess.run([need("objdump"), "-d", "-w", "-M", "intel", "--no-show-raw-insn",
                          f"--start-address={start:#x}", f"--stop-address={stop:#x}", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [re.sub(r"\s+", "", m.group(1)) for m in re.finditer(r"^\s*[0-9a-f]+:\t(.*)$", out,
                                                                re.M)]


# -- the vDSO -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", VDSOS)
def test_vdso32_symbols_equal_objdump_T(which):
    path = _vdso_file(which)
    expected = objdump_T(path)
    assert "__kernel_vsyscall" in {r["name"] for r in expected}
    vdso = _vdso_analysis(which)
    assert vdso["machine"] == "EM_386" and vdso["elf_class"] == 32
    got = vdso["symbols"]
    assert_symbols_match(got, expected)
    assert vdso["versions"] == ["LINUX_2.5", "LINUX_2.6"]


@pytest.mark.parametrize("which", VDSOS)
def test_kernel_vsyscall_equals_objdump_d(which):
    vdso = _vdso_analysis(which)
    kv = vdso["kernel_vsyscall"]
    sym = next(s for s in vdso["symbols"] if s["name"] == "__kernel_vsyscall")
    assert kv["address"] == sym["value"] and kv["size"] == sym["size"] and kv["complete"]
    expected = _objdump_intel(_vdso_file(which), sym["value"], sym["value"] + sym["size"])
    assert [re.sub(r"\s+", "", i) for i in kv["instructions"]] == expected
    assert len(bytes.fromhex(kv["bytes"])) == sym["size"]
    # push ecx; push edx; push ebp, then the kernel's choice, then int $0x80 (the landing pad)
    assert kv["instructions"][:3] == ["push ecx", "push edx", "push ebp"]
    assert "int 0x80" in kv["instructions"]


def test_kernel_vsyscall_unpatched_enters_with_int80():
    kv = _vdso_analysis("unpatched")["kernel_vsyscall"]
    assert kv["enters_with"] == "int 0x80"
    assert "nop" in kv["instructions"]  # the room the boot-time patch fills


def _cpu_vendor() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return ""


def test_kernel_vsyscall_live_is_patched():
    """The live copy: the kernel patched in sysenter (Intel) or syscall (AMD, Hygon)."""
    data, base, sysinfo = live_vdso32()
    kv = _vdso_analysis("live")["kernel_vsyscall"]
    assert sysinfo - base == kv["address"]  # AT_SYSINFO: where glibc's %gs:0x10 points
    expected = {"AuthenticAMD": "syscall", "HygonGenuine": "syscall",
                "GenuineIntel": "sysenter"}.get(_cpu_vendor())
    if expected is None:
        assert kv["enters_with"] in ("sysenter", "syscall", "int 0x80")
    else:
        assert kv["enters_with"] == expected, kv["instructions"]
        assert kv["instructions"].index(expected) < kv["instructions"].index("int 0x80")
    assert len(data) == _vdso_analysis("live")["size"]


def _objdump_fallbacks(path: Path, start: int, stop: int, vsyscall: int) -> list[int]:
    """Kernel entries in [start, stop) as objdump -d shows them, and direct calls of
    __kernel_vsyscall (how the 32-bit vDSO's functions fall back to the kernel)."""
    sites = set(objdump_entry_sites(path, start, stop))
    out = subprocess.run([need("objdump"), "-d", "-w", "--no-show-raw-insn",
                          f"--start-address={start:#x}", f"--stop-address={stop:#x}", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    for m in re.finditer(r"^\s*([0-9a-f]+):\tcall\s+([0-9a-f]+) <", out, re.M):
        if int(m.group(2), 16) == vsyscall:
            sites.add(int(m.group(1), 16))
    return sorted(sites)


@pytest.mark.parametrize("which", VDSOS)
def test_vdso32_fallbacks_and_census_equal_objdump_d(which):
    path = _vdso_file(which)
    vdso = _vdso_analysis(which)
    vsyscall = vdso["kernel_vsyscall"]["address"]
    functions = [s for s in vdso["symbols"] if s["type"] == "FUNC" and s["size"]]
    for sym in functions:
        expected = _objdump_fallbacks(path, sym["value"], sym["value"] + sym["size"], vsyscall)
        assert sym["syscall_sites"] == expected, sym["name"]
        assert sym["syscall_fallback"] is bool(expected), sym["name"]
    clock = next(s for s in functions if s["name"] == "__vdso_clock_gettime")
    assert clock["syscall_fallback"] is True  # call __kernel_vsyscall when the clock is unusable
    whole = objdump_entry_sites(path)
    census = vdso["census"]
    for kind in ("syscall", "sysenter", "int80", "kernel_vsyscall"):
        assert census[kind] == sum(1 for k in whole.values() if k == kind), kind
    assert census["undecodable_bytes"] == 0


def test_64_bit_vdso_has_no_kernel_vsyscall():
    result = analyse_result(make_doc(vdso=host_vdso()))
    assert result["vdso"]["kernel_vsyscall"] is None
    assert result["vdso"]["census"]["kernel_vsyscall"] == 0


# -- the libc ------------------------------------------------------------------------------------


def _libc_paths(suite: str) -> tuple[Path, Path]:
    root = i386_libc6(suite) / "lib" / "i386-linux-gnu"
    return (root / "libc.so.6").resolve(), (root / "ld-linux.so.2").resolve()


_ANALYSED: dict[str, dict] = {}


def _analyse(suite: str) -> dict:
    if suite not in _ANALYSED:
        libc, ldso = _libc_paths(suite)
        doc = make_doc(name=f"{suite}-i386", vdso=_vdso_bytes("live"), libc=libc, ldso=ldso)
        result = analyse_result(doc)
        assert result["errors"] == [], result["errors"]
        assert json.loads(json.dumps(result)) == result
        _ANALYSED[suite] = result
    return _ANALYSED[suite]


@pytest.mark.parametrize("suite", SUITES)
def test_i386_census_equals_objdump_d(suite):
    path, _ldso = _libc_paths(suite)
    libc = _analyse(suite)["libc"]
    assert libc["machine"] == "EM_386"
    expected = objdump_entry_sites(path)
    assert analysis_sites(libc) == expected
    census = libc["census"]
    for kind in ("syscall", "sysenter", "int80", "kernel_vsyscall"):
        assert census[kind] == sum(1 for k in expected.values() if k == kind), kind
    # glibc i386 enters the kernel through __kernel_vsyscall, with a few int $0x80 left
    assert census["kernel_vsyscall"] > 100 and census["int80"] >= 1
    assert census["syscall"] == census["sysenter"] == 0
    assert census["undecodable_bytes"] == 0 and census["complete"]


@pytest.mark.parametrize("suite", SUITES)
def test_i386_entry_points(suite):
    eps = _analyse(suite)["libc"]["entry_points"]
    syscall = eps["syscall"]
    assert syscall["classification"] == "kernel_vsyscall", syscall["reason"]
    assert "__kernel_vsyscall" in syscall["reason"]
    assert any("gs:[0x10]" in e["text"] for e in syscall["evidence"])
    assert any("*%gs:0x10" in line for line in syscall["listing"])
    for name in ("clock_gettime", "gettimeofday", "time"):
        ep = eps[name]
        assert ep["classification"] in CLASSES
        assert ep["classification"] in ("vdso-then-syscall-fallback",
                                        "vdso-via-ifunc-resolver"), (name, ep["reason"])
        assert ep["fallback"] == "kernel_vsyscall", (name, ep["reason"])
    if suite == "bullseye":  # glibc 2.31: IFUNC resolvers that look __vdso_* up themselves
        for name in ("gettimeofday", "time"):
            ep = eps[name]
            assert ep["ifunc"] and ep["classification"] == "vdso-via-ifunc-resolver"
            assert f"looks __vdso_{name} up in the vDSO" in ep["reason"]
            assert any("_rtld_global_ro+" in e["text"] for e in ep["evidence"])
    else:  # glibc 2.36: through GLRO(dl_vdso_clock_gettime64)
        texts = [e["text"] for e in eps["clock_gettime"]["evidence"]]
        assert any("_rtld_global_ro+" in t for t in texts), texts


@pytest.mark.parametrize("suite", SUITES)
def test_i386_got_names_equal_objdump_R(suite):
    path, _ldso = _libc_paths(suite)
    image = ElfImage(path.read_bytes())
    got = image.got_names(image.symbols("SHT_DYNSYM", 100_000))
    out = subprocess.run([need("objdump"), "-R", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    expected = {int(line.split()[0], 16): line.split()[2].split("@")[0]
                for line in out.splitlines() if "R_386_GLOB_DAT" in line}
    assert got == expected and "_rtld_global_ro" in got.values()


@pytest.mark.parametrize("suite", SUITES)
def test_i386_vdso_usage(suite):
    result = _analyse(suite)
    usage = result["libc"]["vdso_usage"]
    assert usage["objects"] == ["libc", "ld.so"]
    assert "__vdso_clock_gettime64" in usage["requested"]  # the y2038 entry, asked by ld.so
    assert usage["missing"] == [] and set(usage["used"]) == set(usage["requested"])
    assert result["ldso"]["machine"] == "EM_386"


def test_i386_bounded():
    """The same analysis in the bounded child (limits as in production)."""
    libc, ldso = _libc_paths("bookworm")
    doc = make_doc(name="bookworm-i386", vdso=_vdso_bytes("live"), libc=libc, ldso=ldso)
    bounded = analyse_bounded(doc)
    assert bounded["errors"] == []
    assert bounded == _analyse("bookworm")


# -- hostile 32-bit input -------------------------------------------------------------------------


def test_mutated_vdso32_never_raises():
    original = live_vdso32()[0]
    shoff = int.from_bytes(original[0x20:0x24], "little")
    rng = random.Random(386)
    for i in range(200):
        image = bytearray(original)
        if i % 5 == 0:
            image = image[: rng.randrange(len(image))]
        else:
            lo = 0 if i % 5 == 1 else min(shoff, len(image) - 1) if i % 5 == 2 else 0
            hi = 52 if i % 5 == 1 else len(image)
            for _ in range(rng.randrange(1, 16)):
                image[rng.randrange(lo, hi)] = rng.randrange(256)
        result = analyse_result(make_doc(vdso=bytes(image)))
        assert set(result) == {"vdso", "libc", "ldso", "errors"}
        assert all(isinstance(e, str) and e and "\n" not in e for e in result["errors"])
        if result["vdso"] is None:
            assert result["errors"]
        else:
            kv = result["vdso"]["kernel_vsyscall"]
            assert kv is None or len(kv["instructions"]) <= 64


def test_huge_kernel_vsyscall_is_bounded():
    """A __kernel_vsyscall that claims to be 4 GiB long: decoded up to the cap, not further."""
    data = bytearray(unpatched_vdso32())  # no sysenter or syscall: int $0x80 is the first entry
    image = ElfImage(bytes(data))
    dynsym = next(s for s in image.sections if s.type == "SHT_DYNSYM")
    sym = next(s for s in image.symbols("SHT_DYNSYM", 100) if s.name == "__kernel_vsyscall")
    at = dynsym.offset + sym.index * 16 + 8  # Elf32_Sym: name, value, size
    data[at:at + 4] = b"\xff\xff\xff\xff"
    result = analyse_result(make_doc(vdso=bytes(data)))
    kv = result["vdso"]["kernel_vsyscall"]
    assert kv["complete"] is False and len(bytes.fromhex(kv["bytes"])) <= 256
    assert kv["enters_with"] == "int 0x80"
