"""vDSO analysis: agrees with objdump on this host's real vDSO, survives hostile images."""

from __future__ import annotations

import base64
import json
import random
import subprocess

from analysis_support import (
    assert_symbols_match,
    host_vdso,
    host_vdso_file,
    make_doc,
    need,
    objdump_entry_sites,
    objdump_T,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdsomatrix.analysis import analyse_result
from vdsomatrix.analysis.artefacts import MAX_VDSO_IMAGE


def _vdso_analysis() -> dict:
    result = analyse_result(make_doc(vdso=host_vdso()))
    assert result["errors"] == []
    assert result["vdso"] is not None
    assert json.loads(json.dumps(result)) == result  # results are stored as JSON
    return result["vdso"]


def test_symbols_and_versions_equal_objdump_T():
    expected = objdump_T(host_vdso_file())
    assert expected, "objdump -T printed no symbols for the host vDSO"
    got = _vdso_analysis()["symbols"]
    assert_symbols_match(got, expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine["type"] == "GNU_IFUNC") == theirs["ifunc"], mine["name"]


def test_soname_and_build_id_equal_readelf():
    vdso = _vdso_analysis()
    notes = subprocess.run([need("readelf"), "-n", "-d", str(host_vdso_file())],
                           capture_output=True, text=True, check=True).stdout
    build_ids = [line.split(":", 1)[1].strip() for line in notes.splitlines()
                 if "Build ID:" in line]
    assert vdso["build_id"] == (build_ids[0] if build_ids else None)
    sonames = [line.split("[", 1)[1].rstrip("]") for line in notes.splitlines()
               if "(SONAME)" in line]
    assert vdso["soname"] == (sonames[0] if sonames else None)
    assert vdso["size"] == len(host_vdso())


def test_syscall_fallbacks_equal_objdump_d():
    path = host_vdso_file()
    vdso = _vdso_analysis()
    functions = [s for s in vdso["symbols"] if s["type"] == "FUNC" and s["size"]]
    assert functions
    for sym in functions:
        expected = objdump_entry_sites(path, sym["value"], sym["value"] + sym["size"])
        assert sym["syscall_sites"] == sorted(expected), sym["name"]
        assert sym["syscall_fallback"] is bool(expected), sym["name"]
    whole = objdump_entry_sites(path)
    census = vdso["census"]
    assert census["syscall"] == sum(1 for k in whole.values() if k == "syscall")
    assert census["sysenter"] + census["int80"] == sum(1 for k in whole.values() if k != "syscall")


def test_no_vdso_is_not_an_error():
    doc = make_doc(vdso=None)
    assert analyse_result(doc) == {"vdso": None, "libc": None, "ldso": None, "errors": []}
    del doc["vdso"]
    assert analyse_result(doc)["errors"] == []


def test_bad_encodings_are_one_line_errors():
    cases = {
        "not base64 at all!": "bad base64",
        12345: "expected base64 text",
        "": "empty",
        "A" * ((MAX_VDSO_IMAGE // 3 + 3) * 4): "exceeds the cap",
        base64.b64encode(b"MZ\x90\x00" * 100).decode(): "not an ELF file",
        base64.b64encode(host_vdso()[:40]).decode(): "truncated or malformed ELF header",
    }
    for image, expected in cases.items():
        doc = make_doc()
        doc["vdso"] = {"present": True, "image": image}
        result = analyse_result(doc)
        assert result["vdso"] is None
        assert len(result["errors"]) == 1, result["errors"]
        assert result["errors"][0].startswith("vdso image: ")
        assert expected in result["errors"][0]
        assert "\n" not in result["errors"][0]


def test_truncated_section_table_is_named():
    image = host_vdso()
    cut = int.from_bytes(image[0x28:0x30], "little") + 100  # inside the section header table
    result = analyse_result(make_doc(vdso=image[:cut]))
    assert f"vdso image: truncated ELF (section header table past end of {cut} bytes)" \
        in result["errors"], result["errors"]


def _check_hostile(image: bytes) -> None:
    result = analyse_result(make_doc(vdso=image))
    assert set(result) == {"vdso", "libc", "ldso", "errors"}
    assert all(isinstance(e, str) and "\n" not in e and e for e in result["errors"])
    if result["vdso"] is None:
        assert result["errors"], "an unreadable image must say why"


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_vdso_never_raises(data):
    image = bytearray(host_vdso())
    how = data.draw(st.sampled_from(["truncate", "header", "anywhere", "garbage"]))
    if how == "truncate":
        image = image[: data.draw(st.integers(0, len(image)))]
    elif how == "garbage":
        image = bytearray(data.draw(st.binary(max_size=4096)))
    else:
        limit = 64 if how == "header" else len(image)
        flips = data.draw(st.lists(st.tuples(st.integers(0, limit - 1), st.integers(0, 255)),
                                   min_size=1, max_size=24))
        for offset, value in flips:
            image[offset] = value
    _check_hostile(bytes(image))


def test_seeded_section_table_mutations_never_raise():
    """Flip bytes where the damage is most interesting: section headers and symbol tables."""
    original = host_vdso()
    rng = random.Random(20240521)
    shoff = int.from_bytes(original[0x28:0x30], "little")
    for _ in range(150):
        image = bytearray(original)
        for _ in range(rng.randrange(1, 12)):
            image[rng.randrange(min(shoff, len(image) - 1), len(image))] = rng.randrange(256)
        if rng.random() < 0.3:  # and sometimes a wild header field
            field = rng.choice([0x20, 0x28, 0x36, 0x38, 0x3A, 0x3C, 0x3E])
            image[field:field + 2] = rng.randbytes(2)
        _check_hostile(bytes(image))
