"""The QEMU backend: a Debian kernel, booted with a chosen command line, runs the probe.

What boots: the kernel of ``env.kernel`` (images/kernels.py: only vmlinuz, everything the guest
needs is built in) with the initramfs of ``env.userland``'s probe image (images/initramfs.py),
whose /init (images/guest_init.py) runs the probe and writes its result to the second serial
port.

How it runs: ``qemu-system-x86_64`` (``qemu-system-i386`` for an i386 kernel: Debian's 686-pae,
booted with an i386 userland, so the probe's rows are native 32-bit ones) with no network, no
display and two serial ports, both files: ttyS0 is the console (kept as a log tail), ttyS1
carries the framed JSON result. An arm64 kernel boots under ``qemu-system-aarch64`` on the
``virt`` board with ``-cpu max`` (always TCG on an x86 host): its one UART (PL011, ttyAMA0) is
the console, and a 16550 on its PCI bus (ttyS0 in the guest) the result port, each a file the
same way. Each guest has one vCPU and is pinned to one host CPU of its own (``taskset``; a lock
file per CPU, so guests of parallel threads or processes do not share a CPU while a free one
exists), so guests running side by side do not compete for a CPU and their latencies stay
comparable. This module builds QEMU's command line and judges what the guest left; starting,
watching, killing and cleaning up after QEMU is engine/guest.py's :class:`Guest`. The
accelerator (KVM or TCG) is chosen by engine/accel.py.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vdsomatrix import contract
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome
from vdsomatrix.cpus import claim_host_cpu
from vdsomatrix.engine import accel
from vdsomatrix.engine.guest import Guest, GuestRun, remove_leftovers
from vdsomatrix.errors import BadInput, EnvironmentUnavailable, VdsomatrixError
from vdsomatrix.images import foreign, guest_init, kernels
from vdsomatrix.images.initramfs import InitramfsCache, read_file
from vdsomatrix.matrix import BackendName, Environment, KernelSpec, Suite
from vdsomatrix.text import plain_tail

QEMU = "qemu-system-x86_64"
QEMU_I386 = "qemu-system-i386"  # the same Debian package (qemu-system-x86) as QEMU
QEMU_AARCH64 = "qemu-system-aarch64"  # Debian's qemu-system-arm
# The Debian package of each QEMU binary, by the binary's name.
QEMU_PACKAGES = {QEMU: "qemu-system-x86", QEMU_I386: "qemu-system-x86",
                 QEMU_AARCH64: "qemu-system-arm"}
# The emulated arm64 CPU: every feature QEMU has (-cpu max), with pointer authentication's
# QEMU-defined hash instead of the architected QARMA, which TCG computes far faster (code built
# with pointer authentication signs and checks the return address of most functions): boot and
# probe took 12 s instead of 30 s (k6.1-arm64) and 9 s instead of 16 s (k7.2-arm64),
# benchmarks/guest_boot.py --arm64-cpu max. The guest still has pointer authentication; its ID
# registers name the implementation-defined algorithm instead of QARMA.
ARM64_CPU = "max,pauth-impdef=on"


def install_qemu(binary: str) -> str:
    package = QEMU_PACKAGES.get(os.path.basename(binary), "qemu-system-x86")
    return (f"{binary} not found: install {package} (`bash .ci/setup-machine` as root "
            "does)")


INSTALL_QEMU = install_qemu(QEMU)
MEMORY_MB = 1024  # enough for a ~150 MB initramfs unpacked into RAM next to its packed copy
CONSOLE_TAIL = 40
_PANIC = re.compile(rb"Kernel panic - not syncing[^\r\n]*")


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
    cpus: int = 1,
    arch: str = "amd64",
) -> list[str]:
    """The QEMU command: one vCPU (``cpus`` for the matrix's multi-CPU variant), no network, no
    display, serial ports into files.

    ``arch`` is the kernel's Debian architecture. An x86 PC's two UARTs are the console and the
    result port; arm64's `virt` board has one UART (the console), so the result port is a 16550
    on its PCI bus (``pci-serial``), written to a file through a chardev.
    """
    if accel == "kvm":
        cpu = "host"
    else:
        cpu = ARM64_CPU if arch == "arm64" else "max"
    argv = [
        qemu,
        *(["-machine", "virt"] if arch == "arm64" else []),
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
        cpu,
        "-smp",
        str(cpus),
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
    if result is not None and arch == "arm64":
        # chardev options are comma-separated: a comma in the path is written twice.
        path = str(result).replace(",", ",,")
        argv += ["-chardev", f"file,id=result,path={path}", "-device", "pci-serial,chardev=result"]
    elif result is not None:
        argv += ["-serial", f"file:{result}"]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    return argv


# --- small helpers ---------------------------------------------------------------------------


def guest_memory_mb(initrd_bytes: int, floor: int = MEMORY_MB) -> int:
    """RAM for a guest booting an initramfs of ``initrd_bytes``.

    The packed archive stays in RAM until it is unpacked, the unpacked files live in RAM, and the
    kernel needs room besides: a 420 MB archive failed to unpack ("Initramfs unpacking failed:
    write error", then no root file system) with 1352 MB and unpacked with 1394 MB. Three times
    the archive plus 512 MB leaves the margin (and the room a JVM's heap takes).
    """
    return max(floor, 3 * (initrd_bytes >> 20) + 512)


def _tail(console: bytes, lines: int = CONSOLE_TAIL) -> list[str]:
    """The last lines of a console log's end, as plain printable text."""
    text = console[-(64 << 10):].decode("utf-8", "replace").replace("\r", "")
    return plain_tail(text, lines, replacement="")


# A host CPU for one guest, from the same claim as the containers' (cpus.py).
_host_cpu = claim_host_cpu


def _parts(env: Environment) -> tuple[Suite, KernelSpec]:
    if env.userland is None or env.kernel is None:
        raise BadInput(f"{env.name}: a qemu environment needs a `suite` and a `kernel`; "
                       "fix images/matrix.toml")
    return env.userland, env.kernel


# --- the backend -----------------------------------------------------------------------------


class QemuBackend(Backend):
    """Boots ``env.kernel``'s Debian kernel with ``env.cmdline`` on ``env.userland``'s probe image.

    Each guest gets one vCPU pinned to one host CPU (see the module docstring), so the runner may
    run several guests at once: ``shares_host_cpu`` is False.
    """

    name = BackendName.QEMU
    shares_host_cpu = False
    default_deadline = 240.0
    # A JVM starts in seconds under TCG, and a runtime environment starts about 40 processes.
    runtimes_deadline = 1200.0
    # Booting under TCG before the probe starts, and writing its result out afterwards.
    startup_allowance = 60.0

    def __init__(
        self,
        *,
        qemu: str = QEMU,
        qemu_i386: str = QEMU_I386,
        qemu_aarch64: str = QEMU_AARCH64,
        image_for: Callable[[Suite, bool, Any], str] | None = None,
        memory_mb: int = MEMORY_MB,
    ):
        """``qemu`` boots the amd64 kernels, ``qemu_i386`` the i386 ones, ``qemu_aarch64`` the
        arm64 ones; ``image_for(suite, rebuild, log)``: the probe image tag of a suite, built if
        needed (default: the docker backend's)."""
        self.qemu = qemu
        self.qemu_i386 = qemu_i386
        self.qemu_aarch64 = qemu_aarch64
        self.memory_mb = memory_mb
        self.initramfs = InitramfsCache(image_for=image_for)

    def qemu_for(self, spec: KernelSpec) -> str:
        """The QEMU binary that boots ``spec``'s kernel: by its architecture."""
        return {"i386": self.qemu_i386, "arm64": self.qemu_aarch64}.get(spec.arch, self.qemu)

    def _can_boot(self, spec: KernelSpec) -> Availability:
        qemu = self.qemu_for(spec)
        if not shutil.which(qemu):
            return Availability(False, install_qemu(qemu))
        return Availability(True)

    # -- Backend

    def can_start(self) -> Availability:
        if not shutil.which(self.qemu):
            return Availability(False, INSTALL_QEMU)
        return Availability(True)

    def availability(self, env: Environment) -> Availability:
        gate = self.can_start()
        if not gate.ok:
            return gate
        try:
            suite, kernel = _parts(env)
            gate = self._can_boot(kernel)
            if not gate.ok:
                return gate
            guest_init.check_cmdline(env)
            missing = kernels.unavailable_reason(kernel)
            if missing:
                return Availability(False, missing)
            if self.initramfs.cached(suite, runtimes=env.runtimes) is None:
                # Its userland is still to be built: for arm64, through qemu-user.
                runs, why = foreign.emulation_support(suite.arch)
                if not runs:
                    return Availability(False, f"cannot build the {suite.name} userland: {why}")
            if kernels.cached_kernel(kernel) is None:
                return Availability(
                    False, f"the {kernel.suite} kernel is not downloaded: run `vdsomatrix probe "
                    f"{env.name}` once with the Debian mirror reachable"
                )  # fmt: skip
        except BadInput as exc:
            return Availability(False, str(exc))
        if self.initramfs.cached(suite, runtimes=env.runtimes) is None:
            from vdsomatrix.images import probe_image as images
            from vdsomatrix.images import runtimes

            built, reason = (runtimes if env.runtimes else images).image_status(suite)
            if not built:
                return Availability(False, f"no initramfs for {suite.name} and {reason}")
        return Availability(True)

    def prepare(self, env: Environment, *, rebuild: bool = False, log=print) -> None:
        if not self.can_start().ok:
            raise EnvironmentUnavailable(INSTALL_QEMU)
        suite, kernel = _parts(env)
        gate = self._can_boot(kernel)
        if not gate.ok:
            raise EnvironmentUnavailable(gate.reason)
        guest_init.check_cmdline(env)  # refuses reserved words before anything is built
        kernels.fetch_kernel(kernel, refresh=rebuild, log=log)
        self.initramfs.prepare(suite, runtimes=env.runtimes, rebuild=rebuild, log=log)

    def fingerprint(self, env: Environment) -> str | None:
        # The kernel package and the initramfs (its name covers the probe image, which covers
        # the probe sources, and the recipe with /init), and what the command line adds.
        try:
            suite, spec = _parts(env)
            kernel = kernels.cached_kernel(spec)
            initrd = self.initramfs.cached(suite, runtimes=env.runtimes)
        except BadInput:
            return None
        chosen = "tcg" if foreign.emulated(spec.arch) else accel.known_accel(self.qemu_for(spec))
        if kernel is None or initrd is None or chosen is None:
            return None
        # The accelerator too: a TCG result is not what a KVM run would measure.
        parts = ["qemu", kernel.package_ref, initrd.stem, str(env.build), env.cmdline, chosen]
        if env.time_namespace:  # only then: the fingerprints of other guests stay as they were
            parts.append("timens")
        if env.cpus != 1:  # likewise
            parts.append(f"smp{env.cpus}")
        return ":".join(parts)

    def clean(self, *, images: bool = False, log=print) -> None:
        remove_leftovers(log)
        self.initramfs.remove_leftovers(log)
        kernels.remove_leftovers(log)
        if images:
            self.initramfs.remove_unused(log)
            kernels.remove_unused(log)

    def run_probe(self, env: Environment, *, deadline: float, log=print) -> ProbeOutcome:
        started = time.monotonic()
        try:
            suite, spec = _parts(env)
            budget = contract.helper_budget(deadline, self.startup_allowance)
            append = guest_init.kernel_cmdline(env, budget)
            qemu = self.qemu_for(spec)
            gate = self._can_boot(spec)
            if not gate.ok:
                raise EnvironmentUnavailable(gate.reason)
            kernel = kernels.fetch_kernel(spec, log=log)  # the cached one, when there is one
            initrd = (self.initramfs.cached(suite, runtimes=env.runtimes)
                      or self.initramfs.prepare(suite, runtimes=env.runtimes, log=log))
        except VdsomatrixError as exc:
            return ProbeOutcome(None, "failed", [str(exc)], seconds=time.monotonic() - started)

        def kvm_try_argv(console: Path) -> list[str]:
            append = f"console={guest_init.ports(spec.arch)[0]} panic=-1"
            return qemu_argv(qemu=qemu, accel="kvm", vmlinuz=kernel.vmlinuz, initrd=None,
                             memory_mb=256, append=append, console=console, result=None,
                             arch=spec.arch)  # fmt: skip

        # KVM runs guests of the host CPU's own kind only: an arm64 guest on x86 is emulated.
        chosen = ("tcg" if foreign.emulated(spec.arch)
                  else accel.detect_accel(qemu, kvm_try_argv, log=log))
        memory = guest_memory_mb(initrd.stat().st_size, self.memory_mb)
        with _host_cpu() as cpu, Guest(env.name) as vm:
            argv = qemu_argv(
                qemu=qemu, accel=chosen, vmlinuz=kernel.vmlinuz, initrd=initrd,
                append=append, console=vm.console, result=vm.result,
                memory_mb=memory, cpus=env.cpus, arch=spec.arch,
            )  # fmt: skip
            if cpu is not None and shutil.which("taskset"):
                argv = ["taskset", "-c", str(cpu), *argv]
            log(f"{env.name}: booting {kernel.release} ({chosen}, host CPU {cpu}): {append}")
            remaining = max(1.0, deadline - (time.monotonic() - started))
            outcome = self._boot(vm, argv, remaining)
        if outcome.document is not None:
            outcome.errors += contract.resolve_artefacts(
                outcome.document, lambda path, limit: read_file(initrd, path, limit),
                "the guest's initramfs")
        outcome.seconds = time.monotonic() - started
        outcome.identity = {
            "accel": chosen,
            "kernel_package": kernel.package_ref,
            "qemu": {"version": accel.qemu_version(qemu), "binary": os.path.basename(qemu),
                     "cpu": argv[argv.index("-cpu") + 1], "memory_mb": memory, "host_cpu": cpu,
                     "vcpus": env.cpus},
        }  # fmt: skip
        return outcome

    def _boot(self, vm: Guest, argv: list[str], deadline: float) -> ProbeOutcome:
        """Run one guest to its end in ``vm``; ``deadline`` counts from the start of QEMU.

        Raises processes.Interrupted (QEMU killed) when the run is interrupted meanwhile.
        """
        return self._outcome(vm.run(argv, deadline), deadline)

    @staticmethod
    def _outcome(run: GuestRun, deadline: float) -> ProbeOutcome:
        """What a finished guest left behind, as an outcome."""
        frame, tail = run.frame, _tail(run.console)
        if frame.status == "complete":
            parsed = contract.parse_output(frame.payload, "the guest's result")
            if parsed.document is None:
                return ProbeOutcome(None, "crashed", parsed.errors, tail)
            errors = []
            if frame.rc:
                errors.append(f"probe exited with status {frame.rc} inside the guest")
            return ProbeOutcome(parsed.document, "ok", errors, tail if errors else [])
        errors = []
        if frame.status != "missing":
            errors.append(f"guest result {frame.status}: {frame.problem}")
        if run.timed_out:
            errors.append(f"guest did not finish within {deadline:.0f}s; killed")
            return ProbeOutcome(None, "timeout", errors, tail)
        if run.flooded:
            errors.append(f"guest wrote more than {run.flooded}; killed")
            return ProbeOutcome(None, "crashed", errors, tail)
        # The panic message is at the end of the console, however much came before it.
        panic = _PANIC.search(run.console)
        if panic:
            errors.append("guest kernel panicked: " + panic.group(0).decode("utf-8", "replace"))
            return ProbeOutcome(None, "crashed", errors, tail)
        if run.returncode not in (0, None):
            lines = run.stderr_lines
            detail = lines[-1] if lines else f"exit status {run.returncode}"
            errors.append(f"qemu failed: {detail}"[:300])
            return ProbeOutcome(None, "failed", errors, tail + lines)
        errors.append("guest stopped without a complete result")
        return ProbeOutcome(None, "crashed", errors, tail)
