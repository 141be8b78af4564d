"""The probe's parsers, on real captured inputs and on hostile ones."""

import struct
from pathlib import Path

import pytest
from fakes import load_probe

probe, _ = load_probe()

DATA = Path(__file__).resolve().parents[1] / "data"


def test_real_auxv_has_the_vdso_and_terminates():
    entries, problems = probe.parse_auxv((DATA / "auxv-host-6.18.bin").read_bytes())
    assert problems == []
    assert entries[probe.AT_SYSINFO_EHDR] > 0
    assert entries[6] == 4096  # AT_PAGESZ


def test_real_64_bit_auxv_has_no_at_sysinfo():
    # AT_SYSINFO (__kernel_vsyscall) is for 32-bit processes only; the word size is explicit
    entries, problems = probe.parse_auxv((DATA / "auxv-host-6.18.bin").read_bytes(), 8)
    assert problems == [] and probe.AT_SYSINFO not in entries
    assert probe.AUXV_NAMES[probe.AT_SYSINFO] == "AT_SYSINFO"


def test_auxv_truncated_mid_entry_keeps_whole_entries_and_says_so():
    raw = (DATA / "auxv-host-6.18.bin").read_bytes()
    entries, problems = probe.parse_auxv(raw[:37])
    assert len(entries) == 2
    assert any("trailing bytes" in p for p in problems)
    assert any("no AT_NULL" in p for p in problems)


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\xff" * 15, b"\xff" * 4096])
def test_auxv_garbage_never_raises(raw):
    entries, problems = probe.parse_auxv(raw)
    assert isinstance(entries, dict)
    assert problems


def test_auxv_stops_at_at_null():
    raw = struct.pack("<QQQQQQ", 33, 0x1000, 0, 0, 33, 0x2000)
    entries, problems = probe.parse_auxv(raw)
    assert entries == {33: 0x1000}
    assert problems == []


def test_real_maps_parse_completely():
    mappings, problems = probe.parse_maps((DATA / "maps-host-python.txt").read_text())
    assert problems == []
    paths = {m["path"] for m in mappings}
    assert {"[vdso]", "[vvar]", "[stack]", "[vsyscall]"} <= paths
    assert probe.vsyscall_mode(mappings) == "xonly"


ODD_MAPS = """\
7f00-7f10 r-xp 00000000 00:00 0                          [vdso]
not a maps line at all
ffffffffff600000-ffffffffff601000 r-xp 00000000 00:00 0 [vsyscall]
5555-4444 r--p 00000000 00:00 0 backwards
7f20-7f30 rw-p 00000000 00:00 0                          /path with spaces/lib.so (deleted)
7f40-7f50 rwxpq 0 0 0
zz-7f60 r--p 00000000 00:00 0
7f70-7f80 r--p 00000000 00:00 0
"""


def test_odd_maps_lines_are_reported_not_fatal():
    mappings, problems = probe.parse_maps(ODD_MAPS)
    assert [m["path"] for m in mappings] == [
        "[vdso]", "[vsyscall]", "/path with spaces/lib.so (deleted)", "",
    ]
    assert len(problems) == 4
    assert probe.vsyscall_mode(mappings) == "emulate"


@pytest.mark.parametrize(
    "perms,mode", [("r-xp", "emulate"), ("--xp", "xonly"), (None, "none")]
)
def test_vsyscall_mode_from_perms(perms, mode):
    lines = "7f00-7f10 r-xp 00000000 00:00 0 [vdso]\n"
    if perms:
        lines += f"ffffffffff600000-ffffffffff601000 {perms} 00000000 00:00 0 [vsyscall]\n"
    mappings, _ = probe.parse_maps(lines)
    assert probe.vsyscall_mode(mappings) == mode


def test_os_release_quoting():
    info = probe.parse_os_release(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n# c\nBAD\nVERSION_ID="12"\n'
        "NAME='x y'\nBROKEN=\"unterminated\n"
    )
    assert info["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert info["VERSION_ID"] == "12"
    assert info["NAME"] == "x y"
    assert "BROKEN" in info


def test_dpkg_version(tmp_path):
    status = tmp_path / "status"
    status.write_text(
        "Package: musl\nStatus: install ok installed\nVersion: 1.2.3-1\n\n"
        "Package: musl-dev\nStatus: deinstall ok config-files\nVersion: 9\n"
    )
    assert probe.dpkg_version("musl", str(status)) == "1.2.3-1"
    assert probe.dpkg_version("musl-dev", str(status)) is None
    assert probe.dpkg_version("musl", str(tmp_path / "missing")) is None
