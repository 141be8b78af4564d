"""Image recipes: tags that follow exactly the inputs, safe locking and clean-up, clear errors.

The real builds (debootstrap + import + Dockerfile) run in tests/backends/test_docker_backend.py
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
from fakes import copy_probe_context

from vdsomatrix import paths, processes
from vdsomatrix.debian import archive as mirror
from vdsomatrix.engine.client import LABEL, NOT_BUILT
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.images import probe_image as images
from vdsomatrix.images import rootfs
from vdsomatrix.matrix import Suite, load_matrix
from vdsomatrix.paths import project_root

BOOKWORM = Suite("bookworm", "bookworm")
TAG = r"[0-9a-f]{12}"


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the checkout's probe image context (images/ files and probes/) to edit."""
    return copy_probe_context(tmp_path / "checkout")


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
    assert rootfs.base_recipe(forky_sid)["include"] == ["gcc", "libc6-dev", "musl-tools",
                                                        "python3"]


def test_run_base_follows_the_base_and_its_purge_not_the_probe(tree):
    suite = Suite("bookworm", "bookworm")
    run, probe = images.run_base_tag(suite, root=tree), images.probe_image_tag(suite, root=tree)
    assert run.startswith("vdsomatrix-base:bookworm-run-")
    (tree / "probes" / "vdsoprobe.c").write_text("/* edited */\n")
    assert images.run_base_tag(suite, root=tree) == run  # the probe does not rebuild it
    assert images.probe_image_tag(suite, root=tree) != probe
    (tree / "images" / "build_only_packages.py").write_text("print('gcc')\n")
    assert images.run_base_tag(suite, root=tree) != run  # its recipe does, and the probe's tag
    assert images.run_base_tag(Suite("sid", "sid"), root=tree) != images.run_base_tag(
        suite, root=tree)


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
    assert paths.cache_dir() == tmp_path / "c"


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
    assert not built and NOT_BUILT in reason and "base" in reason
    built, reason = images.image_status(BOOKWORM, client=FakeClient([]))
    assert not built and reason.startswith(NOT_BUILT)


def test_image_status_without_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    built, reason = images.image_status(BOOKWORM)
    assert not built and reason.startswith("no Docker engine reachable")
    with pytest.raises(EnvironmentUnavailable):
        images.ensure_probe_image(BOOKWORM, log=lambda s: None)


ARCHIVE = "http://mirror.invalid/debian"


@pytest.fixture
def fake_debootstrap(tmp_path, monkeypatch, cache):
    """Everything debootstrap needs, with a stand-in for it: write its body (shell) to use it.
    The stand-in records its command line in ``argv``."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (scripts / "bookworm").write_text("")
    keyring = tmp_path / "archive-keyring.gpg"
    keyring.write_bytes(b"")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("VDSOMATRIX_MIRROR", ARCHIVE)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootfs, "DEBOOTSTRAP_SCRIPTS", scripts)
    monkeypatch.setattr(mirror, "ARCHIVE_KEYRING", keyring)
    fake = bin_dir / "debootstrap"
    argv = tmp_path / "argv"

    def install(body: str) -> Path:
        fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv}\n{body}\n')
        fake.chmod(0o755)
        return argv

    return install


def test_debootstrap_needs_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(rootfs.ImageBuildError, match="needs root"):
        rootfs._debootstrap(BOOKWORM, tmp_path / "rootfs", ARCHIVE, log=lambda s: None)


def test_unknown_debootstrap_script_says_what_to_write(monkeypatch, tmp_path, cache):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(rootfs, "DEBOOTSTRAP_SCRIPTS", tmp_path / "scripts")
    with pytest.raises(rootfs.ImageBuildError) as info:
        rootfs._debootstrap(Suite("forky", "forky"), tmp_path / "rootfs", ARCHIVE,
                            log=lambda s: None)
    assert 'script = "sid"' in str(info.value) and "[suites.forky]" in str(info.value)


def test_debootstrap_verifies_signatures_or_fails(fake_debootstrap, tmp_path):
    argv = fake_debootstrap("exit 0")
    rootfs._debootstrap(BOOKWORM, tmp_path / "rootfs", ARCHIVE, log=lambda s: None)
    words = argv.read_text().split("\n")
    assert f"--keyring={mirror.ARCHIVE_KEYRING}" in words
    assert "--force-check-gpg" in words  # no silent fallback to an unverified download
    assert words[-5:-1] == ["bookworm", str(tmp_path / "rootfs"), ARCHIVE,
                            str(rootfs.DEBOOTSTRAP_SCRIPTS / "bookworm")]


def test_a_missing_archive_keyring_says_what_to_install(fake_debootstrap, tmp_path,
                                                        monkeypatch):
    argv = fake_debootstrap("exit 0")
    monkeypatch.setattr(mirror, "ARCHIVE_KEYRING", tmp_path / "no-such-keyring.gpg")
    with pytest.raises(rootfs.ImageBuildError) as info:
        rootfs._debootstrap(BOOKWORM, tmp_path / "rootfs", ARCHIVE, log=lambda s: None)
    assert "apt-get install debian-archive-keyring" in str(info.value)
    assert not argv.exists()  # refused before anything was downloaded


def test_failed_debootstrap_reports_its_error_line_and_log(fake_debootstrap, tmp_path, cache):
    fake_debootstrap("echo 'I: Retrieving InRelease'\n"
                     "echo 'E: Failed getting release file http://mirror/dists/x/InRelease'\n"
                     "exit 1")
    with pytest.raises(rootfs.ImageBuildError) as info:
        rootfs._debootstrap(BOOKWORM, tmp_path / "rootfs", ARCHIVE, log=lambda s: None)
    message = str(info.value)
    assert "exit 1" in message and "E: Failed getting release file" in message
    assert str(cache / "logs" / "debootstrap-bookworm.log") in message
    assert "\n" not in message


def test_an_interrupt_stops_debootstrap_and_its_children_within_5_s(fake_debootstrap, cache):
    # A debootstrap busy downloading: a child of its own, and deaf to SIGTERM.
    fake_debootstrap(f"trap '' TERM\nsleep 600 &\necho $! > {cache}/child\nwait")
    threading.Timer(1.0, processes.stopping.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(processes.Interrupted):
            rootfs.build_base(None, BOOKWORM, "vdsomatrix-base:test", log=lambda s: None)
    finally:
        processes.stopping.clear()
    assert time.monotonic() - started < 1.0 + 5
    child = int((cache / "child").read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)
    assert not list((cache / "work").glob("bookworm.*"))  # the work directory is gone


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
def test_debootstrap_refuses_a_release_signed_by_unknown_keys(monkeypatch, tmp_path, cache):
    """The real debootstrap against the real mirror, with a keyring of keys Debian no longer
    signs with: it must stop at the signature check."""
    removed_keys = Path("/usr/share/keyrings/debian-archive-removed-keys.gpg")
    if os.geteuid() != 0 or shutil.which("debootstrap") is None or not removed_keys.is_file():
        pytest.skip("needs root, debootstrap and debian-archive-keyring")
    monkeypatch.setattr(mirror, "ARCHIVE_KEYRING", removed_keys)
    with pytest.raises(rootfs.ImageBuildError) as info:
        rootfs._debootstrap(BOOKWORM, tmp_path / "rootfs", mirror.debian_mirror(),
                            log=lambda s: None)
    message = str(info.value)
    if "Failed getting release file" in message:
        pytest.skip(f"the mirror is not reachable: {message}")
    assert "Release signed by unknown key" in message, message
    assert f"does not verify against {removed_keys}" in message and "\n" not in message


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
        rootfs._remove_tree(work, log=lambda s: None)
        assert not work.exists()
        assert rootfs._mounts_under(tmp_path) == []
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
    rootfs._prune(root)
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
    assert base.labels[f"{LABEL}.kind"] == "base"
    assert base.labels[f"{LABEL}.hash"] == images.base_hash(suite)
    assert base.labels[f"{LABEL}.version.libc6"].startswith("2.36")
    probe = engine.images.get(tag)
    assert probe.labels[f"{LABEL}.hash"].startswith(tag.rsplit("-", 1)[1])
    assert probe.labels[f"{LABEL}.base"] == images.base_image_tag(suite)


def test_parallel_rebuilds_of_one_suite_build_it_once(cache, monkeypatch):
    """The runner prepares bookworm, bookworm-static and bookworm-musl in parallel threads."""
    probe, base = images.probe_image_tag(BOOKWORM), images.base_image_tag(BOOKWORM)
    run = images.run_base_tag(BOOKWORM)
    client = FakeClient([probe, base, run])
    calls = []

    def fake_base(client, suite, tag, log):
        calls.append(tag)
        time.sleep(0.2)
        return tag

    def fake_image(client, suite, base_tag, tag, *, nocache, root, log):
        assert nocache and base_tag == base
        calls.append(tag)
        return tag

    monkeypatch.setattr(images, "build_base", fake_base)
    monkeypatch.setattr(images, "_build_run_base", fake_image)
    monkeypatch.setattr(images, "_build_probe", fake_image)
    threads = [threading.Thread(target=images.ensure_probe_image, args=(BOOKWORM,),
                                kwargs={"rebuild": True, "client": client, "log": lambda s: None})
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [base, run, probe]
    # a later, separate request rebuilds again
    images.ensure_probe_image(BOOKWORM, rebuild=True, client=client, log=lambda s: None)
    assert calls == [base, run, probe, base, run, probe]


@pytest.mark.engine
@pytest.mark.slow
def test_a_broken_probe_fails_the_build_with_the_compiler_error(engine, tree):
    suite = load_matrix().suites["bookworm"]
    images.ensure_probe_image(suite, client=engine)  # its base, ready
    source = tree / "probes" / "vdsoprobe.c"
    source.write_text(source.read_text() + "\nthis is not C;\n")
    dangling = {"dangling": True}
    before = {image.id for image in engine.images.list(filters=dangling)}
    try:
        with pytest.raises(rootfs.ImageBuildError) as info:
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


class BuildStream:
    """What ``client.api.build(decode=True)`` returns: progress chunks, then the end."""

    def __init__(self, chunks):
        self.chunks, self.closed = chunks, False

    def __iter__(self):
        try:
            yield from self.chunks
        finally:
            self.closed = True

    def close(self):
        self.closed = True


def test_build_output_is_plain_and_an_interrupt_stops_reading_it(monkeypatch):
    stream = BuildStream([
        {"stream": "Step 1/2 : FROM base\n"},
        {"stream": "\x1b[91mwarning: \x07red\x1b[0m\n"},
        {"stream": "Step 2/2 : RUN make\n"},
        {"stream": "never read\n"},
    ])
    messages = []

    def log(message):
        messages.append(message)
        if "Step 2/2" in message:
            processes.stopping.set()

    try:
        with pytest.raises(processes.Interrupted):
            images._follow_build(stream, BOOKWORM, log)
    finally:
        processes.stopping.clear()
    assert stream.closed  # the connection goes, so the engine cancels the build
    assert messages == ["[bookworm] Step 1/2 : FROM base", "[bookworm] Step 2/2 : RUN make"]


def test_a_failed_build_step_is_one_plain_line():
    stream = BuildStream([
        {"stream": "Step 4/11 : RUN cc x.c\n"},
        {"stream": "\x1b[91mx.c:1:1: error: expected ';'\n\x1b[0m"},
        {"error": "The command '/bin/sh -c cc x.c' returned a non-zero code: 1",
         "errorDetail": {"message": "The command '/bin/sh -c cc x.c' returned a non-zero "
                                    "code: 1"}},
    ])
    with pytest.raises(rootfs.ImageBuildError) as info:
        images._follow_build(stream, BOOKWORM, lambda m: None)
    message = str(info.value)
    assert message.startswith("building the bookworm probe image failed: a RUN step exited "
                              "with status 1")
    assert "x.c:1:1: error: expected ';'" in message
    assert "\x1b" not in message and "\n" not in message and "[91m" not in message


@pytest.mark.engine
@pytest.mark.slow
def test_an_interrupted_build_is_cancelled_in_the_engine(engine, tree):
    suite = load_matrix().suites["bookworm"]
    images.ensure_probe_image(suite, client=engine)  # its base, ready
    (tree / "probes" / "build.sh").write_text(
        "for i in $(seq 120); do echo tick $i; sleep 1; done\n")
    dangling = {"dangling": True}
    before = {image.id for image in engine.images.list(filters=dangling)}
    threading.Timer(3.0, processes.stopping.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(processes.Interrupted):
            images.ensure_probe_image(suite, client=engine, root=tree, log=lambda s: None)
        assert time.monotonic() - started < 3.0 + 2
        for _ in range(20):  # the engine cancels the build once the connection is gone
            building = [c for c in engine.api.containers(all=True)
                        if "vdsoprobe" in c.get("Command", "") or "build.sh" in
                        c.get("Command", "")]
            if not building:
                break
            time.sleep(0.5)
        assert building == []
    finally:
        processes.stopping.clear()
        for image in engine.images.list(filters=dangling):  # the layers it committed
            if image.id not in before:
                engine.images.remove(image.id)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(images.probe_image_tag(suite, root=tree))
