"""The QEMU backend's kernels: resolving linux-image-amd64, reading kernel files, the cache.

The Packages stanzas below are trimmed copies of what the mirror served (bookworm: the classic
layout with /boot/vmlinuz in the image package; sid/forky 7.x: the image package depends on
linux-binary-* and linux-base-*). The network is only used by the QEMU integration tests.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vdsomatrix.errors import BadInput
from vdsomatrix.images import kernels
from vdsomatrix.matrix import KernelSpec

BOOKWORM = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.176+1)
Version: 6.1.176-1
Installed-Size: 13
Maintainer: Debian Kernel Team <debian-kernel@lists.invalid>
Architecture: amd64
Depends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)
Description: Linux for 64-bit PCs (meta-package)
Section: kernel
Priority: optional
Filename: pool/main/l/linux-signed-amd64/linux-image-amd64_6.1.176-1_amd64.deb
Size: 1484

Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.170+1)
Version: 6.1.170-1
Architecture: amd64
Depends: linux-image-6.1.0-44-amd64 (= 6.1.170-1)
Description: Linux for 64-bit PCs (meta-package)

Package: linux-image-6.1.0-50-amd64
Source: linux-signed-amd64 (6.1.176+1)
Version: 6.1.176-1
Architecture: amd64
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Description: Linux 6.1 for 64-bit PCs (signed)
"""

SID = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (7.2.13+1)
Version: 7.2.13-1
Architecture: amd64
Depends: linux-base-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)
Description: Linux for 64-bit PCs (meta-package)

Package: linux-image-7.2.13+deb14-amd64
Source: linux-signed-amd64 (7.2.13+1)
Version: 7.2.13-1
Installed-Size: 15
Architecture: amd64
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)
Description: Linux 7.2.13 for 64-bit PCs
"""  # noqa: E501


def test_resolves_the_newest_metapackage_to_its_pinned_image():
    paragraphs = kernels.parse_paragraphs(BOOKWORM)
    assert kernels.resolve_kernel_package(paragraphs) == ("linux-image-6.1.0-50-amd64", "6.1.176-1")


def test_skips_non_image_dependencies_of_split_packaging():
    paragraphs = kernels.parse_paragraphs(SID)
    assert kernels.resolve_kernel_package(paragraphs) == (
        "linux-image-7.2.13+deb14-amd64",
        "7.2.13-1",
    )


def test_payload_of_split_packaging_adds_binary_and_base_not_modules():
    paragraphs = kernels.parse_paragraphs(SID)
    payload = kernels.payload_packages(paragraphs, "linux-image-7.2.13+deb14-amd64", "7.2.13-1")
    assert payload == [
        ("linux-image-7.2.13+deb14-amd64", "7.2.13-1"),
        ("linux-base-7.2.13+deb14-amd64", "7.2.13-1"),
        ("linux-binary-7.2.13+deb14-amd64", "7.2.13-1"),
    ]


def test_payload_of_classic_packaging_is_the_image_package_alone():
    paragraphs = kernels.parse_paragraphs(BOOKWORM)
    assert kernels.payload_packages(paragraphs, "linux-image-6.1.0-50-amd64", "6.1.176-1") == [
        ("linux-image-6.1.0-50-amd64", "6.1.176-1")
    ]


def test_alternatives_prefer_a_package_present_in_the_index():
    text = """\
Package: linux-image-amd64
Version: 5.10.223-1
Depends: linux-image-5.10.0-32-amd64 (= 5.10.223-1) | linux-image-5.10.0-32-amd64-unsigned (= 5.10.223-1)

Package: linux-image-5.10.0-32-amd64-unsigned
Version: 5.10.223-1
"""  # noqa: E501
    assert kernels.resolve_kernel_package(kernels.parse_paragraphs(text)) == (
        "linux-image-5.10.0-32-amd64-unsigned",
        "5.10.223-1",
    )


def test_unpinned_dependency_takes_the_newest_known_version():
    text = """\
Package: linux-image-amd64
Version: 1
Depends: linux-image-6.1.0-9-amd64

Package: linux-image-6.1.0-9-amd64
Version: 6.1.27-1

Package: linux-image-6.1.0-9-amd64
Version: 6.1.27-1+b1
"""
    assert kernels.resolve_kernel_package(kernels.parse_paragraphs(text)) == (
        "linux-image-6.1.0-9-amd64",
        "6.1.27-1+b1",
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no linux-image-amd64"),
        ("Package: linux-headers-amd64\nVersion: 1\n", "no linux-image-amd64"),
        ("Package: linux-image-amd64\nVersion: 1\nDepends: kmod\n", "depends on no"),
        ("Package: linux-image-amd64\nVersion: 1\nDepends: linux-image-6.1-amd64\n", "no version"),
    ],
)
def test_unresolvable_indexes_are_refused_loudly(text, message):
    with pytest.raises(BadInput, match=message):
        kernels.resolve_kernel_package(kernels.parse_paragraphs(text))


def test_garbage_is_not_a_package_index():
    paragraphs = kernels.parse_paragraphs("\x00\xff garbage\n\n:::\nPackage\n")
    with pytest.raises(BadInput):
        kernels.resolve_kernel_package(paragraphs)


def _bzimage(banner: bytes) -> bytes:
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    offset = 0x400
    struct.pack_into("<H", head, 0x20E, offset)
    head[offset + 0x200 : offset + 0x200 + len(banner) + 1] = banner + b"\0"
    return bytes(head)


def test_bzimage_version_reads_the_setup_header(tmp_path):
    path = tmp_path / "vmlinuz"
    path.write_bytes(_bzimage(b"6.1.0-50-amd64 (debian-kernel@lists.invalid) #1 SMP"))
    assert kernels.bzimage_version(path).startswith("6.1.0-50-amd64 (debian-kernel@")
    path.write_bytes(b"MZ" + bytes(0x300))
    assert kernels.bzimage_version(path) == ""
    path.write_bytes(b"")
    assert kernels.bzimage_version(path) == ""


def test_missing_builtins():
    config = "CONFIG_SERIAL_8250=y\nCONFIG_DEVTMPFS=m\n# CONFIG_TMPFS is not set\n"
    missing = kernels.missing_builtins(
        config, ("CONFIG_SERIAL_8250", "CONFIG_DEVTMPFS", "CONFIG_TMPFS")
    )
    assert missing == ["CONFIG_DEVTMPFS", "CONFIG_TMPFS"]


def _unpacked(folder: Path, package: str, version: str, suite: str = "bookworm") -> None:
    folder.mkdir(parents=True)
    (folder / "vmlinuz").write_bytes(b"x")
    meta = {"suite": suite, "package": package, "version": version, "release": "6.1.0-50-amd64",
            "version_string": "", "deb_sha256": ""}
    (folder / "kernel.json").write_text(json.dumps(meta))


def test_cached_kernel_follows_the_pointer_of_its_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    spec = KernelSpec("bookworm")
    assert kernels.cached_kernel(spec) is None
    folder = tmp_path / "kernels" / "linux-image-6.1.0-50-amd64_6.1.176-1"
    _unpacked(folder, "linux-image-6.1.0-50-amd64", "6.1.176-1", suite="stable")
    pointer = tmp_path / "kernels" / "suites" / "bookworm" / "linux-image-amd64.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"package": "linux-image-6.1.0-50-amd64",
                                   "version": "6.1.176-1"}))
    kernel = kernels.cached_kernel(spec)
    assert kernel.package_ref == "linux-image-6.1.0-50-amd64=6.1.176-1"
    assert kernel.vmlinuz == folder / "vmlinuz"
    assert kernel.suite == "bookworm"  # the folder was unpacked for another suite first
    assert kernels.cached_kernel(KernelSpec("bookworm", "linux-image-rt-amd64")) is None
    (folder / "vmlinuz").unlink()
    assert kernels.cached_kernel(spec) is None


@pytest.mark.parametrize("spec", [KernelSpec("../etc"), KernelSpec("bookworm", "../../x"),
                                  KernelSpec("bookworm", "a/b"), "bookworm"])
def test_odd_specs_are_refused(spec):
    with pytest.raises(BadInput):
        kernels.cached_kernel(spec)


class FakeApt:
    """PrivateApt without a mirror: every suite's metapackage points at the bookworm kernel."""

    def __init__(self, suite, arch="amd64", *, mirror=None, keyring=None):
        self.suite, self.arch = suite, arch

    def update(self):
        pass

    def packages_index(self) -> Path:
        index = kernels.cache_dir() / f"fake-{self.suite}-{self.arch}_Packages"
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(self.index_text())
        return index

    def index_text(self) -> str:
        return BOOKWORM


def test_two_specs_resolving_to_one_package_unpack_it_once(tmp_path, monkeypatch):
    """Unpacking is locked per package version, not per suite: two suites whose metapackages
    point at one kernel (bookworm and stable) would otherwise both write its folder."""
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "PrivateApt", FakeApt)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    unpacked, inside = [], threading.Lock()

    def unpack(apt, suite, payload, target, log, arch="amd64"):
        assert inside.acquire(blocking=False), "two unpackings of one folder at once"
        try:
            unpacked.append(suite)
            time.sleep(0.3)
            _unpacked(target, *payload[0], suite=suite)
        finally:
            inside.release()
        return kernels._load(target)

    monkeypatch.setattr(kernels, "_download_and_unpack", unpack)
    specs = [KernelSpec("bookworm"), KernelSpec("stable")]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda spec: kernels.fetch_kernel(
            spec, mirror="http://mirror.invalid/debian", keyring=keyring, log=lambda m: None),
            specs))
    assert len(unpacked) == 1
    assert {k.directory for k in got} == {tmp_path / "cache" / "kernels" /
                                          "linux-image-6.1.0-50-amd64_6.1.176-1"}
    assert [k.suite for k in got] == ["bookworm", "stable"]
    for spec in specs:  # both pointers written: both boot offline from now on
        assert kernels.cached_kernel(spec).package_ref == "linux-image-6.1.0-50-amd64=6.1.176-1"


def test_a_kernel_being_unpacked_is_not_removed_as_unused(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    folder = tmp_path / "kernels" / "linux-image-6.1.0-44-amd64_6.1.170-1"
    _unpacked(folder, "linux-image-6.1.0-44-amd64", "6.1.170-1")
    with kernels.file_lock(kernels._artefact_lock(folder)):
        kernels.remove_unused(log=lambda m: None)
        assert folder.exists()
    kernels.remove_unused(log=lambda m: None)
    assert not folder.exists()


def _deb(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-kernel\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    out = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
@pytest.mark.parametrize(
    "files, release",
    [
        ({"boot/vmlinuz-6.1.0-9-amd64": b"K", "boot/config-6.1.0-9-amd64": b"C"}, "6.1.0-9-amd64"),
        (
            {
                "usr/lib/modules/7.2.1+deb14-amd64/vmlinuz": b"K",
                "usr/lib/modules/7.2.1+deb14-amd64/config": b"C",
                "usr/lib/modules/7.2.1+deb14-amd64/kernel/x.ko": b"M",
            },
            "7.2.1+deb14-amd64",
        ),
    ],
)
def test_extracts_only_the_image_and_its_config(tmp_path, files, release):
    deb = _deb(tmp_path, files)
    into = tmp_path / "out"
    into.mkdir()
    found = kernels._extract_kernel_files(deb, into)
    assert found == {"vmlinuz": release, "config": release}
    assert sorted(p.name for p in into.iterdir()) == ["config", "vmlinuz"]
    assert (into / "vmlinuz").read_bytes() == b"K"


# --- i386 kernels (Debian's 686 and 686-pae flavours, in bullseye's and bookworm's i386 index) --

# Trimmed from bookworm's main/binary-i386/Packages: the two metapackages, their images, and an
# amd64 image an i386 spec must never pick (it is not in an i386 index; here it tests the regex).
BOOKWORM_I386 = """\
Package: linux-image-686-pae
Source: linux-signed-i386 (6.1.176+1)
Version: 6.1.176-1
Architecture: i386
Depends: linux-image-6.1.0-50-686-pae (= 6.1.176-1)
Description: Linux for modern PCs (meta-package)

Package: linux-image-686
Source: linux-signed-i386 (6.1.176+1)
Version: 6.1.176-1
Architecture: i386
Depends: linux-image-6.1.0-50-686 (= 6.1.176-1)
Description: Linux for older PCs (meta-package)

Package: linux-image-6.1.0-50-686-pae
Source: linux-signed-i386 (6.1.176+1)
Version: 6.1.176-1
Architecture: i386
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Description: Linux 6.1 for modern PCs (signed)

Package: linux-image-6.1.0-50-686
Source: linux-signed-i386 (6.1.176+1)
Version: 6.1.176-1
Architecture: i386
Description: Linux 6.1 for older PCs (signed)

Package: linux-image-odd-amd64-pointer
Version: 1
Depends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)
"""

I386_SPEC = KernelSpec("bookworm-i386", arch="i386", release="bookworm")


def test_an_i386_spec_defaults_to_the_686_pae_metapackage():
    assert I386_SPEC.package == "linux-image-686-pae"
    assert KernelSpec("bookworm").package == "linux-image-amd64"
    assert KernelSpec("bookworm").release == "bookworm"
    assert KernelSpec("bookworm-i386", "linux-image-686", "i386", "bookworm").package == (
        "linux-image-686")


@pytest.mark.parametrize("meta, image", [
    ("linux-image-686-pae", "linux-image-6.1.0-50-686-pae"),
    ("linux-image-686", "linux-image-6.1.0-50-686"),
])
def test_i386_metapackages_resolve_to_their_686_images(meta, image):
    paragraphs = kernels.parse_paragraphs(BOOKWORM_I386)
    assert kernels.resolve_kernel_package(paragraphs, meta, "i386") == (image, "6.1.176-1")
    assert kernels.payload_packages(paragraphs, image, "6.1.176-1", "i386") == [
        (image, "6.1.176-1")]


def test_an_i386_spec_never_resolves_to_an_amd64_image_nor_the_reverse():
    paragraphs = kernels.parse_paragraphs(BOOKWORM_I386)
    with pytest.raises(BadInput, match="depends on no linux-image-<abi>-686"):
        kernels.resolve_kernel_package(paragraphs, "linux-image-odd-amd64-pointer", "i386")
    with pytest.raises(BadInput, match="depends on no linux-image-<abi>-amd64"):
        kernels.resolve_kernel_package(paragraphs, "linux-image-686-pae", "amd64")


def test_odd_i386_specs_are_refused():
    for spec in (KernelSpec("bookworm-i386", arch="riscv64"),
                 KernelSpec("bookworm-i386", arch="i386", release="../x")):
        with pytest.raises(BadInput):
            kernels.cached_kernel(spec)


class FakeI386Apt(FakeApt):
    """PrivateApt over a fake bookworm i386 index, or (``trixie``) one with no i386 kernel."""

    made: list = []

    def __init__(self, suite, arch="amd64", *, mirror=None, keyring=None):
        super().__init__(suite, arch)
        FakeI386Apt.made.append((suite, arch))

    def index_text(self) -> str:
        has_kernels = self.suite == "bookworm" and self.arch == "i386"
        # A name that starts like the metapackage's is not it.
        return BOOKWORM_I386 if has_kernels else "Package: linux-image-686-pae-dbg\nVersion: 1\n"


def test_an_i386_spec_is_fetched_from_the_i386_index_and_cached_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "PrivateApt", FakeI386Apt)
    FakeI386Apt.made = []
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    arches = []

    def unpack(apt, suite, payload, target, log, arch="amd64"):
        arches.append(arch)
        _unpacked(target, *payload[0], suite=suite)
        return kernels._load(target)

    monkeypatch.setattr(kernels, "_download_and_unpack", unpack)
    kernel = kernels.fetch_kernel(I386_SPEC, mirror="http://mirror.invalid/debian",
                                  keyring=keyring, log=lambda m: None)
    assert FakeI386Apt.made == [("bookworm", "i386")]  # the codename, and the i386 index
    assert arches == ["i386"]
    assert kernel.package_ref == "linux-image-6.1.0-50-686-pae=6.1.176-1"
    assert kernel.suite == "bookworm-i386"
    pointer = tmp_path / "cache" / "kernels" / "suites" / "bookworm-i386" / (
        "linux-image-686-pae.json")
    assert json.loads(pointer.read_text())["arch"] == "i386"
    # Offline from now on, and apart from the amd64 kernel of the same release.
    assert kernels.cached_kernel(I386_SPEC).package_ref == kernel.package_ref
    assert kernels.cached_kernel(KernelSpec("bookworm")) is None
    assert kernels.unavailable_reason(I386_SPEC) is None
    assert "linux-image-6.1.0-50-686-pae_6.1.176-1" in kernels.kernels_in_use()


def test_a_release_known_to_have_no_i386_kernel_is_unavailable_without_the_network(
        tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "PrivateApt", None)  # any use of apt would fail loudly
    for release in ("trixie", "forky", "sid"):
        spec = KernelSpec(f"{release}-i386", arch="i386", release=release)
        reason = kernels.unavailable_reason(spec)
        assert "bullseye and bookworm only" in reason and release in reason
        with pytest.raises(kernels.EnvironmentUnavailable, match="no i386 kernel"):
            kernels.fetch_kernel(spec, mirror="http://mirror.invalid/debian",
                                 keyring=tmp_path / "k", log=lambda m: None)
    assert kernels.unavailable_reason(KernelSpec("trixie")) is None  # amd64 kernels: yes


def test_an_index_without_the_metapackage_is_remembered_as_unavailable(tmp_path, monkeypatch):
    """A release the code knows nothing about: the mirror's index decides, and `list` then
    says why (a suite without a kernel is unavailable, never a failure)."""
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "PrivateApt", FakeI386Apt)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    spec = KernelSpec("duke-i386", arch="i386", release="duke")
    with pytest.raises(kernels.EnvironmentUnavailable, match="has no linux-image-686-pae"):
        kernels.fetch_kernel(spec, mirror="http://mirror.invalid/debian", keyring=keyring,
                             log=lambda m: None)
    assert "duke i386 package index on the mirror has no linux-image-686-pae" in (
        kernels.unavailable_reason(spec))
    assert kernels.cached_kernel(spec) is None
    kernels.kernels_in_use()  # a pointer without a package is no kernel in use, and no error


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
def test_a_kernel_is_downloaded_into_the_suites_deb_cache_and_its_debs_go_once_unpacked(
        tmp_path, monkeypatch):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "cache"))
    config = "".join(f"{symbol}=y\n" for symbol in kernels.REQUIRED_BUILTINS)
    deb = _deb(tmp_path, {"boot/vmlinuz-6.1.0-50-amd64": _bzimage(b"6.1.0-50-amd64 (d@x) #1"),
                          "boot/config-6.1.0-50-amd64": config.encode()})
    asked = []

    class DownloadingApt(FakeApt):
        def download(self, wanted, into):
            asked.append((wanted, into))
            into.mkdir(parents=True, exist_ok=True)
            path = into / "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb"
            shutil.copy(deb, path)
            return [path]

    target = tmp_path / "cache" / "kernels" / "linux-image-6.1.0-50-amd64_6.1.176-1"
    payload = [("linux-image-6.1.0-50-amd64", "6.1.176-1")]
    kernel = kernels._download_and_unpack(DownloadingApt("bookworm"), "bookworm", payload,
                                          target, log=lambda m: None)
    assert asked == [(payload, tmp_path / "cache" / "debs" / "bookworm" / "kernels")]
    assert kernel.release == "6.1.0-50-amd64" and kernel.image_format == "bzImage"
    assert kernel.version_string.startswith("6.1.0-50-amd64 (d@x)")
    assert kernel.deb_sha256.startswith("linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb ")
    assert kernels._load(target) == kernel
    assert list(asked[0][1].glob("*.deb")) == []  # the unpacked kernel is what is cached
