"""libc analysis: instruction census equal to objdump -d, entry points, hostile artefacts."""

from __future__ import annotations

import base64
import functools
import json
import random
import re
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from analysis_support import (
    HOST_LIBC,
    analysis_sites,
    host_ldso,
    host_vdso,
    ifunc_library,
    libc_artefact,
    make_doc,
    need,
    objdump_entry_sites,
    objdump_T,
    static_glibc,
    static_musl,
    stripped_musl,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdsomatrix.analysis import analyse_result
from vdsomatrix.analysis.artefacts import MAX_LIBC_BYTES
from vdsomatrix.analysis.elfimage import ElfImage
from vdsomatrix.analysis.entrypoints import CLASSES
from vdsomatrix.analysis.libc import STRIPPED

BUILDS = {
    # name: (path factory, role, libc name, linkage)
    "host-libc.so.6": (lambda: HOST_LIBC, "shared-object", "glibc", "dynamic"),
    "gcc-static": (static_glibc, "probe-binary", "glibc", "static"),
    "musl-gcc-static": (static_musl, "probe-binary", "musl", "static"),
}


def _host_libc() -> Path:
    if not HOST_LIBC.exists():
        pytest.skip(f"{HOST_LIBC} does not exist on this machine")
    return HOST_LIBC


@functools.cache
def _analyse(build: str) -> tuple[Path, dict]:
    factory, role, libc_name, linkage = BUILDS[build]
    path = _host_libc() if build == "host-libc.so.6" else factory()
    result = analyse_result(make_doc(name=build, vdso=host_vdso(), libc=path, role=role,
                                     libc_name=libc_name, linkage=linkage))
    assert result["errors"] == [], result["errors"]
    assert json.loads(json.dumps(result)) == result  # results are stored as JSON
    return path, result["libc"]


@pytest.mark.parametrize("build", list(BUILDS))
def test_census_equals_objdump_d(build):
    path, libc = _analyse(build)
    expected = objdump_entry_sites(path)
    assert expected, "objdump found no kernel-entry instruction at all"
    assert analysis_sites(libc) == expected
    census = libc["census"]
    for kind in ("syscall", "sysenter", "int80"):
        assert census[kind] == sum(1 for k in expected.values() if k == kind)
    assert census["undecodable_bytes"] == 0
    assert census["functions"] == len(libc["functions"])


def test_stripped_binary_counts_without_symbols():
    path = stripped_musl()
    result = analyse_result(make_doc(libc=path, role="probe-binary", libc_name="musl",
                                     linkage="static"))
    libc = result["libc"]
    assert libc["symbols"] == STRIPPED
    assert analysis_sites(libc) == objdump_entry_sites(path)
    assert libc["census"]["functions"] is None
    assert libc["entry_points"]["syscall"]["classification"] == "unknown"
    assert "no symbol" in libc["entry_points"]["syscall"]["reason"]


def test_symbol_sources():
    assert _analyse("host-libc.so.6")[1]["symbols"] in ("dynsym", "symtab")
    assert _analyse("gcc-static")[1]["symbols"] == "symtab"
    assert _analyse("musl-gcc-static")[1]["symbols"] == "symtab"


def test_dynsym_versions_equal_objdump_T():
    """The GNU version machinery (verdef and verneed) against objdump, on the host libc."""
    path = _host_libc()
    image = ElfImage(path.read_bytes())
    mine = [s for s in image.symbols("SHT_DYNSYM", 100_000) if s.index]
    theirs = objdump_T(path)
    assert len(mine) == len(theirs)
    for sym, row in zip(mine, theirs, strict=True):
        assert sym.name == row["name"]
        assert sym.value == row["value"], sym.name
        if row["version"] not in (None, "Base"):
            assert sym.version == row["version"], sym.name
            assert sym.version_hidden == row["hidden"] or not sym.defined, sym.name
    assert image.problems == []


@pytest.mark.parametrize("build", list(BUILDS))
def test_entry_points(build):
    _path, libc = _analyse(build)
    eps = libc["entry_points"]
    assert eps["syscall"]["classification"] == "syscall"
    assert any(e["kind"] == "syscall" for e in eps["syscall"]["evidence"])
    assert any("syscall" in line for line in eps["syscall"]["listing"])
    for name in ("clock_gettime", "gettimeofday", "time"):
        ep = eps[name]
        kinds = {e["kind"] for e in ep["evidence"]}
        assert ep["classification"] in CLASSES
        if ep["ifunc"]:
            # dynamic glibc: the resolver returns the vDSO's function, or the syscall fallback
            assert ep["classification"] == "vdso-via-ifunc-resolver", (name, ep["reason"])
            assert "returns-data-pointer" in kinds, (name, kinds)
        else:
            assert ep["classification"] == "vdso-then-syscall-fallback", (name, ep["reason"])
            assert kinds & {"indirect-call", "vdso-name"}, (name, kinds)
        assert "syscall" in kinds and ep["fallback"] == "syscall", (name, kinds)
        assert all(isinstance(e["address"], int) for e in ep["evidence"])
        assert "static estimate" in ep["reason"]


def test_ifunc_resolver_returning_glro_pointer_is_vdso():
    """glibc 2.41's time()/gettimeofday(): the IFUNC resolver returns GLRO(dl_vdso_time)
    (read through the GOT from ld.so's _rtld_global_ro) or a fallback that makes the system
    call. Calls land in the vDSO itself: not "syscall", which the fallback alone suggests."""
    result = analyse_result(make_doc(libc=ifunc_library("_rtld_global_ro")))
    assert result["errors"] == []
    for name, offset in (("time", 0x310), ("gettimeofday", 0x318)):
        ep = result["libc"]["entry_points"][name]
        assert ep["ifunc"] is True
        assert ep["classification"] == "vdso-via-ifunc-resolver", ep["reason"]
        assert ep["fallback"] == "syscall"
        returned = [e for e in ep["evidence"] if e["kind"] == "returns-data-pointer"]
        assert returned and f"_rtld_global_ro+{offset:#x}" in returned[0]["text"]
        assert any(e["kind"] == "syscall" for e in ep["evidence"])
        assert f"_rtld_global_ro+{offset:#x}" in ep["reason"]


def test_ifunc_resolver_returning_other_data_is_not_called_vdso():
    """The same resolver reading some other object: a data pointer, but no sign of the vDSO."""
    result = analyse_result(make_doc(libc=ifunc_library("some_table")))
    for name in ("time", "gettimeofday"):
        ep = result["libc"]["entry_points"][name]
        assert ep["classification"] == "unknown", ep["reason"]
        assert "not identified" in ep["reason"]


def test_glro_offsets_from_got_relocations():
    """The GOT slot the resolver loads is named from its GLOB_DAT relocation, as objdump -R."""
    path = ifunc_library("_rtld_global_ro")
    image = ElfImage(path.read_bytes())
    got = image.got_names(image.symbols("SHT_DYNSYM", 1000))
    out = subprocess.run([need("objdump"), "-R", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    expected = {int(line.split()[0], 16): line.split()[2].split("@")[0]
                for line in out.splitlines() if "R_X86_64_GLOB_DAT" in line}
    assert got == expected and "_rtld_global_ro" in got.values()


def test_vdso_names_and_usage():
    _p, musl = _analyse("musl-gcc-static")
    names = musl["vdso_names"]
    assert {"__vdso_clock_gettime", "__vdso_time"} <= set(names["symbols"])
    assert names["versions"] == ["LINUX_2.6"]
    assert "cgt_init" in names["referenced_from"]["__vdso_clock_gettime"]
    # musl itself never asks for __vdso_time; only the program's main mentions it
    assert names["referenced_from"]["__vdso_time"] == ["main"]
    assert names["program_only"] == ["__vdso_time"]
    assert musl["vdso_usage"]["requested"] == ["__vdso_clock_gettime"]
    assert musl["vdso_usage"]["program_lookups"] == ["__vdso_time"]
    _p, static = _analyse("gcc-static")
    assert {"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"} \
        <= set(static["vdso_names"]["symbols"])
    usage = static["vdso_usage"]
    assert set(usage["used"]) <= set(usage["offered"])
    assert set(usage["used"]) | set(usage["missing"]) == set(usage["requested"])
    assert "__vdso_clock_gettime" in usage["used"]
    assert "__vdso_time" in usage["requested"]  # glibc's static start-up looks it up too
    _p, dynamic = _analyse("host-libc.so.6")
    # an older result, without the loader: the table says it undercounts
    assert any("ld.so" in n for n in dynamic["vdso_usage"]["notes"])
    assert dynamic["vdso_usage"]["objects"] == ["libc"]


def _names_in_file(path: Path) -> set[str]:
    """Every NUL-terminated __vdso_* string anywhere in the file: the oracle for ld.so."""
    return {m.decode() for m in re.findall(rb"(?<![\w.])(__vdso_\w+)\x00", path.read_bytes())}


def test_vdso_usage_merges_the_dynamic_loader():
    libc = _host_libc()
    ldso = host_ldso()
    result = analyse_result(make_doc(vdso=host_vdso(), libc=libc, ldso=ldso))
    assert result["errors"] == []
    assert json.loads(json.dumps(result)) == result
    assert result["ldso"]["role"] == "dynamic-loader"
    assert result["ldso"]["soname"] and result["ldso"]["soname"].startswith("ld-linux")
    loader_names = set(result["ldso"]["vdso_names"]["symbols"])
    assert loader_names == _names_in_file(ldso)
    assert "__vdso_clock_gettime" in loader_names  # setup_vdso_pointers asks for it
    usage = result["libc"]["vdso_usage"]
    libc_names = set(result["libc"]["vdso_names"]["symbols"])
    assert set(usage["requested"]) == libc_names | loader_names
    assert usage["objects"] == ["libc", "ld.so"]
    for name in usage["requested"]:
        expected = [o for o, names in (("libc", libc_names), ("ld.so", loader_names))
                    if name in names]
        assert usage["requested_by"][name] == expected, name
    assert set(usage["used"]) == set(usage["requested"]) & set(usage["offered"])
    assert len(usage["used"]) > len(set(libc_names) & set(usage["offered"]))
    assert not any("undercount" in n for n in usage["notes"])


@pytest.mark.parametrize("artefact, expected", [
    ({"path": "/ld.so", "role": "dynamic-loader", "error": "Permission denied"},
     "could not ship"),
    ({"path": "/ld.so", "role": "dynamic-loader", "zlib_base64": "%%%"}, "bad base64"),
    ({"path": "/ld.so", "role": "dynamic-loader",
      "zlib_base64": base64.b64encode(zlib.compress(b"not an ELF")).decode()}, "not an ELF"),
    ("a string", "expected an object"),
])
def test_bad_ldso_artefact_keeps_the_libc_analysis(artefact, expected):
    doc = make_doc(vdso=host_vdso(), libc=static_musl(), role="probe-binary", libc_name="musl",
                   linkage="static")
    doc["artefacts"]["ldso"] = artefact
    result = analyse_result(doc)
    assert result["ldso"] is None and result["libc"] is not None
    assert len(result["errors"]) == 1 and result["errors"][0].startswith("ldso artefact: ")
    assert expected in result["errors"][0]
    assert result["libc"]["vdso_usage"]["objects"] == ["libc"]


def test_dynamic_glibc_without_usable_ldso_keeps_the_undercount_note():
    doc = make_doc(vdso=host_vdso(), libc=_host_libc())
    doc["artefacts"]["ldso"] = {"path": "/ld.so", "role": "dynamic-loader", "error": "EACCES"}
    usage = analyse_result(doc)["libc"]["vdso_usage"]
    assert any("undercount" in n for n in usage["notes"])


def test_usage_without_vdso():
    path = static_musl()
    result = analyse_result(make_doc(libc=path, role="probe-binary", libc_name="musl",
                                     linkage="static"))
    usage = result["libc"]["vdso_usage"]
    assert usage["offered"] == [] and usage["used"] == []
    assert usage["missing"] == usage["requested"] != []


def _doc_with_artefact(artefact) -> dict:
    doc = make_doc()
    doc["artefacts"] = {"libc": artefact}
    return doc


def test_bad_artefacts_are_one_line_errors():
    good = libc_artefact(static_musl(), "probe-binary")
    bomb = base64.b64encode(zlib.compress(b"\0" * (MAX_LIBC_BYTES + 4096), 9)).decode()
    truncated = base64.b64encode(base64.b64decode(good["zlib_base64"])[:-20]).decode()
    cases = [
        ({"path": "/x", "role": "shared-object", "error": "Permission denied"}, "could not ship"),
        ({**good, "zlib_base64": "%%%"}, "bad base64"),
        ({**good, "zlib_base64": base64.b64encode(b"not zlib").decode()}, "bad zlib"),
        ({**good, "zlib_base64": truncated}, "zlib"),
        ({**good, "zlib_base64": None}, "no zlib_base64"),
        ({**good, "zlib_base64": bomb}, "cap"),
        ("a string", "expected an object"),
    ]
    for artefact, expected in cases:
        result = analyse_result(_doc_with_artefact(artefact))
        assert result["libc"] is None, expected
        assert len(result["errors"]) == 1, result["errors"]
        assert result["errors"][0].startswith("libc artefact: ")
        assert expected in result["errors"][0], result["errors"]


def test_sha256_and_size_mismatch_reported_but_analysed():
    good = libc_artefact(static_musl(), "probe-binary")
    result = analyse_result(_doc_with_artefact({**good, "sha256": "00" * 32, "size": 3}))
    assert result["libc"] is not None
    assert any("sha256 mismatch" in e for e in result["errors"])
    assert any("reported size 3" in e for e in result["errors"])


@pytest.mark.parametrize("doc", [None, [], "text", {"artefacts": []}, {"vdso": "x"},
                                 {"artefacts": {"libc": {"zlib_base64": 5}}}])
def test_garbage_documents(doc):
    result = analyse_result(doc)
    assert result["vdso"] is None and result["libc"] is None
    assert all(isinstance(e, str) for e in result["errors"])


def _check_hostile(data: bytes) -> None:
    doc = _doc_with_artefact({"path": "/p", "role": "probe-binary",
                              "zlib_base64": base64.b64encode(zlib.compress(data, 1)).decode()})
    result = analyse_result(doc)
    assert set(result) == {"vdso", "libc", "ldso", "errors"}
    assert all(isinstance(e, str) and e and "\n" not in e for e in result["errors"])
    if result["libc"] is None:
        assert result["errors"]


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_static_binary_never_raises(data):
    image = bytearray(static_musl().read_bytes())
    how = data.draw(st.sampled_from(["truncate", "header", "anywhere"]))
    if how == "truncate":
        image = image[: data.draw(st.integers(0, len(image)))]
    else:
        limit = 64 if how == "header" else len(image)
        for offset, value in data.draw(st.lists(
                st.tuples(st.integers(0, limit - 1), st.integers(0, 255)), min_size=1,
                max_size=32)):
            image[offset] = value
    _check_hostile(bytes(image))


def test_seeded_table_mutations_never_raise():
    """Damage the tail of the file: symbol and string tables, section headers."""
    original = static_musl().read_bytes()
    rng = random.Random(1984)
    for _ in range(80):
        image = bytearray(original)
        for _ in range(rng.randrange(1, 16)):
            image[rng.randrange(len(image) // 2, len(image))] = rng.randrange(256)
        _check_hostile(bytes(image))


def test_overlapping_sections_do_not_multiply_work():
    """Every section claiming the whole file as code: the sweep is bounded by the file size."""
    data = bytearray(static_musl().read_bytes())
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    for i in range(1, shnum):
        name = int.from_bytes(data[shoff + i * 64: shoff + i * 64 + 4], "little")
        # Elf64_Shdr: name, type=PROGBITS, flags=ALLOC|EXECINSTR, addr, offset=0, size=file
        struct.pack_into("<IIQQQQ", data, shoff + i * 64, name, 1, 0x6, 0x400000, 0, len(data))
    started = time.monotonic()
    _check_hostile(bytes(data))
    result = analyse_result(_doc_with_artefact(
        {"path": "/p", "role": "probe-binary",
         "zlib_base64": base64.b64encode(zlib.compress(bytes(data), 1)).decode()}))
    assert time.monotonic() - started < 10
    assert any("add up to more than the file" in e for e in result["errors"]), result["errors"]
    assert result["libc"]["census"]["complete"] is False


def test_mutated_loader_never_raises():
    """Damaged ld.so bytes: one-line errors at worst, and the libc analysis goes on."""
    original = host_ldso().read_bytes()
    rng = random.Random(241)
    for i in range(40):
        image = bytearray(original)
        if i % 4 == 0:
            image = image[: rng.randrange(len(image))]
        else:
            lo = 0 if i % 4 == 1 else len(image) // 2
            for _ in range(rng.randrange(1, 24)):
                image[rng.randrange(lo, len(image) if lo else 64)] = rng.randrange(256)
        doc = make_doc(libc=static_musl(), role="probe-binary", libc_name="musl",
                       linkage="static")
        doc["artefacts"]["ldso"] = {"path": "/ld.so", "role": "dynamic-loader",
                                    "zlib_base64": base64.b64encode(
                                        zlib.compress(bytes(image), 1)).decode()}
        result = analyse_result(doc)
        assert set(result) == {"vdso", "libc", "ldso", "errors"}
        assert all(isinstance(e, str) and e and "\n" not in e for e in result["errors"])
        assert result["libc"] is not None
        if result["ldso"] is None:
            assert any(e.startswith("ldso artefact: ") for e in result["errors"])
        assert isinstance(result["libc"]["vdso_usage"]["requested"], list)
