"""What runs leave behind in the engine, and how it is told apart from what live runs still use.

Every container (engine/container.py's Container: probe runs, the runtime layer's build, the
never started containers that files are copied out of) carries its owner (host name, boot id,
pid and that pid's start time, so a reused pid is not mistaken for the owner) and the
wall-clock time by which it kills itself (its command runs under ``timeout -s KILL``). A
container is an orphan when its owner is provably gone (same host and boot, and that process no
longer exists), or when its own deadline has passed by more than :data:`EXPIRY_GRACE`: by then
any live owner has stopped waiting for it. Containers without these labels (probe and export
containers of older versions) are orphans once older than :data:`UNLABELLED_AGE`. Old images
are images/stale.py's.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from vdsomatrix.engine.client import LABEL, Log, remove_container
from vdsomatrix.processes import boot_id, start_time

PROBE_RUN = {f"{LABEL}.kind": "probe-run"}
QEMU_EXPORT = {LABEL: "qemu"}  # the kind label of the initramfs-export containers
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


def remove_orphan_containers(client, log: Log = print, *,
                             where: dict[str, str] | None = None) -> int:
    """Remove probe and export containers that no live run owns; returns how many. ``where``:
    only those with these labels too (a test's own, say)."""
    seen, removed = set(), 0
    now = time.time()
    for wanted in (PROBE_RUN, QEMU_EXPORT):
        label = ",".join(f"{key}={value}" for key, value in wanted.items())
        for summary in client.api.containers(all=True, filters={"label": label}):
            if summary["Id"] in seen:
                continue
            seen.add(summary["Id"])
            labels = summary.get("Labels") or {}
            if where and any(labels.get(key) != value for key, value in where.items()):
                continue
            reason = orphan_reason(summary, now)
            if reason is None:
                continue
            name = (summary.get("Names") or [summary["Id"][:12]])[0].lstrip("/")
            log(f"docker: removing the leftover container {name} ({reason})")
            remove_container(client, summary["Id"], log)
            removed += 1
    return removed
