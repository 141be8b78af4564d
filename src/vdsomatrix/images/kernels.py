"""Debian kernels for the QEMU backend: fetched by package name, unpacked, cached by version.

A guest's kernel is named by a :class:`~vdsomatrix.matrix.KernelSpec`: a suite, its Debian
release and architecture, and a metapackage (``linux-image-amd64`` for amd64,
``linux-image-686-pae`` for i386, unless the matrix says otherwise), and is whatever that
metapackage points at in the release's ``binary-<arch>`` index (for example
``linux-image-6.1.0-50-amd64`` in bookworm, ``linux-image-6.1.0-50-686-pae`` in bookworm's i386
index; ``linux-image-arm64`` for arm64). Debian's i386 kernels stop with bookworm
(:data:`NO_KERNEL`): an i386 spec of a later release is unavailable, with that reason, before
any download. Only ``/boot/vmlinuz-*`` and ``/boot/config-*`` are unpacked from the package:
everything the guest needs (8250 serial console, initramfs, proc, sys, devtmpfs, tmpfs, magic
SysRq; on arm64 the PL011 console and the PCI 16550) is built into Debian's kernels, which
:func:`missing_builtins` checks against the unpacked config, so no modules are ever needed. An
arm64 vmlinuz is kept as the raw Image QEMU 7.2 boots (:func:`unpack_arm64_image`).

How the package is fetched: with the archive's one client, :class:`vdsomatrix.debian.apt.PrivateApt`
(apt-get with a private configuration over the spec's release and architecture: the signed index
and each .deb are checked by apt itself). Its Packages index is read with
:mod:`vdsomatrix.debian.packages` (only the metapackage's and the linux-image-* stanzas), and the
kernel's packages are downloaded into ``debs/<suite>/kernels/`` (:mod:`vdsomatrix.debian.debs`)
and removed there once unpacked.

Cache layout (under :func:`vdsomatrix.paths.cache_dir`: ``$VDSOMATRIX_CACHE``, else
``$XDG_CACHE_HOME/vdsomatrix``, else ``~/.cache/vdsomatrix``)::

    kernels/<package>_<version>/vmlinuz, config, kernel.json    one folder per package version
    kernels/suites/<suite>/<metapackage>.json                   what a spec resolved to
                                                                (or that the index has none)

``<suite>`` is the matrix's name of the suite (``bookworm``, ``bookworm-i386``).

A spec is resolved against the mirror once and then reused offline; ``refresh=True`` resolves
again (and downloads only if the version changed). Resolving a spec is serialised per spec (so
parallel environments read the index once); unpacking is serialised per package version, the
artefact itself, which is what two specs resolving to one package share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from debian.debian_support import Version

from vdsomatrix import processes
from vdsomatrix.debian import packages
from vdsomatrix.debian.apt import PrivateApt
from vdsomatrix.debian.archive import archive_keyring, debian_mirror
from vdsomatrix.debian.debs import debs_dir
from vdsomatrix.engine import workdirs
from vdsomatrix.errors import BadInput, EnvironmentUnavailable
from vdsomatrix.matrix import ARCHES, KernelSpec
from vdsomatrix.paths import cache_dir, file_lock
from vdsomatrix.results import write_atomic

META_PACKAGE = "linux-image-amd64"
# The kernel flavours of each architecture, as the end of the image package's name
# (linux-image-<abi>-<flavour>): i386 has 686 and 686-pae, arm64 one flavour of its name.
FLAVOURS = {"amd64": r"amd64", "i386": r"686(?:-pae)?", "arm64": r"arm64"}
# Releases known to ship no kernel of an architecture (no network needed to say so); for any
# other release the mirror's index decides, and a missing metapackage is remembered.
NO_KERNEL = {
    "i386": {
        release: "Debian ships i386 kernels (linux-image-686, linux-image-686-pae) in bullseye and "
        f"bookworm only: {release} has an i386 userland but no i386 kernel"
        for release in ("trixie", "forky", "sid")
    },
}


def _image_package(arch: str) -> re.Pattern:
    """A real kernel image package: linux-image-<abi>-<flavour>, or its -unsigned twin."""
    return re.compile(rf"^linux-image-(?P<abi>[0-9][0-9A-Za-z.+~-]*)-{FLAVOURS[arch]}"
                      r"(?:-unsigned)?$")


def _payload_package(arch: str) -> re.Pattern:
    """Split packaging (7.x): the image package depends on these for the image and its config."""
    return re.compile(rf"^linux-(?:binary|base)-[0-9][0-9A-Za-z.+~-]*-{FLAVOURS[arch]}$")


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9.+~:_-]+$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,30}\Z")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]{1,100}\Z")  # Debian policy's package names
UNPACKING = ".unpacking-"  # prefix of the folder a kernel is unpacked in before it is renamed
# What a guest with no modules needs from the kernel, as config symbols that must be =y.
REQUIRED_BUILTINS = (
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_SERIAL_8250",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_DEVTMPFS",
    "CONFIG_PROC_FS",
    "CONFIG_SYSFS",
    "CONFIG_TMPFS",
    "CONFIG_BINFMT_ELF",
    "CONFIG_BINFMT_SCRIPT",
    "CONFIG_MAGIC_SYSRQ",
)
# An arm64 guest (the `virt` board) has its console on the board's PL011 UART (ttyAMA0) and its
# result port on a 16550 on PCI (ttyS0: 8250's PCI driver behind the board's generic PCIe host
# bridge). virtio-console would do too, but Debian builds it (and virtio-pci) as modules up to
# 6.1, and a guest with no modules has neither.
ARM64_BUILTINS = (
    *(symbol for symbol in REQUIRED_BUILTINS if symbol != "CONFIG_SERIAL_8250_CONSOLE"),
    "CONFIG_SERIAL_AMBA_PL011",
    "CONFIG_SERIAL_AMBA_PL011_CONSOLE",
    "CONFIG_SERIAL_8250_PCI",
    "CONFIG_PCI_HOST_GENERIC",
)


def required_builtins(arch: str) -> tuple[str, ...]:
    """The config symbols a guest kernel of ``arch`` must have built in."""
    return ARM64_BUILTINS if arch == "arm64" else REQUIRED_BUILTINS


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: the package it came from and the files the backend boots."""

    suite: str
    package: str  # linux-image-6.1.0-50-amd64
    version: str  # 6.1.176-1 (the Debian package version)
    release: str  # 6.1.0-50-amd64 (uname -r)
    version_string: str  # the image's own banner: "6.1.0-50-amd64 (debian-kernel@...) #1 SMP ..."
    deb_sha256: str  # "<file> <sha256>" of each downloaded .deb, joined by "; "
    directory: Path
    arch: str = "amd64"  # the Debian architecture it is built for (kernel.json before: amd64)
    # What the package's vmlinuz was (image_format()); vmlinuz is what QEMU boots, unpacked
    # from it when QEMU could not boot that (kernel.json before: "")
    image_format: str = ""

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def config(self) -> Path:
        return self.directory / "config"

    @property
    def package_ref(self) -> str:
        """``package=version``, the way apt names one version of a package."""
        return f"{self.package}={self.version}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data


# --- resolving linux-image-amd64 -------------------------------------------------------------


def parse_paragraphs(text: str) -> list[Mapping[str, str]]:
    """The stanzas of Packages text (:func:`vdsomatrix.debian.packages.parse`)."""
    return packages.parse(text)


def _kernel_names(meta: str) -> re.Pattern[bytes]:
    """The index stanzas resolving ``meta`` reads: itself and every linux-image-* package."""
    return packages.names_matching(re.escape(meta), r"linux-image-[^\n]*")


def resolve_kernel_package(
    paragraphs: Iterable[Mapping[str, str]], meta: str = META_PACKAGE, arch: str = "amd64"
) -> tuple[str, str]:
    """The (package, version) of the kernel image that ``meta`` depends on.

    ``paragraphs`` are Packages stanzas (of the ``binary-<arch>`` index). The newest stanza of
    ``meta`` is used; from its Depends, the first relation naming a kernel image package of
    ``arch`` (``linux-image-<abi>-amd64``; for i386 ``-686-pae`` or ``-686``; or its
    ``-unsigned`` twin) wins; among alternatives, one present in ``paragraphs`` is preferred. The
    version is the one the metapackage pins with ``(= v)``, else the newest stanza of that package.
    Raises BadInput when nothing fits (a changed packaging scheme should be loud, not guessed).
    """
    paragraphs = list(paragraphs)
    image_package = _image_package(arch)
    by_name = packages.versions(paragraphs)
    if meta not in by_name:
        raise BadInput(f"no {meta} in the package index: is the suite right and its index fresh?")
    newest_meta = max(by_name[meta], key=Version)
    stanza = packages.stanza(paragraphs, meta, newest_meta)
    for group in packages.relations(stanza):
        images = [alt for alt in group if image_package.match(alt["name"] or "")]
        if not images:
            continue
        chosen = next((alt for alt in images if alt["name"] in by_name), images[0])
        name = chosen["name"]
        pinned = chosen.get("version")
        if pinned and pinned[0] == "=":
            version = pinned[1]
        elif name in by_name:
            version = max(by_name[name], key=Version)
        else:
            raise BadInput(f"{meta} {newest_meta} depends on {name} but no version of it is known")
        if not (_SAFE_TOKEN.match(name) and _SAFE_TOKEN.match(version)):
            raise BadInput(f"refusing odd kernel package reference {name!r} {version!r}")
        return name, version
    raise BadInput(
        f"{meta} {newest_meta} depends on no linux-image-<abi>-{FLAVOURS[arch]} package "
        f"(Depends: {stanza.get('Depends', '')!r})"
    )


def payload_packages(
    paragraphs: Iterable[Mapping[str, str]], package: str, version: str, arch: str = "amd64"
) -> list[tuple[str, str]]:
    """The packages whose files make up kernel ``package`` ``version``, starting with itself.

    Up to Debian 13 the image package holds ``/boot/vmlinuz-<release>`` and its config. Newer
    kernels (forky, sid: 7.x) make it a small package that depends on exactly pinned
    ``linux-binary-<abi>-amd64`` (``/usr/lib/modules/<release>/vmlinuz``) and
    ``linux-base-<abi>-amd64`` (``.../config``); those two are added when the stanza of ``package``
    names them. ``linux-modules-*`` is never needed (see :data:`REQUIRED_BUILTINS`).
    """
    wanted = [(package, version)]
    payload_package = _payload_package(arch)
    stanza = packages.stanza(paragraphs, package, version)
    if stanza is None:
        return wanted
    for group in packages.relations(stanza):
        for alt in group:
            name, pinned = alt["name"] or "", alt.get("version")
            if payload_package.match(name) and pinned and pinned[0] == "=":
                if not (_SAFE_TOKEN.match(name) and _SAFE_TOKEN.match(pinned[1])):
                    raise BadInput(f"refusing odd kernel package reference {name!r}")
                wanted.append((name, pinned[1]))
                break
    return wanted


# --- reading the unpacked files --------------------------------------------------------------


def bzimage_version(path: Path) -> str:
    """The version banner a bzImage carries in its setup header (``kernel_version`` field)."""
    with open(path, "rb") as fh:
        head = fh.read(0x8000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return ""
    (offset,) = struct.unpack_from("<H", head, 0x20E)
    start = offset + 0x200
    if not offset or start >= len(head):
        return ""
    end = head.find(b"\0", start, start + 512)
    raw = head[start : end if end >= 0 else start + 512]
    return raw.decode("ascii", "replace").strip()


# --- arm64 images ----------------------------------------------------------------------------
# An arm64 kernel comes as one of (Documentation/arch/arm64/booting.rst, and the EFI stub's
# zboot header, drivers/firmware/efi/libstub/zboot-header.S):
# - "arm64-image": the raw Image, "ARM\x64" at offset 0x38 of its 64-byte header (Debian's
#   vmlinuz for arm64 in bookworm and sid alike, when this was written);
# - "gzip": that Image gzipped (Image.gz);
# - "efi-zboot": an EFI application ("MZ", then "zimg" at offset 4) carrying the compressed
#   Image at a payload offset and size (u32 at 8 and 12) with its compression named at 24
#   (CONFIG_EFI_ZBOOT).
# QEMU 7.2's -kernel takes the raw Image, or a gzipped one of up to 64 MiB unpacked
# (load_aarch64_image in hw/arm/boot.c); EFI zboot only from QEMU 8.1 on. So every arm64 kernel
# is stored as its raw Image, which also lets its banner be read.
ARM64_MAGIC = b"ARM\x64"
_BANNER = re.compile(rb"Linux version ([ -~]{1,400}?)\n?\0")
MAX_IMAGE = 256 << 20  # bytes an unpacked Image may take: Debian's are 30-50 MB


def image_format(head: bytes) -> str:
    """What the first bytes (>= 64) of a vmlinuz are: "bzImage", "arm64-image", "gzip",
    "efi-zboot" or "unknown"."""
    if head[0x202:0x206] == b"HdrS":
        return "bzImage"
    if head[0x38:0x3C] == ARM64_MAGIC:
        return "arm64-image"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        return "efi-zboot"
    return "unknown"


def _gunzip(data: bytes, what: str) -> bytes:
    """One gzip member (trailing bytes, such as zboot's appended size, ignored), bounded."""
    import zlib

    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, MAX_IMAGE)
    except zlib.error as exc:
        raise EnvironmentUnavailable(f"{what}: not valid gzip ({exc})") from None
    if inflater.unconsumed_tail:
        raise EnvironmentUnavailable(f"{what}: unpacks to more than {MAX_IMAGE >> 20} MiB")
    return out


def _unzstd(data: bytes, what: str) -> bytes:
    if not shutil.which("zstd"):
        raise EnvironmentUnavailable(f"{what} is zstd-compressed: install zstd "
                                     "(`bash .ci/setup-machine` as root does)")
    import tempfile

    with tempfile.TemporaryFile() as packed:
        packed.write(data)
        packed.seek(0)
        done = processes.run_bounded(["zstd", "-d", "-q", "-c"], stdin=packed, timeout=120,
                                     stdout_cap=MAX_IMAGE)
    if done.timed_out or done.overflow or done.returncode != 0:
        raise EnvironmentUnavailable(f"{what}: zstd could not unpack it (or it unpacks to more "
                                     f"than {MAX_IMAGE >> 20} MiB)")
    return done.stdout


def unpack_arm64_image(data: bytes, what: str = "vmlinuz") -> tuple[bytes, str]:
    """(the raw arm64 Image, the format it came in) of an arm64 vmlinuz; EnvironmentUnavailable
    when it is none of the formats above or does not unpack to an Image."""
    kind = image_format(data[:0x400])
    if kind == "arm64-image":
        return data, kind
    if kind == "gzip":
        image = _gunzip(data, what)
    elif kind == "efi-zboot":
        offset, size = struct.unpack_from("<II", data, 8)
        method = data[24:56].split(b"\0", 1)[0].decode("ascii", "replace")
        payload = data[offset : offset + size]
        if not size or len(payload) != size:
            raise EnvironmentUnavailable(f"{what}: EFI zboot payload out of the file's bounds")
        unpackers = {"gzip": _gunzip, "zstd": _unzstd}
        if method not in unpackers:
            raise EnvironmentUnavailable(
                f"{what}: EFI zboot image compressed with {method!r}, which vdsomatrix cannot "
                f"unpack (only {', '.join(unpackers)}); choose another kernel suite")
        image = unpackers[method](payload, what)
    else:
        raise EnvironmentUnavailable(f"{what} is no arm64 kernel image (neither a raw Image, "
                                     "gzip nor EFI zboot)")
    if image_format(image[:0x400]) != "arm64-image":
        raise EnvironmentUnavailable(f"{what}: its {kind} payload is no arm64 Image")
    return image, kind


def image_banner(path: Path) -> str:
    """The version banner a raw kernel image carries ("6.1.0-50-arm64 (debian-kernel@...)
    ... #1 SMP Debian ..."): the string after "Linux version " in its read-only data. A 6.x
    image has two, one with the build number left out ("# SMP"); the one with it is what the
    kernel prints."""
    banners = [m[1].decode("ascii", "replace").strip() for m in _BANNER.finditer(path.read_bytes())]
    return next((b for b in banners if re.search(r"#[0-9]", b)), banners[0] if banners else "")


def missing_builtins(config_text: str, required: Iterable[str] = REQUIRED_BUILTINS) -> list[str]:
    """The ``required`` config symbols that are not ``=y`` in a kernel config."""
    builtin = {
        line.split("=", 1)[0]
        for line in config_text.splitlines()
        if line.startswith("CONFIG_") and line.rstrip().endswith("=y")
    }
    return [symbol for symbol in required if symbol not in builtin]


# --- fetching and caching --------------------------------------------------------------------


def _load(directory: Path) -> Kernel | None:
    try:
        data = json.loads((directory / "kernel.json").read_text())
        kernel = Kernel(**{**data, "directory": directory})
    except (OSError, ValueError, TypeError):
        return None
    return kernel if kernel.vmlinuz.is_file() else None


def _check_spec(spec: KernelSpec) -> None:
    if not isinstance(spec, KernelSpec):
        raise BadInput(f"{spec!r} is not a kernel spec (a suite and a metapackage)")
    if not _SUITE.match(spec.suite):
        raise BadInput(f"{spec.suite!r} is not a Debian suite name")
    if not _SUITE.match(spec.release or ""):
        raise BadInput(f"{spec.release!r} is not a Debian codename")
    if spec.arch not in ARCHES or spec.arch not in FLAVOURS:
        raise BadInput(f"{spec.arch!r} is not an architecture a kernel is booted for "
                       f"({', '.join(FLAVOURS)})")
    if not _PACKAGE.match(spec.package or ""):
        raise BadInput(f"{spec.package!r} is not a Debian package name")


def _what(spec: KernelSpec) -> str:
    """How a spec is named in messages: "bookworm linux-image-amd64",
    "bookworm i386 linux-image-686-pae"."""
    arch = "" if spec.arch == "amd64" else f" {spec.arch}"
    return f"{spec.release}{arch} {spec.package}"


def unavailable_reason(spec: KernelSpec) -> str | None:
    """Why ``spec`` names no kernel, without the network: its release is known to have none of
    its architecture (:data:`NO_KERNEL`), or the mirror's index lacked the metapackage when it
    was last read. None when nothing says so."""
    _check_spec(spec)
    known = NO_KERNEL.get(spec.arch, {}).get(spec.release)
    if known:
        return known
    try:
        pointer = json.loads(_pointer(spec).read_text())
        missing = pointer["missing"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(missing) if isinstance(missing, str) and missing else None


def _pointer(spec: KernelSpec) -> Path:
    """Where the package version ``spec`` last resolved to is kept."""
    return kernels_dir() / "suites" / spec.suite / f"{spec.package}.json"


def _resolving_lock(spec: KernelSpec) -> Path:
    return _pointer(spec).with_name(f".{spec.package}.lock")


def _artefact_lock(folder: Path) -> Path:
    """The lock of one unpacked package version: whoever writes or removes it holds this."""
    return folder.with_name(f".{folder.name}.lock")


def cached_kernel(spec: KernelSpec) -> Kernel | None:
    """The kernel ``spec`` last resolved to, if it is still unpacked in the cache (no network)."""
    _check_spec(spec)
    try:
        pointer = json.loads(_pointer(spec).read_text())
        folder = kernels_dir() / f"{pointer['package']}_{pointer['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kernel = _load(folder)
    # One folder serves every spec that resolves to its package: name the one asked about.
    return dataclasses.replace(kernel, suite=spec.suite) if kernel else None


def fetch_kernel(
    spec: KernelSpec,
    *,
    refresh: bool = False,
    mirror: str | None = None,
    keyring: Path | None = None,
    log=print,
) -> Kernel:
    """The unpacked kernel of ``spec``, downloading it if needed, verified against ``keyring``
    (default: Debian's archive keyring)."""
    _check_spec(spec)
    if not refresh:
        kernel = cached_kernel(spec)
        if kernel:
            return kernel
    known = NO_KERNEL.get(spec.arch, {}).get(spec.release)
    if known:
        raise EnvironmentUnavailable(known)
    keyring = keyring or archive_keyring()
    mirror = mirror or debian_mirror()
    with file_lock(_resolving_lock(spec)):
        if not refresh:  # another thread or process may have fetched it while we waited
            kernel = cached_kernel(spec)
            if kernel:
                return kernel
        started = time.monotonic()
        apt = PrivateApt(spec.release, spec.arch, mirror=mirror, keyring=keyring)
        log(f"kernels: reading the {spec.release} {spec.arch} package index from the mirror")
        apt.update()
        paragraphs = packages.read_index(apt.packages_index(), _kernel_names(spec.package))
        if spec.package not in packages.versions(paragraphs):
            reason = (f"the {spec.release} {spec.arch} package index on the mirror has no "
                      f"{spec.package}: this suite has no such kernel")
            write_atomic(_pointer(spec), json.dumps(
                {"suite": spec.suite, "metapackage": spec.package, "arch": spec.arch,
                 "missing": reason, "resolved": time.time()}, indent=1) + "\n")
            raise EnvironmentUnavailable(reason)
        package, version = resolve_kernel_package(paragraphs, spec.package, spec.arch)
        target = kernels_dir() / f"{package}_{version}"
        # Held until the pointer is written, so that clean() never sees the folder unused.
        with file_lock(_artefact_lock(target)):
            kernel = _load(target)
            if kernel is None:
                payload = payload_packages(paragraphs, package, version, spec.arch)
                kernel = _download_and_unpack(apt, spec.suite, payload, target, log,
                                              arch=spec.arch)
            pointer = {"suite": spec.suite, "metapackage": spec.package, "arch": spec.arch,
                       "package": package, "version": version, "resolved": time.time()}
            write_atomic(_pointer(spec), json.dumps(pointer, indent=1) + "\n")
        log(
            f"kernels: {_what(spec)} -> {kernel.package_ref} ({kernel.release}) "
            f"in {time.monotonic() - started:.1f}s"
        )
        return dataclasses.replace(kernel, suite=spec.suite)


# Where the image and its config live: /boot (up to Debian 13) or /usr/lib/modules/<release>.
_KERNEL_FILES = (
    (re.compile(r"^(?:\./)?boot/vmlinuz-(?P<release>[^/]+)$"), "vmlinuz"),
    (re.compile(r"^(?:\./)?boot/config-(?P<release>[^/]+)$"), "config"),
    (re.compile(r"^(?:\./)?usr/lib/modules/(?P<release>[^/]+)/vmlinuz$"), "vmlinuz"),
    (re.compile(r"^(?:\./)?usr/lib/modules/(?P<release>[^/]+)/config$"), "config"),
)


def _extract_kernel_files(deb: Path, into: Path) -> dict[str, str]:
    """Copy the image and config out of ``deb`` into ``into``; {kind: release} of what was found.

    The data archive is streamed from ``dpkg-deb --fsys-tarfile`` and only the two files are
    written (and synced: a kernel.json next to them promises they are whole), so the modules
    (most of a kernel package) never touch the disk.
    """
    found: dict[str, str] = {}
    proc = processes.spawn(["dpkg-deb", "--fsys-tarfile", str(deb)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                processes.check_stopping()
                if not member.isfile():
                    continue
                for pattern, kind in _KERNEL_FILES:
                    match = pattern.match(member.name)
                    if match and kind not in found:
                        source = archive.extractfile(member)
                        with open(into / kind, "wb") as out:
                            shutil.copyfileobj(source, out)
                            out.flush()
                            os.fsync(out.fileno())
                        found[kind] = match["release"]
    except tarfile.TarError as exc:
        processes.kill_group(proc)
        raise EnvironmentUnavailable(f"{deb.name}: unreadable data archive ({exc})") from None
    except BaseException:
        processes.kill_group(proc)
        raise
    finally:
        proc.stdout.close()
        err = proc.stderr.read(64 << 10)
        proc.stderr.close()
        proc.wait()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip()[-300:]
        raise EnvironmentUnavailable(f"dpkg-deb could not read {deb.name}: {detail}")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_and_unpack(
    apt: PrivateApt, suite: str, payload: list[tuple[str, str]], target: Path, log,
    arch: str = "amd64",
) -> Kernel:
    """Download ``payload`` and unpack it into ``target``; the caller holds its artefact lock.
    The .debs are removed once unpacked: the unpacked kernel is what is cached."""
    log(f"kernels: downloading {' '.join(f'{name}={ver}' for name, ver in payload)}")
    debs = apt.download(payload, debs_dir(suite, "kernels"))
    staging = workdirs.make_owned(UNPACKING, target.parent)
    try:
        kernel = _unpack(debs, payload, staging, suite, arch)
        kernel = dataclasses.replace(kernel, directory=target)
        data = kernel.to_json()
        del data["directory"]
        write_atomic(staging / "kernel.json", json.dumps(data, indent=1) + "\n")
        staging.chmod(0o755)
        if target.exists():  # a stale, incomplete folder from an interrupted run
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for deb in debs:
            deb.unlink(missing_ok=True)
    return kernel


def _unpack(debs: list[Path], payload: list[tuple[str, str]], staging: Path, suite: str,
            arch: str) -> Kernel:
    """The kernel files of ``debs`` in ``staging``, checked; the Kernel they make (its
    directory ``staging``)."""
    package, version = payload[0]
    found: dict[str, str] = {}
    digests = []
    for deb in sorted(debs):  # by file name, as digests were always listed
        digests.append(f"{deb.name} {_sha256(deb)}")
        for kind, release in _extract_kernel_files(deb, staging).items():
            found.setdefault(kind, release)
    if set(found) != {"vmlinuz", "config"} or found["vmlinuz"] != found["config"]:
        refs = ", ".join(f"{name}={ver}" for name, ver in payload)
        raise EnvironmentUnavailable(
            f"{refs}: expected one vmlinuz and its config, found {found or 'none'}")
    missing = missing_builtins((staging / "config").read_text(errors="replace"),
                               required_builtins(arch))
    if missing:
        raise EnvironmentUnavailable(
            f"{package} lacks built-in {', '.join(missing)}: the guest would need modules; "
            "choose another kernel suite"
        )
    kind, banner = _bootable_image(staging / "vmlinuz", package, arch)
    return Kernel(suite=suite, package=package, version=version, release=found["vmlinuz"],
                  version_string=banner, deb_sha256="; ".join(digests), directory=staging,
                  arch=arch, image_format=kind)


def _bootable_image(vmlinuz: Path, package: str, arch: str) -> tuple[str, str]:
    """(the format the package's vmlinuz came in, its banner), after making ``vmlinuz`` what
    QEMU boots (an arm64 one unpacked to its raw Image)."""
    if arch == "arm64":
        image, kind = unpack_arm64_image(vmlinuz.read_bytes(), f"{package}'s vmlinuz")
        if kind != "arm64-image":
            vmlinuz.write_bytes(image)
        return kind, image_banner(vmlinuz)
    with open(vmlinuz, "rb") as fh:
        kind = image_format(fh.read(0x400))
    return kind, bzimage_version(vmlinuz)


# --- cleaning up -----------------------------------------------------------------------------


def remove_leftovers(log=print) -> None:
    """Remove the unpacking folders of runs that died half-way."""
    workdirs.remove_dead(kernels_dir(), UNPACKING, log)


def kernels_in_use() -> set[str]:
    """The ``<package>_<version>`` folders some pointer names."""
    used = set()
    for path in (kernels_dir() / "suites").rglob("*.json"):
        try:
            pointer = json.loads(path.read_text())
            used.add(f"{pointer['package']}_{pointer['version']}")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return used


def remove_unused(log=print) -> None:
    """Remove the unpacked kernels that no pointer names (each under its artefact lock, and only
    when no one holds it: a kernel being unpacked right now is kept)."""
    folder = kernels_dir()
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == "suites" or not entry.is_dir():
            continue
        with workdirs.lock_if_free(_artefact_lock(entry)) as free:
            # Read the pointers only now: a fetch writes its pointer before it lets go.
            if free and entry.name not in kernels_in_use():
                # The lock file stays: unlinking a lock others may have open breaks it.
                shutil.rmtree(entry, ignore_errors=True)
                log(f"qemu: removed the unused kernel {entry.name}")
