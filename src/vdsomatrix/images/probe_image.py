"""Probe images: images/Dockerfile on top of a suite's base image, built locally (no registry).

``vdsomatrix-probe:<suite>-<hash12>``: the probe plus the C helper compiled three ways;
``<hash12>`` covers the Dockerfile, the probe sources, the suite and the base recipe (and so the
suite's architecture: an i386 suite's helpers are built by its own i386 gcc and musl-gcc, run
natively in the container on the host's 64-bit kernel).

Nothing is rebuilt when its tag already exists; ``rebuild=True`` rebuilds both images of the
suite from scratch. Builds of different suites may run in parallel threads or processes: each
suite's builds are serialised by a lock file in the cache directory, and every build has its own
work directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vdsomatrix import paths, processes
from vdsomatrix.engine.client import (
    LABEL,
    NO_ENGINE,
    NOT_BUILT,
    Log,
    engine,
    find_image,
)
from vdsomatrix.errors import BadInput, EnvironmentUnavailable
from vdsomatrix.images import foreign
from vdsomatrix.images.rootfs import (
    BASE_REPO,
    ImageBuildError,
    base_hash,
    base_image_tag,
    build_base,
)
from vdsomatrix.matrix import Suite
from vdsomatrix.paths import cache_dir, project_root
from vdsomatrix.text import one_line, plain, without_escapes

PROBE_REPO = "vdsomatrix-probe"


# The run base's build context: images/<name>, the first one its Dockerfile. The probe image's is
# images/Dockerfile and probes/.
RUN_BASE_FILES = ("run-base.Dockerfile", "build_only_packages.py")
# The files of images/ either build context reads (tests copy them to build from a copy).
CONTEXT_IMAGE_FILES = ("Dockerfile", *RUN_BASE_FILES)


def _context_files(root: Path) -> list[tuple[str, bytes, int]]:
    """(path in the build context, content, mode): images/Dockerfile and the probe's sources."""
    dockerfile = root / "images" / "Dockerfile"
    if not dockerfile.is_file() or not (root / "probes").is_dir():
        raise BadInput(f"{root} has no images/Dockerfile or probes/: cannot build the probe image")
    return [("Dockerfile", dockerfile.read_bytes(), 0o644), *paths.probe_sources(root)]


def _run_base_files(root: Path) -> list[tuple[str, bytes, int]]:
    wanted = [root / "images" / name for name in RUN_BASE_FILES]
    missing = [p.name for p in wanted if not p.is_file()]
    if missing:
        raise BadInput(f"{root} has no images/{', images/'.join(missing)}: cannot build the run "
                       "base image")
    return [(p.name, p.read_bytes(), 0o644) for p in wanted]


def run_base_hash(suite: Suite, *, root: Path | None = None,
                  files: list[tuple[str, bytes, int]] | None = None) -> str:
    """The hash of ``suite``'s run base: its base's and its recipe's (the purge)."""
    h = hashlib.sha256()
    h.update(f"vdsomatrix-run-base/1\0{base_hash(suite)}\0".encode())
    for name, data, mode in files if files is not None else _run_base_files(
            root or project_root()):
        h.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def run_base_tag(suite: Suite, *, root: Path | None = None) -> str:
    """``vdsomatrix-base:<suite>-run-<hash12>``: the base without the build-only packages."""
    return f"{BASE_REPO}:{suite.name}-run-{run_base_hash(suite, root=root)[:12]}"


def probe_hash(suite: Suite, *, root: Path | None = None,
               files: list[tuple[str, bytes, int]] | None = None) -> str:
    """The hash of ``suite``'s probe image: of ``files`` (the build context) when given, else of
    the context as it is now in ``root``."""
    if files is None:
        files = _context_files(root or project_root())
    h = hashlib.sha256()
    h.update(f"vdsomatrix-probe-image/2\0{suite.name}\0{suite.script}\0".encode())
    h.update(base_hash(suite).encode() + b"\0")
    h.update(run_base_hash(suite, root=root).encode() + b"\0")
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


def _suite_lock(suite: Suite, log: Log):
    """Serialise everything that builds ``suite``'s images, across threads and processes."""
    return paths.file_lock(
        cache_dir() / "locks" / f"{suite.name}.lock",
        waiting=lambda: log(f"[{suite.name}] waiting for another build of this suite to finish"),
    )


def _probe_labels(suite: Suite, base_tag: str, root: Path,
                  files: list[tuple[str, bytes, int]] | None = None) -> dict[str, str]:
    return {
        f"{LABEL}.kind": "probe",
        f"{LABEL}.suite": suite.name,
        f"{LABEL}.script": suite.script,
        f"{LABEL}.arch": suite.arch,
        f"{LABEL}.release": suite.release,
        f"{LABEL}.hash": probe_hash(suite, root=root, files=files),
        f"{LABEL}.base": base_tag,
        f"{LABEL}.base-hash": base_hash(suite),
        f"{LABEL}.run-base": run_base_tag(suite, root=root),
    }


def _build_failure(suite: Suite, chunk: dict, output: list[str]) -> ImageBuildError:
    detail = without_escapes(str(chunk.get("errorDetail", {}).get("message") or chunk["error"]))
    detail = re.sub(r"The command '.*' returned a non-zero code: (\d+)",
                    r"a RUN step exited with status \1", " ".join(detail.split()))
    tail = " | ".join(output[-6:])
    return ImageBuildError(
        f"building the {suite.name} probe image failed: {one_line(detail, 1000)}"
        + (f" (last output: {one_line(tail[-800:], 800)})" if tail else "")
    )


def _follow_build(stream: Iterator[dict], suite: Suite, log: Log) -> None:
    """Read the build's progress to its end: steps go to ``log``, an error is raised.

    An interrupt stops reading within one chunk; closing the stream then closes the connection,
    which makes the engine cancel the build (and, with forcerm, remove its containers).
    """
    output: list[str] = []
    with contextlib.closing(stream):
        for chunk in stream:
            processes.check_stopping()
            if "error" in chunk:
                raise _build_failure(suite, chunk, output)
            for line in (chunk.get("stream") or "").splitlines():
                line = plain(without_escapes(line)).rstrip()
                if not line or line.startswith((" ---> ", "Removing intermediate container")):
                    continue
                output.append(line)
                if line.startswith("built ") or (line.startswith("Step ")
                                                  and " : LABEL " not in line):
                    log(f"[{suite.name}] {' '.join(line.split())[:110]}")


def _build(client, suite: Suite, what: str, tag: str, files: list[tuple[str, bytes, int]], *,
           buildargs: dict[str, str], labels: dict[str, str], nocache: bool, log: Log,
           dockerfile: str = "Dockerfile") -> str:
    """Build ``tag`` from a context of ``files`` with the classic builder, network "none" and
    nothing pulled; ``what`` names the image in messages ("probe image", "run base")."""
    started = time.monotonic()
    stream = client.api.build(
        fileobj=_context_tar(files), custom_context=True, dockerfile=dockerfile, tag=tag,
        buildargs=buildargs, network_mode="none", pull=False, nocache=nocache, rm=True,
        forcerm=True, labels=labels, decode=True,
    )
    _follow_build(stream, suite, log)
    if find_image(client, tag) is None:
        raise ImageBuildError(f"the {suite.name} {what} build ended without an image {tag}")
    log(f"[{suite.name}] {what} {tag} ready ({time.monotonic() - started:.0f} s)")
    return tag


def _build_run_base(client, suite: Suite, base_tag: str, tag: str, *, nocache: bool, root: Path,
                    log: Log) -> str:
    files = _run_base_files(root)
    log(f"[{suite.name}] building {tag} on {base_tag} (the build-only packages purged)")
    labels = {
        f"{LABEL}.kind": "run-base",
        f"{LABEL}.suite": suite.name,
        f"{LABEL}.script": suite.script,
        f"{LABEL}.arch": suite.arch,
        f"{LABEL}.release": suite.release,
        f"{LABEL}.hash": run_base_hash(suite, files=files),
        f"{LABEL}.base": base_tag,
    }
    return _build(client, suite, "run base", tag, files, buildargs={"BASE": base_tag},
                  labels=labels, nocache=nocache, log=log, dockerfile=RUN_BASE_FILES[0])


def _build_probe(client, suite: Suite, base_tag: str, tag: str, *, nocache: bool, root: Path,
                 log: Log) -> str:
    # One reading of the context for what is built, its labels and the check against the tag:
    # the probe sources edited since the tag was computed would otherwise be built under a
    # tag (and labelled with a hash) that names other sources.
    files = _context_files(root)
    if not tag.endswith("-" + probe_hash(suite, files=files)[:12]):
        raise ImageBuildError(
            f"the probe sources (images/Dockerfile, probes/) changed while the {suite.name} "
            "image was being prepared: run again once they are saved"
        )
    # EMULATED=1: the RUN steps run under qemu-user here (an arm64 suite on x86_64), which
    # cannot trace the programs it emulates, so the Dockerfile skips its syscount check.
    emulated = foreign.emulated(suite.arch)
    log(f"[{suite.name}] building {tag} on {base_tag}"
        + (f" ({suite.arch} under qemu-user)" if emulated else ""))
    buildargs = {"BASE": base_tag, "RUN_BASE": run_base_tag(suite, root=root),
                 "EMULATED": "1" if emulated else "0"}
    return _build(client, suite, "probe image", tag, files, buildargs=buildargs,
                  labels=_probe_labels(suite, base_tag, root, files), nocache=nocache, log=log)


# Tags (re)built by this process, with the time.monotonic() of the end of the build: several
# environments of one suite prepared in parallel with rebuild=True rebuild the suite once.
_built_at: dict[str, float] = {}


def _needs_build(client, tag: str, rebuild: bool, asked_at: float) -> bool:
    if find_image(client, tag) is None:
        return True
    return rebuild and _built_at.get(tag, float("-inf")) < asked_at


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
    with engine(client) as client, _engine_errors(suite):
        if not rebuild and find_image(client, tag) is not None:
            log(f"[{suite.name}] {tag} is up to date")
            return tag
        runs, why = foreign.emulation_support(suite.arch)
        if not runs:
            raise EnvironmentUnavailable(f"cannot build the {suite.name} images: {why}")
        with _suite_lock(suite, log):
            base_tag = base_image_tag(suite)
            superseded: list[tuple[str, str]] = []
            if _needs_build(client, base_tag, rebuild, asked_at):
                _replace(client, base_tag, lambda: build_base(client, suite, base_tag, log),
                         superseded)
            run_tag = run_base_tag(suite, root=root)
            if _needs_build(client, run_tag, rebuild, asked_at):
                _replace(client, run_tag,
                         lambda: _build_run_base(client, suite, base_tag, run_tag,
                                                 nocache=rebuild, root=root, log=log),
                         superseded)
            if _needs_build(client, tag, rebuild, asked_at):
                _replace(client, tag,
                         lambda: _build_probe(client, suite, base_tag, tag, nocache=rebuild,
                                              root=root, log=log),
                         superseded)
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
        detail = one_line(getattr(exc, "explanation", None) or exc, 300)
        raise ImageBuildError(
            f"the Docker engine failed while building the {suite.name} images: {detail}"
        ) from None


def _replace(client, tag: str, build: Callable[[], str],
             superseded: list[tuple[str, str]]) -> None:
    """Run ``build`` for ``tag``; if the tag named another image before, append (tag, old id)
    to ``superseded`` for the caller to remove (a rebuild would otherwise leave a dangling copy
    behind, and an old base can only go after the old probe image built on it)."""
    old = find_image(client, tag)
    build()
    _built_at[tag] = time.monotonic()
    new = find_image(client, tag)
    if old is not None and new is not None and old.id != new.id:
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
                f"{one_line(exc.explanation or exc)}")


def image_status(suite: Suite, *, client=None, root: Path | None = None) -> tuple[bool, str]:
    """(built, reason): whether the probe image of ``suite`` exists, without building anything."""
    try:
        tag = probe_image_tag(suite, root=root)
    except BadInput as exc:
        return False, str(exc)
    built, reason = built_status(tag, client=client, under=(base_image_tag(suite), "base"),
                                 missing=f"{tag} missing")
    if not built and reason.startswith(NOT_BUILT):
        runs, why = foreign.emulation_support(suite.arch)
        if not runs:  # building it would fail: say what to install instead
            return False, f"{tag} missing, and {why}"
    return built, reason


def built_status(tag: str | None, *, client, under: tuple[str, str],
                 missing: str) -> tuple[bool, str]:
    """(built, reason) of image ``tag`` (None: its name cannot be told yet), built nothing:
    when it is missing, ``missing`` says what, and whether the image ``under`` = (tag, what
    it is) that it is built on is ready. Shared by the probe and the runtime images."""
    try:
        with engine(client, timeout=5) as client:
            image = find_image(client, tag) if tag else None
            if image is not None:
                created = (image.attrs.get("Created") or "")[:19]
                return True, f"{tag} ({image.short_id}, built {created})"
            ready = f"; its {under[1]} is ready" if find_image(client, under[0]) else ""
            return False, f"{NOT_BUILT} ({missing}{ready})"
    except EnvironmentUnavailable as exc:
        return False, str(exc)
    except Exception as exc:  # the engine went away between ping and query
        return False, NO_ENGINE.format(detail=one_line(exc))


# The names the docker backend uses for either kind of image (runtimes.py has the same three).
image_tag = probe_image_tag
ensure_image = ensure_probe_image
