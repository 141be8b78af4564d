"""analyse_program on real programs built here, and on hostile bytes."""

from __future__ import annotations

import os
import random
import struct

import pytest
from program_builds import i386_exit0
from program_fixtures import *  # noqa: F403 (the programs built here)

from vdsomatrix.program.elf import (
    MAX_LISTED_SITES,
    MAX_PROGRAM_BYTES,
    ProgramRefused,
    analyse_program,
    read_program,
)


def facts_of(path):
    return analyse_program(read_program(path), path.name)


def test_static_vsyscall_caller_is_found_with_its_call(vsyscall_static):
    facts = facts_of(vsyscall_static)
    assert (facts["kind"], facts["arch"], facts["elf_class"]) == ("elf", "x86_64", 64)
    assert facts["linkage"] == "static" and facts["interpreter"] is None
    assert facts["vsyscall_sites_total"] == 1
    site = facts["vsyscall_sites"][0]
    assert site["target"] == "0xffffffffff600400" and site["entry"] == "time"
    assert site["how"].startswith("mov ") and "call" in site["how"]
    # static glibc enters the kernel itself and looks the vDSO up by name
    assert facts["syscall_sites"]["syscall"] > 10
    assert "__vdso_clock_gettime" in facts["vdso_names"]
    assert facts["toolchain"] == "gcc" and facts["errors"] == []


def test_a_vsyscall_address_in_data_is_a_pointer_not_a_call(vsyscall_pointer):
    facts = facts_of(vsyscall_pointer)
    assert facts["vsyscall_sites"] == []
    assert [(p["target"], p["entry"]) for p in facts["vsyscall_pointers"]] == [
        ("0xffffffffff600000", "gettimeofday")]
    assert facts["vsyscall_pointers"][0]["section"] == ".data"


def test_static_pie_without_vsyscall(static_pie):
    facts = facts_of(static_pie)
    assert facts["linkage"] == "static-pie" and facts["elf_type"] == "DYN"
    assert facts["vsyscall_sites"] == [] and facts["vsyscall_pointers"] == []


def test_dynamic_glibc_program_needs_glibc_2_34(glibc_dynamic):
    facts = facts_of(glibc_dynamic)
    assert facts["linkage"] == "dynamic"
    assert facts["interpreter"] == "/lib64/ld-linux-x86-64.so.2"
    assert facts["libc"] == "glibc" and facts["musl"] is False
    assert facts["needed"] == ["libc.so.6"]
    assert facts["newest_versions"] == {"GLIBC": "2.34"}
    libc_row = next(r for r in facts["version_requirements"] if r["library"] == "libc.so.6")
    assert "GLIBC_2.34" in libc_row["versions"] and "GLIBC_2.2.5" in libc_row["versions"]
    assert facts["syscall_sites"]["syscall"] == 0  # libc does that, not the program


def test_cxx_program_needs_glibcxx_compared_numerically(cxx_dynamic):
    facts = facts_of(cxx_dynamic)
    assert "libstdc++.so.6" in facts["needed"]
    newest = facts["newest_versions"]
    assert newest["GLIBCXX"].startswith("3.4.")
    stdcxx = next(r for r in facts["version_requirements"] if r["library"] == "libstdc++.so.6")
    minors = [int(v.split(".")[-1]) for v in stdcxx["versions"] if v.startswith("GLIBCXX_3.4")]
    assert len(minors) > 3
    # "3.4.9" sorts after "3.4.30" as text: the newest must be the numeric maximum
    assert newest["GLIBCXX"] == f"3.4.{max(minors)}"
    assert max(minors) > 9


def test_musl_static_and_dynamic(musl_static, musl_dynamic):
    static, dynamic = facts_of(musl_static), facts_of(musl_dynamic)
    assert static["linkage"] == "static" and static["musl"] is False  # nothing says musl
    assert static["syscall_sites"]["syscall"] > 0
    assert dynamic["linkage"] == "dynamic" and dynamic["musl"] is True
    assert dynamic["interpreter"] == "/lib/ld-musl-x86_64.so.1"
    assert dynamic["libc"] == "musl" and dynamic["newest_versions"] == {}


def test_arm64_static_counts_svc(arm64_static):
    facts = facts_of(arm64_static)
    assert (facts["arch"], facts["machine"], facts["linkage"]) == ("aarch64", "EM_AARCH64",
                                                                   "static")
    assert facts["syscall_sites"]["svc"] > 10 and facts["syscall_sites"]["syscall"] == 0
    assert "__kernel_clock_gettime" in facts["vdso_names"]
    assert facts["vsyscall_sites"] == []  # no vsyscall page on arm64: not looked for


def test_go_static_binary_names_its_toolchain_and_vdso_lookups(go_binary):
    facts = facts_of(go_binary)
    assert facts["toolchain"] == "go" and facts["go_version"].startswith("go1.")
    assert facts["linkage"] == "static"
    # Go's runtime keeps these as unterminated strings: found whole, not merged with a neighbour
    assert {"__vdso_clock_gettime", "__vdso_gettimeofday"} <= set(facts["vdso_names"])
    assert all(name in ("__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time",
                        "__vdso_getcpu", "__vdso_clock_getres") for name in facts["vdso_names"])
    assert facts["syscall_sites"]["syscall"] > 0


def test_i386_by_hand():
    facts = analyse_program(i386_exit0(), "exit0-i386")
    assert (facts["arch"], facts["elf_class"], facts["linkage"]) == ("i386", 32, "static")
    assert facts["syscall_sites"]["int80"] == 1
    # entry 0x8048054, then mov (5 bytes) and xor (2)
    assert facts["syscall_site_addresses"]["int80"] == ["0x804805b"]
    assert facts["disassembly"]["source"] == "segments"  # no section headers at all


def test_shell_script():
    facts = analyse_program(b"#!  /bin/sh -e\necho hi\n", "run.sh")
    assert facts["kind"] == "script"
    assert (facts["interpreter"], facts["interpreter_argument"]) == ("/bin/sh", "-e")
    env_script = analyse_program(b"#!/usr/bin/env python3\n", "x.py")
    assert (env_script["interpreter"], env_script["interpreter_argument"]) == (
        "/usr/bin/env", "python3")


def test_script_with_an_endless_shebang_is_an_error():
    facts = analyse_program(b"#!/" + b"a" * 400, "long")
    assert facts["kind"] == "script" and any("longer than 256" in e for e in facts["errors"])


@pytest.mark.parametrize("data, reason", [
    (b"", "an empty file"),
    (b"MZ\x90\x00 not ours", "neither an ELF file nor a #! script"),
])
def test_not_executable(data, reason):
    facts = analyse_program(data, "x")
    assert facts["kind"] == "not-executable" and facts["reason"].startswith(reason)
    assert facts["arch"] is None


def test_truncated_elf_is_one_error_line(glibc_dynamic):
    data = read_program(glibc_dynamic)
    for cut in (7, 40, 200, len(data) // 2):
        facts = analyse_program(data[:cut], "cut")
        assert facts["kind"] == "elf"
        assert facts["errors"], cut
        assert all("\n" not in e and len(e) < 400 for e in facts["errors"])


def test_huge_e_shnum_is_refused_politely(vsyscall_static):
    data = bytearray(read_program(vsyscall_static))
    struct.pack_into("<H", data, 0x3C, 0xFFFF)  # e_shnum
    facts = analyse_program(bytes(data), "many-sections")
    assert any("section" in e for e in facts["errors"])
    assert facts["arch"] == "x86_64"  # the header is still read


def test_random_bytes_and_random_bytes_behind_an_elf_header():
    rng = random.Random(24)
    noise = bytes(rng.getrandbits(8) for _ in range(4096))
    assert analyse_program(noise, "noise")["kind"] == "not-executable"
    header = i386_exit0()[:52]
    facts = analyse_program(header + noise, "noisy")
    assert facts["kind"] == "elf" and isinstance(facts["errors"], list)


def test_a_flood_of_syscall_instructions_is_counted_exactly_and_listed_capped():
    base, code = 0x08048000, b"\xcd\x80" * 5000
    size = 84 + len(code)
    data = (b"\x7fELF\x01\x01\x01" + bytes(9)
            + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, base + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0)
            + struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000) + code)
    facts = analyse_program(data, "flood")
    assert facts["syscall_sites"]["int80"] == 5000
    assert len(facts["syscall_site_addresses"]["int80"]) == MAX_LISTED_SITES


def test_oversized_bytes_are_not_analysed():
    class Huge(bytes):
        def __len__(self):
            return MAX_PROGRAM_BYTES + 1
    facts = analyse_program(Huge(b"\x7fELF"), "huge")
    assert facts["kind"] == "not-executable" and "cap" in facts["reason"]


def test_control_characters_in_the_interpreter_are_inert():
    facts = analyse_program(b"#!/bin/\x1b[31msh\n", "evil")
    assert "\x1b" not in facts["interpreter"]


def test_read_program_refuses_directories_and_fifos(tmp_path):
    with pytest.raises(ProgramRefused, match="a directory"):
        read_program(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ProgramRefused, match="not a regular file"):
        read_program(fifo)
    with pytest.raises(ProgramRefused, match="cannot open"):
        read_program(tmp_path / "absent")
