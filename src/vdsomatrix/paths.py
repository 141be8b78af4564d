"""Where things are: what the package carries (probes/, images/), the results and reports
(under the current directory), and the cache (under the XDG cache directory)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from vdsomatrix.errors import BadInput

# The package's own folder: it carries the probe (probes/) and the image recipes and default
# matrix (images/) as package data, so an installed vdsomatrix works from any directory.
PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def project_root() -> Path:
    """The folder that holds probes/ and images/: $VDSOMATRIX_ROOT (a tree of one's own, for
    trying edited probes), else the package's own."""
    env = os.environ.get("VDSOMATRIX_ROOT")
    root = Path(env) if env else PACKAGE_DIR
    if not ((root / "probes" / "probe.py").is_file() and (root / "images").is_dir()):
        where = "VDSOMATRIX_ROOT" if env else "the installed package"
        raise BadInput(f"{root} ({where}) has no probes/probe.py and images/: "
                       + ("point VDSOMATRIX_ROOT at a folder that has both" if env else
                          "reinstall vdsomatrix (pip install --force-reinstall vdsomatrix)"))
    return root


def checkout_root() -> Path | None:
    """The git checkout the package runs from (src/vdsomatrix in it), or None when installed."""
    above = PACKAGE_DIR.parent.parent
    return above if (above / "pyproject.toml").is_file() and (above / "src").is_dir() else None


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


def default_reports_dir() -> Path:
    """reports/ under the current directory: where a run's results and report go by default
    (in a checkout, run from its top, that is the committed reports/)."""
    return Path.cwd() / "reports"


def default_results_dir() -> Path:
    return default_reports_dir() / "results"


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
