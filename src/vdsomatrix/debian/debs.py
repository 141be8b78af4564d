"""The download cache of .deb files, one folder per suite of the matrix::

    <cache>/debs/<suite>/              what debootstrap downloads for the suite's base image
    <cache>/debs/<suite>/<purpose>/    what the private apt downloads for one purpose of the
                                       suite (runtimes/: the language-runtime layer; kernels/:
                                       a kernel's packages, until they are unpacked)

``<cache>`` is :func:`vdsomatrix.paths.cache_dir`, ``<suite>`` the matrix's name of the suite
(``bookworm``, ``bookworm-i386``). A purpose has a folder of its own because each prunes its
folder to what it uses now (debootstrap keeps what the base image was made of). Every file is
named ``<name>_<version>_<arch>.deb`` the way apt names it (:func:`deb_file_name`), so one name
is one package, and a file already downloaded for another suite is hard-linked, not fetched
again (:func:`share_debs`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from vdsomatrix.paths import cache_dir


def debs_dir(suite: str, purpose: str = "") -> Path:
    """The .deb folder of ``suite`` (the matrix's name), or of one ``purpose`` within it."""
    folder = cache_dir() / "debs" / suite
    return folder / purpose if purpose else folder


def apt_quote(text: str, bad: str) -> str:
    """apt's QuoteString: how it escapes a name, version or arch in a .deb's file name."""
    return "".join(f"%{ord(c):02x}" if c in bad or c == "%" or not " " < c < "\x7f" else c
                   for c in text)


def deb_file_name(name: str, version: str, arch: str) -> str:
    """The file name apt gives a downloaded package (an epoch's colon becomes %3a)."""
    return f"{apt_quote(name, '_:')}_{apt_quote(version, '_:')}_{apt_quote(arch, '_:.')}.deb"


def keep_only(folder: Path, names: Iterable[str]) -> None:
    """Remove the .debs of ``folder`` not in ``names`` (older versions are never needed again);
    nothing when ``names`` is empty (a run that used nothing tells nothing)."""
    keep = set(names)
    if keep:
        for old in folder.glob("*.deb"):
            if old.name not in keep:
                old.unlink(missing_ok=True)


def share_debs(debs: Path) -> tuple[int, int]:
    """Hard-link into the suite's .deb cache ``debs`` every package its sibling caches hold and
    it does not: (how many, their bytes).

    debootstrap names a cached package <name>_<version>_<arch>.deb and verifies each one against
    the suite's signed index before use, so a shared file is only ever used when it is exactly
    the package the suite asks for. One it rejects (a sibling's download still in progress, say)
    is unlinked and fetched again: debootstrap removes a bad file before it downloads, so it never
    writes into the sibling's copy.
    """
    have = {p.name for p in debs.glob("*.deb")}
    shared = size = 0
    for sibling in sorted(debs.parent.iterdir()):
        if sibling == debs or not sibling.is_dir():
            continue
        for deb in sibling.glob("*.deb"):
            if deb.name in have or not deb.is_file():
                continue
            try:
                os.link(deb, debs / deb.name)
            except OSError:
                continue  # another file system, or a race with its removal: fetch it instead
            have.add(deb.name)
            shared += 1
            size += deb.stat().st_size
    return shared, size
