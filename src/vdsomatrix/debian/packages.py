"""Reading a Debian Packages index (or any text of Packages stanzas) with python-debian.

A whole sid index is 65 MB and 77,000 stanzas; what vdsomatrix looks for in it is a few dozen
of them (the kernel packages, the language runtimes). :func:`read_index` therefore finds the
wanted ``Package:`` lines with one regular-expression scan of the raw bytes first and hands only
those stanzas to ``deb822``, which parses a whole index many times slower.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from debian import deb822
from debian.debian_support import Version


def parse(text: str) -> list[deb822.Packages]:
    """Every stanza of ``text`` that names a package (a Packages index, ``apt-cache show``)."""
    return [
        p
        for p in deb822.Packages.iter_paragraphs(text.splitlines(), use_apt_pkg=False)
        if p.get("Package")
    ]


def names_matching(*patterns: str) -> re.Pattern[bytes]:
    """The ``Package:`` lines :func:`scan` keeps: those whose whole name matches one of
    ``patterns`` (regular expressions; ``re.escape`` an exact name)."""
    alternatives = "|".join(f"(?:{p})" for p in patterns)
    return re.compile(rb"^Package: (?:" + alternatives.encode() + rb")\n", re.MULTILINE)


def scan(data: bytes, names: re.Pattern[bytes]) -> list[deb822.Packages]:
    """The stanzas of the index ``data`` whose ``Package:`` line ``names`` matches (made by
    :func:`names_matching`), parsed; in index order."""
    found = []
    for match in names.finditer(data):
        # Package is the first field of every stanza apt and the archive write.
        end = data.find(b"\n\n", match.start())
        block = data[match.start(): end if end >= 0 else len(data)]
        found.append(deb822.Packages(block.decode("utf-8", "replace")))
    return found


def read_index(path: Path, names: re.Pattern[bytes]) -> list[deb822.Packages]:
    """:func:`scan` of the (uncompressed) Packages file ``path``."""
    return scan(path.read_bytes(), names)


def versions(paragraphs: Iterable[Mapping[str, str]]) -> dict[str, list[str]]:
    """Every version of every package named in ``paragraphs``: {name: [version, ...]}."""
    by_name: dict[str, list[str]] = {}
    for para in paragraphs:
        name, version = para.get("Package"), para.get("Version")
        if name and version:
            by_name.setdefault(name.strip(), []).append(version.strip())
    return by_name


def newest(paragraphs: Iterable[Mapping[str, str]],
           architectures: Iterable[str] | None = None) -> dict[str, Mapping[str, str]]:
    """The stanza of the newest version of each package: {name: stanza}. With
    ``architectures``, stanzas of other architectures are left out (a stanza without an
    Architecture field counts as any)."""
    wanted = set(architectures) if architectures is not None else None
    chosen: dict[str, Mapping[str, str]] = {}
    for para in paragraphs:
        name = para.get("Package", "").strip()
        arch = para.get("Architecture", "").strip()
        if not name or (wanted is not None and arch and arch not in wanted):
            continue
        old = chosen.get(name)
        if old is None or (Version(para.get("Version", "0").strip())
                           > Version(old.get("Version", "0").strip())):
            chosen[name] = para
    return chosen


def stanza(paragraphs: Iterable[Mapping[str, str]], name: str,
           version: str) -> Mapping[str, str] | None:
    """The stanza of package ``name`` at ``version``, or None."""
    return next((p for p in paragraphs if p.get("Package", "").strip() == name
                 and p.get("Version", "").strip() == version), None)


def relations(para: Mapping[str, str], field: str = "Depends") -> list[list[dict]]:
    """The relations of ``field`` (python-debian's form: a list of alternatives, each a dict
    with name, version (operator, version) or None, archqual, ...)."""
    return deb822.PkgRelation.parse_relations(para.get(field, ""))


def depends_names(para: Mapping[str, str]) -> list[str]:
    """The package names in ``para``'s Depends, every alternative, in order (an architecture
    qualifier such as ``:any`` left off)."""
    return [alt["name"] for group in relations(para) for alt in group if alt.get("name")]
