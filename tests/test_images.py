"""Image recipes: tags that follow exactly the inputs, safe locking and clean-up, clear errors.

The real builds (debootstrap + import + Dockerfile) run in tests/test_docker_backend.py
(``engine`` marker); here only the cheap parts, plus a real-engine check that a second
ensure_probe_image() builds nothing.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from vdsomatrix import images
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.matrix import Suite, load_matrix
from vdsomatrix.paths import project_root

BOOKWORM = Suite("bookworm", "bookworm")
TAG = r"[0-9a-f]{12}"


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the checkout's images/Dockerfile and probes/ to edit."""
    root = tmp_path / "checkout"
    (root / "images").mkdir(parents=True)
    shutil.copy(project_root() / "images" / "Dockerfile", root / "images" / "Dockerfile")
    shutil.copytree(project_root() / "probes", root / "probes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(path))
    return path


def test_tags_name_the_suite_and_a_hash():
    import re

    assert re.fullmatch(rf"vdsomatrix-base:bookworm-{TAG}", images.base_image_tag(BOOKWORM))
    assert re.fullmatch(rf"vdsomatrix-probe:bookworm-{TAG}", images.probe_image_tag(BOOKWORM))
    assert images.probe_image_tag(BOOKWORM) == images.probe_image_tag(BOOKWORM)


def test_every_suite_of_the_matrix_has_its_own_tags():
    suites = load_matrix().suites.values()
    assert len({images.probe_image_tag(s) for s in suites}) == len(suites)
    assert len({images.base_image_tag(s) for s in suites}) == len(suites)


def test_probe_tag_follows_the_dockerfile_and_the_probe_sources(tree):
    before = images.probe_image_tag(BOOKWORM, root=tree)
    assert before == images.probe_image_tag(BOOKWORM, root=project_root())

    dockerfile = tree / "images" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "# a comment\n")
    after_dockerfile = images.probe_image_tag(BOOKWORM, root=tree)
    assert after_dockerfile != before

    source = tree / "probes" / "vdsoprobe.c"
    source.write_text(source.read_text() + "/* x */\n")
    after_source = images.probe_image_tag(BOOKWORM, root=tree)
    assert after_source != after_dockerfile

    build_sh = tree / "probes" / "build.sh"
    build_sh.chmod(build_sh.stat().st_mode ^ 0o111)  # the executable bit is part of the image
    after_mode = images.probe_image_tag(BOOKWORM, root=tree)
    assert after_mode != after_source

    (tree / "probes" / "new_module.py").write_text("X = 1\n")
    assert images.probe_image_tag(BOOKWORM, root=tree) != after_mode


def test_probe_tag_ignores_what_is_not_built(tree):
    before = images.probe_image_tag(BOOKWORM, root=tree)
    (tree / "probes" / "README.md").write_text("edited\n")
    (tree / "probes" / "__pycache__").mkdir(exist_ok=True)
    (tree / "probes" / "__pycache__" / "probe.cpython-311.pyc").write_bytes(b"\0")
    (tree / "probes" / ".probe.py.swp").write_bytes(b"\0")
    (tree / "images" / "notes.txt").write_text("not in the context\n")
    assert images.probe_image_tag(BOOKWORM, root=tree) == before


def test_tags_follow_the_suite_and_its_script():
    forky_sid = Suite("forky", "sid")
    forky_own = Suite("forky", "forky")
    assert images.base_image_tag(forky_sid) != images.base_image_tag(forky_own)
    assert images.probe_image_tag(forky_sid) != images.probe_image_tag(forky_own)
    assert images.base_recipe(forky_sid)["include"] == ["gcc", "libc6-dev", "musl-tools",
                                                        "python3"]


def test_build_context_holds_only_the_dockerfile_and_the_probe(tree):
    (tree / "probes" / "__pycache__").mkdir(exist_ok=True)
    (tree / "probes" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    files = images._context_files(tree)
    blob = images._context_tar(files).getvalue()
    assert blob == images._context_tar(images._context_files(tree)).getvalue()  # reproducible
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = tar.getnames()
        members = tar.getmembers()
    assert names[0] == "Dockerfile"
    assert {"probes/probe.py", "probes/build.sh", "probes/vdsoprobe.c"} <= set(names)
    assert all(n == "Dockerfile" or n.startswith("probes/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".md") for n in names)
    assert all(m.mtime == 0 and m.uid == 0 for m in members)


def test_dockerfile_builds_on_the_base_without_network_features():
    text = (project_root() / "images" / "Dockerfile").read_text()
    assert "ARG BASE" in text and "FROM ${BASE}" in text
    for word in ("apt-get", "curl", "wget", "pip install", "--mount", "ADD http"):
        assert word not in text


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VDSOMATRIX_CACHE", str(tmp_path / "c"))
    assert images.cache_dir() == tmp_path / "c"


def test_suite_lock_serialises_one_suite_across_threads(cache):
    inside, overlaps = [], []
    lock = threading.Lock()

    def work(suite):
        with images._suite_lock(suite, log=lambda s: None):
            with lock:
                if any(s == suite.name for s in inside):
                    overlaps.append(suite.name)
                inside.append(suite.name)
            time.sleep(0.2)
            with lock:
                inside.remove(suite.name)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(s,))
               for s in (BOOKWORM, BOOKWORM, Suite("trixie", "trixie"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert time.monotonic() - started < 0.6  # trixie did not wait for bookworm


class FakeImages:
    def __init__(self, tags):
        self.tags = set(tags)

    def get(self, tag):
        if tag in self.tags:
            image = type("Image", (), {})()
            image.id, image.short_id = "sha256:" + "1" * 64, "sha256:111111111111"
            image.attrs = {"Created": "2024-05-01T10:00:00.000000Z"}
            return image
        raise docker.errors.ImageNotFound(tag)


class NoBuilds:
    def __getattr__(self, name):
        raise AssertionError(f"nothing may be built, but api.{name} was called")


class FakeClient:
    def __init__(self, tags):
        self.images = FakeImages(tags)
        self.api = NoBuilds()


def test_existing_image_is_not_rebuilt(cache):
    client = FakeClient([images.probe_image_tag(BOOKWORM)])
    messages = []
    tag = images.ensure_probe_image(BOOKWORM, client=client, log=messages.append)
    assert tag == images.probe_image_tag(BOOKWORM)
    assert "up to date" in messages[0]
    assert not (cache / "work").exists()


def test_image_status():
    probe, base = images.probe_image_tag(BOOKWORM), images.base_image_tag(BOOKWORM)
    built, reason = images.image_status(BOOKWORM, client=FakeClient([probe, base]))
    assert built and probe in reason
    built, reason = images.image_status(BOOKWORM, client=FakeClient([base]))
    assert not built and "image not built: run `nox -s images`" in reason and "base" in reason
    built, reason = images.image_status(BOOKWORM, client=FakeClient([]))
    assert not built and reason.startswith("image not built: run `nox -s images`")


def test_image_status_without_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    built, reason = images.image_status(BOOKWORM)
    assert not built and reason.startswith("no Docker engine reachable")
    with pytest.raises(EnvironmentUnavailable):
        images.ensure_probe_image(BOOKWORM, log=lambda s: None)


def test_debootstrap_needs_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(images.ImageBuildError, match="needs root"):
        images._debootstrap(BOOKWORM, tmp_path / "rootfs", log=lambda s: None)


def test_unknown_debootstrap_script_says_what_to_write(monkeypatch, tmp_path, cache):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(images, "DEBOOTSTRAP_SCRIPTS", tmp_path / "scripts")
    with pytest.raises(images.ImageBuildError) as info:
        images._debootstrap(Suite("forky", "forky"), tmp_path / "rootfs", log=lambda s: None)
    assert 'script = "sid"' in str(info.value) and "[suites.forky]" in str(info.value)


def test_failed_debootstrap_reports_its_error_line_and_log(monkeypatch, tmp_path, cache):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "debootstrap"
    fake.write_text("#!/bin/sh\necho 'I: Retrieving InRelease'\n"
                    "echo 'E: Failed getting release file http://mirror/dists/x/InRelease'\n"
                    "exit 1\n")
    fake.chmod(0o755)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "bookworm").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("VDSOMATRIX_MIRROR", "http://mirror.invalid/debian")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(images, "DEBOOTSTRAP_SCRIPTS", scripts)
    with pytest.raises(images.ImageBuildError) as info:
        images._debootstrap(BOOKWORM, tmp_path / "rootfs", log=lambda s: None)
    message = str(info.value)
    assert "exit 1" in message and "E: Failed getting release file" in message
    assert str(cache / "logs" / "debootstrap-bookworm.log") in message
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_work_dir_removal_never_enters_a_mount(tmp_path):
    """A debootstrap killed half-way leaves /proc, /sys... mounted inside its target."""
    work = tmp_path / "work"
    mounted = work / "rootfs" / "proc"
    mounted.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(mounted)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mounted / "precious").write_text("must not be deleted while mounted")
        images._remove_tree(work, log=lambda s: None)
        assert not work.exists()
        assert images._mounts_under(tmp_path) == []
    finally:
        subprocess.run(["umount", "-l", str(mounted)], capture_output=True)


def test_prune_empties_caches_and_host_files(tmp_path):
    root = tmp_path / "rootfs"
    for rel in ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial", "etc"):
        (root / rel).mkdir(parents=True)
    (root / "var/cache/apt/archives/libc6_2.36_amd64.deb").write_bytes(b"x" * 10)
    (root / "var/cache/apt/archives/lock").write_text("")
    (root / "var/lib/apt/lists/mirror.invalid_dists_bookworm_InRelease").write_text("x")
    (root / "var/cache/apt/pkgcache.bin").write_bytes(b"x")
    (root / "etc/resolv.conf").write_text("nameserver 10.0.0.1\n")
    (root / "etc/hostname").write_text("builder-7\n")
    images._prune(root)
    assert sorted(p.name for p in (root / "var/cache/apt/archives").iterdir()) == ["lock",
                                                                                 "partial"]
    assert [p.name for p in (root / "var/lib/apt/lists").iterdir()] == ["partial"]
    assert not (root / "var/cache/apt/pkgcache.bin").exists()
    assert (root / "etc/resolv.conf").read_text() == ""
    assert (root / "etc/hostname").read_text() == "localhost\n"


@pytest.mark.engine
@pytest.mark.slow
def test_second_ensure_builds_nothing(engine):
    suite = load_matrix().suites["bookworm"]
    tag = images.ensure_probe_image(suite, client=engine)
    started = time.monotonic()
    messages = []
    assert images.ensure_probe_image(suite, client=engine, log=messages.append) == tag
    assert time.monotonic() - started < 5
    assert messages and "up to date" in messages[0]
    assert images.image_status(suite, client=engine)[0] is True
    base = engine.images.get(images.base_image_tag(suite))
    assert base.labels[f"{images.LABEL}.kind"] == "base"
    assert base.labels[f"{images.LABEL}.hash"] == images.base_hash(suite)
    assert base.labels[f"{images.LABEL}.version.libc6"].startswith("2.36")
    probe = engine.images.get(tag)
    assert probe.labels[f"{images.LABEL}.hash"].startswith(tag.rsplit("-", 1)[1])
    assert probe.labels[f"{images.LABEL}.base"] == images.base_image_tag(suite)


def test_parallel_rebuilds_of_one_suite_build_it_once(cache, monkeypatch):
    """The runner prepares bookworm, bookworm-static and bookworm-musl in parallel threads."""
    probe, base = images.probe_image_tag(BOOKWORM), images.base_image_tag(BOOKWORM)
    client = FakeClient([probe, base])
    calls = []

    def fake_base(client, suite, tag, log):
        calls.append(tag)
        time.sleep(0.2)
        return tag

    def fake_probe(client, suite, base_tag, tag, *, nocache, root, log):
        assert nocache
        calls.append(tag)
        return tag

    monkeypatch.setattr(images, "_build_base", fake_base)
    monkeypatch.setattr(images, "_build_probe", fake_probe)
    threads = [threading.Thread(target=images.ensure_probe_image, args=(BOOKWORM,),
                                kwargs={"rebuild": True, "client": client, "log": lambda s: None})
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [base, probe]
    # a later, separate request rebuilds again
    images.ensure_probe_image(BOOKWORM, rebuild=True, client=client, log=lambda s: None)
    assert calls == [base, probe, base, probe]


@pytest.mark.engine
@pytest.mark.slow
def test_a_broken_probe_fails_the_build_with_the_compiler_error(engine, tree):
    suite = load_matrix().suites["bookworm"]
    images.ensure_base_image(suite, client=engine)
    source = tree / "probes" / "vdsoprobe.c"
    source.write_text(source.read_text() + "\nthis is not C;\n")
    dangling = {"dangling": True}
    before = {image.id for image in engine.images.list(filters=dangling)}
    try:
        with pytest.raises(images.ImageBuildError) as info:
            images.ensure_probe_image(suite, client=engine, root=tree, log=lambda s: None)
    finally:  # the layers the failed build committed (docker keeps them as build cache)
        for image in engine.images.list(filters=dangling):
            if image.id not in before:
                engine.images.remove(image.id)
    message = str(info.value)
    assert "building the bookworm probe image failed" in message and "\n" not in message
    assert "error" in message.lower()
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(images.probe_image_tag(suite, root=tree))
