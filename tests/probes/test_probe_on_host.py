"""The real probe on this machine: facts are checked against the kernel's own interfaces."""

import struct

import pytest

from vdsomatrix.results import check_document

AT_SYSINFO_EHDR = 33


def own_auxv_has_vdso() -> bool:
    raw = open("/proc/self/auxv", "rb").read()
    for off in range(0, len(raw) - 15, 16):
        a_type, a_val = struct.unpack_from("<QQ", raw, off)
        if a_type == 0:
            break
        if a_type == AT_SYSINFO_EHDR:
            return a_val != 0
    return False


def own_vsyscall_perms() -> str | None:
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[vsyscall]"):
            return line.split()[1]
    return None




def row(doc, call, path):
    (found,) = [r for r in doc["calls"] if r["call"] == call and r["path"] == path]
    return found


def test_document_has_the_contract_shape(host_doc):
    assert check_document(host_doc) == []
    assert host_doc["errors"] == []


def test_vdso_present_exactly_when_auxv_says_so(host_doc):
    assert host_doc["vdso"]["present"] is own_auxv_has_vdso()
    if host_doc["vdso"]["present"]:
        assert host_doc["vdso"]["size"] >= 4096
        assert host_doc["vdso"]["image"]


def test_abi_is_this_machine_s_64_bit_one(host_doc):
    # the host's helper is built by the host's cc: a 64-bit process, which gets no AT_SYSINFO
    assert host_doc["environment"]["abi"] == "x86_64"
    assert host_doc["vdso"]["kernel_vsyscall_address"] is None
    assert "AT_SYSINFO" not in host_doc["auxv"]
    assert not any(r["path"] == "kernel_vsyscall" for r in host_doc["calls"])


def test_vsyscall_mode_matches_maps(host_doc):
    perms = own_vsyscall_perms()
    expected = {None: "none", "r-xp": "emulate", "--xp": "xonly"}[perms]
    assert host_doc["vsyscall"]["mode"] == expected
    # Reading the page works exactly when maps says it is readable.
    assert host_doc["vsyscall"]["readable"] is (perms is not None and perms.startswith("r"))


def test_vdso_clock_gettime_makes_no_system_call(host_doc):
    if not host_doc["vdso"]["present"]:
        pytest.skip("this kernel maps no vDSO")
    r = row(host_doc, "clock_gettime(CLOCK_MONOTONIC)", "vdso")
    assert r["status"] == "ok"
    assert r["syscalls_per_call"] == 0


def test_raw_syscall_counts_one_system_call(host_doc):
    for call in ("getppid", "clock_gettime(CLOCK_MONOTONIC)", "gettimeofday", "time", "getcpu"):
        r = row(host_doc, call, "syscall")
        assert r["status"] == "ok", r
        assert r["syscalls_per_call"] == 1, r


def test_process_cputime_falls_back_to_the_kernel(host_doc):
    # No vDSO implements CLOCK_PROCESS_CPUTIME_ID: the vDSO symbol itself makes the system call.
    r = row(host_doc, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)", "vdso")
    if r["status"] == "unsupported":
        pytest.skip(r["reason"])
    assert r["syscalls_per_call"] == 1


def test_latency_method(host_doc):
    for r in host_doc["calls"]:
        if r["status"] == "ok":
            assert r["batches"] >= 31
            assert 0 <= r["ns"]["min"] <= r["ns"]["median"] <= r["ns"]["p90"]


def test_libc_identity(host_doc):
    libc = host_doc["environment"]["libc"]
    build = host_doc["environment"]["name"].split("-")[1]
    assert libc["linkage"] == ("dynamic" if build == "dynamic" else "static")
    assert libc["name"] == ("musl" if build == "musl" else "glibc")
    assert libc["version"]
    art = host_doc["artefacts"]["libc"]
    assert art["role"] == ("shared-object" if build == "dynamic" else "probe-binary")
    assert art["size"] > 0


def test_vsyscall_rows_are_results_even_when_they_crash(host_doc):
    for call in ("gettimeofday", "time", "getcpu"):
        r = row(host_doc, call, "vsyscall")
        if host_doc["vsyscall"]["mode"] == "none":
            assert r["status"] == "crashed" and r["signal"] == "SIGSEGV"
        else:
            assert r["status"] == "ok"


def test_dynamic_build_ships_its_loader(host_doc):
    """The dynamic loader (PT_INTERP, mapped at AT_BASE) is shipped byte for byte; static
    builds have none."""
    import base64
    import hashlib
    import os
    import zlib

    build = host_doc["environment"]["name"].split("-")[1]
    libc = host_doc["environment"]["libc"]
    art = host_doc["artefacts"].get("ldso")
    if build != "dynamic":
        assert art is None and "ldso_path" not in libc
        return
    assert libc["ldso_path"] == art["path"]
    assert os.path.basename(art["path"]).startswith("ld-")
    assert art["role"] == "dynamic-loader"
    with open(art["path"], "rb") as fh:
        on_disk = fh.read()
    assert art["sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert art["size"] == len(on_disk)
    assert zlib.decompress(base64.b64decode(art["zlib_base64"])) == on_disk
    # the same file the kernel loaded as this machine's interpreter for dynamic programs
    assert os.path.realpath("/lib64/ld-linux-x86-64.so.2") == os.path.realpath(art["path"])
