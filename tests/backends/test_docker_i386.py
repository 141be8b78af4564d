"""i386 userlands in Docker (issue 12): the images' recipes and tags differ by architecture, the
host's IA32 emulation decides availability before anything is built, results name the
userland's architecture, and (with an engine) the bookworm-i386 image really is a 32-bit
userland on this 64-bit kernel."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from vdsomatrix import contract, processes
from vdsomatrix.backends import docker as docker_backend
from vdsomatrix.backends.docker import DockerBackend
from vdsomatrix.engine.client import LABEL
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.images import probe_image as images
from vdsomatrix.images import rootfs, stale
from vdsomatrix.matrix import BackendName, Build, Environment, Suite, load_matrix

BOOKWORM = Suite("bookworm", "bookworm")
BOOKWORM_I386 = Suite("bookworm-i386", "bookworm", arch="i386", release="bookworm")


def _env(suite: Suite, build: Build = Build.DYNAMIC) -> Environment:
    return Environment(name=suite.name, backend=BackendName.DOCKER, userland=suite, build=build)


# Tags and recipes

def test_the_recipe_names_the_arch_and_release_only_when_not_the_defaults():
    plain, i386 = rootfs.base_recipe(BOOKWORM), rootfs.base_recipe(BOOKWORM_I386)
    assert "arch" not in plain and "release" not in plain  # amd64 tags did not change
    assert (i386["arch"], i386["release"]) == ("i386", "bookworm")
    assert i386["include"] == plain["include"] == ["gcc", "libc6-dev", "musl-tools", "python3"]


def test_tags_and_hashes_differ_by_arch():
    # Same name, script and release, another architecture: another image.
    other = Suite("bookworm-i386", "bookworm", arch="amd64", release="bookworm")
    assert rootfs.base_hash(BOOKWORM_I386) != rootfs.base_hash(other)
    assert images.probe_hash(BOOKWORM_I386) != images.probe_hash(other)
    assert images.base_image_tag(BOOKWORM_I386).startswith("vdsomatrix-base:bookworm-i386-")
    assert images.probe_image_tag(BOOKWORM_I386).startswith("vdsomatrix-probe:bookworm-i386-")
    assert images.probe_image_tag(BOOKWORM_I386) != images.probe_image_tag(BOOKWORM)


def test_every_i386_suite_of_the_matrix_has_tags_of_its_own():
    suites = list(load_matrix().suites.values())
    assert sum(s.arch == "i386" for s in suites) == 5
    assert len({images.base_image_tag(s) for s in suites}) == len(suites)
    assert len({images.probe_image_tag(s) for s in suites}) == len(suites)


def test_labels_record_the_userlands_arch(monkeypatch):
    monkeypatch.setattr(rootfs, "_debootstrap_version", lambda: "1.0")
    base = rootfs._base_labels(BOOKWORM_I386, "http://mirror.invalid/debian", {})
    assert (base[f"{LABEL}.arch"], base[f"{LABEL}.release"]) == ("i386", "bookworm")
    probe = images._probe_labels(BOOKWORM_I386, "vdsomatrix-base:x", images.project_root())
    assert (probe[f"{LABEL}.arch"], probe[f"{LABEL}.release"]) == ("i386", "bookworm")


def test_debootstrap_is_asked_for_the_arch_and_the_release():
    argv = rootfs._debootstrap_argv(Suite("forky-i386", "sid", arch="i386", release="forky"),
                                    Path("/t"), "http://m/debian", Path("/debs"),
                                    Path("/s/sid"), Path("/k.gpg"))
    assert "--arch=i386" in argv
    assert argv[-4:] == ["forky", "/t", "http://m/debian", "/s/sid"]
    assert "--arch=amd64" in rootfs._debootstrap_argv(BOOKWORM, Path("/t"), "u", Path("/d"),
                                                      Path("/s"), Path("/k"))


def test_leftovers_know_the_current_tags_of_an_i386_image(monkeypatch):
    from vdsomatrix.images import runtimes

    monkeypatch.setattr(runtimes, "cached_selection", lambda suite: None)
    labels = {f"{LABEL}.suite": "bookworm-i386", f"{LABEL}.script": "bookworm",
              f"{LABEL}.arch": "i386", f"{LABEL}.release": "bookworm"}
    current = stale._current_tags(labels, None, {})
    assert images.base_image_tag(BOOKWORM_I386) in current
    assert images.probe_image_tag(BOOKWORM_I386) in current
    # images from before suites had an arch: amd64, released under their own name
    old = stale._current_tags({f"{LABEL}.suite": "bookworm",
                                   f"{LABEL}.script": "bookworm"}, None, {})
    assert images.base_image_tag(BOOKWORM) in old


# Identity

def test_results_name_the_userlands_arch():
    matrix = load_matrix()
    for name, arch in (("host", "amd64"), ("bookworm", "amd64"), ("bookworm-i386-musl", "i386"),
                       ("k6.1", "amd64")):
        doc = {"environment": {"name": name, "arch": "claimed"}}
        contract.stamp_identity(doc, matrix.get(name), {})
        assert doc["environment"]["arch"] == arch


def test_list_says_the_arch_of_i386_environments():
    from vdsomatrix.cli import _where

    matrix = load_matrix()
    assert "i386" in _where(matrix.get("bookworm-i386-static"))
    assert "i386" not in _where(matrix.get("bookworm-static"))


# Availability: the host kernel's IA32 emulation

class NoEngine:
    """A client factory that must not be called: availability is decided before the engine."""

    def __call__(self, **kwargs):
        raise AssertionError("the engine was asked although the kernel cannot run i386")


def test_without_ia32_emulation_i386_environments_are_unavailable_before_any_build():
    why = "this machine's kernel cannot run 32-bit (i386) programs: it was booted with " \
          "ia32_emulation=0"
    backend = DockerBackend(client_factory=NoEngine(), ia32_check=lambda: (False, why))
    verdict = backend.availability(_env(BOOKWORM_I386, Build.MUSL))
    assert not verdict.ok and verdict.reason == why
    with pytest.raises(EnvironmentUnavailable, match="ia32_emulation=0"):
        backend.prepare(_env(BOOKWORM_I386), log=lambda s: None)
    outcome = backend.run_probe(_env(BOOKWORM_I386), deadline=10)
    assert outcome.status == "failed" and outcome.errors == [why]


def test_the_ia32_check_is_not_asked_for_amd64_environments(monkeypatch):
    asked = []
    backend = DockerBackend(ia32_check=lambda: asked.append(1) or (False, "no"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    verdict = backend.availability(_env(BOOKWORM))
    assert not verdict.ok and "no Docker engine" in verdict.reason and not asked


def test_the_runner_reports_it_as_unavailable_without_building(monkeypatch):
    from vdsomatrix import runner

    built = []
    backend = DockerBackend(client_factory=NoEngine(),
                            ia32_check=lambda: (False, "no IA32 emulation here"))
    monkeypatch.setattr(images, "ensure_probe_image", lambda *a, **k: built.append(a))
    monkeypatch.setattr(runner, "get_backend", lambda name: backend)
    record = runner.prepare(_env(BOOKWORM_I386), rebuild=False, log=lambda s: None)
    assert record.status == "unavailable" and record.message == "no IA32 emulation here"
    assert not built


def test_this_kernel_runs_the_tiny_i386_program(tmp_path):
    """The check really execs a 32-bit ELF; on these machines (CONFIG_IA32_EMULATION=y) it
    runs. Elsewhere the answer must at least be a clear one."""
    runs, why = docker_backend._exec_i386(tmp_path)
    assert runs or why.startswith(docker_backend.NO_IA32)
    program = tmp_path / "exit0"
    program.write_bytes(docker_backend.I386_EXIT0)
    out = subprocess.run(["file", str(program)], capture_output=True, text=True)
    if out.returncode == 0:
        assert "ELF 32-bit LSB executable, Intel 80386" in out.stdout


def test_an_exec_format_error_is_reported_with_the_kernels_reason(tmp_path, monkeypatch):
    # The same program for a machine no x86 kernel runs (EM_ARM = 40): ENOEXEC, like an i386
    # program on a kernel without IA32 emulation.
    arm = bytearray(docker_backend.I386_EXIT0)
    arm[18:20] = (40).to_bytes(2, "little")
    monkeypatch.setattr(docker_backend, "_kernel_says_why",
                        lambda: "it was booted with ia32_emulation=0")
    runs, why = docker_backend._exec_i386(tmp_path, bytes(arm))
    assert not runs
    assert why == (f"{docker_backend.NO_IA32} (exec of an i386 program: Exec format error): "
                   "it was booted with ia32_emulation=0")


def test_a_folder_that_cannot_run_programs_says_nothing(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(processes, "spawn", refuse)
    assert docker_backend._exec_i386(tmp_path) is None


@pytest.mark.parametrize("cmdline,config,expected", [
    ("quiet ia32_emulation=0", "", "booted with ia32_emulation=0"),
    ("ia32_emulation=off", "CONFIG_IA32_EMULATION=y\n", "booted with ia32_emulation=off"),
    ("quiet", "# CONFIG_IA32_EMULATION is not set\n", "built without IA32 emulation"),
    ("quiet", "CONFIG_IA32_EMULATION=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n",
     "ia32_emulation=1"),
    ("ia32_emulation=1", "", "no IA32 emulation"),
])
def test_the_reason_reads_the_command_line_and_the_config(monkeypatch, tmp_path, cmdline, config,
                                                          expected):
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):
        if str(self) == "/proc/cmdline":
            return cmdline + "\n"
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(docker_backend, "_kernel_config", lambda: config)
    assert expected in docker_backend._kernel_says_why()


def test_the_answer_is_cached_per_process(monkeypatch):
    calls = []
    docker_backend.ia32_support.cache_clear()
    monkeypatch.setattr(docker_backend, "_exec_i386",
                        lambda folder: calls.append(folder) or (True, ""))
    try:
        assert docker_backend.ia32_support() == docker_backend.ia32_support() == (True, "")
        assert len(calls) == 1
    finally:
        docker_backend.ia32_support.cache_clear()


# The real thing

@pytest.mark.engine
@pytest.mark.slow
def test_the_bookworm_i386_image_is_a_32_bit_userland_on_this_kernel(engine):
    if not docker_backend.ia32_support()[0]:
        pytest.skip(docker_backend.ia32_support()[1])
    suite = load_matrix().suites["bookworm-i386"]
    tag = images.ensure_probe_image(suite, client=engine, log=lambda s: None)
    assert images.image_status(suite, client=engine)[0] is True
    base = engine.images.get(images.base_image_tag(suite))
    assert base.labels[f"{LABEL}.arch"] == "i386"
    assert engine.images.get(tag).labels[f"{LABEL}.arch"] == "i386"

    def run(*argv: str) -> str:
        out = engine.containers.run(tag, list(argv), remove=True, network_mode="none",
                                    user="65534:65534")
        return out.decode().strip()

    assert run("uname", "-m") == "x86_64"  # the host's 64-bit kernel
    assert run("python3", "-c", "import struct; print(struct.calcsize('P'))") == "4"
    assert run("dpkg", "--print-architecture") == "i386"
    # the helpers the image built are 32-bit programs
    for build in ("dynamic", "static", "musl"):
        header = run("python3", "-c", "import sys; d = open(sys.argv[1], 'rb').read(20); "
                     "print(d[4], int.from_bytes(d[18:20], 'little'))",
                     contract.HELPER_IN_IMAGE.format(build=build))
        assert header == "1 3", build  # ELFCLASS32, EM_386


def test_sources_edited_after_the_tag_was_computed_are_not_built_under_it(tmp_path):
    """Seen while the helper was being ported: an image built from newer sources than its tag
    named (and labelled with yet another hash)."""
    from fakes import copy_probe_context

    root = copy_probe_context(tmp_path / "checkout")
    tag = images.probe_image_tag(BOOKWORM_I386, root=root)
    (root / "probes" / "vdsoprobe.c").write_text("/* edited */\n")

    class NoBuild:
        class api:  # noqa: N801
            @staticmethod
            def build(**kwargs):
                raise AssertionError("built although the sources changed")

    with pytest.raises(rootfs.ImageBuildError, match="changed while"):
        images._build_probe(NoBuild(), BOOKWORM_I386, "base", tag, nocache=False, root=root,
                            log=lambda s: None)
