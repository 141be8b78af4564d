"""Reading Packages indexes (src/vdsomatrix/debian/packages.py): the name scan finds exactly the
stanzas deb822 would, the newest version wins, Depends names every alternative."""

from __future__ import annotations

import re

from vdsomatrix.debian import packages

INDEX = b"""\
Package: nodejs
Version: 24.1-1
Architecture: amd64
Depends: libc6 (>= 2.34), libnode137 | libnode-dev:any, python3:any
Description: evented I/O
 for V8 javascript

Package: nodejs-doc
Version: 24.1-1
Architecture: all

Package: nodejs
Version: 24.10-1
Architecture: amd64

Package: nodejs
Version: 99
Architecture: arm64

Package: openjdk-17-jre-headless
Version: 17.0.21+1-1
Architecture: amd64
"""


def test_the_scan_keeps_whole_names_only_and_parses_them_as_deb822_does():
    found = packages.scan(INDEX, packages.names_matching("nodejs", r"openjdk-\d+-jre-headless"))
    assert [(p["Package"], p["Version"]) for p in found] == [
        ("nodejs", "24.1-1"), ("nodejs", "24.10-1"), ("nodejs", "99"),
        ("openjdk-17-jre-headless", "17.0.21+1-1")]
    whole = [p for p in packages.parse(INDEX.decode()) if p["Package"] in ("nodejs",
                                                                             "openjdk-17-jre-headless")]
    assert found == whole
    assert found[0]["Description"] == "evented I/O\n for V8 javascript"


def test_an_exact_name_is_escaped_and_a_prefix_is_a_pattern():
    assert packages.scan(INDEX, packages.names_matching(re.escape("nodejs-doc")))[0][
        "Architecture"] == "all"
    assert len(packages.scan(INDEX, packages.names_matching("node[^\\n]*"))) == 4
    assert packages.scan(INDEX, packages.names_matching("node")) == []


def test_newest_compares_debian_versions_and_filters_architectures():
    paragraphs = packages.parse(INDEX.decode())
    assert packages.newest(paragraphs)["nodejs"]["Version"] == "99"
    newest = packages.newest(paragraphs, ("amd64", "all"))
    assert newest["nodejs"]["Version"] == "24.10-1"  # not 24.1-1: Debian's order, not text
    assert sorted(newest) == ["nodejs", "nodejs-doc", "openjdk-17-jre-headless"]
    assert packages.versions(paragraphs)["nodejs"] == ["24.1-1", "24.10-1", "99"]
    assert packages.stanza(paragraphs, "nodejs", "99")["Architecture"] == "arm64"
    assert packages.stanza(paragraphs, "nodejs", "1") is None


def test_depends_names_every_alternative_without_architecture_qualifiers():
    node = packages.parse(INDEX.decode())[0]
    assert packages.depends_names(node) == ["libc6", "libnode137", "libnode-dev", "python3"]
    assert packages.depends_names({"Package": "x"}) == []


def test_an_unparseable_index_gives_no_stanzas_rather_than_an_error():
    assert packages.parse("\x00\xff garbage\n\n:::\nPackage\n") == []
    assert packages.scan(b"\x00\xff\n\nPackage: nodejs", packages.names_matching("nodejs")) == []
