"""Work folders named after the process that owns them, so that leftovers of a dead run can be
told from the folders of a live one and removed (QemuBackend.clean).

A folder's name ends in ``<pid>.<start time>.<random>``: the start time (in clock ticks since
boot, from /proc/<pid>/stat) tells a live owner from a later process that got the same pid.
Folders of another user, or without an owner in their name, are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vdsomatrix import processes
from vdsomatrix.paths import lock_if_free  # noqa: F401 - where the cache's users find it
from vdsomatrix.text import plain_tail

_OWNER = re.compile(r"(?P<pid>[0-9]+)\.(?P<start>[0-9]+)\.[a-z0-9_]{8}\Z")


def owner_tag() -> str:
    """``<pid>.<start time>`` of this process."""
    return f"{os.getpid()}.{processes.start_time()}"


def make_owned(prefix: str, folder: Path | None = None) -> Path:
    """A new folder named ``<prefix><owner>.<random>`` in ``folder`` (default: the temp folder)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}.", dir=folder))


@contextlib.contextmanager
def owned_tempdir(prefix: str, folder: Path | None = None) -> Iterator[Path]:
    """Like TemporaryDirectory, but with the owner in the name (see :func:`make_owned`)."""
    path = make_owned(prefix, folder)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of a file (b"" when it cannot be read): the end of a log a
    tool or a guest wrote into a work folder, however much came before it."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - limit))
            return fh.read(limit)
    except OSError:
        return b""


def last_lines(path: Path, lines: int = 5) -> list[str]:
    """The last non-blank lines of what a tool wrote to ``path`` (its stderr), as plain text."""
    return [line for line in plain_tail(read_tail(path, 4000), lines) if line.strip()]


def owner_is_dead(name: str) -> bool:
    """Whether the process named at the end of a work folder's name is gone (False if unknown)."""
    match = _OWNER.search(name)
    if not match:
        return False
    try:
        started = processes.start_time(match["pid"])
    except (OSError, IndexError):  # unreadable: assume alive, never remove a live run's work
        return False
    return started != match["start"]


def remove_dead(folder: Path, prefix: str, log=print) -> int:
    """Remove this user's ``prefix*`` folders in ``folder`` whose owner is dead; how many."""
    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(prefix) or not owner_is_dead(entry.name):
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not entry.is_dir() or entry.is_symlink() or info.st_uid != os.getuid():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
        log(f"qemu: removed {entry}, left behind by a run that no longer exists")
    return removed
