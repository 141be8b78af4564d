"""The QEMU backend: the result frame, the guest's /init and command line, the caches, the boot
loop, and real boots.

Unit tests drive the boot loop with a fake ``qemu-system-x86_64`` (a small Python script that
writes to the serial files it is given), so every outcome (ok, panic, timeout, QEMU error,
truncated result, flooding, Ctrl-C, an interrupted run, a killed parent) is checked without
emulation. The tests marked ``qemu`` boot the real bookworm kernel under QEMU; they skip on a
machine without QEMU or a Docker engine and fail in CI (CI=true), where the machine must have both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdsomatrix import contract, processes
from vdsomatrix.analysis import artefacts
from vdsomatrix.backends import qemu as qb
from vdsomatrix.backends.qemu import QemuBackend, qemu_argv
from vdsomatrix.engine import accel, workdirs
from vdsomatrix.engine import frame as framing
from vdsomatrix.engine import guest as engine_guest
from vdsomatrix.engine.guest import Guest
from vdsomatrix.errors import BadInput
from vdsomatrix.images import guest_init as guest
from vdsomatrix.images import initramfs, kernels
from vdsomatrix.images.guest_init import kernel_cmdline
from vdsomatrix.images.initramfs import CacheKey, InitramfsCache, read_file
from vdsomatrix.matrix import BackendName, Build, Environment, KernelSpec, Suite

BOOKWORM = Suite("bookworm", "bookworm")


def frame(payload: bytes, rc: int = 0, *, digest: str | None = None) -> bytes:
    digest = digest or hashlib.sha256(payload).hexdigest()
    header = f"VDSOMATRIX-BEGIN v1 rc={rc} len={len(payload)} sha256={digest}\n".encode()
    return header + payload + b"\nVDSOMATRIX-END\n"


DOC = json.dumps({"schema": "vdsomatrix/1", "environment": {"name": "t"}}).encode() + b"\n"


# --- the frame --------------------------------------------------------------------------------


def test_complete_frame():
    got = framing.parse_frame(frame(DOC, rc=3))
    assert (got.status, got.payload, got.rc) == ("complete", DOC, 3)


def test_noise_before_the_frame_is_ignored():
    got = framing.parse_frame(b"\x00\xffSeaBIOS noise\r\nmore\n" + frame(DOC))
    assert got.status == "complete" and got.payload == DOC


def test_crlf_translation_is_undone_once():
    wire = frame(DOC).replace(b"\n", b"\r\n")
    got = framing.parse_frame(wire)
    assert got.status == "complete" and got.payload == DOC


@pytest.mark.parametrize("cut", [10, 60, 120, 150, -20, -3])
def test_truncated_frames(cut):
    wire = frame(DOC)
    got = framing.parse_frame(wire[:cut])
    assert got.status in ("truncated", "missing") and got.payload is None


def test_nothing_at_all():
    assert framing.parse_frame(b"").status == "missing"
    assert framing.parse_frame(b"random \x00 garbage\n" * 50).status == "missing"


def test_hash_mismatch_is_corrupt():
    wire = bytearray(frame(DOC))
    wire[wire.index(b"{") + 3] ^= 0x20
    assert framing.parse_frame(bytes(wire)).status == "corrupt"


def test_header_must_start_a_line():
    assert framing.parse_frame(b"xx" + frame(DOC)).status == "missing"


@pytest.mark.parametrize(
    "wire",
    [
        b"VDSOMATRIX-BEGIN v1 rc=0 len=-5 sha256=" + b"0" * 64 + b"\n",
        b"VDSOMATRIX-BEGIN v2 rc=0 len=5 sha256=" + b"0" * 64 + b"\nhello\nVDSOMATRIX-END\n",
        b"VDSOMATRIX-BEGIN v1 rc=0 len=5 sha256=nothex\n" + b"x" * 300,
        b"VDSOMATRIX-BEGIN v1 rc=0 len=999999999 sha256=" + b"0" * 64 + b"\n",
    ],
)
def test_hostile_headers_are_refused(wire):
    got = framing.parse_frame(wire)
    assert got.status in ("corrupt", "truncated") and got.payload is None


def test_payload_cannot_fake_the_end_marker():
    payload = b"\nVDSOMATRIX-END\n\nVDSOMATRIX-BEGIN v1 rc=0 len=1 sha256=" + b"0" * 64 + b"\n"
    got = framing.parse_frame(frame(payload))
    assert got.status == "complete" and got.payload == payload


def test_missing_end_marker_after_a_valid_payload():
    wire = frame(DOC).replace(b"VDSOMATRIX-END", b"SOMETHING-ELSE")
    assert framing.parse_frame(wire).status == "corrupt"


def test_first_frame_wins():
    got = framing.parse_frame(frame(b"one") + frame(b"two"))
    assert got.payload == b"one"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data):
    got = framing.parse_frame(data)
    assert got.status in ("complete", "missing", "truncated", "corrupt")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_a_prefix_is_never_mistaken_for_another_payload(payload, data):
    wire = frame(payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)))
    got = framing.parse_frame(wire[:cut])
    if got.status == "complete":
        assert got.payload == payload
    else:
        assert got.payload is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.lists(st.integers(1, 40), max_size=30))
def test_fed_in_pieces_or_whole_the_verdict_is_the_same(payload, crlf, sizes):
    wire = frame(payload)
    if crlf:
        wire = wire.replace(b"\n", b"\r\n")
    parser, pos = framing.FrameParser(), 0
    for size in sizes:
        parser.feed(wire[pos : pos + size])
        pos += size
    parser.feed(wire[pos:])
    assert parser.frame() == framing.parse_frame(wire)
    assert parser.frame().status == "complete" and parser.frame().payload == payload


def test_the_payload_cap_is_the_contract_cap():
    assert framing.MAX_PAYLOAD == contract.MAX_OUTPUT
    assert framing.PORT_LIMIT >= 2 * contract.MAX_OUTPUT


def test_an_announced_length_over_the_cap_is_refused_before_any_byte_arrives():
    parser = framing.FrameParser()
    parser.feed(f"VDSOMATRIX-BEGIN v1 rc=0 len={framing.MAX_PAYLOAD + 1} sha256={'0' * 64}\n"
                .encode())
    assert parser.decided and parser.frame().status == "corrupt"
    assert "too big" in parser.frame().problem


def test_the_port_is_read_up_to_its_limit_and_no_further():
    parser = framing.FrameParser(limit=1000)
    parser.feed(b"noise\n" * 100)
    parser.feed(b"noise\n" * 100)
    assert parser.decided and parser.received == 1000
    assert parser.frame().status == "corrupt" and "result port" in parser.frame().problem
    parser.feed(frame(DOC))
    assert parser.received == 1000 and parser.frame().status == "corrupt"


def test_the_result_port_reads_each_byte_once(tmp_path):
    """The boot loop polls every 0.2 s: a poll reads only what arrived since the last one, and
    nothing at all once the verdict is in (a hostile guest cannot make the host re-read or
    re-hash its output)."""
    path = tmp_path / "result.log"
    wire = b"SeaBIOS noise\n" + frame(DOC * 50)
    port = framing.ResultPort(path)
    assert port.poll() is False  # no file yet
    fed = []
    real_feed = port.parser.feed
    port.parser.feed = lambda data: (fed.append(len(data)), real_feed(data))
    with open(path, "wb", buffering=0) as fh:
        for cut in range(0, len(wire), 700):
            fh.write(wire[cut : cut + 700])
            port.poll()
            assert port.parser.received == fh.tell()
        assert port.poll() is True
        before = sum(fed)
        port.poll()
        fh.write(b"x" * 5000)  # after the verdict: never read
        assert port.poll() is True
    assert sum(fed) == before == len(wire)
    assert port.frame().payload == DOC * 50
    port.close()


def test_a_corrupt_result_stops_the_reading(tmp_path):
    path = tmp_path / "result.log"
    wire = bytearray(frame(DOC))
    wire[wire.index(b"{") + 3] ^= 0x20
    path.write_bytes(bytes(wire))
    port = framing.ResultPort(path)
    assert port.poll() is False and port.parser.decided
    with open(path, "ab") as fh:
        fh.write(b"y" * 10_000)
    port.poll()
    assert port.parser.received == len(wire)
    assert port.frame().status == "corrupt"
    port.close()


# --- the command line and the guest's /init -----------------------------------------------------


def env(cmdline: str = "", name: str = "k6.1", build: str = "dynamic",
        suite: Suite = BOOKWORM) -> Environment:
    return Environment(name=name, backend=BackendName.QEMU, userland=suite, build=Build(build),
                       kernel=KernelSpec("bookworm"), cmdline=cmdline)


def test_default_cmdline():
    assert kernel_cmdline(env(), 180) == (
        "console=ttyS0 panic=-1 cryptomgr.notests vdsomatrix.env=k6.1 vdsomatrix.build=dynamic "
        "vdsomatrix.budget=180"
    )


def test_matrix_words_come_between_ours_and_the_guest_parameters():
    line = kernel_cmdline(env("vdso=0  vsyscall=emulate", name="k6.1-x", build="musl"), 5)
    assert line == (
        "console=ttyS0 panic=-1 cryptomgr.notests vdso=0 vsyscall=emulate vdsomatrix.env=k6.1-x "
        "vdsomatrix.build=musl vdsomatrix.budget=5"
    )


@pytest.mark.parametrize(
    "word", ["console=tty0", "panic=0", "init=/bin/sh", "rdinit=/x", "vdsomatrix.env=evil",
             "vdsomatrix.budget=9", "--"]
)
def test_reserved_words_are_refused(word):
    with pytest.raises(BadInput, match="set by the qemu backend"):
        kernel_cmdline(env(f"vdso=0 {word}"), 10)
    assert guest.cmdline_problems(f"vdso=0 {word}") == [word]


@pytest.mark.parametrize("budget", [0, -1, 1.5, "10"])
def test_the_budget_must_be_a_positive_whole_number(budget):
    with pytest.raises(BadInput, match="budget"):
        kernel_cmdline(env(), budget)


def test_qemu_argv_tcg_and_kvm(tmp_path):
    common = dict(qemu="qemu-system-x86_64", vmlinuz=tmp_path / "vmlinuz",
                  initrd=tmp_path / "i.cpio", append="console=ttyS0",
                  console=tmp_path / "c.log", result=tmp_path / "r.log")  # fmt: skip
    argv = qemu_argv(accel="tcg", **common)
    joined = " ".join(argv)
    for part in ("-no-reboot", "-nic none", "-accel tcg", "-cpu max", "-smp 1", "-m 1024",
                 "-display none", "-nodefaults"):  # fmt: skip
        assert part in joined
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == [f"file:{tmp_path / 'c.log'}", f"file:{tmp_path / 'r.log'}"]
    assert argv[argv.index("-append") + 1] == "console=ttyS0"
    assert "-cpu host" in " ".join(qemu_argv(accel="kvm", **common))


def test_mtree_paths_escape_odd_characters():
    assert initramfs._mtree_path(Path("/a b/c#d")) == "/a\\040b/c\\043d"


def test_recipe_hash_follows_the_init_script(monkeypatch):
    before = initramfs.initramfs_recipe_hash()
    monkeypatch.setattr(guest, "INIT_SCRIPT", guest.INIT_SCRIPT + "# changed\n")
    assert initramfs.initramfs_recipe_hash() != before


def test_init_script_reads_what_the_backend_sets():
    for key in ("vdsomatrix.env=", "vdsomatrix.build=", "vdsomatrix.budget=",
                "vdsomatrix.port=", '>"/dev/$port"', "port=ttyS1", "VDSOMATRIX-BEGIN v1"):
        assert key in guest.INIT_SCRIPT
    assert guest.probe_command() in guest.INIT_SCRIPT
    assert guest.READ_PARAMETERS in guest.INIT_SCRIPT


def _sh(script: str) -> list[str]:
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_init_runs_the_contract_command_line():
    """The shell line in /init, with its variables set, is exactly contract.probe_argv."""
    words = _sh("name=k6.1-x; build=musl; budget=42\n"
                f"set -- {guest.probe_command()}\nprintf '%s\\n' \"$@\"")
    assert words == contract.probe_argv(
        python="python3", probe=contract.PROBE_IN_IMAGE,
        helper=contract.HELPER_IN_IMAGE.format(build="musl"), name="k6.1-x", backend="qemu",
        budget=42, artefacts_by_digest=True)


def _by_digest(data: bytes, file: str = "/usr/lib/x86_64-linux-gnu/libc.so.6") -> dict:
    return {"artefacts": {"libc": {
        "path": "/lib/x86_64-linux-gnu/libc.so.6", "file": file, "role": "shared-object",
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "by_digest": True}}}


def test_an_artefact_shipped_by_digest_is_the_hosts_copy_when_the_digest_matches():
    data = b"\x7fELF" + bytes(range(256)) * 40
    doc, asked = _by_digest(data), []

    def reader(path, limit):
        asked.append((path, limit))
        return data

    assert contract.resolve_artefacts(doc, reader, "the guest's initramfs") == []
    assert asked == [("/usr/lib/x86_64-linux-gnu/libc.so.6", len(data))]
    decoded = artefacts.decode_libc(doc)
    assert decoded.data == data and not decoded.errors
    assert "the same size and SHA-256" in doc["artefacts"]["libc"]["source"]


@pytest.mark.parametrize("file, copy, why", [
    ("/usr/lib/libc.so.6", b"other bytes", "is not the file the probe loaded"),
    ("/usr/lib/libc.so.6", None, "has no file /usr/lib/libc.so.6"),
    ("/usr/lib/*", b"x", "not named by a plain absolute path"),
    ("/usr/../etc/shadow", b"x", "not named by a plain absolute path"),
    ("usr/lib/libc.so.6", b"x", "not named by a plain absolute path"),
    ("/usr/lib/libc.so.6\n", b"x", "not named by a plain absolute path"),
])
def test_an_artefact_whose_copy_does_not_match_is_an_error_not_data(file, copy, why):
    doc = _by_digest(b"the bytes the guest loaded", file)
    doc["artefacts"]["libc"]["zlib_base64"] = "c2VudCBieSB0aGUgZ3Vlc3Q="  # never trusted
    errors = contract.resolve_artefacts(doc, lambda path, limit: copy, "the initramfs")
    assert len(errors) == 1 and why in errors[0] and "\n" not in errors[0]
    assert "zlib_base64" not in doc["artefacts"]["libc"]
    assert artefacts.decode_libc(doc).data is None


def test_artefacts_are_read_from_the_initramfs_within_their_size(tmp_path):
    if shutil.which("bsdtar") is None:
        pytest.skip("bsdtar (libarchive-tools) is not installed")
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/libc.so.6").write_bytes(b"libc bytes")
    (root / "usr/lib/big").write_bytes(b"x" * 4096)
    cpio = tmp_path / "initrd.cpio"
    subprocess.run(["bsdtar", "--format", "newc", "-cf", str(cpio), "-C", str(root), "usr"],
                   check=True)
    assert read_file(cpio, "/usr/lib/libc.so.6", 100) == b"libc bytes"
    assert read_file(cpio, "/usr/lib/big", 100) is None  # larger than the probe said
    assert read_file(cpio, "/usr/lib/missing", 100) is None


@pytest.mark.parametrize("argument", ['a"b', "a\\b", "a`id`", "$HOME"])
def test_an_argument_the_shell_would_read_is_refused(monkeypatch, argument):
    real = contract.probe_argv
    monkeypatch.setattr(contract, "probe_argv", lambda **kw: [*real(**kw), argument])
    with pytest.raises(ValueError, match="double quotes"):
        guest.probe_command()


def read_parameters(cmdline: str) -> tuple[str, str, str]:
    script = ('say() { :; }\ncmdline=' + "'" + cmdline + "'\n" + guest.READ_PARAMETERS
              + 'echo "$name"; echo "$build"; echo "$budget"\n')
    name, build, budget = _sh(script)
    return name, build, budget


FALLBACK = str(guest.FALLBACK_BUDGET)


@pytest.mark.parametrize(
    "words, expected",
    [
        ("vdsomatrix.env=k6.1 vdsomatrix.build=static vdsomatrix.budget=180",
         ("k6.1", "static", "180")),
        ("", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.budget=12x", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.budget=0", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.budget=0077", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.budget=999999", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.budget=", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.env=a;reboot vdsomatrix.build=evil", ("unnamed", "dynamic", FALLBACK)),
        ("vdsomatrix.env=* vdsomatrix.budget=*", ("unnamed", "dynamic", FALLBACK)),
    ],
)
def test_init_checks_its_parameters(words, expected):
    assert read_parameters(f"console=ttyS0 {words} quiet") == expected


# --- the initramfs cache ------------------------------------------------------------------------


def test_cache_keys_belong_to_exactly_one_suite():
    key = CacheKey("bookworm-x", "0123456789ab", "ba9876543210")
    assert CacheKey.parse(key.file_name) == key
    assert CacheKey.parse("bookworm-0879769889e4-c823d374c3b6.cpio") is None  # older naming
    assert CacheKey.parse("bookworm_0879769889e4_c823d374c3b6.cpio.tmp") is None


class FakeDocker:
    """Just what InitramfsCache asks of a Docker client."""

    def __init__(self, image_id: str = "sha256:" + "ab" * 32):
        self.images = SimpleNamespace(get=lambda tag: SimpleNamespace(id=image_id))

    def close(self):
        pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    builds = []

    def build(client, image, dest, *, arch="amd64", whole=False, log=print):
        builds.append(image)
        time.sleep(0.3)
        dest.write_bytes(b"07070100")
        return {"bytes": 8, "seconds": 0.3}

    monkeypatch.setattr(initramfs, "build_initramfs", build)
    made = InitramfsCache(image_for=lambda suite, rebuild, log: f"probe:{suite.name}",
                          client_factory=FakeDocker)
    made.builds = builds
    return made


def test_building_a_suite_keeps_the_files_of_a_suite_whose_name_extends_it(cache):
    """`bookworm-*.cpio` once matched the cache of a suite named bookworm-x, too."""
    folder = cache.folder()
    folder.mkdir(parents=True)
    other = folder / CacheKey("bookworm-x", "1" * 12, "2" * 12).file_name
    superseded = folder / CacheKey("bookworm", "3" * 12, "4" * 12).file_name
    other.write_bytes(b"x")
    superseded.write_bytes(b"x")
    path = cache.prepare(BOOKWORM, log=lambda m: None)
    assert path.is_file() and CacheKey.parse(path.name).suite == "bookworm"
    assert other.is_file() and not superseded.exists()
    assert json.loads(cache.pointer("bookworm").read_text())["file"] == path.name
    assert InitramfsCache().cached(BOOKWORM) == path  # a new process finds it by the pointer


def test_parallel_rebuilds_of_one_suite_build_once(cache):
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: cache.prepare(BOOKWORM, rebuild=True,
                                                      log=lambda m: None), range(3)))
    assert len(set(paths)) == 1 and cache.builds == ["probe:bookworm"]


def test_a_pointer_cannot_name_a_file_of_another_suite_or_folder(cache):
    folder = cache.folder()
    folder.mkdir(parents=True)
    other = CacheKey("trixie", "1" * 12, "2" * 12).file_name
    (folder / other).write_bytes(b"x")
    for name in (other, "../../etc/passwd", "/etc/passwd"):
        cache.pointer("bookworm").write_text(json.dumps({"file": name}))
        assert cache.cached(BOOKWORM) is None


# --- cleaning up ----------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_clean_removes_work_folders_of_dead_runs_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    tmp = tmp_path / "tmp"
    dead, live = f"{_dead_pid()}.1.abcdefgh", f"{workdirs.owner_tag()}.abcdefgh"
    reused = f"{os.getpid()}.1.abcdefgh"  # our pid, but another process's start time
    folders = {
        tmp / f"vdsomatrix-qemu-k6.1-{dead}": False,
        tmp / f"vdsomatrix-qemu-k6.1-{reused}": False,
        tmp / f"vdsomatrix-qemu-k6.1-{live}": True,
        tmp / f"vdsomatrix-qemu-apt-{dead}": False,
        tmp / f"vdsomatrix-images-{dead}": True,  # another backend's
        tmp / "vdsomatrix-qemu-k6.1-abc123": True,  # no owner in its name: cannot tell
        tmp_path / "cache" / "initramfs" / f".building-{dead}": False,
        tmp_path / "cache" / "kernels" / f".unpacking-{dead}": False,
    }
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "console.log").write_text("x")
    QemuBackend().clean(log=lambda m: None)
    assert {f: f.exists() for f in folders} == folders


def test_clean_with_images_removes_what_no_pointer_names(cache, tmp_path):
    current = cache.prepare(BOOKWORM, log=lambda m: None)
    folder = cache.folder()
    orphan = folder / CacheKey("bullseye", "1" * 12, "2" * 12).file_name
    older = folder / "bookworm-0879769889e4-c823d374c3b6.cpio"
    orphan.write_bytes(b"x")
    older.write_bytes(b"x")
    root = kernels.kernels_dir()
    for name in ("linux-image-6.1.0-50-amd64_6.1.176-1", "linux-image-6.1.0-44-amd64_6.1.170-1"):
        (root / name).mkdir(parents=True)
    pointer = root / "suites" / "bookworm" / "linux-image-amd64.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"package": "linux-image-6.1.0-50-amd64",
                                   "version": "6.1.176-1"}))
    QemuBackend().clean(log=lambda m: None)  # without images: the caches stay
    assert orphan.exists() and (root / "linux-image-6.1.0-44-amd64_6.1.170-1").exists()
    QemuBackend().clean(images=True, log=lambda m: None)
    assert current.exists() and not orphan.exists() and not older.exists()
    assert (root / "linux-image-6.1.0-50-amd64_6.1.176-1").exists()
    assert not (root / "linux-image-6.1.0-44-amd64_6.1.170-1").exists()


# --- the boot loop with a fake QEMU -----------------------------------------------------------

FAKE_QEMU = textwrap.dedent(
    """\
    #!{python}
    import hashlib, os, sys, time
    argv = sys.argv[1:]
    serials = [argv[i + 1][len("file:"):] for i, a in enumerate(argv) if a == "-serial"]
    mode = os.environ.get("FAKE_QEMU_MODE", "ok")
    pidfile = os.environ.get("FAKE_QEMU_PIDFILE")
    if pidfile:
        open(pidfile + ".tmp", "w").write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
    if mode == "error":  # as QEMU does: before the guest prints anything
        sys.stderr.write("qemu-system-x86_64: -kernel: could not load kernel\\n")
        sys.exit(1)
    console = open(serials[0], "ab", buffering=0)
    console.write(b"Linux version 6.1.0-fake\\r\\n" + " ".join(argv).encode() + b"\\r\\n")
    def result(data):
        with open(serials[1], "ab") as fh:
            fh.write(data)
    payload = b'{{"schema": "vdsomatrix/1", "environment": {{"name": "fake"}}}}\\n'
    header = b"VDSOMATRIX-BEGIN v1 rc=%d len=%d sha256=%s\\n" % (
        int(os.environ.get("FAKE_QEMU_RC", "0")), len(payload),
        hashlib.sha256(payload).hexdigest().encode())
    good = header + payload + b"\\nVDSOMATRIX-END\\n"
    if mode == "ok":
        result(good)
    elif mode == "linger":
        result(good)
        time.sleep(600)
    elif mode == "hang":
        time.sleep(600)
    elif mode == "flood":
        for _ in range(64):
            console.write(b"spam " * 6000 + b"\\r\\n")
        time.sleep(600)
    elif mode == "panic":
        console.write(b"[    3.1] Kernel panic - not syncing: Attempted to kill init!\\r\\n")
    elif mode == "truncated":
        result(good[: len(header) + 10])
    elif mode == "notjson":
        bad = b"not json"
        result(b"VDSOMATRIX-BEGIN v1 rc=0 len=8 sha256=%s\\n%s\\nVDSOMATRIX-END\\n"
               % (hashlib.sha256(bad).hexdigest().encode(), bad))
    """
)


@pytest.fixture
def fake_qemu(tmp_path):
    path = tmp_path / "fake-qemu"
    path.write_text(FAKE_QEMU.format(python=sys.executable))
    path.chmod(0o755)
    return path


@pytest.fixture
def interrupt():
    """processes.stopping, cleared again after the test."""
    yield processes.stopping
    processes.stopping.clear()


def fake_argv(fake_qemu: Path, work: Path) -> list[str]:
    return qemu_argv(qemu=str(fake_qemu), accel="tcg", vmlinuz=work / "vmlinuz",
                     initrd=work / "i.cpio", append="console=ttyS0",
                     console=work / "console.log", result=work / "result.log")  # fmt: skip


def boot(fake_qemu: Path, tmp_path: Path, deadline: float = 20.0):
    with Guest("test", folder=tmp_path) as vm:
        return QemuBackend(qemu=str(fake_qemu))._boot(vm, fake_argv(fake_qemu, vm.work),
                                                      deadline)


def wait_for(path: Path, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def test_boot_ok(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    out = boot(fake_qemu, tmp_path)
    assert out.status == "ok" and out.document["environment"]["name"] == "fake"
    assert out.errors == []


def test_boot_ok_with_failing_probe_keeps_the_document(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    monkeypatch.setenv("FAKE_QEMU_RC", "2")
    out = boot(fake_qemu, tmp_path)
    assert out.status == "ok" and out.document is not None
    assert out.errors == ["probe exited with status 2 inside the guest"]


def test_result_in_but_no_power_off_is_killed_and_ok(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "linger")
    monkeypatch.setattr(engine_guest, "POWER_OFF_GRACE", 0.3)
    started = time.monotonic()
    out = boot(fake_qemu, tmp_path)
    assert out.status == "ok" and time.monotonic() - started < 10


def test_panic_is_a_crash_with_the_console_tail(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "panic")
    out = boot(fake_qemu, tmp_path)
    assert out.status == "crashed" and out.document is None
    assert "Attempted to kill init" in out.errors[-1]
    assert any("Kernel panic" in line for line in out.log_tail)
    assert all("\r" not in line for line in out.log_tail)


def test_deadline_kills_the_guest(fake_qemu, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    started = time.monotonic()
    out = boot(fake_qemu, tmp_path, deadline=1.0)
    assert out.status == "timeout" and time.monotonic() - started < 10
    assert "within 1s" in out.errors[-1]
    assert out.log_tail and "Linux version" in out.log_tail[0]
    assert not _alive(int(pidfile.read_text()))


def test_a_guest_flooding_its_console_is_killed(fake_qemu, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", "flood")
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    monkeypatch.setattr(engine_guest, "CONSOLE_LIMIT", 1 << 20)
    started = time.monotonic()
    out = boot(fake_qemu, tmp_path, deadline=30)
    assert out.status == "crashed" and time.monotonic() - started < 10
    assert "1 MiB to its console" in out.errors[-1]
    assert not _alive(int(pidfile.read_text()))


@pytest.mark.parametrize("mode, status", [("truncated", "crashed"), ("notjson", "crashed"),
                                          ("error", "failed")])  # fmt: skip
def test_bad_outcomes(fake_qemu, tmp_path, monkeypatch, mode, status):
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    out = boot(fake_qemu, tmp_path)
    assert out.status == status and out.document is None
    if mode == "error":
        assert "could not load kernel" in out.errors[-1]
    if mode == "truncated":
        assert "truncated" in out.errors[0]
    if mode == "notjson":
        assert "the guest's result: not valid JSON" in out.errors[0]


def test_ctrl_c_kills_the_guest(fake_qemu, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    real_sleep = time.sleep

    def interrupt(seconds):
        if pidfile.exists():  # the guest is up: the user presses Ctrl-C
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(engine_guest, "time",
                        SimpleNamespace(monotonic=time.monotonic, sleep=interrupt))
    with pytest.raises(KeyboardInterrupt):
        boot(fake_qemu, tmp_path, deadline=30)
    assert not _alive(int(pidfile.read_text()))


def test_an_interrupted_run_kills_the_guest_and_gives_no_outcome(fake_qemu, tmp_path,
                                                                 monkeypatch, interrupt):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    stopper = threading.Thread(target=lambda: (wait_for(pidfile), interrupt.set()))
    stopper.start()
    started = time.monotonic()
    with pytest.raises(processes.Interrupted):
        boot(fake_qemu, tmp_path, deadline=60)
    stopper.join()
    assert time.monotonic() - started < 10
    assert not _alive(int(pidfile.read_text()))


def test_an_interrupted_run_boots_nothing(fake_qemu, tmp_path, monkeypatch, interrupt):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    interrupt.set()
    with pytest.raises(processes.Interrupted):
        boot(fake_qemu, tmp_path)
    assert not pidfile.exists()


PARENT = """\
import sys
from pathlib import Path
from vdsomatrix.backends.qemu import QemuBackend, qemu_argv
from vdsomatrix.engine.guest import Guest
fake, folder = sys.argv[1], Path(sys.argv[2])
with Guest("parent", folder=folder) as vm:
    argv = qemu_argv(qemu=fake, accel="tcg", vmlinuz=vm.work / "vmlinuz", initrd=None,
                     append="", console=vm.console, result=vm.result)
    QemuBackend(qemu=fake)._boot(vm, argv, 600)
"""


def test_qemu_dies_with_vdsomatrix_even_when_it_is_killed(fake_qemu, tmp_path):
    """SIGKILL leaves no chance to clean up: the kernel's parent-death signal takes QEMU down."""
    pidfile = tmp_path / "pid"
    work = tmp_path / "work"
    work.mkdir()
    env_vars = {**os.environ, "FAKE_QEMU_MODE": "hang", "FAKE_QEMU_PIDFILE": str(pidfile)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(fake_qemu), str(work)],
                              env=env_vars)
    try:
        wait_for(pidfile)
        child = int(pidfile.read_text())
        # A session of its own: Ctrl-C on the terminal reaches vdsomatrix alone.
        assert _alive(child) and os.getpgid(child) == child != os.getpgid(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        end = time.monotonic() + 5
        while _alive(child) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; waitpid is done by Popen.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --- run_probe, fingerprint, availability ---------------------------------------------------


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """A cache with a (fake) bookworm kernel and initramfs, as prepare() leaves it."""
    monkeypatch.setenv("VDSOMATRIX_QEMU_ACCEL", "tcg")
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(b"x")
    kernel = kernels.Kernel("bookworm", "linux-image-6.1.0-9-amd64", "6.1.27-1", "6.1.0-9-amd64",
                            "", "", folder)  # fmt: skip
    monkeypatch.setattr(kernels, "cached_kernel",
                        lambda spec: kernel if spec == KernelSpec("bookworm") else None)
    key = CacheKey("bookworm", "0" * 12, "1" * 12)
    cache = InitramfsCache()
    cache.folder().mkdir(parents=True)
    (cache.folder() / key.file_name).write_bytes(b"0707")
    cache.pointer("bookworm").write_text(json.dumps({"file": key.file_name}))
    return SimpleNamespace(kernel=kernel, key=key)


def test_run_probe_reports_identity_and_budget_and_cleans_up(fake_qemu, tmp_path, monkeypatch,
                                                             prepared):
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    backend = QemuBackend(qemu=str(fake_qemu))
    logged = []
    out = backend.run_probe(env("vdso=0"), deadline=100, log=logged.append)
    assert out.status == "ok", out.errors
    assert out.identity["accel"] == "tcg"
    assert out.identity["kernel_package"] == "linux-image-6.1.0-9-amd64=6.1.27-1"
    assert out.identity["qemu"]["cpu"] == "max" and out.identity["qemu"]["memory_mb"] >= 1024
    assert out.document["environment"] == {"name": "fake"}  # the runner stamps, not the backend
    budget = contract.helper_budget(100, QemuBackend.startup_allowance)
    assert budget == 40 and any(f"vdsomatrix.budget={budget}" in m for m in logged)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_fingerprint_names_kernel_and_initramfs_once_prepared(prepared, tmp_path,
                                                              monkeypatch):
    backend = QemuBackend()
    monkeypatch.setenv("VDSOMATRIX_QEMU_ACCEL", "tcg")
    assert backend.fingerprint(env("vdso=0")) == (
        f"qemu:linux-image-6.1.0-9-amd64=6.1.27-1:{prepared.key.file_name[:-5]}:dynamic:vdso=0"
        ":tcg")
    monkeypatch.setenv("VDSOMATRIX_QEMU_ACCEL", "kvm")
    assert backend.fingerprint(env("vdso=0")).endswith(":kvm")
    assert backend.fingerprint(env(build="musl")) != backend.fingerprint(env())
    trixie = Suite("trixie", "trixie")
    assert backend.fingerprint(env(suite=trixie)) is None  # no initramfs for trixie
    unknown = Environment(name="k", backend=BackendName.QEMU, userland=BOOKWORM,
                          kernel=KernelSpec("sid"))
    assert backend.fingerprint(unknown) is None  # its kernel is not fetched


def test_run_probe_refuses_reserved_cmdline_without_booting(tmp_path):
    out = QemuBackend(qemu="/nonexistent/qemu").run_probe(env("console=tty0"), deadline=5)
    assert out.status == "failed" and "set by the qemu backend" in out.errors[0]


def test_availability_names_the_fix_when_qemu_is_missing():
    verdict = QemuBackend(qemu="/nonexistent/qemu-system-x86_64").availability(env())
    assert not verdict.ok
    assert "install qemu-system-x86" in verdict.reason and "setup-machine" in verdict.reason


def test_the_backend_declares_its_timing():
    assert QemuBackend.name == BackendName.QEMU
    assert QemuBackend.default_deadline == 240.0 and QemuBackend.startup_allowance == 60.0
    assert contract.helper_budget(QemuBackend.default_deadline,
                                  QemuBackend.startup_allowance) < QemuBackend.default_deadline


def test_accel_can_be_forced(monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_QEMU_ACCEL", "tcg")
    assert accel.detect_accel("whatever", lambda console: ["false"]) == "tcg"


@pytest.mark.parametrize("mode, verdict, detail", [("hang", "kvm", "kernel banner"),
                                                    ("error", "tcg", "could not load kernel")])
def test_the_kvm_try_reads_the_banner_and_kills_qemu(fake_qemu, tmp_path, monkeypatch, mode,
                                                     verdict, detail):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))

    def try_argv(console: Path) -> list[str]:
        return qemu_argv(qemu=str(fake_qemu), accel="kvm", vmlinuz=tmp_path / "vmlinuz",
                         initrd=None, append="", console=console, result=None)

    got, why = accel.try_kvm(try_argv)
    assert got == verdict and detail in why
    assert not _alive(int(pidfile.read_text()))


def test_guests_get_different_host_cpus(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU")
    with qb._host_cpu() as first, qb._host_cpu() as second:
        assert first != second
    with qb._host_cpu() as again:
        assert again == first


# --- real boots -------------------------------------------------------------------------------


def expected_default_vsyscall(kernel: kernels.Kernel) -> str:
    """The vsyscall mode the kernel's own config selects when the command line says nothing."""
    config = kernel.config.read_text()
    for mode in ("none", "xonly", "emulate"):
        if f"CONFIG_LEGACY_VSYSCALL_{mode.upper()}=y" in config:
            return mode
    raise AssertionError("kernel config selects no vsyscall mode")


MAPS_PERMS = {"none": None, "emulate": "r-xp [vsyscall]", "xonly": "--xp [vsyscall]"}


def check_vsyscall(doc: dict, mode: str) -> None:
    vsyscall = doc["vsyscall"]
    assert vsyscall["mode"] == mode
    assert vsyscall["maps"] == MAPS_PERMS[mode]  # what /proc/self/maps showed in the guest
    assert vsyscall["readable"] == (mode == "emulate")
    assert vsyscall["callable"] == (mode != "none")
    for call in ("gettimeofday", "time", "getcpu"):
        legacy = row(doc, call, "vsyscall")
        if mode == "none":  # a legacy static binary calling the page dies
            assert (legacy["status"], legacy.get("signal")) == ("crashed", "SIGSEGV"), legacy
        else:
            assert legacy["status"] == "ok", legacy


def row(doc, call, path):
    (found,) = [r for r in doc["calls"] if r["call"] == call and r["path"] == path]
    return found


@pytest.mark.qemu
@pytest.mark.slow
def test_real_boots_default_and_vdso0_emulate(real_qemu):
    """Three guests, two at a time (each on its own host CPU): default, vdso=0 with
    vsyscall=emulate, and clocksource=hpet."""
    envs = [env(name="t-k6.1"), env("vdso=0 vsyscall=emulate", name="t-k6.1-vdso0"),
            env("clocksource=hpet", name="t-k6.1-hpet")]
    with ThreadPoolExecutor(2) as pool:
        default, variant, hpet = pool.map(
            lambda e: real_qemu.run_probe(e, deadline=180, log=lambda m: None), envs
        )
    kernel = kernels.cached_kernel(KernelSpec("bookworm"))
    for out in (default, variant, hpet):
        assert out.status == "ok", (out.errors, out.log_tail)
        assert out.identity["accel"] in ("kvm", "tcg")
        assert out.identity["kernel_package"] == kernel.package_ref
        facts = out.document["environment"]
        assert facts["backend"] == "qemu" and facts["kernel"]["release"] == kernel.release
        # The helper's budget reached the guest: the deadline less the boot's allowance.
        assert "vdsomatrix.budget=120" in facts["kernel"]["cmdline"].split()
        assert out.seconds < 120

    doc = default.document
    assert doc["vdso"]["present"] and doc["vdso"]["mapped"]
    assert doc["auxv"]["AT_SYSINFO_EHDR"] == doc["vdso"]["base"]
    check_vsyscall(doc, expected_default_vsyscall(kernel))

    doc = variant.document
    assert "vdso=0" in doc["environment"]["kernel"]["cmdline"].split()
    assert not doc["vdso"]["present"] and not doc["vdso"]["mapped"]
    assert "AT_SYSINFO_EHDR" not in doc["auxv"]
    check_vsyscall(doc, "emulate")
    # Without a vDSO, libc's clock_gettime has only the system call left: ptrace counts one.
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC)", "libc")["syscalls_per_call"] == 1
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC)", "vdso")["status"] == "unsupported"

    if len(os.sched_getaffinity(0)) >= 2:
        cpus = {o.identity["qemu"]["host_cpu"] for o in (default, variant)}
        assert len(cpus) == 2

    # With a clocksource user space cannot read, the vDSO itself makes the system call.
    doc = hpet.document
    kernel_facts = doc["environment"]["kernel"]
    if "hpet" not in kernel_facts["available_clocksources"]:
        pytest.skip(f"this guest offers no hpet: {kernel_facts['available_clocksources']}")
    assert kernel_facts["clocksource"] == "hpet"
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC)", "vdso")["syscalls_per_call"] == 1
    assert row(doc, "clock_gettime(CLOCK_MONOTONIC_COARSE)", "vdso")["syscalls_per_call"] == 0


@pytest.mark.qemu
@pytest.mark.slow
def test_real_panic_and_timeout(real_qemu, tmp_path):
    """No initramfs: the kernel panics (crashed); a tiny deadline: timeout, QEMU gone."""
    kernel = kernels.cached_kernel(KernelSpec("bookworm"))
    for deadline, status in ((120, "crashed"), (1, "timeout")):
        with Guest(status, folder=tmp_path) as vm:
            argv = qemu_argv(qemu=qb.QEMU, accel="tcg", vmlinuz=kernel.vmlinuz, initrd=None,
                             append="console=ttyS0 panic=-1", console=vm.console,
                             result=vm.result)  # fmt: skip
            out = real_qemu._boot(vm, argv, deadline=deadline)
        assert out.status == status, (out.errors, out.log_tail)
        if status == "crashed":
            assert "panicked" in out.errors[-1]
