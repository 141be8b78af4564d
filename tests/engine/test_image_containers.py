"""The containers images are made with go through the same Container as probe runs, on the real
engine: the dpkg status copied out of a never started container, the runtime layer's build
container (root, writable, committed as an image), the export an initramfs is made from; and
none of them is left behind."""

from __future__ import annotations

import uuid

import pytest

from vdsomatrix.engine import leftovers
from vdsomatrix.engine.client import LABEL
from vdsomatrix.images import initramfs, runtimes
from vdsomatrix.matrix import Suite

BOOKWORM = Suite("bookworm", "bookworm")


@pytest.fixture(scope="module")
def probe_image(engine):
    from vdsomatrix.images import probe_image as images
    from vdsomatrix.matrix import load_matrix

    return images.ensure_probe_image(load_matrix().suites["bookworm"], client=engine,
                                     log=lambda line: None)


def _ours(engine) -> list[dict]:
    """Containers this process made that still exist."""
    import os

    return engine.api.containers(all=True,
                                 filters={"label": f"{leftovers.OWNER_PID}={os.getpid()}"})


@pytest.mark.engine
def test_the_dpkg_status_comes_out_of_a_container_that_is_then_gone(engine, probe_image,
                                                                    tmp_path):
    status = runtimes._image_status_file(engine, probe_image, tmp_path / "status", BOOKWORM)
    assert b"Package: libc6\n" in status.read_bytes()
    assert _ours(engine) == []


# A stand-in for the layer's build script: the phases the build logs, a file written into the
# root file system (writable, as root), and what the mounts allow.
BUILD_LAYER = """set -eu
echo "@@vdsomatrix-phase install $(date +%s)"
id -u
touch /opt/vdsomatrix/engine-test-layer
if touch "$1/x" 2>/dev/null; then echo "work folder writable"; exit 3; fi
echo "@@vdsomatrix-phase build $(date +%s)"
echo done
"""


@pytest.mark.engine
def test_the_layer_build_runs_as_root_writable_and_is_committed_and_removed(
        engine, probe_image, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "build-layer.sh").write_text(BUILD_LAYER)
    work.chmod(0o755)
    tag = f"vdsomatrix-engine-test:build-{uuid.uuid4().hex[:8]}"
    # The labels name a real selection; not what this test is about.
    monkeypatch.setattr(runtimes, "_image_labels",
                        lambda *args: {f"{LABEL}.kind": "engine-test"})
    lines, timings = [], {}
    try:
        runtimes._run_build(engine, BOOKWORM, None, probe_image, tag, work, tmp_path,
                            lines.append, timings)
        image = engine.images.get(tag)
        assert image.labels[f"{LABEL}.kind"] == "engine-test"
        assert set(timings) == {"install", "commit"}  # "build" is the last, open phase
        assert any("runtimes: install" in line for line in lines)
        out = engine.containers.run(tag, ["sh", "-c", "test -e /opt/vdsomatrix/engine-test-layer"
                                          " && id -u"], remove=True, network_mode="none",
                                    user="65534:65534")
        assert out.strip() == b"65534"
    finally:
        if engine.images.list(name=tag.split(":")[0]):
            engine.images.remove(tag, force=True)
    assert _ours(engine) == []


@pytest.mark.engine
@pytest.mark.slow
def test_an_initramfs_is_exported_through_a_container_that_is_then_gone(engine, probe_image,
                                                                       tmp_path):
    dest = tmp_path / "bookworm.cpio"
    stats = initramfs.build_initramfs(engine, probe_image, dest, log=lambda line: None)
    assert stats["bytes"] == dest.stat().st_size > 10 << 20
    init = initramfs.read_file(dest, "/init", 1 << 20)
    assert init is not None and init.startswith(b"#!/bin/sh\n")
    assert _ours(engine) == []
