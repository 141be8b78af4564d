"""Images that no current recipe or probe source names any more, and removing them.

``vdsomatrix-base``, ``-probe`` and ``-runtimes`` tags other than the ones the current recipe and
probe sources give their suite (old content hashes), and unnamed images carrying our labels (what
superseded builds left) once older than :data:`engine.leftovers.UNLABELLED_AGE` (younger ones may
be a build in progress).
"""

from __future__ import annotations

import time
from pathlib import Path

from vdsomatrix.engine.client import LABEL, Log
from vdsomatrix.engine.leftovers import UNLABELLED_AGE
from vdsomatrix.images import runtimes
from vdsomatrix.images.probe_image import PROBE_REPO, probe_image_tag, run_base_tag
from vdsomatrix.images.rootfs import BASE_REPO, base_image_tag
from vdsomatrix.images.runtimes import RUNTIMES_REPO
from vdsomatrix.matrix import DEFAULT_ARCH, Suite
from vdsomatrix.text import one_line

# In a suite's current tags: its runtime image's tag cannot be told here, keep every one.
_ANY_RUNTIMES = "*"


def _current_tags(labels: dict[str, str], root: Path | None,
                  known: dict[tuple[str, str, str, str | None], set[str]]) -> set[str]:
    """The tags the current recipe and probe sources give the suite an image was built for."""
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
