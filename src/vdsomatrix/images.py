"""Docker images of the matrix's userlands, built locally: no registry is needed or used.

Two images per Debian suite:

``vdsomatrix-base:<suite>-<hash12>``
    A minbase root filesystem made by debootstrap (python3 and the C toolchains included), tarred
    and imported through the Docker SDK. ``<hash12>`` covers the recipe (suite, debootstrap
    script, package list, clean-up, import changes), so the tag names what was asked for; the
    packages inside are whatever the mirror served that day (labels record glibc and Python).
``vdsomatrix-probe:<suite>-<hash12>``
    images/Dockerfile on top of the base: the probe plus the C helper compiled three ways.
    ``<hash12>`` covers the Dockerfile, the probe sources, the suite and the base recipe.

Nothing is rebuilt when its tag already exists; ``rebuild=True`` rebuilds both images of the
suite from scratch. Builds of different suites may run in parallel threads or processes: each
suite's builds are serialised by a lock file in the cache directory, and every build has its own
work directory. The cache directory ($VDSOMATRIX_CACHE, else $XDG_CACHE_HOME/vdsomatrix, else
~/.cache/vdsomatrix) holds the lock files, per-suite .deb caches (so a rebuild downloads only
what changed), the last debootstrap log of each suite, and transient work directories that are
removed after each import.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vdsomatrix import paths
from vdsomatrix.errors import BadInput, EnvironmentUnavailable, VdsomatrixError
from vdsomatrix.matrix import Suite
from vdsomatrix.mirror import debian_mirror
from vdsomatrix.paths import cache_dir, project_root

Log = Callable[[str], Any]

BASE_REPO = "vdsomatrix-base"
PROBE_REPO = "vdsomatrix-probe"
LABEL = "org.vdsomatrix"  # label namespace: org.vdsomatrix.kind, .suite, .hash, ...

# The base recipe. Changing any of this changes every base tag (and so every probe tag).
RECIPE_VERSION = 1  # bump when the code below changes what a base image contains
VARIANT = "minbase"
# python3 runs probe.py; gcc + libc6-dev build the dynamic helper and, with libc6-dev's libc.a,
# the static one; musl-tools (musl-gcc, pulling in musl-dev's libc.a) the musl one. gcc pulls in
# binutils, whose readelf the Dockerfile uses to check the builds.
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

# What goes into the probe image's build context besides the Dockerfile.
PROBE_DIR = "probes"
_SKIP_PARTS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".o", ".md")

NO_ENGINE = (
    "no Docker engine reachable ({detail}): start one with `bash .ci/setup-machine` "
    "(as root) or `dockerd &`, or set DOCKER_HOST"
)
NOT_BUILT = "image not built: run `nox -s images`"


class ImageBuildError(VdsomatrixError):
    """debootstrap, the import or the Dockerfile build failed; the message says where to look."""


# ----------------------------------------------------------------------------- hashes --------


def base_recipe(suite: Suite) -> dict[str, Any]:
    """Everything that decides what the base image of ``suite`` contains (apart from the mirror's
    contents of the day). Its hash is the base tag's suffix."""
    return {
        "recipe": RECIPE_VERSION,
        "suite": suite.name,
        "script": suite.script,
        "variant": VARIANT,
        "include": sorted(PACKAGES),
        "prune": [list(PRUNE_DIRS), list(PRUNE_FILES), sorted(BLANK_FILES.items())],
        "changes": list(IMPORT_CHANGES),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_hash(suite: Suite) -> str:
    return _sha256(json.dumps(base_recipe(suite), sort_keys=True).encode())


def base_image_tag(suite: Suite) -> str:
    return f"{BASE_REPO}:{suite.name}-{base_hash(suite)[:12]}"


def _context_files(root: Path) -> list[tuple[str, bytes, int]]:
    """(path in the build context, content, mode) for images/Dockerfile and probes/, sorted."""
    dockerfile = root / "images" / "Dockerfile"
    probes = root / PROBE_DIR
    if not dockerfile.is_file() or not probes.is_dir():
        raise BadInput(f"{root} has no images/Dockerfile or probes/: cannot build the probe image")
    files = [("Dockerfile", dockerfile.read_bytes(), 0o644)]
    for path in sorted(probes.rglob("*")):
        rel = path.relative_to(root)
        if (
            not path.is_file()
            or any(part in _SKIP_PARTS or part.startswith(".") for part in rel.parts)
            or path.name.endswith(_SKIP_SUFFIXES)
        ):
            continue
        mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        files.append((rel.as_posix(), path.read_bytes(), mode))
    return files


def probe_hash(suite: Suite, *, root: Path | None = None) -> str:
    files = _context_files(root or project_root())
    h = hashlib.sha256()
    h.update(f"vdsomatrix-probe-image/1\0{suite.name}\0{suite.script}\0".encode())
    h.update(base_hash(suite).encode() + b"\0")
    for name, data, mode in files:
        h.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def probe_image_tag(suite: Suite, *, root: Path | None = None) -> str:
    """The tag the probe image of ``suite`` has (or would have once built); builds nothing."""
    return f"{PROBE_REPO}:{suite.name}-{probe_hash(suite, root=root)[:12]}"


def _context_tar(files: list[tuple[str, bytes, int]]) -> io.BytesIO:
    """A reproducible tar of the build context (fixed owners and times)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


# ----------------------------------------------------------------------------- engine --------


def docker_client(timeout: float = 5.0, *, ping: bool = True):
    """A Docker SDK client from the environment (DOCKER_HOST, ...), checked with a ping.

    ``timeout`` is the SDK's per-request timeout; raises EnvironmentUnavailable with what to do.
    """
    import docker  # imported here: the host backend and the report do not need the SDK

    try:
        client = docker.from_env(timeout=timeout)
        if ping:
            client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, ReadTimeout, ...
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise EnvironmentUnavailable(NO_ENGINE.format(detail=detail)) from None
    return client


def _find_image(client, tag: str):
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


# ----------------------------------------------------------------------------- locking -------


def _suite_lock(suite: Suite, log: Log):
    """Serialise everything that builds ``suite``'s images, across threads and processes."""
    return paths.file_lock(
        cache_dir() / "locks" / f"{suite.name}.lock",
        waiting=lambda: log(f"[{suite.name}] waiting for another build of this suite to finish"),
    )


# ----------------------------------------------------------------------------- base image ----


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
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces, ...
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
        from debian import deb822

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


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if line.startswith(("E:", "W: Failure"))]
    chosen = errors[-3:] if errors else text[-lines:]
    return " | ".join(line.strip() for line in chosen if line.strip())[:800]


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group ``proc`` leads; waits for ``proc``."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


def _debootstrap(suite: Suite, target: Path, log: Log) -> None:
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
    mirror = debian_mirror()
    debs = cache_dir() / "debs" / suite.name
    debs.mkdir(parents=True, exist_ok=True)
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"debootstrap-{suite.name}.log"
    cmd = [
        "debootstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}",
        suite.name,
        str(target),
        mirror,
        str(script),
    ]
    log(f"[{suite.name}] debootstrap {suite.name} from {mirror} (log: {logfile})")
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    with logfile.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # Its own session, so that on a timeout or an interrupt the whole tree (dpkg, maintainer
        # scripts in the chroot) is stopped, not only the debootstrap shell.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=DEBOOTSTRAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise ImageBuildError(
                f"debootstrap of {suite.name} took longer than {DEBOOTSTRAP_TIMEOUT} s: "
                f"is the mirror {mirror} reachable? See {logfile}"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    if returncode != 0:
        # debootstrap keeps its own detailed log inside the target until it succeeds.
        inner = target / "debootstrap" / "debootstrap.log"
        if inner.is_file():
            with logfile.open("a", encoding="utf-8") as out:
                out.write("\n--- debootstrap/debootstrap.log ---\n")
                out.write(inner.read_text(encoding="utf-8", errors="replace"))
        raise ImageBuildError(
            f"debootstrap of {suite.name} failed (exit {returncode}): "
            f"{_log_tail(logfile) or 'no output'}; full log: {logfile}"
        )
    # Keep the .deb cache to what this suite uses now: older versions are never needed again.
    used = {p.name for p in (target / "var/cache/apt/archives").glob("*.deb")}
    if used:
        for old in debs.glob("*.deb"):
            if old.name not in used:
                old.unlink(missing_ok=True)


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


def _label_changes(labels: dict[str, str]) -> list[str]:
    return [f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())]


def _build_base(client, suite: Suite, tag: str, log: Log) -> str:
    work_root = cache_dir() / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    # "<suite>.<random>": suite names have no dots, so this never matches another suite's.
    for stale in work_root.glob(f"{suite.name}.*"):  # left by a killed run (we hold the lock)
        log(f"[{suite.name}] removing the stale work directory {stale}")
        _remove_tree(stale, log)
    work = Path(tempfile.mkdtemp(prefix=f"{suite.name}.", dir=work_root))
    try:
        rootfs = work / "rootfs"
        started = time.monotonic()
        _debootstrap(suite, rootfs, log)
        took = time.monotonic() - started
        versions = _dpkg_versions(rootfs, ("libc6", "python3", "gcc", "musl"))
        _prune(rootfs)
        tar_path = work / "rootfs.tar"
        result = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar_path), "."],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise ImageBuildError(f"tar of the {suite.name} root filesystem failed: "
                                  f"{result.stderr.strip()[-500:]}")
        _remove_tree(rootfs, log)  # free the space before the engine copies the tar
        labels = {
            f"{LABEL}.kind": "base",
            f"{LABEL}.suite": suite.name,
            f"{LABEL}.script": suite.script,
            f"{LABEL}.hash": base_hash(suite),
            f"{LABEL}.mirror": debian_mirror(),
            f"{LABEL}.debootstrap": _debootstrap_version(),
            f"{LABEL}.created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{f"{LABEL}.version.{name}": v for name, v in sorted(versions.items())},
        }
        repo, _, tagname = tag.partition(":")
        started_import = time.monotonic()
        reply = client.api.import_image_from_file(
            str(tar_path), repository=repo, tag=tagname,
            changes=[*IMPORT_CHANGES, *_label_changes(labels)],
        )
        if _find_image(client, tag) is None:
            detail = " ".join(str(reply).split())[:500]
            raise ImageBuildError(f"docker import of {suite.name} left no image {tag}: {detail}")
        log(
            f"[{suite.name}] base {tag} ready: debootstrap {took:.0f} s, import "
            f"{time.monotonic() - started_import:.0f} s, glibc {versions.get('libc6', '?')}, "
            f"python3 {versions.get('python3', '?')}"
        )
        return tag
    finally:
        _remove_tree(work, log)


# ----------------------------------------------------------------------------- probe image ---


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def _plain(text: str) -> str:
    """Build output without terminal escapes or control characters (newlines kept)."""
    return _ESCAPES.sub("", text)


def _build_probe(client, suite: Suite, base_tag: str, tag: str, *, nocache: bool, root: Path,
                 log: Log) -> str:
    files = _context_files(root)
    labels = {
        f"{LABEL}.kind": "probe",
        f"{LABEL}.suite": suite.name,
        f"{LABEL}.script": suite.script,
        f"{LABEL}.hash": probe_hash(suite, root=root),
        f"{LABEL}.base": base_tag,
        f"{LABEL}.base-hash": base_hash(suite),
    }
    started = time.monotonic()
    log(f"[{suite.name}] building {tag} on {base_tag}")
    stream = client.api.build(
        fileobj=_context_tar(files),
        custom_context=True,
        tag=tag,
        buildargs={"BASE": base_tag},
        network_mode="none",
        pull=False,
        nocache=nocache,
        rm=True,
        forcerm=True,
        labels=labels,
        decode=True,
    )
    output: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            detail = str(chunk.get("errorDetail", {}).get("message") or chunk["error"])
            detail = re.sub(r"The command '.*' returned a non-zero code: (\d+)",
                            r"a RUN step exited with status \1", " ".join(detail.split()))
            tail = " | ".join(output[-6:])
            raise ImageBuildError(
                f"building the {suite.name} probe image failed: {_plain(detail)}"
                + (f" (last output: {tail[-800:]})" if tail else "")
            )
        text = chunk.get("stream")
        if text:
            for line in _plain(text).splitlines():
                line = line.rstrip()
                if line and not line.startswith((" ---> ", "Removing intermediate container")):
                    output.append(line)
                    if line.startswith("built ") or (
                        line.startswith("Step ") and " : LABEL " not in line
                    ):
                        log(f"[{suite.name}] {' '.join(line.split())[:110]}")
    if _find_image(client, tag) is None:
        raise ImageBuildError(f"the {suite.name} probe build ended without an image {tag}")
    log(f"[{suite.name}] probe image {tag} ready ({time.monotonic() - started:.0f} s)")
    return tag


@contextlib.contextmanager
def _engine(client) -> Iterator[Any]:
    """The given client, or a new one (with a long timeout for builds) closed afterwards."""
    if client is not None:
        yield client
        return
    own = docker_client(timeout=600)
    try:
        yield own
    finally:
        own.close()


# Tags (re)built by this process, with the time.monotonic() of the end of the build: several
# environments of one suite prepared in parallel with rebuild=True rebuild the suite once.
_built_at: dict[str, float] = {}


def _needs_build(client, tag: str, rebuild: bool, asked_at: float) -> bool:
    if _find_image(client, tag) is None:
        return True
    return rebuild and _built_at.get(tag, float("-inf")) < asked_at


def ensure_base_image(suite: Suite, *, rebuild: bool = False, log: Log = print,
                      client=None) -> str:
    """Make sure ``vdsomatrix-base:<suite>-<hash12>`` exists; returns its tag."""
    asked_at = time.monotonic()
    tag = base_image_tag(suite)
    with _engine(client) as client, _engine_errors(suite):
        if not rebuild and _find_image(client, tag) is not None:
            return tag
        with _suite_lock(suite, log):
            if _needs_build(client, tag, rebuild, asked_at):
                _replace(client, tag, lambda: _build_base(client, suite, tag, log), log)
    return tag


def ensure_probe_image(suite: Suite, *, rebuild: bool = False, log: Log = print,
                       client=None, root: Path | None = None) -> str:
    """Build (if needed) and return the tag of the probe image of ``suite``.

    Builds the base image first when it is missing. Nothing is rebuilt when both tags exist;
    ``rebuild=True`` runs debootstrap again and rebuilds the probe image without the cache
    (once per process and suite when several threads ask for it at the same time).
    """
    asked_at = time.monotonic()
    root = root or project_root()
    tag = probe_image_tag(suite, root=root)
    with _engine(client) as client, _engine_errors(suite):
        if not rebuild and _find_image(client, tag) is not None:
            log(f"[{suite.name}] {tag} is up to date")
            return tag
        with _suite_lock(suite, log):
            base_tag = base_image_tag(suite)
            superseded: list[tuple[str, str]] = []
            if _needs_build(client, base_tag, rebuild, asked_at):
                _replace(client, base_tag, lambda: _build_base(client, suite, base_tag, log),
                         log, superseded)
            if _needs_build(client, tag, rebuild, asked_at):
                _replace(
                    client, tag,
                    lambda: _build_probe(client, suite, base_tag, tag, nocache=rebuild,
                                         root=root, log=log),
                    log, superseded,
                )
            else:
                log(f"[{suite.name}] {tag} is up to date")
            _remove_superseded(client, superseded[::-1], log)  # the probe image first
    return tag


@contextlib.contextmanager
def _engine_errors(suite: Suite) -> Iterator[None]:
    """Docker SDK errors during a build become one-line ImageBuildErrors."""
    import docker.errors
    import requests

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        detail = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:300]
        raise ImageBuildError(
            f"the Docker engine failed while building the {suite.name} images: {detail}"
        ) from None


def _replace(client, tag: str, build: Callable[[], str], log: Log,
             superseded: list[tuple[str, str]] | None = None) -> None:
    """Run ``build`` for ``tag``, then remove the image the tag used to name (a rebuild would
    otherwise leave a dangling copy behind). With ``superseded``, the removal is left to the
    caller: the old id is appended there (an old base can only go after the old probe image
    built on it)."""
    old = _find_image(client, tag)
    build()
    _built_at[tag] = time.monotonic()
    new = _find_image(client, tag)
    if old is not None and new is not None and old.id != new.id:
        if superseded is None:
            _remove_superseded(client, [(tag, old.id)], log)
        else:
            superseded.append((tag, old.id))


def _remove_superseded(client, olds: list[tuple[str, str]], log: Log) -> None:
    import docker.errors

    for tag, image_id in olds:
        try:
            client.images.remove(image_id, noprune=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # still used by a container or a child image
            log(f"note: kept the previous {tag} image {image_id[:19]}: "
                f"{exc.explanation or exc}")


def ensure_probe_images(suites: Iterable[Suite], *, rebuild: bool = False, log: Log = print,
                        jobs: int = 2) -> dict[str, str | Exception]:
    """Build several suites' probe images in parallel threads.

    Returns suite name -> tag, or the exception that stopped that suite (the others go on).
    """
    suites = list(suites)
    root = project_root()
    results: dict[str, str | Exception] = {}

    def one(suite: Suite) -> None:
        try:
            results[suite.name] = ensure_probe_image(suite, rebuild=rebuild, log=log, root=root)
        except Exception as exc:  # one suite's failure does not stop the others
            results[suite.name] = exc

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, suites))
    return {s.name: results[s.name] for s in suites}


def image_status(suite: Suite, *, client=None, root: Path | None = None) -> tuple[bool, str]:
    """(built, reason): whether the probe image of ``suite`` exists, without building anything."""
    try:
        tag = probe_image_tag(suite, root=root)
    except BadInput as exc:
        return False, str(exc)
    own = client is None
    try:
        client = client or docker_client(timeout=5)
    except EnvironmentUnavailable as exc:
        return False, str(exc)
    try:
        image = _find_image(client, tag)
        if image is not None:
            created = (image.attrs.get("Created") or "")[:19]
            return True, f"{tag} ({image.short_id}, built {created})"
        if _find_image(client, base_image_tag(suite)) is not None:
            return False, f"{NOT_BUILT} ({tag} missing; its base is ready)"
        return False, f"{NOT_BUILT} ({tag} missing)"
    except Exception as exc:  # the engine went away between ping and query
        detail = " ".join(str(exc).split())[:200]
        return False, NO_ENGINE.format(detail=detail)
    finally:
        if own:
            client.close()
