"""getrandom by every path and the entry-cost rows (issue 13), from the real helper.

On this machine (the host backend builds the helper three ways) and in probe images (a 64-bit
userland with a glibc that takes the vDSO's getrandom, one without, and an i386 one). Whether the
vDSO offers __vdso_getrandom is read here independently of the helper: from the live vDSO of
this test process, or from the vDSO image the probe shipped, with pyelftools.
"""

from __future__ import annotations

import base64
import copy
import io
import os
import re

import pytest
from elftools.elf.elffile import ELFFile

from vdsomatrix.results import CallPath, EntryPath, check_document, schema

NO_VDSO_GETRANDOM = ("not offered by this kernel: the vDSO exports no __vdso_getrandom "
                     "(Linux 6.11 added it)")
ENTRY_ROWS = {  # (call, path): system calls per call, counted independently of the kernel
    ("cpuid", "instruction"): 0,  # an instruction: a VM exit in a guest, no system call
    ("signal round trip", "syscall"): 2,  # tgkill, then rt_sigreturn from the handler
    ("signal round trip", "int3"): 1,  # the trap is no system call; rt_sigreturn is
}


def vdso_functions(image: bytes) -> set[str]:
    """The functions a vDSO image exports (its dynamic symbol table)."""
    elf = ELFFile(io.BytesIO(image))
    dynsym = elf.get_section_by_name(".dynsym")
    return {s.name for s in dynsym.iter_symbols()
            if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF"}


def own_vdso_image() -> bytes | None:
    """This process's vDSO, read from its own memory (the same kernel the host probe runs on)."""
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[vdso]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            with open("/proc/self/mem", "rb") as mem:
                mem.seek(start)
                return mem.read(end - start)
    return None


def row(doc, call, path, key="calls"):
    (found,) = [r for r in doc[key] if r["call"] == call and r["path"] == path]
    return found


def check_getrandom(doc, vdso_exports: set[str] | None):
    """The rows every document has, whatever its ABI."""
    assert check_document(doc) == [], check_document(doc)
    abi = doc["environment"]["abi"]
    paths = {r["path"] for r in doc["calls"] if r["call"] == "getrandom"}
    expected = {"libc", "vdso", "syscall"} if abi == "x86_64" else {
        "libc", "vdso", "int80", "kernel_vsyscall"}
    assert paths == expected

    raw = row(doc, "getrandom", "syscall" if abi == "x86_64" else "int80")
    assert raw["status"] == "ok" and raw["syscalls_per_call"] == 1, raw
    if abi == "i386":
        kvs = row(doc, "getrandom", "kernel_vsyscall")
        assert kvs["status"] == "ok" and kvs["syscalls_per_call"] == 1, kvs

    libc = row(doc, "getrandom", "libc")
    # Both libcs of the matrix have getrandom(); one that takes the vDSO makes no system call.
    assert libc["status"] == "ok" and libc["syscalls_per_call"] in (0, 1), libc

    vdso = row(doc, "getrandom", "vdso")
    if vdso_exports is None:
        assert vdso["status"] == "unsupported" and vdso["reason"].startswith("no vDSO")
    elif "__vdso_getrandom" in vdso_exports:
        assert vdso["status"] == "ok" and vdso["syscalls_per_call"] == 0, vdso
        params = doc["vdso_getrandom"]
        assert 0 < params["opaque_state_size"] <= os.sysconf("SC_PAGE_SIZE"), params
        # the state's pages are what the kernel asked for: readable and writable (PROT_READ 1,
        # PROT_WRITE 2), anonymous (MAP_ANONYMOUS 0x20)
        assert params["mmap_prot"] & 3 == 3 and params["mmap_flags"] & 0x20, params
    else:
        assert vdso["status"] == "unsupported" and vdso["reason"] == NO_VDSO_GETRANDOM, vdso
        assert doc["vdso_getrandom"] is None
        assert libc["syscalls_per_call"] == 1, libc  # nothing in user space to take it from

    found = {(r["call"], r["path"]): r for r in doc["entry_costs"]}
    assert set(found) == set(ENTRY_ROWS)
    for key, syscalls in ENTRY_ROWS.items():
        r = found[key]
        assert r["status"] == "ok", r
        assert r["syscalls_per_call"] == syscalls, r
        assert r["ns"]["median"] > 0, r


# ------------------------------------------------------------------- the schema -------------

def test_entry_cost_paths_are_the_enum_and_call_paths_are_unchanged():
    defs = schema()["$defs"]
    assert defs["entry_cost"]["properties"]["path"]["enum"] == [str(p) for p in EntryPath]
    assert defs["call"]["properties"]["path"]["enum"] == [str(p) for p in CallPath]
    assert "instruction" not in [str(p) for p in CallPath]


def _doc():
    ok = {"status": "ok", "ns": {"min": 1, "median": 2, "p90": 3}, "syscalls_per_call": 1}
    return {"schema": "vdsomatrix/1", "environment": {"name": "e"}, "vdso": {}, "vsyscall": {},
            "calls": [{"call": "getrandom", "path": "vdso", **ok}],
            "entry_costs": [{"call": "signal round trip", "path": "int3", **ok}],
            "vdso_getrandom": {"opaque_state_size": 144, "mmap_prot": 3, "mmap_flags": 40},
            "errors": []}


def test_a_document_with_entry_costs_validates_and_bad_rows_do_not():
    assert check_document(_doc()) == []
    older = _doc()
    del older["entry_costs"], older["vdso_getrandom"]  # results of older probes stay valid
    assert check_document(older) == []
    none = _doc()
    none["vdso_getrandom"] = None
    assert check_document(none) == []
    for mutate, where in [
        (lambda d: d["entry_costs"][0].update(path="libc"), "entry_costs/0/path"),
        (lambda d: d["entry_costs"][0].pop("ns"), "entry_costs/0"),
        (lambda d: d["calls"][0].update(path="int3"), "calls/0/path"),
        (lambda d: d["vdso_getrandom"].pop("mmap_flags"), "vdso_getrandom"),
        (lambda d: d.update(entry_costs=d["entry_costs"] * 51), "entry_costs"),
    ]:
        bad = copy.deepcopy(_doc())
        mutate(bad)
        problems = check_document(bad)
        assert problems and problems[0].startswith(where), problems


# ------------------------------------------------------------- this machine -----------------



def test_host_getrandom_and_entry_costs(host_doc):
    image = own_vdso_image()
    exports = vdso_functions(image) if image else None
    assert host_doc["vdso"]["present"] is (image is not None)
    check_getrandom(host_doc, exports)


# ----------------------------------------------------------------- probe images -------------

@pytest.fixture(scope="module", params=["trixie", "bookworm", "bookworm-i386"])
def image_doc(request, engine):
    """The dynamic build's document from a probe image (built here when missing)."""
    from vdsomatrix.backends.docker import DockerBackend
    from vdsomatrix.images.probe_image import ensure_probe_image
    from vdsomatrix.matrix import load_matrix

    matrix = load_matrix()
    ensure_probe_image(matrix.suites[request.param], client=engine, log=lambda m: None)
    outcome = DockerBackend().run_probe(matrix.get(request.param), deadline=240,
                                        log=lambda m: None)
    assert outcome.status == "ok", outcome.errors + outcome.log_tail
    outcome.document["run"] = {"status": "ok"}
    return outcome.document


def _glibc(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


@pytest.mark.engine
@pytest.mark.slow
def test_image_getrandom_and_entry_costs(image_doc):
    doc = image_doc
    image = doc["vdso"].get("image")
    exports = vdso_functions(base64.b64decode(image)) if image else None
    check_getrandom(doc, exports)
    libc = doc["environment"]["libc"]
    assert libc["name"] == "glibc" and libc["linkage"] == "dynamic"
    row_ = row(doc, "getrandom", "libc")
    # glibc takes __vdso_getrandom from 2.41 on (where the vDSO offers it); before, the syscall
    if _glibc(libc["version"]) < (2, 41) or "__vdso_getrandom" not in (exports or set()):
        assert row_["syscalls_per_call"] == 1, row_
    else:
        assert row_["syscalls_per_call"] == 0, row_
