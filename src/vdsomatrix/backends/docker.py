"""The docker backend: the probe in a locally built image of a Debian suite, on the host's kernel.

Images are built locally (images/rootfs.py: debootstrap; images/probe_image.py: the probe image;
images/runtimes.py: the runtime layer) and never pulled. This module maps an environment onto an
image and the probe's confinement, runs it in engine/container.py's Container (fresh, confined,
always removed, stopping by itself if vdsomatrix dies; what killed runs leave behind is found by
engine/leftovers.py), and judges the run.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vdsomatrix import contract
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome
from vdsomatrix.cpus import claim_host_cpu
from vdsomatrix.engine import leftovers, seccomp
from vdsomatrix.engine.client import (
    LONG_TIMEOUT,
    NO_ENGINE,
    NOT_BUILT,
    close,
    docker_client,
    find_image,
)
from vdsomatrix.engine.container import (
    MEM_LIMIT,
    RUNTIMES_MEM_LIMIT,
    ContainerRun,
    exit_reason,
    log_tail,
    probe_confinement,
    run_container,
)
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.images import foreign, runtimes, stale
from vdsomatrix.images import probe_image as images
from vdsomatrix.matrix import DEFAULT_ARCH, GUEST_ONLY, BackendName, Environment, Suite
from vdsomatrix.paths import cache_dir
from vdsomatrix.text import one_line

PING_TIMEOUT = 5.0  # seconds for the availability check
API_TIMEOUT = 120.0  # seconds for ordinary engine requests (create, start, kill, remove)
# The container kills itself this long after the run's deadline: normally the run kills it
# first and reports a timeout; this is for when nobody is left to do so.
SELF_KILL_GRACE = 15.0


# The smallest i386 program: an ELF32 header, one PT_LOAD segment, and exit(0) through int $0x80
# (mov $1, %eax; xor %ebx, %ebx; int $0x80). A kernel without IA32 emulation, or with it
# switched off (ia32_emulation=0), refuses to exec it with ENOEXEC.
_I386_BASE = 0x08048000
_I386_CODE = bytes.fromhex("b801000000" "31db" "cd80")
_I386_SIZE = 52 + 32 + len(_I386_CODE)
I386_EXIT0 = (
    b"\x7fELF\x01\x01\x01" + bytes(9)  # ELFCLASS32, little-endian, version 1, SysV
    + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, _I386_BASE + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    + struct.pack("<IIIIIIII", 1, 0, _I386_BASE, _I386_BASE, _I386_SIZE, _I386_SIZE, 5, 0x1000)
    + _I386_CODE
)
NO_IA32 = "this machine's kernel cannot run 32-bit (i386) programs"


def _kernel_says_why() -> str:
    """Why 32-bit programs do not run, as far as the command line and the kernel's config say."""
    try:
        words = Path("/proc/cmdline").read_text().split()
    except OSError:
        words = []
    for word in words:
        key, _, value = word.partition("=")
        # The kernel reads it with kstrtobool: 0, n, N and "off" switch the emulation off.
        if key == "ia32_emulation" and (value[:1] in ("0", "n", "N") or value.lower() == "off"):
            return f"it was booted with {word}; boot it without that to run the i386 environments"
    config = _kernel_config()
    if "CONFIG_IA32_EMULATION=y" not in config and config:
        return "it is built without IA32 emulation (CONFIG_IA32_EMULATION is not set)"
    if "CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y" in config:
        return ("its IA32 emulation is off by default (CONFIG_IA32_EMULATION_DEFAULT_DISABLED):"
                " boot it with ia32_emulation=1 to run the i386 environments")
    return "no IA32 emulation (CONFIG_IA32_EMULATION) in this kernel, or it is switched off"


def _kernel_config() -> str:
    for path in (Path(f"/boot/config-{os.uname().release}"), Path("/proc/config.gz")):
        try:
            data = path.read_bytes()
            return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("latin-1")
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
    return ""


def _exec_i386(folder: Path, program_bytes: bytes = I386_EXIT0) -> tuple[bool, str] | None:
    """Exec ``program_bytes`` (:data:`I386_EXIT0`) from ``folder``: (runs, reason), or None when
    this folder cannot tell (not writable, mounted noexec)."""
    done = foreign.exec_exit0(folder, program_bytes, timeout=10.0)
    if done is None:
        return None
    taken, code = done
    if not taken:
        return False, (f"{NO_IA32} (exec of an i386 program: Exec format error): "
                       f"{_kernel_says_why()}")
    if code == 0:
        return True, ""
    what = "did not exit within 10 s" if code is None else f"exited with status {code}"
    return False, f"{NO_IA32}: an i386 program that only calls exit(0) {what}"


@functools.cache
def ia32_support() -> tuple[bool, str]:
    """(True, "") when this machine's kernel runs 32-bit x86 programs, else (False, why).

    Found by running one (see :data:`I386_EXIT0`), once per process; when no folder here
    allows running a program at all, the answer is yes (a build would say otherwise).
    """
    for folder in (Path(tempfile.gettempdir()), cache_dir() / "tmp"):
        answer = _exec_i386(folder)
        if answer is not None:
            return answer
    return True, ""


def _engine_version(client) -> dict[str, str | None]:
    """The engine's version, for the record (a result says what ran it); never fails a run."""
    try:
        version = client.version()
    except Exception:  # no version: the run goes on, with the engine's default seccomp profile
        return {"version": None}
    # None, not "None", when the engine leaves one out: the seccomp base is matched against it.
    return {key: (None if version.get(field) is None else str(version.get(field)))
            for key, field in (("version", "Version"), ("api", "ApiVersion"))}


class DockerBackend(Backend):
    """The probe inside a hardened container of a locally built image; never pulls."""

    name = BackendName.DOCKER
    # A C-helper container runs on one host CPU of its own (its cpuset: see pinned), so the
    # runner may measure containers side by side, one per CPU. A runtime container is measured
    # alone on every CPU: a JVM sizes its garbage collector and compiler threads by the CPUs it
    # sees, and one CPU would make it another JVM.
    shares_host_cpu = True
    default_deadline = 300.0
    startup_allowance = 10.0  # creating, starting and removing a container

    def __init__(self, *, client_factory: Callable[..., Any] | None = None,
                 root: Path | None = None,
                 ia32_check: Callable[[], tuple[bool, str]] | None = None):
        """``client_factory`` (tests) returns a Docker client and takes ``timeout=``; ``root`` is
        the checkout with images/Dockerfile and probes/; ``ia32_check`` (tests) stands in for
        :func:`ia32_support`."""
        self._client_factory = client_factory or docker_client
        self._root = root
        self._ia32_check = ia32_check or ia32_support

    def _check_arch(self, env: Environment) -> None:
        """EnvironmentUnavailable when this kernel cannot run ``env``'s userland (an i386
        userland without IA32 emulation; an arm64 one never: qemu-user would stand in for the
        kernel), before anything is built or asked of the engine."""
        if env.arch in GUEST_ONLY:
            raise EnvironmentUnavailable(f"{env.name}: {GUEST_ONLY[env.arch]}")
        if env.arch != DEFAULT_ARCH:
            runs, why = self._ia32_check()
            if not runs:
                raise EnvironmentUnavailable(why)

    @staticmethod
    def _userland(env: Environment) -> Suite:
        if env.userland is None:
            raise EnvironmentUnavailable(
                f"{env.name}: a docker environment needs a `suite`; fix images/matrix.toml")
        return env.userland

    @contextlib.contextmanager
    def _engine(self, timeout: float) -> Iterator[Any]:
        """A client of the engine for one call (EnvironmentUnavailable when there is none),
        closed afterwards."""
        client = self._client_factory(timeout=timeout)
        try:
            yield client
        finally:
            close(client)

    def can_start(self) -> Availability:
        """Is a Docker engine reachable at all? (No environment, no image involved.) Its note
        says when containers would run with the engine's default seccomp profile, and why."""
        try:
            with self._engine(PING_TIMEOUT) as client:
                engine = _engine_version(client)
        except EnvironmentUnavailable as exc:
            return Availability(False, str(exc))
        profile = seccomp.build(seccomp.PROBE, time_namespace=False,
                                engine_version=engine["version"])
        return Availability(True, note=profile.identity["reason"] or "")

    @staticmethod
    def _images(env: Environment):
        """The module that builds and names the image ``env`` runs: the probe image, or the
        probe image plus the runtime layer (runtimes.py)."""
        return runtimes if env.runtimes else images

    def availability(self, env: Environment) -> Availability:
        try:
            suite = self._userland(env)
            self._check_arch(env)
            with self._engine(PING_TIMEOUT) as client:
                built, reason = self._images(env).image_status(suite, client=client,
                                                               root=self._root)
        except EnvironmentUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(built, "" if built else reason)

    def prepare(self, env: Environment, *, rebuild: bool = False, log=print) -> None:
        suite = self._userland(env)
        self._check_arch(env)
        with self._engine(LONG_TIMEOUT) as client:
            self._images(env).ensure_image(suite, rebuild=rebuild, log=log, client=client,
                                           root=self._root)

    def fingerprint(self, env: Environment) -> str | None:
        # The probe image's tag is a hash of its recipe and the probe sources; the id names the
        # bytes that were built from it (a rebuild under the same tag changes it).
        with self._engine(PING_TIMEOUT) as client:
            image = find_image(client, self._images(env).image_tag(self._userland(env),
                                                                   root=self._root))
        return f"docker:{image.id}:{env.build}:{os.uname().release}" if image else None

    def clean(self, *, images: bool = False, log=print) -> None:
        """Remove probe containers (and the QEMU backend's export containers) that no live run
        owns; with ``images``, also our images that no current tag names (see leftovers.py)."""
        with self._engine(API_TIMEOUT) as client:
            leftovers.remove_orphan_containers(client, log)
            if images:
                stale.remove_stale_images(client, root=self._root, log=log)

    def pinned(self, env: Environment) -> bool:
        return not env.runtimes

    def run_probe(self, env: Environment, *, deadline: float, log=print) -> ProbeOutcome:
        if not self.pinned(env):
            return self._run_probe(env, deadline=deadline, log=log, cpu=None)
        with claim_host_cpu() as cpu:
            return self._run_probe(env, deadline=deadline, log=log, cpu=cpu)

    def _run_probe(self, env: Environment, *, deadline: float, log, cpu: int | None
                   ) -> ProbeOutcome:
        started = time.monotonic()

        def outcome(status: str, errors: list[str], **fields) -> ProbeOutcome:
            return ProbeOutcome(status=status, errors=errors,
                                seconds=time.monotonic() - started, **fields)

        try:
            suite = self._userland(env)
            self._check_arch(env)
            with self._engine(API_TIMEOUT) as client:
                tag = self._images(env).image_tag(suite, root=self._root)
                try:
                    image = find_image(client, tag)
                except Exception as exc:
                    return outcome("failed", [NO_ENGINE.format(detail=one_line(exc))],
                                   document=None)
                if image is None:
                    return outcome("failed", [f"{NOT_BUILT} ({tag} missing)"], document=None)
                engine = _engine_version(client)
                # Made for every run from the engine's own default (see seccomp.py).
                profile = seccomp.build(env.seccomp, time_namespace=env.time_namespace,
                                        engine_version=engine["version"])
                remaining = deadline - (time.monotonic() - started)
                confinement = probe_confinement(runtimes=env.runtimes, seccomp=profile.text,
                                                cpu=cpu)
                run = run_container(client, image.id, self._probe_argv(env, deadline),
                                    name=env.name, lifetime=remaining + SELF_KILL_GRACE,
                                    confinement=confinement, timeout=remaining,
                                    stdout_cap=contract.MAX_OUTPUT, log=log)
        except EnvironmentUnavailable as exc:
            return outcome("failed", [str(exc)], document=None)
        limit = RUNTIMES_MEM_LIMIT if env.runtimes else MEM_LIMIT
        return outcome(**self._judge(run, deadline, limit),
                       identity={"image": {"tag": tag, "id": image.id}, "engine": engine,
                                 "seccomp": profile.identity, "host_cpu": cpu})

    def _probe_argv(self, env: Environment, deadline: float) -> list[str]:
        common = dict(python="python3", probe=contract.PROBE_IN_IMAGE, name=env.name,
                      backend=self.name,
                      budget=contract.helper_budget(deadline, self.startup_allowance))
        if env.runtimes:
            return contract.runtimes_argv(runtimes=contract.RUNTIMES_IN_IMAGE,
                                          syscount=contract.SYSCOUNT_IN_IMAGE, **common)
        return contract.probe_argv(helper=contract.HELPER_IN_IMAGE.format(build=env.build),
                                   time_namespace=env.time_namespace, **common)

    @staticmethod
    def _judge(run: ContainerRun, deadline: float, limit: str = MEM_LIMIT) -> dict[str, Any]:
        """What a finished container run means: status, errors, the document, the log tail."""
        tail = log_tail(run.stderr)
        if run.timed_out:
            return dict(status="timeout", document=None, log_tail=tail, errors=[
                f"the probe did not finish within {deadline:.0f} s; its container was killed"])
        if run.errors and run.exit_code is None:
            return dict(status="failed", document=None, log_tail=tail, errors=run.errors)
        if run.overflow:
            return dict(status="crashed", document=None, log_tail=tail, errors=[
                f"the probe wrote more than {contract.MAX_OUTPUT >> 20} MiB to stdout; its "
                "container was killed"])
        if run.exit_code != 0:
            why = exit_reason(run.exit_code if run.exit_code is not None else -1)
            if run.oom_killed:
                why += f" (out of memory: the container's limit is {limit})"
            return dict(status="crashed", document=None, log_tail=tail,
                        errors=[f"the probe {why}", *run.errors])
        parsed = contract.parse_output(run.stdout, "the probe's stdout")
        if parsed.document is None:
            return dict(status="crashed", document=None, log_tail=tail, errors=parsed.errors)
        return dict(status="ok", document=parsed.document, log_tail=tail,
                    errors=list(run.errors))
