"""The Debian mirror and keyring (src/vdsomatrix/debian/archive.py): apt's own reading of this
machine's sources, in every form apt accepts, and clear errors when nothing fits."""

from __future__ import annotations

import shutil

import pytest

from vdsomatrix.debian import archive as mirror
from vdsomatrix.errors import BadInput


@pytest.fixture
def apt_dir(tmp_path):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not installed")
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    return tmp_path / "apt"


def test_mirror_reads_one_line_entries_with_options_as_apt_does(apt_dir, monkeypatch):
    monkeypatch.delenv("VDSOMATRIX_MIRROR", raising=False)
    (apt_dir / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://sources-only.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://security.example/debian-security bookworm-security main\n"
        "deb [ arch=amd64,i386 trusted=no ] http://updates.example/debian bookworm-updates main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian/ bookworm main contrib  # the one\n"
    )
    assert mirror.debian_mirror(apt_dir) == "http://mirror.example/debian"
    sources = mirror.apt_sources(apt_dir)
    assert ("deb-src", "http://sources-only.example/debian/", "bookworm") in [
        (s.kind, s.uri, s.suite) for s in sources]


def test_mirror_reads_deb822_sources_and_takes_apts_order(apt_dir, monkeypatch):
    monkeypatch.delenv("VDSOMATRIX_MIRROR", raising=False)
    (apt_dir / "sources.list.d" / "b.sources").write_text(
        "Types: deb deb-src\nURIs: https://second.example/debian\nSuites: trixie trixie-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (apt_dir / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: https://first.example/debian\nSuites: sid\nComponents: main\n"
        "Enabled: no\n\n"
        "Types: deb\nURIs: https://third.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert mirror.debian_mirror(apt_dir) == "https://third.example/debian"


def test_mirror_without_a_usable_source_says_what_to_set(apt_dir, monkeypatch):
    monkeypatch.delenv("VDSOMATRIX_MIRROR", raising=False)
    (apt_dir / "sources.list").write_text(
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb file:/srv/local-repo bookworm main\n")
    with pytest.raises(BadInput, match="VDSOMATRIX_MIRROR"):
        mirror.debian_mirror(apt_dir)
    (apt_dir / "sources.list").write_text("deb [broken http://x.example/debian bookworm main\n")
    with pytest.raises(BadInput, match="VDSOMATRIX_MIRROR") as info:
        mirror.debian_mirror(apt_dir)
    assert "\n" not in str(info.value)


def test_mirror_prefers_what_apt_knows_to_be_debians_archive(monkeypatch):
    monkeypatch.delenv("VDSOMATRIX_MIRROR", raising=False)
    listed = [mirror.AptSource("deb", "http://other.example/repo/", "nodistro", ""),
              mirror.AptSource("deb", "http://deb.example/debian/", "bookworm", "")]

    def sources(apt_dir, *, release_info=False):
        if release_info:  # what apt knows from the Release files it fetched
            return [mirror.AptSource("deb", "http://other.example/repo/", "nodistro", "Other"),
                    mirror.AptSource("deb", "http://deb.example/debian/", "bookworm", "Debian")]
        return listed

    monkeypatch.setattr(mirror, "apt_sources", sources)
    assert mirror.debian_mirror() == "http://deb.example/debian"
    monkeypatch.setattr(mirror, "apt_sources", lambda apt_dir, release_info=False:
                        [] if release_info else listed)
    assert mirror.debian_mirror() == "http://other.example/repo"  # nothing known: the first


def test_mirror_override(apt_dir, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_MIRROR", "http://override.example/debian/")
    assert mirror.debian_mirror(apt_dir) == "http://override.example/debian"


def test_archive_keyring_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(mirror, "ARCHIVE_KEYRING", tmp_path / "none.gpg")
    with pytest.raises(BadInput, match="apt-get install debian-archive-keyring"):
        mirror.archive_keyring()


