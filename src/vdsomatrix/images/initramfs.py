"""The guest's root file system: a probe image turned into an initramfs, and the cache of them.

The probe image of a suite (the same Docker image the docker backend runs) is exported from a
created, never started container. For the C helper's builds only what the probe needs is kept
(initramfs_contents.py: /init's programs, python3 and the part of its standard library the probe can
import, the probe and its helpers, /etc, and every library all of them load: some 33 MB of a
156-164 MB image); the runtime images (``runtimes``) are kept whole but for :data:`STRIP`
(compilers, headers, static libraries, documentation, locales). Either is written by ``bsdtar``
as an uncompressed newc initramfs (uncompressed: under TCG the guest's CPU is emulated, and
decompressing costs it more than copying the bytes saves; see benchmarks/guest_boot.py), plus
the guest's /init (``guest_init.INIT_SCRIPT``).

Cache layout, under ``<cache>/initramfs``::

    <suite>_<image id, 12 hex>_<recipe hash, 12 hex>.cpio    one file per image and recipe
    <suite>.json                                              pointer: the file the suite boots
    .<suite>.lock                                             held while either changes

``<suite>`` is ``<suite>-runtimes`` for a runtime image (userland_key). ``_`` never occurs in
either, so a file belongs to exactly one of them (an i386 suite is named ``bookworm-i386``, and
its files ``bookworm-i386_<image>_<recipe>.cpio``). Once built, an initramfs boots without the
Docker engine.

An i386 suite's image keeps its libraries and compiler drivers under i386/i686 names, an arm64
one under aarch64 names; :func:`strip_patterns` gives the same exclusions under those names.
Nothing here runs a program of the image (the selection reads ELF headers with pyelftools), so an
arm64 image is made into an initramfs on an x86 host the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdsomatrix import processes
from vdsomatrix.engine import workdirs
from vdsomatrix.engine.container import PROBE, Container
from vdsomatrix.engine.leftovers import QEMU_EXPORT
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.images import guest_init
from vdsomatrix.images import initramfs_contents as contents
from vdsomatrix.matrix import Suite
from vdsomatrix.paths import cache_dir, file_lock
from vdsomatrix.results import write_atomic

# Bump when the recipe below changes in a way the hashed parts do not show.
INITRAMFS_RECIPE = 2
# bsdtar exclusion patterns (anchored at the archive root, a directory takes its contents along).
STRIP = (
    ".dockerenv",  # not a container: the probe must not think it runs in one
    "dev/*",  # placeholders from the container; the guest mounts devtmpfs on /dev
    "usr/include",
    "usr/lib/gcc",
    "usr/libexec/gcc",
    "usr/bin/*gcc*",
    "usr/bin/*cpp*",
    "usr/bin/*lto-dump*",
    "usr/bin/x86_64-linux-gnu-*",  # binutils and the compiler drivers
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/gcc",
    "usr/share/gdb",
    "usr/share/bug",
    "usr/lib/x86_64-linux-gnu/*.a",
    "usr/lib/x86_64-linux-musl/*.a",
    "usr/lib/x86_64-linux-gnu/lib[alt]san.so*",  # sanitizer runtimes
    "usr/lib/x86_64-linux-gnu/libubsan.so*",
    "usr/lib/x86_64-linux-gnu/libhwasan.so*",
    "usr/lib/x86_64-linux-gnu/libgprofng*",
    "usr/lib/x86_64-linux-gnu/gprofng",
    "usr/lib/x86_64-linux-gnu/libisl.so*",  # compiler-only libraries
    "usr/lib/x86_64-linux-gnu/libmpc.so*",
    "usr/lib/x86_64-linux-gnu/libmpfr.so*",
    "usr/lib/x86_64-linux-gnu/libbfd*",
    "usr/lib/x86_64-linux-gnu/libopcodes*",
    "usr/lib/x86_64-linux-gnu/libctf*",
    "usr/lib/x86_64-linux-gnu/libsframe*",
    "usr/lib/x86_64-linux-gnu/libcc1.so*",
    "var/cache/debconf",
    "var/cache/apt",
    "var/lib/apt",
    "var/log",
)
# How the amd64 names in STRIP read in an i386 userland (Debian's multiarch triplet is
# i386-linux-gnu, the toolchain's prefix i686-linux-gnu-) and an arm64 one (aarch64-linux-gnu
# for both).
_ARCH_NAMES = {
    "i386": (("usr/bin/x86_64-linux-gnu-", "usr/bin/i686-linux-gnu-"),
             ("x86_64-linux-gnu", "i386-linux-gnu"),
             ("x86_64-linux-musl", "i386-linux-musl")),
    "arm64": (("x86_64-linux-gnu", "aarch64-linux-gnu"),
              ("x86_64-linux-musl", "aarch64-linux-musl")),
}


def strip_patterns(arch: str = "amd64") -> tuple[str, ...]:
    """:data:`STRIP` for a userland of ``arch`` (amd64: STRIP itself)."""
    patterns = []
    for pattern in STRIP:
        for old, new in _ARCH_NAMES.get(arch, ()):
            pattern = pattern.replace(old, new)
        patterns.append(pattern)
    return tuple(patterns)


# An export container is never started; its labels say until when its owner may still read it.
EXPORT_LIFETIME = 3600.0
EXPORT_LIMIT = 16 << 30  # bytes of an image's file system exported at most (runtimes: ~1.5 GB)
BUILDING = ".building-"  # prefix of the folder an initramfs is built in before it is renamed
BSDTAR_MISSING = (
    "bsdtar not found: install libarchive-tools (`bash .ci/setup-machine` as root does)"
)
_FILE = re.compile(r"(?P<suite>[a-z][a-z0-9-]{1,30})_(?P<image>[0-9a-f]{12})_"
                   r"(?P<recipe>[0-9a-f]{12})\.cpio\Z")


@dataclass(frozen=True)
class CacheKey:
    """What an initramfs file is made of: a suite's image and the recipe."""

    suite: str
    image: str  # the first 12 hex digits of the image id
    recipe: str  # initramfs_recipe_hash()

    @property
    def file_name(self) -> str:
        return f"{self.suite}_{self.image}_{self.recipe}.cpio"

    @classmethod
    def parse(cls, name: str) -> CacheKey | None:
        match = _FILE.match(name)
        return cls(match["suite"], match["image"], match["recipe"]) if match else None


def _mtree_path(path: Path) -> str:
    """A path as mtree writes it: anything but plain characters as a backslash-octal escape."""
    return "".join(
        ch if re.match(r"[A-Za-z0-9/._+-]", ch) else "".join(f"\\{b:03o}" for b in ch.encode())
        for ch in str(path)
    )


def initramfs_recipe_hash(arch: str = "amd64", *, whole: bool = False) -> str:
    """Covers everything besides the image that decides an initramfs's content: with ``whole``
    (a runtime image, kept whole but for STRIP) the same hash as before the other images were
    reduced to what the probe needs (contents.recipe_text, hashed too)."""
    digest = hashlib.sha256()
    digest.update(f"recipe {INITRAMFS_RECIPE}\n".encode())
    digest.update("\n".join(strip_patterns(arch)).encode() + b"\n")
    digest.update(guest_init.INIT_SCRIPT.encode())
    if not whole:
        digest.update(contents.recipe_text().encode())
    return digest.hexdigest()[:12]


def build_initramfs(client, image: str, dest: Path, *, arch: str = "amd64", whole: bool = False,
                    log=print) -> dict[str, Any]:
    """Write the initramfs of Docker image ``image`` (a userland of ``arch``) to ``dest``;
    returns size and timing.

    The image's file system is exported from a created (never started) container
    (engine/container.py's Container, removed whatever happens). ``whole``
    (a runtime image): streamed through ``bsdtar``, which drops :data:`STRIP`
    (:func:`strip_patterns` of ``arch``); else spooled to a file, from which
    :func:`contents.select` keeps what the probe needs, streamed as a tar into ``bsdtar``. Either
    way ``bsdtar`` writes the newc archive and adds /init, /dev and /dev/console.
    """
    if not shutil.which("bsdtar"):
        raise EnvironmentUnavailable(BSDTAR_MISSING)
    started = time.monotonic()
    with workdirs.owned_tempdir(BUILDING, dest.parent) as work:
        (work / "init").write_text(guest_init.INIT_SCRIPT)
        (work / "strip").write_text("\n".join(strip_patterns(arch)) + "\n")
        (work / "extra.mtree").write_text(
            "#mtree\n"
            "./dev type=dir uid=0 gid=0 mode=0755\n"
            "./dev/console type=char uid=0 gid=0 mode=0600 device=native,5,1\n"
            f"./init type=file uid=0 gid=0 mode=0755 contents={_mtree_path(work / 'init')}\n"
        )
        out = work / "initramfs.cpio"
        with Container(client, image, ["true"], name=f"{arch}-initramfs", kind=QEMU_EXPORT,
                       lifetime=EXPORT_LIFETIME, confinement=PROBE, log=log) as box:
            if whole:
                kept = _bsdtar(out, work, box.export(EXPORT_LIMIT), strip=True)
            else:
                spool = work / "export.tar"
                with open(spool, "wb") as fh:
                    for chunk in box.export(EXPORT_LIMIT):
                        fh.write(chunk)
                with tarfile.open(spool) as tar:
                    members = contents.select(tar, arch)
                    kept = _bsdtar(out, work, _tar_stream(tar, members), strip=False)
                spool.unlink()
        if not kept or not out.is_file():
            detail = " | ".join(workdirs.last_lines(work / "bsdtar.err"))[-300:]
            raise EnvironmentUnavailable(f"building the initramfs of {image} failed: {detail}")
        with open(out, "rb+") as fh:  # on disk before a pointer names it
            os.fsync(fh.fileno())
        size = out.stat().st_size
        os.chmod(out, 0o644)
        os.replace(out, dest)
    seconds = time.monotonic() - started
    log(f"qemu: initramfs of {image}: {size / 1e6:.0f} MB in {seconds:.1f}s")
    return {"bytes": size, "seconds": round(seconds, 2), "whole": whole}


class _Pipe:
    """A file-like writer that hands each write to a generator's consumer (see _tar_stream)."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)


def _tar_stream(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> Iterator[bytes]:
    """``members`` of ``tar`` (their data included) as the chunks of a new tar stream."""
    pipe = _Pipe()
    with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as out:
        for member in members:
            if member.isreg():
                with tar.extractfile(member) as data:
                    out.addfile(member, data)
            else:
                out.addfile(member)
            if sum(map(len, pipe.chunks)) >= 1 << 20:
                yield b"".join(pipe.chunks)
                pipe.chunks.clear()
    yield b"".join(pipe.chunks)


def _bsdtar(out: Path, work: Path, chunks: Iterable[bytes], *, strip: bool) -> bool:
    """Feed the tar stream ``chunks`` to bsdtar, which writes the newc archive ``out`` (with
    ``strip``: without :data:`STRIP`) and adds extra.mtree; whether it succeeded."""
    argv = ["bsdtar", "-c", "-f", str(out), "--format", "newc"]
    if strip:
        argv += ["-X", str(work / "strip")]
    with open(work / "bsdtar.err", "wb") as err:
        proc = processes.spawn([*argv, "@-", f"@{work / 'extra.mtree'}"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
    try:
        for chunk in chunks:
            processes.check_stopping()
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass  # bsdtar gave up; its exit status and stderr say why
    except BaseException:
        processes.kill_group(proc)
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()  # the end of the archive for bsdtar
        proc.wait()
    return proc.returncode == 0


def _default_image_for(suite: Suite, rebuild: bool, log) -> str:
    """The probe image tag of ``suite``, built if missing."""
    from vdsomatrix.images.probe_image import ensure_probe_image

    return ensure_probe_image(suite, rebuild=rebuild, log=log)


def _default_runtime_image_for(suite: Suite, rebuild: bool, log) -> str:
    """The runtime image tag of ``suite`` (its probe image plus the runtime layer)."""
    from vdsomatrix.images.runtimes import ensure_image

    return ensure_image(suite, rebuild=rebuild, log=log)


def userland_key(suite: Suite, runtimes: bool = False) -> str:
    """The name an initramfs is cached under: the suite, or ``<suite>-runtimes`` for the runtime
    image (``_`` never occurs in either)."""
    return f"{suite.name}-runtimes" if runtimes else suite.name


def _default_client():
    from vdsomatrix.engine.client import docker_client

    return docker_client(timeout=600)


class InitramfsCache:
    """The initramfs each suite boots: built from its probe image when that changed, else
    reused, also without an engine. Safe across threads and processes (one lock per suite)."""

    def __init__(
        self,
        *,
        image_for: Callable[[Suite, bool, Any], str] | None = None,
        client_factory: Callable[[], Any] | None = None,
        runtime_image_for: Callable[[Suite, bool, Any], str] | None = None,
    ):
        """``image_for(suite, rebuild, log)`` gives the tag of the probe image (built if needed),
        ``runtime_image_for`` the same for the runtime image; ``client_factory()`` a Docker
        client. All default to the docker backend's."""
        self.image_for = image_for or _default_image_for
        self.runtime_image_for = runtime_image_for or _default_runtime_image_for
        self.client_factory = client_factory or _default_client
        self._lock = threading.Lock()
        self._prepared: dict[str, Path] = {}  # suite -> initramfs prepared by this process
        # initramfs -> time.monotonic() its build ended: environments of one suite prepared in
        # parallel with rebuild=True rebuild it once.
        self._built_at: dict[Path, float] = {}

    @staticmethod
    def folder() -> Path:
        return cache_dir() / "initramfs"

    def pointer(self, suite: str) -> Path:
        return self.folder() / f"{suite}.json"

    def _suite_lock(self, suite: str) -> Path:
        return self.folder() / f".{suite}.lock"

    def cached(self, suite: Suite, *, runtimes: bool = False) -> Path | None:
        """The initramfs ``suite`` boots now, if there is one (no engine needed)."""
        key = userland_key(suite, runtimes)
        with self._lock:
            path = self._prepared.get(key)
        if path and path.is_file():
            return path
        return self._pointed(key)

    def _pointed(self, suite: str) -> Path | None:
        """The existing file that ``suite``'s pointer names."""
        try:
            key = CacheKey.parse(json.loads(self.pointer(suite).read_text())["file"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if key is None or key.suite != suite:
            return None
        path = self.folder() / key.file_name
        return path if path.is_file() else None

    def prepare(self, suite: Suite, *, runtimes: bool = False, rebuild: bool = False,
                log=print) -> Path:
        """The initramfs of ``suite``'s current probe image (with ``runtimes``, its runtime
        image), built if missing (or ``rebuild``).

        Without a Docker engine, the one last built is used (and said so).
        """
        asked_at = time.monotonic()
        name = userland_key(suite, runtimes)
        if not rebuild:
            with self._lock:
                known = self._prepared.get(name)
            if known and known.is_file():
                return known
        try:
            tag = (self.runtime_image_for if runtimes else self.image_for)(suite, rebuild, log)
            client = self.client_factory()
            try:
                image_id = client.images.get(tag).id
            finally:
                client.close()
        except EnvironmentUnavailable:
            cached = None if rebuild else self.cached(suite, runtimes=runtimes)
            if cached is None:
                raise
            log(f"qemu: no Docker engine; booting the cached initramfs {cached.name}")
            return cached
        key = CacheKey(name, image_id.split(":")[-1][:12],
                       initramfs_recipe_hash(suite.arch, whole=runtimes))
        path = self.folder() / key.file_name
        with file_lock(self._suite_lock(name)):
            with self._lock:
                fresh = self._built_at.get(path, float("-inf")) > asked_at
            if not path.is_file() or (rebuild and not fresh):
                client = self.client_factory()
                try:
                    stats = build_initramfs(client, tag, path, arch=suite.arch, whole=runtimes,
                                            log=log)
                finally:
                    client.close()
                with self._lock:
                    self._built_at[path] = time.monotonic()
                self._point_to(key, tag, image_id, stats, log)
            elif self._pointed(name) != path:  # built before, by another run
                self._point_to(key, tag, image_id, {}, log)
        with self._lock:
            self._prepared[name] = path
        return path

    def _point_to(self, key: CacheKey, tag: str, image_id: str, stats: dict, log) -> None:
        """Make ``key``'s file the one its suite boots, and remove the suite's others (the
        caller holds the suite's lock)."""
        pointer = {"suite": key.suite, "file": key.file_name, "image": tag, "image_id": image_id,
                   "recipe": key.recipe, "pointed": time.time(), **stats}
        write_atomic(self.pointer(key.suite), json.dumps(pointer, indent=1) + "\n")
        self._remove_others(key.suite, keep=self.folder() / key.file_name, log=log)

    def _remove_others(self, suite: str, *, keep: Path, log) -> None:
        """Remove the other initramfs files of ``suite`` (the caller holds its lock)."""
        for path in self.folder().glob("*.cpio"):
            key = CacheKey.parse(path.name)
            if key is not None and key.suite == suite and path != keep:
                path.unlink(missing_ok=True)
                log(f"qemu: removed the superseded initramfs {path.name}")

    def remove_leftovers(self, log=print) -> None:
        """Remove the build folders of runs that died half-way."""
        workdirs.remove_dead(self.folder(), BUILDING, log)

    def remove_unused(self, log=print) -> None:
        """Remove the initramfs files no pointer names, and files of an older naming. A suite
        whose lock is held (a build under way) is left as it is."""
        folder = self.folder()
        if not folder.is_dir():
            return
        by_suite: dict[str, list[Path]] = {}
        for path in sorted(folder.glob("*.cpio")):
            key = CacheKey.parse(path.name)
            if key is None:  # no process of this version made it, none boots it
                path.unlink(missing_ok=True)
                log(f"qemu: removed the initramfs {path.name} of an older vdsomatrix")
            else:
                by_suite.setdefault(key.suite, []).append(path)
        for suite, paths in by_suite.items():
            with workdirs.lock_if_free(self._suite_lock(suite)) as free:
                if not free:
                    continue
                current = self._pointed(suite)
                for path in paths:
                    if path != current:
                        path.unlink(missing_ok=True)
                        log(f"qemu: removed the unused initramfs {path.name}")


def read_file(cpio: Path, path: str, limit: int) -> bytes | None:
    """The bytes of the file ``path`` (absolute) in the initramfs ``cpio``, if it holds a
    regular file there of at most ``limit`` bytes; None otherwise. ``path`` must already be a
    plain path (contract.resolve_artefacts checks it): bsdtar reads it as a pattern."""
    done = processes.run_bounded(["bsdtar", "-xOf", str(cpio), "--", path.lstrip("/")],
                                 timeout=60, stdout_cap=limit)
    if done.returncode != 0 or done.timed_out or done.overflow or not done.stdout:
        return None
    return done.stdout
