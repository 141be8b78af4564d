"""The QEMU backend: a Debian kernel, booted with a chosen command line, runs the probe.

What boots:
- the kernel: the ``linux-image-amd64`` of the environment's ``kernel`` suite, fetched and cached
  by :mod:`vdsomatrix.kernels` (only vmlinuz; everything the guest needs is built in);
- the root file system: the probe image of the environment's ``suite`` (the same Docker image
  the docker backend runs), exported through the Docker SDK and turned into an uncompressed newc
  initramfs by bsdtar, without what a guest never uses (compilers, headers, static libraries,
  documentation, locales), plus the guest's /init (:mod:`vdsomatrix.guest`). It is cached under
  ``<cache>/initramfs`` keyed by the image id and the recipe, so once built the engine is no
  longer needed to boot it.

How it runs: ``qemu-system-x86_64`` with no network, no display and two serial ports, both
files: ttyS0 is the console (kept as a log tail), ttyS1 carries the framed JSON result. Each
guest has one vCPU and is pinned to one host CPU of its own (``taskset``; a lock file per CPU,
so guests of parallel threads or processes do not share a CPU while a free one exists), so
guests running side by side do not compete for a CPU and their latencies stay comparable. The
QEMU process is killed when the deadline passes, when the result is in and the guest does not
power off by itself, and on any exception including Ctrl-C; its temporary folder is removed.

Acceleration: KVM is tried once (a short boot that must print the kernel banner within
:data:`KVM_TRY_SECONDS`); the verdict is kept for the process and on disk for the current host
boot (``/proc/sys/kernel/random/boot_id``) and QEMU version, since every environment is a new
process under nox. Otherwise TCG (software emulation) runs, and the result says which:
``environment.accel`` is "kvm" or "tcg". Under TCG absolute latencies are emulated; only ratios
mean something. ``VDSOMATRIX_QEMU_ACCEL=kvm|tcg`` skips the detection.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vdsomatrix import guest, kernels
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome, plain_tail
from vdsomatrix.errors import BadInput, EnvironmentUnavailable
from vdsomatrix.paths import cache_dir, file_lock

QEMU = "qemu-system-x86_64"
INSTALL_QEMU = f"{QEMU} not found: install qemu-system-x86 (`bash .ci/setup-machine` as root does)"
# Bump when the initramfs recipe below changes in a way the hashed parts do not show.
INITRAMFS_RECIPE = 1
# bsdtar exclusion patterns (anchored at the archive root, a directory takes its contents along).
STRIP = (
    ".dockerenv",  # not a container: the probe must not think it runs in one
    "dev/*",  # placeholders from the container; the guest mounts devtmpfs on /dev
    "usr/include",
    "usr/lib/gcc",
    "usr/libexec/gcc",
    "usr/bin/*gcc*",
    "usr/bin/*cpp*",
    "usr/bin/*lto-dump*",
    "usr/bin/x86_64-linux-gnu-*",  # binutils and the compiler drivers
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/gcc",
    "usr/share/gdb",
    "usr/share/bug",
    "usr/lib/x86_64-linux-gnu/*.a",
    "usr/lib/x86_64-linux-musl/*.a",
    "usr/lib/x86_64-linux-gnu/lib[alt]san.so*",  # sanitizer runtimes
    "usr/lib/x86_64-linux-gnu/libubsan.so*",
    "usr/lib/x86_64-linux-gnu/libhwasan.so*",
    "usr/lib/x86_64-linux-gnu/libgprofng*",
    "usr/lib/x86_64-linux-gnu/gprofng",
    "usr/lib/x86_64-linux-gnu/libisl.so*",  # compiler-only libraries
    "usr/lib/x86_64-linux-gnu/libmpc.so*",
    "usr/lib/x86_64-linux-gnu/libmpfr.so*",
    "usr/lib/x86_64-linux-gnu/libbfd*",
    "usr/lib/x86_64-linux-gnu/libopcodes*",
    "usr/lib/x86_64-linux-gnu/libctf*",
    "usr/lib/x86_64-linux-gnu/libsframe*",
    "usr/lib/x86_64-linux-gnu/libcc1.so*",
    "var/cache/debconf",
    "var/cache/apt",
    "var/lib/apt",
    "var/log",
)
MEMORY_MB = 1024  # enough for a ~150 MB initramfs unpacked into RAM next to its packed copy
KVM_TRY_SECONDS = 10.0
POWER_OFF_GRACE = 5.0  # seconds a guest gets to power off after its result is complete
CONSOLE_TAIL = 40
_PANIC = re.compile(rb"Kernel panic - not syncing[^\r\n]*")


# --- the command line ------------------------------------------------------------------------


def cmdline_problems(cmdline: str) -> list[str]:
    """Words of a matrix cmdline that would override what the backend itself sets."""
    problems = []
    for word in cmdline.split():
        key = word.split("=", 1)[0]
        if key in guest.RESERVED_PARAMS or key.startswith(guest.RESERVED_PREFIX) or word == "--":
            problems.append(word)
    return problems


def kernel_cmdline(env) -> str:
    """The full kernel command line of ``env``'s guest: ours, then the matrix's words.

    The environment's name and probe build go in ``vdsomatrix.*`` parameters that the guest's
    /init reads from /proc/cmdline; the matrix's words may not set those or the console/panic/
    init options (see :func:`cmdline_problems`).
    """
    bad = cmdline_problems(env.cmdline)
    if bad:
        raise BadInput(
            f"{env.name}: cmdline word(s) {' '.join(bad)} are set by the qemu backend itself; "
            "remove them from the matrix"
        )
    words = ["console=ttyS0", "panic=-1"]
    words += env.cmdline.split()
    words += [f"vdsomatrix.env={env.name}", f"vdsomatrix.build={env.build}"]
    return " ".join(words)


def qemu_argv(
    *,
    qemu: str,
    accel: str,
    vmlinuz: Path,
    initrd: Path | None,
    append: str,
    console: Path,
    result: Path | None,
    memory_mb: int = MEMORY_MB,
) -> list[str]:
    """The QEMU command: one vCPU, no network, no display, serial ports into files."""
    argv = [
        qemu,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-accel",
        accel,
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-smp",
        "1",
        "-m",
        str(memory_mb),
        "-nic",
        "none",
        "-kernel",
        str(vmlinuz),
        "-append",
        append,
        "-serial",
        f"file:{console}",
    ]
    if result is not None:
        argv += ["-serial", f"file:{result}"]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    return argv


# --- small helpers ---------------------------------------------------------------------------


def _tail(path: Path, lines: int = CONSOLE_TAIL) -> list[str]:
    """The last lines of a console log, as plain printable text."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return plain_tail(data.decode("utf-8", "replace").replace("\r", ""), lines, replacement="")


def _read_capped(path: Path, limit: int = guest.MAX_PAYLOAD + 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


@functools.cache
def _qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("QEMU emulator version ").strip()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def _host_cpu() -> Iterator[int | None]:
    """Claim a host CPU for one guest: the first one no other guest holds (lock file per CPU).

    Works across threads and processes (flock on separate opens). When every CPU is taken, the
    guest still gets one CPU, shared; None when affinity is not available at all.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        yield None
        return
    folder = cache_dir() / "qemu-cpus"
    folder.mkdir(parents=True, exist_ok=True)
    for cpu in cpus:
        fh = open(folder / f"cpu{cpu}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        try:
            yield cpu
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        return
    yield cpus[os.getpid() % len(cpus)]


def _mtree_path(path: Path) -> str:
    """A path as mtree writes it: anything but plain characters as a backslash-octal escape."""
    return "".join(
        ch if re.match(r"[A-Za-z0-9/._+-]", ch) else "".join(f"\\{b:03o}" for b in ch.encode())
        for ch in str(path)
    )


def initramfs_recipe_hash() -> str:
    """Covers everything besides the image that decides an initramfs's content."""
    digest = hashlib.sha256()
    digest.update(f"recipe {INITRAMFS_RECIPE}\n".encode())
    digest.update("\n".join(STRIP).encode() + b"\n")
    digest.update(guest.INIT_SCRIPT.encode())
    return digest.hexdigest()[:12]


def build_initramfs(client, image: str, dest: Path, *, log=print) -> dict[str, Any]:
    """Write the initramfs of Docker image ``image`` to ``dest``; returns size and timing.

    The image's file system is exported from a created (never started) container and streamed
    through ``bsdtar``, which drops :data:`STRIP` and adds /init, /dev and /dev/console.
    """
    if not shutil.which("bsdtar"):
        raise EnvironmentUnavailable(
            "bsdtar not found: install libarchive-tools (`bash .ci/setup-machine` as root does)"
        )
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".initramfs-", dir=dest.parent) as tmp:
        work = Path(tmp)
        (work / "init").write_text(guest.INIT_SCRIPT)
        (work / "strip").write_text("\n".join(STRIP) + "\n")
        (work / "extra.mtree").write_text(
            "#mtree\n"
            "./dev type=dir uid=0 gid=0 mode=0755\n"
            "./dev/console type=char uid=0 gid=0 mode=0600 device=native,5,1\n"
            f"./init type=file uid=0 gid=0 mode=0755 contents={_mtree_path(work / 'init')}\n"
        )
        out = work / "initramfs.cpio"
        container = client.containers.create(
            image, command=["/bin/true"], network_disabled=True, labels={"org.vdsomatrix": "qemu"}
        )
        try:
            with open(work / "bsdtar.err", "wb") as err:
                proc = subprocess.Popen(
                    ["bsdtar", "-c", "-f", str(out), "--format", "newc", "-X", str(work / "strip"),
                     "@-", f"@{work / 'extra.mtree'}"],
                    stdin=subprocess.PIPE,
                    stderr=err,
                )  # fmt: skip
                try:
                    for chunk in container.export(chunk_size=1 << 20):
                        proc.stdin.write(chunk)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                finally:
                    if proc.poll() is None and not proc.stdin.closed:
                        proc.stdin.close()
                    proc.wait()
        finally:
            container.remove(force=True)
        if proc.returncode != 0 or not out.is_file():
            detail = (work / "bsdtar.err").read_text(errors="replace").strip()[-300:]
            raise EnvironmentUnavailable(f"building the initramfs of {image} failed: {detail}")
        size = out.stat().st_size
        os.chmod(out, 0o644)
        os.replace(out, dest)
    seconds = time.monotonic() - started
    log(f"qemu: initramfs of {image}: {size / 1e6:.0f} MB in {seconds:.1f}s")
    return {"bytes": size, "seconds": round(seconds, 2)}


def _suite_spec(suite: str):
    """The matrix's [suites.<name>] entry (its debootstrap script is part of the image tag)."""
    from vdsomatrix.matrix import Suite, load_matrix

    try:
        spec = load_matrix().suites.get(suite)
    except BadInput:
        spec = None
    return spec or Suite(name=suite, script=suite)


def _default_image_for(suite: str, rebuild: bool, log) -> str:
    """The probe image tag of ``suite``, built if missing (vdsomatrix.images)."""
    from vdsomatrix import images

    return images.ensure_probe_image(_suite_spec(suite), rebuild=rebuild, log=log)


# --- KVM detection ---------------------------------------------------------------------------

_accel_lock = threading.Lock()
_accel_verdict: dict[str, str] = {}


def detect_accel(qemu: str, vmlinuz: Path, *, log=print) -> str:
    """Return "kvm" when a KVM guest gets as far as printing the kernel banner, else "tcg"."""
    forced = os.environ.get("VDSOMATRIX_QEMU_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    with _accel_lock:
        if qemu in _accel_verdict:
            return _accel_verdict[qemu]
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            _accel_verdict[qemu] = "tcg"
            return "tcg"
        key = {"boot_id": _boot_id(), "qemu": _qemu_version(qemu)}
        memo = cache_dir() / "qemu-accel.json"
        try:
            saved = json.loads(memo.read_text())
            if {k: saved.get(k) for k in key} == key and saved.get("accel") in ("kvm", "tcg"):
                _accel_verdict[qemu] = saved["accel"]
                return saved["accel"]
        except (OSError, ValueError, AttributeError):
            pass
        verdict, detail = _try_kvm(qemu, vmlinuz)
        log(f"qemu: KVM {'works' if verdict == 'kvm' else 'unusable'} ({detail}); using {verdict}")
        _accel_verdict[qemu] = verdict
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(json.dumps({**key, "accel": verdict, "detail": detail}) + "\n")
        return verdict


def _try_kvm(qemu: str, vmlinuz: Path) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="vdsomatrix-kvm-") as tmp:
        console = Path(tmp) / "console.log"
        argv = qemu_argv(
            qemu=qemu, accel="kvm", vmlinuz=vmlinuz, initrd=None, memory_mb=256,
            append="console=ttyS0 panic=-1", console=console, result=None,
        )  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            while time.monotonic() - started < KVM_TRY_SECONDS:
                if b"Linux version" in _read_capped(console, 1 << 20):
                    return "kvm", f"kernel banner after {time.monotonic() - started:.1f}s"
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                    return "tcg", f"qemu -accel kvm exited: {err[-1] if err else proc.returncode}"
                time.sleep(0.1)
            return "tcg", f"no kernel banner within {KVM_TRY_SECONDS:.0f}s"
        finally:
            _stop(proc)
            proc.stderr.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# --- the backend -----------------------------------------------------------------------------


class QemuBackend(Backend):
    """Boots ``env.kernel``'s Debian kernel with ``env.cmdline`` on ``env.suite``'s probe image.

    Each guest gets one vCPU pinned to one host CPU (see the module docstring), so the runner may
    run several guests at once: ``shares_host_cpu`` is False.
    """

    name = "qemu"
    shares_host_cpu = False

    def __init__(
        self,
        *,
        qemu: str = QEMU,
        image_for: Callable[[str, bool, Any], str] | None = None,
        memory_mb: int = MEMORY_MB,
    ):
        self.qemu = qemu
        self.image_for = image_for or _default_image_for
        self.memory_mb = memory_mb
        self._lock = threading.Lock()
        self._initramfs: dict[str, Path] = {}  # suite -> initramfs prepared by this process

    # -- where things are

    @staticmethod
    def initramfs_dir() -> Path:
        return cache_dir() / "initramfs"

    def _pointer(self, suite: str) -> Path:
        return self.initramfs_dir() / f"{suite}.json"

    def _cached_initramfs(self, suite: str) -> Path | None:
        with self._lock:
            path = self._initramfs.get(suite)
        if path and path.is_file():
            return path
        try:
            path = Path(json.loads(self._pointer(suite).read_text())["path"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return path if path.is_file() else None

    # -- Backend

    def can_start(self) -> Availability:
        if not shutil.which(self.qemu):
            return Availability(False, INSTALL_QEMU)
        return Availability(True)

    def availability(self, env) -> Availability:
        gate = self.can_start()
        if not gate.ok:
            return gate
        bad = cmdline_problems(env.cmdline)
        if bad:
            return Availability(
                False, f"cmdline word(s) {' '.join(bad)} are set by the qemu backend itself: "
                "remove them from the matrix"
            )  # fmt: skip
        if kernels.cached_kernel(env.kernel) is None:
            return Availability(
                False, f"the {env.kernel} kernel is not downloaded: run `vdsomatrix probe "
                f"{env.name}` once with the Debian mirror reachable"
            )  # fmt: skip
        if self._cached_initramfs(env.suite) is None:
            from vdsomatrix import images

            built, reason = images.image_status(_suite_spec(env.suite))
            if not built:
                return Availability(False, f"no initramfs for {env.suite} and {reason}")
        return Availability(True)

    def prepare(self, env, *, rebuild: bool = False, log=print) -> None:
        if not self.can_start().ok:
            raise EnvironmentUnavailable(INSTALL_QEMU)
        kernel_cmdline(env)  # refuses reserved words before anything is built
        kernels.fetch_kernel(env.kernel, refresh=rebuild, log=log)
        self._prepare_initramfs(env.suite, rebuild=rebuild, log=log)

    def _prepare_initramfs(self, suite: str, *, rebuild: bool, log) -> Path:
        if not rebuild:
            with self._lock:
                known = self._initramfs.get(suite)
            if known and known.is_file():
                return known
        try:
            tag = self.image_for(suite, rebuild, log)
            from vdsomatrix.images import docker_client

            client = docker_client(timeout=600)
            image = client.images.get(tag)
        except EnvironmentUnavailable:
            cached = None if rebuild else self._cached_initramfs(suite)
            if cached is None:
                raise
            log(f"qemu: no Docker engine; booting the cached initramfs {cached.name}")
            return cached
        key = f"{suite}-{image.id.split(':')[-1][:12]}-{initramfs_recipe_hash()}"
        path = self.initramfs_dir() / f"{key}.cpio"
        with file_lock(self.initramfs_dir() / f".{suite}.lock"):
            if rebuild or not path.is_file():
                stats = build_initramfs(client, tag, path, log=log)
                pointer = {"suite": suite, "image": tag, "image_id": image.id, "path": str(path),
                           "built": time.time(), **stats}  # fmt: skip
                tmp = self._pointer(suite).with_suffix(".json.tmp")
                tmp.write_text(json.dumps(pointer, indent=1) + "\n")
                os.replace(tmp, self._pointer(suite))
                for old in self.initramfs_dir().glob(f"{suite}-*.cpio"):
                    if old != path:
                        old.unlink(missing_ok=True)
        with self._lock:
            self._initramfs[suite] = path
        return path

    def run_probe(self, env, *, deadline: float, log=print) -> ProbeOutcome:
        started = time.monotonic()
        try:
            append = kernel_cmdline(env)
            if not self.can_start().ok:
                raise EnvironmentUnavailable(INSTALL_QEMU)
            kernel = kernels.cached_kernel(env.kernel) or kernels.fetch_kernel(env.kernel, log=log)
            initrd = self._cached_initramfs(env.suite) or self._prepare_initramfs(
                env.suite, rebuild=False, log=log
            )
        except (BadInput, EnvironmentUnavailable) as exc:
            return ProbeOutcome(None, "failed", [str(exc)], seconds=time.monotonic() - started)
        accel = detect_accel(self.qemu, kernel.vmlinuz, log=log)
        memory = max(self.memory_mb, 2 * (initrd.stat().st_size >> 20) + 512)
        with (
            tempfile.TemporaryDirectory(prefix=f"vdsomatrix-{env.name}-") as tmp,
            _host_cpu() as cpu,
        ):
            console, result = Path(tmp) / "console.log", Path(tmp) / "result.log"
            argv = qemu_argv(
                qemu=self.qemu, accel=accel, vmlinuz=kernel.vmlinuz, initrd=initrd,
                append=append, console=console, result=result, memory_mb=memory,
            )  # fmt: skip
            if cpu is not None and shutil.which("taskset"):
                argv = ["taskset", "-c", str(cpu), *argv]
            log(f"{env.name}: booting {kernel.release} ({accel}, host CPU {cpu}): {append}")
            outcome = self._boot(argv, Path(tmp), deadline)
        outcome.seconds = time.monotonic() - started
        if outcome.document is not None:
            identity = outcome.document.setdefault("environment", {})
            if isinstance(identity, dict):
                identity.update(
                    backend="qemu",
                    accel=accel,
                    kernel_package=kernel.package_ref,
                    qemu={"version": _qemu_version(self.qemu), "cpu": argv[argv.index("-cpu") + 1],
                          "memory_mb": memory, "host_cpu": cpu},
                )  # fmt: skip
        return outcome

    def _boot(self, argv: list[str], tmp: Path, deadline: float) -> ProbeOutcome:
        """Run one guest to its end; ``deadline`` counts from the start of QEMU."""
        console, result = tmp / "console.log", tmp / "result.log"
        errors: list[str] = []
        timed_out = False
        with open(tmp / "qemu.err", "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        started = time.monotonic()
        try:
            complete_at = None
            while True:
                exited = proc.poll() is not None
                if complete_at is None and guest.parse_frame(_read_capped(result)).payload:
                    complete_at = time.monotonic()
                if exited:
                    break
                if complete_at is not None and time.monotonic() - complete_at > POWER_OFF_GRACE:
                    break  # the result is in; the guest just did not power off
                if time.monotonic() - started > deadline:
                    timed_out = True
                    break
                time.sleep(0.2)
        finally:
            _stop(proc)
        stderr = (tmp / "qemu.err").read_text("utf-8", "replace")[-4000:]
        frame = guest.parse_frame(_read_capped(result))
        tail = _tail(console)
        console_bytes = _read_capped(console, 8 << 20)
        panic = _PANIC.search(console_bytes)
        if frame.status == "complete":
            try:
                document = json.loads(frame.payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                errors.append(f"guest result is not JSON: {exc}"[:200])
                return ProbeOutcome(None, "crashed", errors, tail)
            if not isinstance(document, dict):
                return ProbeOutcome(None, "crashed", ["guest result is not a JSON object"], tail)
            if frame.rc:
                errors.append(f"probe exited with status {frame.rc} inside the guest")
            return ProbeOutcome(document, "ok", errors, tail if errors else [])
        if frame.status != "missing":
            errors.append(f"guest result {frame.status}: {frame.problem}")
        if timed_out:
            errors.append(f"guest did not finish within {deadline:.0f}s; killed")
            return ProbeOutcome(None, "timeout", errors, tail)
        if panic:
            errors.append("guest kernel panicked: " + panic.group(0).decode("utf-8", "replace"))
            return ProbeOutcome(None, "crashed", errors, tail)
        if proc.returncode not in (0, None):
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit status {proc.returncode}"
            errors.append(f"qemu failed: {detail}"[:300])
            return ProbeOutcome(None, "failed", errors, tail + lines[-5:])
        errors.append("guest stopped without a complete result")
        return ProbeOutcome(None, "crashed", errors, tail)
