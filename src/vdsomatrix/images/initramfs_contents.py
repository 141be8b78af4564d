"""What a guest of the C helper's builds boots with: the part of a probe image the probe needs.

A probe image is a whole Debian userland (156-164 MB since the compiler stays in its build stage;
it was 330-410 MB, 111-127 MB as an initramfs with :data:`initramfs.STRIP` taken out), and under
TCG every megabyte of it is
copied into the guest's RAM and unpacked there before /init starts. The guest runs only /init
(POSIX sh and a few coreutils), ``python3 probe.py`` and the helper, so its initramfs keeps
(:func:`select`):

- every directory and every symbolic link of the image (they take no room; a link whose target
  was left out dangles, as it would on a system without that package);
- :data:`KEEP_TREES` and :data:`KEEP_FILES` whole: the probe and the helpers
  (``opt/vdsomatrix``), ``etc`` (os-release, ld.so.cache, passwd, nsswitch.conf...), the C.UTF-8
  locale of older glibcs, dpkg's status (the probe reads package versions there);
- the programs /init runs (:data:`guest_init.INIT_PROGRAMS`, looked up on its PATH) and
  python3;
- python3's standard library, but for :data:`PYTHON_SKIP`: packages and modules the probe never
  imports, directly or through another module (a blocklist, not a list of what is imported, so
  that a module of a newer Python's import graph is never missing), and the extension modules
  (``lib-dynload``) of :data:`DYNLOAD_SKIP`, which only those would load;
- every regular file a kept link points at (``etc/os-release``, ``etc/localtime``);
- the ELF closure of all of that: each kept ELF file's interpreter (``PT_INTERP``) and its
  ``DT_NEEDED`` libraries, resolved the way ld.so does (RUNPATH/RPATH, the multiarch library
  folders of the userland's architecture, their ``glibc-hwcaps`` variants), and their own needs
  in turn; and :data:`DLOPENED`, the libraries glibc itself loads at run time (libgcc_s for
  unwinding a thread, the NSS modules of ``files``).

The runtime images (``<suite>-runtimes``: Java, Go, Node.js, Rust) are not reduced: what a JVM
loads at run time is not in its ELF headers.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterable

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from vdsomatrix.images import guest_init

# Bump when a rule below changes in a way its constants do not show (they are hashed).
CONTENTS_RECIPE = 1
KEEP_TREES = ("opt/vdsomatrix", "etc", "usr/lib/locale")
KEEP_FILES = ("var/lib/dpkg/status",)
# Links in the kept trees whose targets are not followed: the alternatives name the compilers
# and pagers of the image, systemd's units what a booted system would start.
FOLLOW_SKIP = ("etc/alternatives", "etc/systemd")
# Where /init looks for programs (its PATH), as paths in the image.
PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
PYTHON = "python3"
# python3's standard library folders (usr/lib/python3.N, usr/local/lib/python3.N) and the
# Debian folders of extra packages (usr/lib/python3/dist-packages), kept but for the skip lists.
_STDLIB = re.compile(r"((?:usr/local/lib|usr/lib)/python3(?:\.[0-9]+)?)/(.+)\Z")
# Top-level names of the standard library that neither probe.py nor runtime_rows.py import,
# nor anything they import (checked by booting every guest of the matrix, bullseye's Python 3.9
# to sid's, and comparing its result with one of the whole image: same rows, same artefacts, no
# errors); a name stands for its package folder, its module and their byte code. Also the
# stdlib's build folder (config-3.N-<triplet>).
PYTHON_SKIP = (
    "test", "idlelib", "tkinter", "turtledemo", "turtle", "lib2to3", "ensurepip", "pydoc_data",
    "pydoc", "distutils", "unittest", "doctest", "sqlite3", "dbm", "curses", "venv", "asyncio",
    "email", "http", "xmlrpc", "wsgiref", "html", "multiprocessing", "concurrent",
    "mailbox", "smtplib", "imaplib", "nntplib", "poplib", "ftplib", "telnetlib", "pdb",
    "tomllib", "zoneinfo", "msilib", "_pydecimal", "decimal", "idle", "xml", "pyexpat",
)
_CONFIG_DIR = re.compile(r"config-3\.[0-9]+")
# Extension modules only the skipped packages (or a terminal, a database, a network) load.
DYNLOAD_SKIP = re.compile(
    r"(?:_tkinter|_sqlite3|_curses|_curses_panel|_dbm|_gdbm|_ssl|_codecs_[a-z0-9]+|"
    r"_multibytecodec|_test[a-z0-9_]*|xxlimited[a-z0-9_]*|_xx[a-z0-9_]*|_ctypes_test|"
    r"_decimal|readline|_asyncio|_multiprocessing|_posixshmem|nis|_crypt|ossaudiodev|audioop|"
    r"spwd|pyexpat|_elementtree|_zoneinfo)(?:\.cpython-[^/]*|\.abi3)?\.so\Z"
)
# Libraries glibc loads at run time by name (dlopen), not through DT_NEEDED.
DLOPENED = ("libgcc_s.so.1", "libnss_files.so.2", "libnss_compat.so.2")
# The library folders ld.so searches, per Debian architecture, after RUNPATH.
LIBRARY_DIRS = {
    "amd64": ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib",
              "usr/lib"),
    "i386": ("lib/i386-linux-gnu", "usr/lib/i386-linux-gnu", "lib", "usr/lib"),
    "arm64": ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib64", "usr/lib64", "lib",
              "usr/lib"),
}
_MAX_HOPS = 40  # symbolic links followed for one path (ld.so and the kernel stop at 40 too)


def recipe_text() -> str:
    """Everything that decides the selection, for the initramfs recipe hash."""
    return "\n".join([
        f"contents {CONTENTS_RECIPE}", " ".join(KEEP_TREES), " ".join(KEEP_FILES),
        " ".join(FOLLOW_SKIP),
        " ".join(PATH_DIRS), PYTHON, " ".join(guest_init.INIT_PROGRAMS), " ".join(PYTHON_SKIP),
        _CONFIG_DIR.pattern, DYNLOAD_SKIP.pattern, " ".join(DLOPENED),
        repr(sorted(LIBRARY_DIRS.items())),
    ]) + "\n"


def _norm(name: str) -> str:
    """A member name as a relative path without ``./`` or trailing slashes."""
    name = posixpath.normpath("/" + name).lstrip("/")
    return "" if name == "." else name


class Tree:
    """The members of an image's tar export, by path, with symbolic links resolved in it."""

    def __init__(self, members: Iterable[tarfile.TarInfo]):
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in members:
            self.members.setdefault(_norm(member.name), member)

    def resolve(self, path: str) -> str | None:
        """The path of the member ``path`` names once every link on the way is followed (an
        absolute link target is taken from the image's root); None when it is not there."""
        todo = [part for part in path.split("/") if part][::-1]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/".join([*done, part])
            member = self.members.get(here)
            if member is None:
                return None
            if member.issym():
                hops += 1
                if hops > _MAX_HOPS:
                    return None
                if member.linkname.startswith("/"):
                    done = []
                todo.extend([p for p in member.linkname.split("/") if p][::-1])
                continue
            done.append(part)
        return "/".join(done)

    def file(self, path: str) -> str | None:
        """Like :meth:`resolve`, but only a regular file (or hard link) counts."""
        found = self.resolve(path)
        member = self.members.get(found) if found is not None else None
        return found if member is not None and (member.isreg() or member.islnk()) else None


def elf_needs(fileobj) -> tuple[str | None, list[str], list[str]]:
    """(interpreter, DT_NEEDED names, RUNPATH/RPATH folders) of an ELF file; nothing for any
    other file."""
    try:
        elf = ELFFile(fileobj)
        interp, needed, runpaths = None, [], []
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_INTERP":
                interp = segment.get_interp_name()
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        runpaths += tag.runpath.split(":")
                    elif tag.entry.d_tag == "DT_RPATH":
                        runpaths += tag.rpath.split(":")
        return interp, needed, runpaths
    except (ELFError, ValueError, KeyError, AttributeError, OSError, EOFError,
            UnicodeDecodeError):
        return None, [], []


def _python_skipped(rel: str) -> bool:
    """Whether ``rel`` (a path inside a stdlib folder) is left out."""
    parts = rel.split("/")
    top = parts[0]
    if top == "lib-dynload":
        return len(parts) == 2 and bool(DYNLOAD_SKIP.match(parts[1]))
    if top == "__pycache__" and len(parts) == 2:
        top = parts[1].split(".", 1)[0]
    else:
        top = top.removesuffix(".py")
    return top in PYTHON_SKIP or bool(_CONFIG_DIR.fullmatch(parts[0]))


def _roots(tree: Tree, arch: str) -> list[str]:
    """What is kept for itself: the kept trees and files, the standard library but for the
    skip lists, what the kept trees' links point at, /init's programs and python3, and
    :data:`DLOPENED`."""
    roots: list[str] = []
    for path, member in tree.members.items():
        if not (member.isreg() or member.islnk()):
            continue
        if path in KEEP_FILES or any(path == t or path.startswith(t + "/") for t in KEEP_TREES):
            roots.append(path)
            continue
        stdlib = _STDLIB.match(path)
        if stdlib and not _python_skipped(stdlib[2]):
            roots.append(path)
    for path, member in tree.members.items():  # what the kept trees' links point at
        if (member.issym() and any(path.startswith(t + "/") for t in KEEP_TREES)
                and not any(path.startswith(t + "/") for t in FOLLOW_SKIP)):
            target = tree.file(path)
            if target:
                roots.append(target)
    for program in (*guest_init.INIT_PROGRAMS, PYTHON):
        found = next((f for f in (tree.file(f"{d}/{program}") for d in PATH_DIRS) if f), None)
        if found:
            roots.append(found)
    for name in DLOPENED:
        roots += [f for f in (tree.file(f"{d}/{name}") for d in _lib_dirs(arch)) if f][:1]
    return roots


def _lib_dirs(arch: str) -> tuple[str, ...]:
    return LIBRARY_DIRS.get(arch, LIBRARY_DIRS["amd64"])


def _library(tree: Tree, lib_dirs, name: str, origin: str, runpaths: list[str]) -> list[str]:
    """The files ld.so could load for DT_NEEDED ``name`` of a file in ``origin``: the first
    found, and its glibc-hwcaps variants in that folder."""
    if "/" in name:
        found = tree.file(name)
        return [found] if found else []
    for folder in [*runpaths, *lib_dirs]:
        folder = folder.replace("$ORIGIN", "/" + origin).replace("${ORIGIN}", "/" + origin)
        found = tree.file(f"{folder}/{name}")
        if found:
            hwcaps = tree.resolve(f"{folder}/glibc-hwcaps")
            variants = [p for p in tree.members if hwcaps and p.startswith(hwcaps + "/")
                        and p.endswith("/" + name)] if hwcaps else []
            return [found, *[v for v in map(tree.file, variants) if v]]
    return []


def _closure(tar: tarfile.TarFile, tree: Tree, roots: list[str], arch: str) -> set[str]:
    """``roots`` and everything they need: hard links' targets, each ELF file's interpreter
    and DT_NEEDED libraries, and theirs in turn."""
    keep: set[str] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in keep:
            continue
        keep.add(path)
        member = tree.members[path]
        if member.islnk():  # a hard link: its data is in the member it links to
            target = _norm(member.linkname)
            if target in tree.members:
                todo.append(target)
            continue
        if member.size < 64 or member.size > (256 << 20):
            continue
        with tar.extractfile(member) as fh:
            if fh.read(4) != b"\x7fELF":
                continue
            fh.seek(0)
            interp, needed, runpaths = elf_needs(fh)
        if interp:
            found = tree.file(interp)
            if found:
                todo.append(found)
        origin = posixpath.dirname(path)
        for name in needed:
            todo += _library(tree, _lib_dirs(arch), name, origin, runpaths)
    return keep


def select(tar: tarfile.TarFile, arch: str = "amd64") -> list[tarfile.TarInfo]:
    """The members of ``tar`` (an image's export, random access) a guest of the C helper's
    builds needs, in the order of the export; see the module docstring."""
    members = tar.getmembers()
    tree = Tree(members)
    keep = _closure(tar, tree, _roots(tree, arch), arch)
    chosen = []
    for member in members:
        path = _norm(member.name)
        if tree.members.get(path) is not member or path.startswith("dev/"):
            continue  # a repeated name, or a device placeholder (the guest mounts devtmpfs)
        if member.isdir() or member.issym() or path in keep:
            chosen.append(member)
    return chosen
