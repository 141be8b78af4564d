"""The probe in 32-bit x86 userlands (issue 12): auxv in 4-byte words, AT_SYSINFO, the ABI, and
the i386 helper's rows measured for real in the bookworm-i386 probe image."""

from __future__ import annotations

import re
import struct

import pytest
from fakes import load_probe

probe, _ = load_probe()

# /proc/self/auxv of python3 3.11 (a 32-bit process) in a bookworm i386 container on a 64-bit
# kernel: 4-byte words; AT_SYSINFO (32, __kernel_vsyscall) first, then AT_SYSINFO_EHDR (33, the
# vDSO's base, 0x5e0 bytes below it).
AUXV_I386 = bytes.fromhex(
    "20000000e085faf7210000000080faf733000000300d000010000000fffb8b170600000000100000"
    "110000006400000003000000348004080400000020000000050000000b0000000700000000a0faf7"
    "080000000000000009000000006b26080b000000000000000c000000000000000d00000000000000"
    "0e000000000000001700000000000000190000008b21c5ff1a000000020000001f000000e72fc5ff"
    "0f0000009b21c5ff1b0000001c0000001c0000002000000000000000000000000000000000000000"
    "0000000000000000"
)


def test_real_i386_auxv_parses_with_4_byte_words():
    entries, problems = probe.parse_auxv(AUXV_I386, 4)
    assert problems == []
    assert entries[6] == 4096  # AT_PAGESZ
    assert entries[probe.AT_SYSINFO_EHDR] == 0xF7FA8000
    assert entries[probe.AT_SYSINFO] == 0xF7FA85E0  # __kernel_vsyscall, inside the vDSO
    assert entries[probe.AT_SYSINFO_EHDR] < entries[probe.AT_SYSINFO] < \
        entries[probe.AT_SYSINFO_EHDR] + 0x2000
    assert entries[probe.AT_BASE] == 0xF7FAA000  # ld-linux.so.2
    assert probe.AUXV_NAMES[probe.AT_SYSINFO] == "AT_SYSINFO"


def test_i386_auxv_read_as_8_byte_words_is_garbage():
    """Why the word size matters: the same bytes in 8-byte words find no vDSO at all."""
    entries, _ = probe.parse_auxv(AUXV_I386, 8)
    assert probe.AT_SYSINFO_EHDR not in entries and probe.AT_SYSINFO not in entries


def test_4_byte_auxv_stops_at_at_null_and_keeps_the_first_of_a_repeated_type():
    raw = struct.pack("<10I", 32, 0xF7F00400, 32, 0xDEAD, 33, 0xF7F00000, 0, 0, 33, 1)
    entries, problems = probe.parse_auxv(raw, 4)
    assert entries == {32: 0xF7F00400, 33: 0xF7F00000}
    assert problems == []


def test_4_byte_auxv_truncated_mid_entry_says_so():
    entries, problems = probe.parse_auxv(AUXV_I386[:21], 4)
    assert entries == {32: 0xF7FA85E0, 33: 0xF7FA8000}
    assert any("5 trailing bytes" in p for p in problems)
    assert any("no AT_NULL" in p for p in problems)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 7, b"\xff" * 7, b"\xff" * 4096])
def test_4_byte_auxv_garbage_never_raises(raw):
    entries, problems = probe.parse_auxv(raw, 4)
    assert isinstance(entries, dict)
    assert problems


def test_default_word_is_this_process_s():
    assert probe.WORD == struct.calcsize("P")
    native = struct.pack("<QQQQ" if probe.WORD == 8 else "<IIII", 33, 0x7000, 0, 0)
    assert probe.parse_auxv(native) == ({33: 0x7000}, [])
    with pytest.raises(ValueError):
        probe.parse_auxv(b"", 2)


@pytest.mark.parametrize("machine, word, abi", [
    ("x86_64", 8, "x86_64"),
    ("x86_64", 4, "i386"),  # a 32-bit process on a 64-bit kernel: uname still says x86_64
    ("i686", 4, "i386"),    # a 32-bit kernel
    ("aarch64", 8, "aarch64"),
    ("aarch64", 4, None),   # 32-bit arm: not an ABI of the matrix
    ("riscv64", 8, None),
])
def test_own_abi(machine, word, abi):
    assert probe.own_abi(machine, word) == abi


def fake_helper(abi):
    return {"abi": abi, "pinned_cpu": 0, "method": {"batches": 31},
            "libc": {"name": "glibc", "version": "2.36", "linkage": "static"},
            "vsyscall_read": {"readable": False,
                              "reason": "no vsyscall page for 32-bit processes"},
            "calls": [{"call": "gettimeofday", "path": "vsyscall", "status": "unsupported",
                       "reason": "no vsyscall page for 32-bit processes"}]}


def test_collect_takes_the_abi_from_the_helper(monkeypatch):
    native = probe.own_abi(probe.os.uname().machine)
    if native is None:
        pytest.skip("not an x86 machine")
    monkeypatch.setattr(probe, "artefact", lambda path, role, errors: {"path": path})
    # the second run is the helper's --correctness one (issue 16)
    monkeypatch.setattr(probe, "run_helper", lambda helper, errors, timeout, args=():
                        {"correctness": {}} if args else fake_helper(native))
    doc = probe.collect("/bin/true", "t", "host", 30)
    assert doc["environment"]["abi"] == native and doc["errors"] == []
    address = doc["vdso"]["kernel_vsyscall_address"]
    if native == "x86_64":
        assert address is None  # a 64-bit process gets no AT_SYSINFO
    else:
        assert re.fullmatch(r"0x[0-9a-f]+", address)

    other = "i386" if native == "x86_64" else "x86_64"
    monkeypatch.setattr(probe, "run_helper", lambda helper, errors, timeout, args=():
                        {"correctness": {}} if args else fake_helper(other))
    doc = probe.collect("/bin/true", "t", "host", 30)
    assert doc["environment"]["abi"] == other
    assert any("is not this python3's" in e for e in doc["errors"]), doc["errors"]


# --------------------------------------------------------------- the real i386 image ---------

def _row(doc, call, path):
    (found,) = [r for r in doc["calls"] if r["call"] == call and r["path"] == path]
    return found


@pytest.fixture(scope="module", params=["dynamic", "static", "musl"])
def i386_doc(request, engine):
    """The probe's document from the bookworm-i386 probe image (built here when missing: CI
    keeps one i386 container among its real-engine tests)."""
    from vdsomatrix.backends.docker import DockerBackend
    from vdsomatrix.images.probe_image import ensure_probe_image
    from vdsomatrix.matrix import load_matrix

    matrix = load_matrix()
    ensure_probe_image(matrix.suites["bookworm-i386"], client=engine, log=lambda m: None)
    name = {"dynamic": "bookworm-i386"}.get(request.param, f"bookworm-i386-{request.param}")
    env = matrix.get(name)
    outcome = DockerBackend().run_probe(env, deadline=240, log=lambda m: None)
    assert outcome.status == "ok", outcome.errors + outcome.log_tail
    outcome.document["run"] = {"status": "ok"}
    return request.param, outcome.document


@pytest.mark.engine
@pytest.mark.slow
def test_i386_document_is_valid_and_32_bit(i386_doc):
    from vdsomatrix.results import check_document

    build, doc = i386_doc
    assert check_document(doc) == [] and doc["errors"] == []
    assert doc["environment"]["abi"] == "i386"
    assert doc["environment"]["kernel"]["machine"] == "x86_64"  # the 64-bit kernel underneath
    base, kvs = doc["vdso"]["base"], doc["vdso"]["kernel_vsyscall_address"]
    assert doc["auxv"]["AT_SYSINFO"] == int(kvs, 16)
    assert base < int(kvs, 16) < base + doc["vdso"]["size"] < 1 << 32
    image = __import__("base64").b64decode(doc["vdso"]["image"])
    assert image[:5] == b"\x7fELF\x01"  # ELFCLASS32: the 32-bit vDSO
    assert doc["vsyscall"]["mode"] == "none" and doc["vsyscall"]["readable"] is False
    assert doc["environment"]["libc"]["name"] == ("musl" if build == "musl" else "glibc")


@pytest.mark.engine
@pytest.mark.slow
def test_i386_rows(i386_doc):
    _, doc = i386_doc
    paths = {(r["call"], r["path"]) for r in doc["calls"]}
    assert not any(p == "syscall" for _, p in paths)  # a 32-bit process has no syscall path
    for path in ("libc", "int80", "kernel_vsyscall"):
        r = _row(doc, "getppid", path)
        assert r["status"] == "ok" and r["syscalls_per_call"] == 1, r
    for call in ("clock_gettime(CLOCK_MONOTONIC)", "clock_gettime64(CLOCK_MONOTONIC)",
                 "gettimeofday", "time", "clock_getres(CLOCK_MONOTONIC)"):
        r = _row(doc, call, "int80")
        assert r["status"] == "ok" and r["syscalls_per_call"] == 1, r
        vdso = _row(doc, call, "vdso")
        assert vdso["status"] == "ok", vdso
        # the vDSO reads the clock in user space where the clocksource allows it (tsc)
        if doc["environment"]["kernel"]["clocksource"] == "tsc":
            assert vdso["syscalls_per_call"] == 0, vdso
    assert _row(doc, "clock_gettime(CLOCK_MONOTONIC)", "kernel_vsyscall")["status"] == "ok"
    assert "%gs:0x10" in _row(doc, "getppid", "kernel_vsyscall")["detail"]
    for call in ("gettimeofday", "time", "getcpu"):
        r = _row(doc, call, "vsyscall")
        assert r["status"] == "unsupported"
        assert r["reason"] == "no vsyscall page for 32-bit processes"


def test_the_probes_32_bit_exec_check_agrees_with_the_hosts():
    # Two independent ways to the same fact: the probe runs its own 32-bit program from a memfd,
    # the docker backend runs another from a file; both must answer alike on this kernel.
    from vdsomatrix.backends.docker import ia32_support

    errors = []
    found = probe.ia32_exec(errors)
    assert errors == []
    runs, why = ia32_support()
    assert found["runs"] is runs, (found, why)
    assert (found["error"] is None) is runs


def test_a_refused_32_bit_exec_is_reported_with_its_errno(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(8, "Exec format error")

    monkeypatch.setattr(probe.subprocess, "run", refuse)
    assert probe.ia32_exec([]) == {"runs": False, "error": "ENOEXEC: Exec format error"}
