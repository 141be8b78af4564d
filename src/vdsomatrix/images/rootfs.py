"""Base images: a Debian suite's minbase root filesystem, made by debootstrap and imported.

``vdsomatrix-base:<suite>-<hash12>``: ``<hash12>`` covers the recipe (suite, its architecture and
Debian release, debootstrap script, package list, clean-up, import changes), so the tag names what
was asked for; the packages inside
are whatever the mirror served that day (labels record glibc and Python). The cache directory
holds per-suite .deb caches (``debs/<suite>/``, :mod:`vdsomatrix.debian.debs`: so a rebuild
downloads only what changed, and a package another suite already downloaded, same name, version
and architecture, is linked, not fetched again), the last debootstrap log of each suite, and
transient work directories that are removed after each import.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from debian import deb822

from vdsomatrix import processes
from vdsomatrix.debian import archive as mirror
from vdsomatrix.debian import debs as debian_debs
from vdsomatrix.engine.client import LABEL, Log, find_image
from vdsomatrix.errors import BadInput, EnvironmentUnavailable, VdsomatrixError
from vdsomatrix.images import foreign
from vdsomatrix.matrix import DEFAULT_ARCH, Suite
from vdsomatrix.paths import cache_dir
from vdsomatrix.text import one_line

BASE_REPO = "vdsomatrix-base"

# The base recipe. Changing any of this changes every base tag (and so every probe tag).
RECIPE_VERSION = 1  # bump when the code below changes what a base image contains
VARIANT = "minbase"
# python3 runs probe.py; gcc + libc6-dev build the dynamic helper and, with libc6-dev's libc.a,
# the static one; musl-tools (musl-gcc, pulling in musl-dev's libc.a) the musl one. gcc pulls in
# binutils, whose readelf the Dockerfile uses to check the builds. The same list for every
# architecture: Debian's i386 and arm64 have all four in every suite of the matrix.
PACKAGES = ("python3", "gcc", "libc6-dev", "musl-tools")
# Emptied before the root filesystem is tarred: downloaded .debs and apt lists (useless without a
# network, and 130+ MB), and the files debootstrap copies from the host that builds the image.
PRUNE_DIRS = ("var/cache/apt/archives", "var/lib/apt/lists")
PRUNE_FILES = ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin")
BLANK_FILES = {"etc/resolv.conf": "", "etc/hostname": "localhost\n"}
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "WORKDIR /",
)
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
DEBOOTSTRAP_TIMEOUT = 1800  # seconds; a suite takes 1-2 minutes on the development machines


class ImageBuildError(VdsomatrixError):
    """debootstrap, the import or the Dockerfile build failed; the message says where to look."""


def base_recipe(suite: Suite) -> dict[str, Any]:
    """Everything that decides what the base image of ``suite`` contains (apart from the mirror's
    contents of the day). Its hash is the base tag's suffix.

    The architecture and the release are written only when they differ from amd64 and the
    suite's name, so the recipes (and tags) of the amd64 suites stay what they were before
    suites had either.
    """
    recipe: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "suite": suite.name,
        "script": suite.script,
        "variant": VARIANT,
        "include": sorted(PACKAGES),
        "prune": [list(PRUNE_DIRS), list(PRUNE_FILES), sorted(BLANK_FILES.items())],
        "changes": list(IMPORT_CHANGES),
    }
    if suite.arch != DEFAULT_ARCH:
        recipe["arch"] = suite.arch
    if suite.release != suite.name:
        recipe["release"] = suite.release
    return recipe


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_hash(suite: Suite) -> str:
    return _sha256(json.dumps(base_recipe(suite), sort_keys=True).encode())


def base_image_tag(suite: Suite) -> str:
    return f"{BASE_REPO}:{suite.name}-{base_hash(suite)[:12]}"


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # how mountinfo writes spaces, tabs, newlines


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(path.resolve())
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[4])  # \040: space
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path, log: Log) -> None:
    """Remove a debootstrap work directory without ever descending into a mounted file system.

    debootstrap mounts /proc and /sys (and, in containers, may bind /dev) inside its target and
    normally unmounts them itself; after a kill they may remain, and a plain recursive delete
    would then reach into the host's /dev or /sys.
    """
    if not path.exists():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", point], capture_output=True)
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        log(f"warning: not removing {path}: still mounted there: {', '.join(left)}")
        return
    # --one-file-system: never cross into another file system, whatever happened above.
    result = subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        log(f"warning: could not remove {path}: {result.stderr.strip()[:300]}")


def _dpkg_versions(rootfs: Path, packages: Iterable[str]) -> dict[str, str]:
    wanted = set(packages)
    found: dict[str, str] = {}
    status = rootfs / "var" / "lib" / "dpkg" / "status"
    try:
        with status.open(encoding="utf-8", errors="replace") as fh:
            for para in deb822.Deb822.iter_paragraphs(fh):
                name = para.get("Package")
                if name in wanted and "installed" in para.get("Status", ""):
                    found[name] = para.get("Version", "")
    except OSError:
        pass
    return found


def _debootstrap_version() -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "debootstrap"], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _debootstrap_errors(logfile: Path, lines: int = 8) -> str:
    """The error lines of a debootstrap log (or its last lines), joined into one."""
    try:
        text = logfile.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if line.startswith(("E:", "W: Failure"))]
    chosen = errors[-3:] if errors else text[-lines:]
    return one_line(" | ".join(line.strip() for line in chosen if line.strip()), 800)


def _prerequisites(suite: Suite) -> tuple[Path, Path]:
    """The debootstrap script for ``suite`` and the keyring to verify it with, once everything
    debootstrap needs is known to be here (root, the tool, the script, the keyring, and for a
    userland of another architecture, qemu-user through binfmt_misc for its second stage)."""
    runs, why = foreign.emulation_support(suite.arch)
    if not runs:
        raise EnvironmentUnavailable(f"cannot build the {suite.name} userland: {why}")
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"building the {suite.name} base image runs debootstrap, which needs root: "
            "run as root (CI and .ci/setup-machine machines are)"
        )
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "debootstrap is not installed: run `bash .ci/setup-machine` as root "
            "(or apt-get install debootstrap)"
        )
    script = DEBOOTSTRAP_SCRIPTS / suite.script
    if not script.is_file():
        raise ImageBuildError(
            f"this machine's debootstrap has no script {suite.script!r} for suite {suite.name!r}: "
            f"set `script = \"sid\"` under [suites.{suite.name}] in images/matrix.toml, "
            "or upgrade debootstrap"
        )
    try:
        keyring = mirror.archive_keyring()
    except BadInput as exc:
        raise ImageBuildError(f"cannot verify the {suite.name} packages: {exc}") from None
    return script, keyring


def _debootstrap_argv(suite: Suite, target: Path, archive: str, debs: Path, script: Path,
                      keyring: Path) -> list[str]:
    # --force-check-gpg: abort rather than fall back to an unverified download when the
    # Release file's signature cannot be checked against the archive keyring. A userland of
    # another architecture (arm64 on x86_64) is made in one go too: the first stage unpacks on
    # the host, and the second runs its dpkg in the chroot through qemu-user (binfmt_misc, F
    # flag; checked by _prerequisites), as a native one would.
    return [
        "debootstrap",
        f"--arch={suite.arch}",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}",
        f"--keyring={keyring}",
        "--force-check-gpg",
        suite.release,
        str(target),
        archive,
        str(script),
    ]


def _run_logged(argv: list[str], logfile: Path) -> int | None:
    """Run ``argv`` with its output in ``logfile``; its exit status, or None on the deadline.

    Through processes.spawn: its own process group (so that on a timeout or an interrupt the
    whole tree, dpkg and maintainer scripts in the chroot among it, is stopped within seconds)
    that dies with vdsomatrix.
    """
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    with logfile.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        proc = processes.spawn(argv, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env)
        return processes.wait(proc, DEBOOTSTRAP_TIMEOUT)


def _keep_only_used_debs(debs: Path, rootfs: Path) -> None:
    """Keep the .deb cache to what the suite uses now: older versions are never needed again."""
    debian_debs.keep_only(debs, (p.name for p in (rootfs / "var/cache/apt/archives").glob("*.deb")))


def _debootstrap(suite: Suite, target: Path, archive: str, log: Log) -> None:
    """A verified minbase root filesystem of ``suite`` in ``target``, from ``archive``."""
    script, keyring = _prerequisites(suite)
    debs = debian_debs.debs_dir(suite.name)
    debs.mkdir(parents=True, exist_ok=True)
    shared, size = debian_debs.share_debs(debs)
    if shared:
        log(f"[{suite.name}] {shared} packages ({size / 1e6:.0f} MB) already downloaded for "
            "other suites are reused")
    logfile = cache_dir() / "logs" / f"debootstrap-{suite.name}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log(f"[{suite.name}] debootstrap {suite.release} ({suite.arch}) from {archive} "
        f"(log: {logfile})")
    argv = _debootstrap_argv(suite, target, archive, debs, script, keyring)
    returncode = _run_logged(argv, logfile)
    if returncode is None:
        raise ImageBuildError(
            f"debootstrap of {suite.name} took longer than {DEBOOTSTRAP_TIMEOUT} s: "
            f"is the mirror {archive} reachable? See {logfile}"
        )
    if returncode != 0:
        # debootstrap keeps its own detailed log inside the target until it succeeds.
        inner = target / "debootstrap" / "debootstrap.log"
        if inner.is_file():
            with logfile.open("a", encoding="utf-8") as out:
                out.write("\n--- debootstrap/debootstrap.log ---\n")
                out.write(inner.read_text(encoding="utf-8", errors="replace"))
        errors = _debootstrap_errors(logfile)
        if "signed by unknown key" in errors or "Invalid Release signature" in errors:
            errors += (f" (the mirror's Release file does not verify against {keyring}: is "
                       "debian-archive-keyring up to date, and is the mirror genuine?)")
        raise ImageBuildError(f"debootstrap of {suite.name} failed (exit {returncode}): "
                              f"{errors or 'no output'}; full log: {logfile}")
    _keep_only_used_debs(debs, target)


def _prune(rootfs: Path) -> None:
    for rel in PRUNE_DIRS:
        folder = rootfs / rel
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                if entry.name != "partial":
                    shutil.rmtree(entry)
            elif entry.name != "lock":
                entry.unlink()
    for rel in PRUNE_FILES:
        (rootfs / rel).unlink(missing_ok=True)
    for rel, content in BLANK_FILES.items():
        path = rootfs / rel
        if path.is_symlink():
            path.unlink()
        path.write_text(content)


def _base_labels(suite: Suite, archive: str, versions: dict[str, str]) -> dict[str, str]:
    return {
        f"{LABEL}.kind": "base",
        f"{LABEL}.suite": suite.name,
        f"{LABEL}.script": suite.script,
        # What the userland is: `docker import` labels every image with the engine's own
        # platform (amd64), whatever the binaries inside are built for.
        f"{LABEL}.arch": suite.arch,
        f"{LABEL}.release": suite.release,
        f"{LABEL}.hash": base_hash(suite),
        f"{LABEL}.mirror": archive,
        f"{LABEL}.debootstrap": _debootstrap_version(),
        f"{LABEL}.created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{f"{LABEL}.version.{name}": v for name, v in sorted(versions.items())},
    }


def _tar(rootfs: Path, tar_path: Path, suite: Suite) -> None:
    result = subprocess.run(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar_path), "."],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ImageBuildError(f"tar of the {suite.name} root filesystem failed: "
                              f"{one_line(result.stderr[-500:], 500)}")


def _import(client, tar_path: Path, tag: str, labels: dict[str, str], suite: Suite) -> None:
    repo, _, tagname = tag.partition(":")
    label_changes = [f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())]
    reply = client.api.import_image_from_file(
        str(tar_path), repository=repo, tag=tagname, changes=[*IMPORT_CHANGES, *label_changes],
    )
    if find_image(client, tag) is None:
        raise ImageBuildError(f"docker import of {suite.name} left no image {tag}: "
                              f"{one_line(reply, 500)}")


def _fresh_work_dir(suite: Suite, log: Log) -> Path:
    """A new work directory for ``suite``, after removing those a killed run left (the caller
    holds the suite's lock, so no live build uses them)."""
    work_root = cache_dir() / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    # "<suite>.<random>": suite names have no dots, so this never matches another suite's.
    for stale in work_root.glob(f"{suite.name}.*"):
        log(f"[{suite.name}] removing the stale work directory {stale}")
        _remove_tree(stale, log)
    return Path(tempfile.mkdtemp(prefix=f"{suite.name}.", dir=work_root))


def build_base(client, suite: Suite, tag: str, log: Log) -> str:
    """debootstrap ``suite``, prune it and import it as ``tag``; the work directory is always
    removed (also on an interrupt), never descending into a mount left inside it."""
    work = _fresh_work_dir(suite, log)
    try:
        rootfs, tar_path = work / "rootfs", work / "rootfs.tar"
        archive = mirror.debian_mirror()
        started = time.monotonic()
        _debootstrap(suite, rootfs, archive, log)
        took = time.monotonic() - started
        versions = _dpkg_versions(rootfs, ("libc6", "python3", "gcc", "musl"))
        _prune(rootfs)
        _tar(rootfs, tar_path, suite)
        _remove_tree(rootfs, log)  # free the space before the engine copies the tar
        processes.check_stopping()
        started = time.monotonic()
        _import(client, tar_path, tag, _base_labels(suite, archive, versions), suite)
        log(
            f"[{suite.name}] base {tag} ({suite.arch}) ready: debootstrap {took:.0f} s, import "
            f"{time.monotonic() - started:.0f} s, glibc {versions.get('libc6', '?')}, "
            f"python3 {versions.get('python3', '?')}"
        )
        return tag
    finally:
        _remove_tree(work, log)
