#!/usr/bin/env python3
"""What building a probe image costs, and what it weighs: this tree's images/ and probes/ against
another revision's, side by side in one run.

For each suite and round, the probe image is built without the build cache from both trees,
alternating which goes first, on the suite's existing base image (built first if missing), and
the build's seconds and the image's size are recorded; this tree's run base (built once per
base image, see images/run-base.Dockerfile) is rebuilt once, uncached, and timed on its own. The
images built here are removed afterwards; the committed reports and the images the matrix uses
are not touched (their tags
differ: the tag hashes the build context).

    nox -s bench -- image-build                          # against HEAD~1, bullseye and sid
    nox -s bench -- image-build --rev 5d20d8b --suite bookworm-i386 --rounds 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "src" / "vdsomatrix" / "images"


def checkout(rev: str, into: Path) -> Path:
    """images/ and probes/ of ``rev`` in ``into`` (plus any images/ file this tree's build
    context needs that ``rev`` did not have: it is not referenced by rev's Dockerfile)."""
    from vdsomatrix.images import probe_image as images

    # probes/ and images/ moved into the package (src/vdsomatrix/) when it became installable.
    prefix = "src/vdsomatrix/"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, prefix],
                            check=True, capture_output=True, text=True).stdout
    prefix = prefix if f"{prefix}probes" in listed.split() else ""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, f"{prefix}images",
                           f"{prefix}probes"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    into = into / prefix if prefix else into
    for name in images.CONTEXT_IMAGE_FILES:
        if not (into / "images" / name).exists():
            (into / "images" / name).write_bytes((IMAGES_DIR / name).read_bytes())
    return into


def build_once(client, suite, root: Path) -> tuple[float, int, str]:
    """(seconds, bytes, tag) of one uncached build of ``suite``'s probe image from ``root``."""
    from vdsomatrix.images import probe_image as images

    base_tag = images.base_image_tag(suite)
    tag = images.probe_image_tag(suite, root=root)
    started = time.monotonic()
    images._build_probe(client, suite, base_tag, tag, nocache=True, root=root,
                        log=lambda line: None)
    seconds = time.monotonic() - started
    return seconds, client.images.get(tag).attrs["Size"], tag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD~1", help="the revision to compare with")
    parser.add_argument("--suite", action="append", help="suites (default: bullseye, sid)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from vdsomatrix.engine.client import engine
    from vdsomatrix.images import probe_image as images
    from vdsomatrix.matrix import load_matrix

    suites = load_matrix().suites
    names = args.suite or ["bullseye", "sid"]
    unknown = [n for n in names if n not in suites]
    if unknown:
        print(f"unknown suite(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    rows, built = [], set()
    with tempfile.TemporaryDirectory(prefix="vdsomatrix-image-build-") as scratch, \
            engine(None) as client:
        trees = {"this tree": ROOT, args.rev: checkout(args.rev, Path(scratch))}
        for name in names:
            suite = suites[name]
            images.ensure_probe_image(suite, log=lambda line: None)  # the base, and a warm-up
            # The run base (this tree's purge), built once per base: a cold run pays it once.
            started = time.monotonic()
            images._build_run_base(client, suite, images.base_image_tag(suite),
                                   images.run_base_tag(suite), nocache=True, root=ROOT,
                                   log=lambda line: None)
            run_base = time.monotonic() - started
            seen: dict[str, list[tuple[float, int]]] = {label: [] for label in trees}
            for round_no in range(args.rounds):
                order = list(trees) if round_no % 2 == 0 else list(trees)[::-1]
                for label in order:
                    seconds, size, tag = build_once(client, suite, trees[label])
                    seen[label].append((seconds, size))
                    if tag != images.probe_image_tag(suite, root=ROOT):  # never this tree's
                        built.add(tag)
            new, old = (statistics.median(s for s, _ in seen[k]) for k in trees)
            new_size, old_size = (seen[k][-1][1] for k in trees)
            rows.append([name, f"{run_base:.1f}", f"{new:.1f}", f"{old:.1f}", f"{new / old:.2f}",
                         f"{new_size / 1e6:.0f}", f"{old_size / 1e6:.0f}",
                         f"{new_size / old_size:.2f}"])
        for tag in built:
            client.images.remove(tag, noprune=False)
    print(f"probe image builds, no cache, medians over {args.rounds} rounds, alternating:\n")
    print(tabulate(rows, headers=["suite", "run base once (s)", "build (s) this tree",
                                  f"build (s) {args.rev}",
                                  "ratio", "size (MB) this tree", f"size (MB) {args.rev}",
                                  "ratio"], tablefmt="github", disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
