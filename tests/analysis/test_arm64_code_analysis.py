"""arm64 (AArch64): the vDSO of real arm64 kernels and Debian's arm64 libcs, against binutils.

Inputs: the libc6:arm64 packages of bookworm and sid (downloaded once into the cache; without
the mirror these tests skip, in CI they fail) with their ld.so, and the vDSO images in
tests/data/vdso-arm64-*.so, each copied by the probe out of a real arm64 kernel booted under
qemu-system-aarch64 (see tests/data/README-arm64-vdso.md). The oracle is binutils built for
AArch64 (``aarch64-linux-gnu-objdump``, Debian's binutils-aarch64-linux-gnu): the host's own
objdump reads x86 only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_support import (
    analysis_sites,
    assert_symbols_match,
    debian_libc6,
    libc6_folder,
    make_doc,
    objdump_entry_sites,
    objdump_T,
)
from conftest import require

from vdsomatrix.analysis import analyse_bounded, analyse_result

OBJDUMP = "aarch64-linux-gnu-objdump"
SUITES = ("bookworm", "sid")
DATA = Path(__file__).resolve().parents[1] / "data"
VDSO_FIXTURES = sorted(DATA.glob("vdso-arm64-*.so"))
# What every arm64 vDSO since 4.x exports (arch/arm64/kernel/vdso/vdso.lds.S), and what it
# never does: the checks below are against these, and against objdump for everything else.
ARM64_VDSO_CORE = {"__kernel_clock_gettime", "__kernel_gettimeofday", "__kernel_clock_getres",
                   "__kernel_rt_sigreturn"}


def _vdso_fixture(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        require(f"tests/data/{name}", "a real arm64 vDSO captured from an arm64 guest")
    return path


def _vdso_names() -> list[str]:
    return [p.name for p in VDSO_FIXTURES] or ["vdso-arm64-6.1.so"]


def _vdso_analysis(path: Path) -> dict:
    result = analyse_result(make_doc(name=path.stem, vdso=path.read_bytes()))
    assert result["errors"] == [], result["errors"]
    assert json.loads(json.dumps(result)) == result
    return result["vdso"]


@pytest.mark.parametrize("name", _vdso_names())
def test_arm64_vdso_symbols_equal_objdump_T(name):
    path = _vdso_fixture(name)
    expected = objdump_T(path, OBJDUMP)
    assert expected, f"{OBJDUMP} -T printed no symbols for {name}"
    vdso = _vdso_analysis(path)
    assert vdso["machine"] == "EM_AARCH64" and vdso["elf_class"] == 64
    got = vdso["symbols"]
    assert_symbols_match(got, expected)
    names = {s["name"] for s in got}
    assert ARM64_VDSO_CORE <= names, names
    assert vdso["versions"] == ["LINUX_2.6.39"]
    assert not names & {"__kernel_time", "__kernel_getcpu", "__kernel_vsyscall"}


@pytest.mark.parametrize("name", _vdso_names())
def test_arm64_vdso_fallbacks_equal_objdump_d(name):
    """Each function's ``svc`` sites (the system-call fallback, number in x8) are the ones
    objdump shows, and the census counts every one of them."""
    path = _vdso_fixture(name)
    vdso = _vdso_analysis(path)
    functions = [s for s in vdso["symbols"] if s["type"] == "FUNC" and s["size"]]
    for sym in functions:
        expected = objdump_entry_sites(path, sym["value"], sym["value"] + sym["size"], OBJDUMP)
        assert set(expected.values()) <= {"svc"}, sym["name"]
        assert sym["syscall_sites"] == sorted(expected), sym["name"]
        assert sym["syscall_fallback"] is bool(expected), sym["name"]
    by_name = {s["name"]: s for s in functions}
    # clock_gettime falls back to the system call for the clocks (and clocksources) the vDSO
    # cannot read; the signal trampoline __kernel_rt_sigreturn (NOTYPE, not a function) is
    # nothing but that system call, counted by the census with the rest
    assert by_name["__kernel_clock_gettime"]["syscall_fallback"]
    whole = objdump_entry_sites(path, objdump=OBJDUMP)
    trampoline = next(s for s in vdso["symbols"] if s["name"] == "__kernel_rt_sigreturn")
    assert any(trampoline["value"] <= a < trampoline["value"] + trampoline["size"]
               for a in whole)
    census = vdso["census"]
    assert census["svc"] == len(whole) > 0
    assert census["syscall"] == census["sysenter"] == census["int80"] == 0
    assert census["undecodable_bytes"] == 0 and vdso["kernel_vsyscall"] is None


# -- the libc ------------------------------------------------------------------------------------


def _libc_paths(suite: str) -> tuple[Path, Path]:
    root = libc6_folder(debian_libc6(suite, "arm64"), "arm64")
    return (root / "libc.so.6").resolve(), (root / "ld-linux-aarch64.so.1").resolve()


_ANALYSED: dict[str, dict] = {}


def _analyse(suite: str) -> dict:
    if suite not in _ANALYSED:
        libc, ldso = _libc_paths(suite)
        vdso = VDSO_FIXTURES[0].read_bytes() if VDSO_FIXTURES else None
        result = analyse_result(make_doc(name=f"{suite}-arm64", vdso=vdso, libc=libc, ldso=ldso))
        assert result["errors"] == [], result["errors"]
        assert json.loads(json.dumps(result)) == result
        _ANALYSED[suite] = result
    return _ANALYSED[suite]


@pytest.mark.parametrize("suite", SUITES)
def test_arm64_census_equals_objdump_d(suite):
    path, _ldso = _libc_paths(suite)
    libc = _analyse(suite)["libc"]
    assert libc["machine"] == "EM_AARCH64"
    expected = objdump_entry_sites(path, objdump=OBJDUMP)
    assert expected and set(expected.values()) == {"svc"}
    census = libc["census"]
    assert census["svc"] == len(expected)
    assert census["syscall"] == census["sysenter"] == census["int80"] == 0
    assert census["kernel_vsyscall"] == 0 and census["complete"]
    # capstone 5 does not know every newer instruction (sid's glibc 2.43 has one SME `addsvl`):
    # whole words it skips, and fixed-width code stays in step after them
    assert census["undecodable_bytes"] % 4 == 0 and census["undecodable_bytes"] <= 64
    listed = analysis_sites(libc)
    if not libc["functions_capped"] and not any(f["sites_capped"] for f in libc["functions"]):
        assert listed == expected
    else:  # the listing is capped: what it lists is still objdump's
        assert listed.items() <= expected.items()


@pytest.mark.parametrize("suite", SUITES)
def test_arm64_vdso_names_and_usage(suite):
    """glibc on arm64 asks for __kernel_* at LINUX_2.6.39 (ld.so asks for most of them), and
    a real arm64 vDSO offers what it asks for."""
    result = _analyse(suite)
    libc, ldso = result["libc"], result["ldso"]
    asked = set(libc["vdso_names"]["symbols"]) | set(ldso["vdso_names"]["symbols"])
    assert "__kernel_clock_gettime" in asked and not any(n.startswith("__vdso_") for n in asked)
    assert "LINUX_2.6.39" in ldso["vdso_names"]["versions"]
    eps = libc["entry_points"]
    assert all(ep["classification"] == "unknown" and "x86" in ep["reason"]
               for ep in eps.values()), eps
    if not VDSO_FIXTURES:
        require("tests/data/vdso-arm64-*.so", "a real arm64 vDSO captured from an arm64 guest")
    usage = libc["vdso_usage"]
    assert usage["objects"] == ["libc", "ld.so"]
    assert ARM64_VDSO_CORE - {"__kernel_rt_sigreturn"} <= set(usage["used"]), usage


def test_arm64_bounded():
    """The same analysis in the bounded child (limits as in production)."""
    libc, ldso = _libc_paths("bookworm")
    vdso = VDSO_FIXTURES[0].read_bytes() if VDSO_FIXTURES else None
    doc = make_doc(name="bookworm-arm64", vdso=vdso, libc=libc, ldso=ldso)
    bounded = analyse_bounded(doc)
    assert bounded["errors"] == []
    assert bounded == _analyse("bookworm")


def test_arm64_svc_flood_is_counted_exactly():
    """A hostile AArch64 image of nothing but ``svc #0`` words: counted exactly, in bounds."""
    from vdsomatrix.analysis.elfimage import ElfImage
    from vdsomatrix.analysis.sweep import sweep

    words = 4096
    code = bytes.fromhex("010000d4") * words  # svc #0, little-endian
    image = _minimal_aarch64_elf(code)
    elf = ElfImage(image)
    regions, _source = elf.executable_regions()
    md = elf.disassembler()
    assert md is not None
    result = sweep(md, regions, [], max_bytes=len(image))
    assert result.counts["svc"] == words


def _minimal_aarch64_elf(code: bytes) -> bytes:
    """An ELF64 AArch64 executable: one PT_LOAD segment holding ``code`` (no sections)."""
    import struct

    base, offset = 0x400000, 0x78
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, base + offset, 64, 0, 0, 64, 56, 1,
                            0, 0, 0))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, offset + len(code), offset + len(code),
                       0x1000)
    return header + phdr + code
