"""Where things are: the checkout (probes/, images/, reports/) and the cache."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from vdsomatrix.errors import BadInput


@cache
def project_root() -> Path:
    """The vdsomatrix checkout: $VDSOMATRIX_ROOT, else the folder above this package or cwd."""
    env = os.environ.get("VDSOMATRIX_ROOT")
    candidates = [Path(env)] if env else []
    candidates += [*Path(__file__).resolve().parents, Path.cwd(), *Path.cwd().parents]
    for candidate in candidates:
        if (candidate / "probes" / "probe.py").is_file() and (candidate / "images").is_dir():
            return candidate
    raise BadInput(
        "cannot find the vdsomatrix checkout (probes/ and images/): run from it or set "
        "VDSOMATRIX_ROOT"
    )


def probes_dir() -> Path:
    return project_root() / "probes"


# Not part of what runs in an environment: byte-code, build output, documentation.
_NOT_PROBE_SOURCE = (".pyc", ".pyo", ".o", ".md")


def probe_sources(root: Path | None = None) -> list[tuple[str, bytes, int]]:
    """(path under the checkout, content, mode) of every file the probe is made of, sorted.

    One list for both consumers: the host helper's cache key and the probe images' build context
    and tag, so an edit rebuilds both or neither.
    """
    root = root or project_root()
    files = []
    for path in sorted((root / "probes").rglob("*")):
        rel = path.relative_to(root)
        if (not path.is_file() or path.name.endswith(_NOT_PROBE_SOURCE)
                or any(part == "__pycache__" or part.startswith(".") for part in rel.parts)):
            continue
        mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        files.append((rel.as_posix(), path.read_bytes(), mode))
    return files


@cache
def probe_sources_hash(root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for name, data, mode in probe_sources(root):
        digest.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def images_dir() -> Path:
    return project_root() / "images"


def default_results_dir() -> Path:
    return project_root() / "reports" / "results"


def cache_dir() -> Path:
    """$VDSOMATRIX_CACHE, else $XDG_CACHE_HOME/vdsomatrix, else ~/.cache/vdsomatrix."""
    env = os.environ.get("VDSOMATRIX_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vdsomatrix"


@contextlib.contextmanager
def file_lock(path: Path, *, waiting: Callable[[], object] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing), across threads and processes.

    flock() locks belong to the open file description, so two threads that each open the file
    exclude each other just as two processes do. ``waiting`` is called once if the lock is busy.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Hold the flock on ``path`` if nobody else does (True), or do nothing (False).

    For cleaning up (what a running build or download holds is not cleaned now) and for
    claiming one of several things (a host CPU) without waiting for any.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
