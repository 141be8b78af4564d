"""The reduced initramfs of the C helper's builds (images/initramfs_contents.py): what it keeps."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from vdsomatrix.images import guest_init as guest
from vdsomatrix.images import initramfs
from vdsomatrix.images import initramfs_contents as contents

TRUE = Path(shutil.which("true") or "/usr/bin/true").resolve()


def _image(tmp_path: Path, *, true_elf: bytes) -> Path:
    """A tiny merged-/usr Debian-like export: links, libraries, a stdlib, a compiler."""
    path = tmp_path / "export.tar"
    with tarfile.open(path, "w") as tar:

        def add(name, data=b"", kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o755
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for folder in ("usr", "usr/bin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/lib64",
                       "usr/lib/python3.11", "usr/lib/python3.11/json",
                       "usr/lib/python3.11/email", "usr/lib/python3.11/__pycache__",
                       "usr/lib/python3.11/lib-dynload", "etc", "opt", "opt/vdsomatrix",
                       "opt/vdsomatrix/bin", "dev", "usr/share", "usr/share/doc", "var",
                       "var/lib", "var/lib/dpkg", "usr/lib/gcc"):
            add(folder, kind=tarfile.DIRTYPE)
        add("bin", kind=tarfile.SYMTYPE, link="usr/bin")
        add("lib", kind=tarfile.SYMTYPE, link="usr/lib")
        add("lib64", kind=tarfile.SYMTYPE, link="usr/lib64")
        add("usr/lib64/ld-linux-x86-64.so.2", kind=tarfile.SYMTYPE,
            link="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        add("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"loader")
        add("usr/lib/x86_64-linux-gnu/libc.so.6", b"libc")
        add("usr/lib/x86_64-linux-gnu/libgcc_s.so.1", b"gcc_s")
        add("usr/lib/x86_64-linux-gnu/libsqlite3.so.0", b"sqlite")
        for program in ("dash", "coreutils", "python3.11", "gcc-12"):
            add(f"usr/bin/{program}", true_elf)
        add("usr/bin/sh", kind=tarfile.SYMTYPE, link="dash")
        add("usr/bin/python3", kind=tarfile.SYMTYPE, link="python3.11")
        add("usr/bin/cat", kind=tarfile.LNKTYPE, link="usr/bin/coreutils")  # a hard link
        add("usr/lib/python3.11/os.py", b"# os")
        add("usr/lib/python3.11/__pycache__/os.cpython-311.pyc", b"pyc")
        add("usr/lib/python3.11/__pycache__/pydoc.cpython-311.pyc", b"pyc")
        add("usr/lib/python3.11/pydoc.py", b"# pydoc")
        add("usr/lib/python3.11/json/__init__.py", b"# json")
        add("usr/lib/python3.11/email/__init__.py", b"# email")
        add("usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so", b"ct")
        add("usr/lib/python3.11/lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so", b"sq")
        add("usr/lib/os-release", b"ID=debian\n")
        add("etc/os-release", kind=tarfile.SYMTYPE, link="../usr/lib/os-release")
        add("opt/vdsomatrix/bin/vdsoprobe-dynamic", true_elf)
        add("var/lib/dpkg/status", b"Package: musl\n")
        add("usr/share/doc/README", b"doc")
        add("usr/lib/gcc/cc1", b"compiler")
        add("dev/null", kind=tarfile.CHRTYPE)
        add(".dockerenv", b"")
    return path


@pytest.fixture
def kept(tmp_path):
    elf = TRUE.read_bytes()
    if elf[:4] != b"\x7fELF" or b"libc.so.6" not in elf or b"ld-linux-x86-64" not in elf:
        pytest.skip("needs an x86_64 glibc `true` on this machine")
    with tarfile.open(_image(tmp_path, true_elf=elf)) as tar:
        return {m.name: m for m in contents.select(tar, "amd64")}


def test_the_probe_its_programs_and_their_libraries_are_kept(kept):
    for path in ("usr/bin/dash", "usr/bin/cat", "usr/bin/coreutils", "usr/bin/python3.11",
                 "opt/vdsomatrix/bin/vdsoprobe-dynamic", "usr/lib/x86_64-linux-gnu/libc.so.6",
                 "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                 "usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "usr/lib/os-release",
                 "var/lib/dpkg/status", "usr/lib/python3.11/os.py",
                 "usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
                 "usr/lib/python3.11/json/__init__.py",
                 "usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so"):
        assert path in kept, path
    # every folder and link, however little of it is kept
    for path in ("bin", "lib64", "usr/bin/sh", "etc/os-release", "usr/share/doc", "dev"):
        assert path in kept, path


def test_what_the_probe_never_uses_is_left_out(kept):
    for path in ("usr/bin/gcc-12", "usr/lib/gcc/cc1", "usr/share/doc/README", "dev/null",
                 ".dockerenv", "usr/lib/x86_64-linux-gnu/libsqlite3.so.0",
                 "usr/lib/python3.11/pydoc.py",
                 "usr/lib/python3.11/__pycache__/pydoc.cpython-311.pyc",
                 "usr/lib/python3.11/email/__init__.py",
                 "usr/lib/python3.11/lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so"):
        assert path not in kept, path


def test_links_resolve_like_the_kernel_does(tmp_path):
    with tarfile.open(_image(tmp_path, true_elf=b"x")) as tar:
        tree = contents.Tree(tar.getmembers())
    assert tree.file("lib64/ld-linux-x86-64.so.2") == (
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert tree.file("/bin/sh") == "usr/bin/dash"
    assert tree.file("etc/os-release") == "usr/lib/os-release"
    assert tree.file("usr/bin/missing") is None and tree.file("usr/bin") is None


def test_the_recipe_hash_follows_the_selection_rules(monkeypatch):
    before = initramfs.initramfs_recipe_hash()
    whole = initramfs.initramfs_recipe_hash(whole=True)
    monkeypatch.setattr(contents, "PYTHON_SKIP", (*contents.PYTHON_SKIP, "json"))
    assert initramfs.initramfs_recipe_hash() != before
    assert initramfs.initramfs_recipe_hash(whole=True) == whole  # runtime images: unchanged
    monkeypatch.setattr(guest, "INIT_PROGRAMS", (*guest.INIT_PROGRAMS, "gzip"))
    assert initramfs.initramfs_recipe_hash() != before


def test_every_program_of_init_is_listed():
    import re

    shell = {"echo", "printf", "set", "export", "case", "esac", "for", "do", "done", "if",
             "then", "elif", "else", "fi", "while", "return", "say", "halt_guest", "rc"}
    commands = set(re.findall(r"(?:^[ \t]*|\$\(|\|[ \t]*|do[ \t]+)([a-z][a-z0-9_]*)(?=[ \t)])",
                              guest._INIT_TEMPLATE, re.M))
    assert {"mount", "stty", "sha256sum", "cut", "sleep", "cat", "wc"} <= commands
    assert commands - shell <= set(guest.INIT_PROGRAMS)
