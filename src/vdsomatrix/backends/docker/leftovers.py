"""What runs leave behind in the engine, and how it is told apart from what live runs still use.

Every probe container carries its owner (host name, boot id, pid and that pid's start time, so a
reused pid is not mistaken for the owner) and the wall-clock time by which it kills itself
(container.py wraps the probe in ``timeout -s KILL``). A container is an orphan when its owner
is provably gone (same host and boot, and that process no longer exists), or when its own
deadline has passed by more than :data:`EXPIRY_GRACE`: by then any live owner has stopped
waiting for it. Containers without these labels (the QEMU backend's initramfs exports, probe
containers of older versions) are orphans once older than :data:`UNLABELLED_AGE`.

Images: ``vdsomatrix-base`` and ``vdsomatrix-probe`` tags other than the ones the current recipe
and probe sources give their suite (old content hashes), and unnamed images carrying our labels
(what superseded builds left) once older than :data:`UNLABELLED_AGE` (younger ones may be a
build in progress).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from vdsomatrix.backends.docker.engine import LABEL, Log, remove_container
from vdsomatrix.backends.docker.images import PROBE_REPO, probe_image_tag, run_base_tag
from vdsomatrix.backends.docker.rootfs import BASE_REPO, base_image_tag
from vdsomatrix.matrix import DEFAULT_ARCH, Suite
from vdsomatrix.processes import boot_id, start_time
from vdsomatrix.text import one_line

PROBE_RUN = {f"{LABEL}.kind": "probe-run"}
QEMU_EXPORT = {LABEL: "qemu"}  # set by the QEMU backend on its initramfs-export containers
OWNER_HOST, OWNER_BOOT = f"{LABEL}.owner.host", f"{LABEL}.owner.boot"
OWNER_PID, OWNER_STARTED = f"{LABEL}.owner.pid", f"{LABEL}.owner.started"
EXPIRES = f"{LABEL}.expires"  # Unix time by which the container has killed itself
EXPIRY_GRACE = 60.0
UNLABELLED_AGE = 3600.0


def owner_labels() -> dict[str, str]:
    """Labels naming this process as the owner of a container it creates."""
    return {OWNER_HOST: socket.gethostname(), OWNER_BOOT: boot_id() or "unknown",
            OWNER_PID: str(os.getpid()), OWNER_STARTED: start_time() or "unknown"}


def owner_is_alive(labels: dict[str, str]) -> bool | None:
    """True or False when the owner named by ``labels`` can be checked from here (same host,
    same boot); None when it cannot (no owner labels, another machine sharing the engine, its
    /proc entry unreadable)."""
    if (not labels.get(OWNER_PID, "").isdigit() or labels.get(OWNER_HOST) != socket.gethostname()
            or not boot_id() or labels.get(OWNER_BOOT) != boot_id()):
        return None
    try:
        return start_time(labels[OWNER_PID]) == labels.get(OWNER_STARTED)
    except (OSError, IndexError):
        return None


def orphan_reason(summary: dict[str, Any], now: float) -> str | None:
    """Why the container in ``summary`` (as ``client.api.containers()`` lists it) is an orphan,
    or None when a live run may still own it."""
    labels = summary.get("Labels") or {}
    alive = owner_is_alive(labels)
    if alive is True:
        return None
    if alive is False:
        return f"its run (pid {labels[OWNER_PID]}) is gone"
    try:
        expires = float(labels[EXPIRES])
    except (KeyError, ValueError):
        expires = None
    if expires is not None:
        return "its deadline has passed" if now > expires + EXPIRY_GRACE else None
    created = float(summary.get("Created") or now)
    return "it is unlabelled and over an hour old" if now - created > UNLABELLED_AGE else None


def remove_orphan_containers(client, log: Log = print) -> int:
    """Remove probe and export containers that no live run owns; returns how many."""
    seen, removed = set(), 0
    now = time.time()
    for wanted in (PROBE_RUN, QEMU_EXPORT):
        label = ",".join(f"{key}={value}" for key, value in wanted.items())
        for summary in client.api.containers(all=True, filters={"label": label}):
            if summary["Id"] in seen:
                continue
            seen.add(summary["Id"])
            reason = orphan_reason(summary, now)
            if reason is None:
                continue
            name = (summary.get("Names") or [summary["Id"][:12]])[0].lstrip("/")
            log(f"docker: removing the leftover container {name} ({reason})")
            remove_container(client, summary["Id"], log)
            removed += 1
    return removed


# In a suite's current tags: its runtime image's tag cannot be told here, keep every one.
_ANY_RUNTIMES = "*"


def _current_tags(labels: dict[str, str], root: Path | None,
                  known: dict[tuple[str, str, str, str | None], set[str]]) -> set[str]:
    """The tags the current recipe and probe sources give the suite an image was built for."""
    from vdsomatrix.backends.docker import runtimes  # it builds on images.py, as this does

    # Images built before suites had an architecture and a release carry no label for either:
    # amd64, and the suite's name.
    key = (labels.get(f"{LABEL}.suite", ""), labels.get(f"{LABEL}.script", ""),
           labels.get(f"{LABEL}.arch") or DEFAULT_ARCH, labels.get(f"{LABEL}.release") or None)
    if key not in known:
        suite = Suite(*key)
        known[key] = {base_image_tag(suite), run_base_tag(suite, root=root),
                      probe_image_tag(suite, root=root)}
        # The runtime image's tag covers the packages the suite's index offered when it was
        # last read; without that record (never built here), every runtime tag is kept.
        selection = runtimes.cached_selection(suite)
        known[key].add(runtimes.tag_for(suite, selection, root) if selection else _ANY_RUNTIMES)
    return known[key]


def remove_stale_images(client, *, root: Path | None = None, log: Log = print) -> int:
    """Remove our images that no current tag names; returns how many tags or images went."""
    import docker.errors

    known: dict[tuple[str, str, str, str | None], set[str]] = {}
    from vdsomatrix.backends.docker.runtimes import RUNTIMES_REPO

    ours = (f"{BASE_REPO}:", f"{PROBE_REPO}:", f"{RUNTIMES_REPO}:")
    doomed: list[tuple[str, str]] = []  # (what to remove, why)
    now = time.time()
    for summary in client.api.images(filters={"label": f"{LABEL}.kind"}):
        tags = [t for t in summary.get("RepoTags") or [] if t != "<none>:<none>"]
        if not tags:
            if now - float(summary.get("Created") or now) > UNLABELLED_AGE:
                doomed.append((summary["Id"], "an unnamed image left by an earlier build"))
            continue
        current = _current_tags(summary.get("Labels") or {}, root, known)
        doomed += [(tag, "an old recipe or probe") for tag in tags
                   if tag.startswith(ours) and tag not in current
                   and not (tag.startswith(RUNTIMES_REPO) and _ANY_RUNTIMES in current)]
    removed = 0
    # Runtime images, then probe images, then bases: an image cannot go while one built on it
    # remains.
    layer = {RUNTIMES_REPO: 0, PROBE_REPO: 1}
    for ref, why in sorted(doomed, key=lambda item: layer.get(item[0].split(":")[0], 2)):
        try:
            client.api.remove_image(ref, noprune=False)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:  # in use by a container or a child image
            log(f"docker: kept {ref} ({why}): {one_line(exc.explanation or exc)}")
            continue
        log(f"docker: removed {ref} ({why})")
        removed += 1
    return removed
