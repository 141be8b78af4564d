"""The .deb download cache (src/vdsomatrix/debian/debs.py): its folders, apt's file names, and
sharing what another suite already downloaded."""

from __future__ import annotations

from vdsomatrix.debian import debs


def test_the_cache_layout_is_one_folder_per_suite_and_purpose(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    # The paths a warm cache already has: debootstrap's and the runtime layer's.
    assert debs.debs_dir("bookworm") == tmp_path / "debs" / "bookworm"
    assert debs.debs_dir("sid", "runtimes") == tmp_path / "debs" / "sid" / "runtimes"
    assert debs.debs_dir("bookworm-i386", "kernels") == tmp_path / "debs/bookworm-i386/kernels"


def test_deb_file_names_are_quoted_as_apt_does():
    assert debs.apt_quote("2:1.25-77", "_:") == "2%3a1.25-77"
    assert debs.apt_quote("a_b", "_:") == "a%5fb"
    assert debs.deb_file_name("default-jre-headless", "2:1.25-77", "amd64") == (
        "default-jre-headless_2%3a1.25-77_amd64.deb")


def test_keep_only_removes_the_other_debs_unless_told_nothing(tmp_path):
    for name in ("a_1_amd64.deb", "a_2_amd64.deb", "notes.txt"):
        (tmp_path / name).write_text("x")
    debs.keep_only(tmp_path, [])
    assert len(list(tmp_path.iterdir())) == 3
    debs.keep_only(tmp_path, ["a_2_amd64.deb"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_2_amd64.deb", "notes.txt"]


def test_packages_another_suite_downloaded_are_linked_not_fetched(tmp_path):
    pool = tmp_path / "debs"
    for suite, names in {"forky": ["libc6_2.41-1_amd64.deb", "base-files_14_amd64.deb"],
                         "sid": ["libc6_2.41-1_amd64.deb", "tzdata_2025a-1_all.deb"],
                         "trixie": []}.items():
        (pool / suite).mkdir(parents=True)
        for name in names:
            (pool / suite / name).write_bytes(f"{suite}/{name}".encode())
    shared, size = debs.share_debs(pool / "sid")
    # sid gains forky's base-files only; its own libc6 is left as it was
    assert shared == 1 and size == len(b"forky/base-files_14_amd64.deb")
    assert (pool / "sid/libc6_2.41-1_amd64.deb").read_bytes() == b"sid/libc6_2.41-1_amd64.deb"
    linked = pool / "sid/base-files_14_amd64.deb"
    assert linked.stat().st_ino == (pool / "forky/base-files_14_amd64.deb").stat().st_ino
    assert debs.share_debs(pool / "trixie") == (3, sum(
        len(f"{s}/{n}".encode()) for s, n in [("forky", "libc6_2.41-1_amd64.deb"),
                                             ("forky", "base-files_14_amd64.deb"),
                                             ("sid", "tzdata_2025a-1_all.deb")]))
    assert debs.share_debs(pool / "trixie") == (0, 0)  # nothing left to share
