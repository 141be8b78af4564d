"""The host backend: the probe on this machine itself, no engine at all. It always works.

The C helper is compiled with the host's own compiler into a cache folder keyed by the hash of
the probe sources (the same hash the probe images are tagged with), so repeated runs do not
rebuild it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

from vdsomatrix import contract
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.matrix import BackendName, Build
from vdsomatrix.paths import cache_dir, probe_sources_hash, probes_dir
from vdsomatrix.processes import run_bounded
from vdsomatrix.text import plain_tail

COMPILERS = {Build.DYNAMIC: "cc", Build.STATIC: "cc", Build.MUSL: "musl-gcc",
             Build.RUNTIMES: "cc"}  # runtimes: the counter is C; runtimes missing are rows
BUILD_TIMEOUT = 600.0  # seconds for one build of the helper (a few seconds, normally)
_build_lock = threading.Lock()


def tail(output: bytes | str, lines: int = 20) -> list[str]:
    return plain_tail(output.strip(), lines)


class HostBackend(Backend):
    name = BackendName.HOST
    default_deadline = 300.0
    startup_allowance = 5.0

    def helper_path(self, build: Build) -> Path:
        """The C helper of ``build``; for ``runtimes``, the system-call counter."""
        name = "syscount" if build == Build.RUNTIMES else f"vdsoprobe-{build}"
        return self._built() / name

    def runtimes_dir(self) -> Path:
        """The runtime programs, compiled with whatever toolchains this host has."""
        return self._built() / "runtimes"

    @staticmethod
    def _built() -> Path:
        return cache_dir() / "host" / probe_sources_hash()

    def availability(self, env) -> Availability:
        compiler = COMPILERS[env.build]
        if not shutil.which(compiler) and not self.helper_path(env.build).exists():
            package = "musl-tools" if env.build == Build.MUSL else "gcc libc6-dev"
            return Availability(
                False, f"no {compiler} to build the probe: apt-get install {package}"
            )
        return Availability(True)

    def prepare(self, env, *, rebuild: bool = False, log=print) -> None:
        helper = self.helper_path(env.build)
        with _build_lock:
            if helper.exists() and not rebuild:
                return
            helper.parent.mkdir(parents=True, exist_ok=True)
            # The runtime programs first: the counter's presence says both are built.
            if env.runtimes:
                log(f"{env.name}: building the runtime programs with the host's toolchains")
                self._build(env, [str(probes_dir() / "runtimes" / "build.sh"),
                                  str(self.runtimes_dir())])
            log(f"{env.name}: building the probe helper ({env.build}) with the host's toolchain")
            self._build(env, [str(probes_dir() / "build.sh"), str(helper.parent),
                              helper.name.removeprefix("vdsoprobe-")])

    @staticmethod
    def _build(env, script: list[str]) -> None:
        done = run_bounded(["sh", *script], timeout=BUILD_TIMEOUT, stdout_cap=1 << 20)
        if done.returncode != 0:
            why = (f"it took over {BUILD_TIMEOUT:.0f} s" if done.timed_out
                   else " | ".join(tail(done.stderr, 3)))
            raise EnvironmentUnavailable(f"{env.name}: building the probe failed: {why}")

    def fingerprint(self, env) -> str | None:
        # The probe sources (and so the helper), on this machine's kernel.
        return f"host:{probe_sources_hash()}:{env.build}:{os.uname().release}:{os.uname().version}"

    def run_probe(self, env, *, deadline: float, log=print) -> ProbeOutcome:
        common = dict(python=sys.executable, probe=str(probes_dir() / "probe.py"),
                      name=env.name, backend=self.name,
                      budget=contract.helper_budget(deadline, self.startup_allowance))
        if env.runtimes:
            argv = contract.runtimes_argv(runtimes=str(self.runtimes_dir()),
                                          syscount=str(self.helper_path(env.build)), **common)
        else:
            argv = contract.probe_argv(helper=str(self.helper_path(env.build)), **common)
        started = time.monotonic()
        done = run_bounded([argv[0], "-B", *argv[1:]], timeout=deadline,
                           stdout_cap=contract.MAX_OUTPUT)
        elapsed = time.monotonic() - started
        stderr = tail(done.stderr)
        if done.timed_out:
            return ProbeOutcome(None, "timeout", [f"probe did not finish within {deadline:.0f} s"],
                                stderr, elapsed)
        if done.overflow:
            return ProbeOutcome(None, "crashed", [f"the probe wrote more than "
                                                  f"{contract.MAX_OUTPUT >> 20} MiB; killed"],
                                stderr, elapsed)
        if done.returncode != 0:
            return ProbeOutcome(None, "crashed", [f"probe exited {done.returncode}"], stderr,
                                elapsed)
        parsed = contract.parse_output(done.stdout)
        status = "ok" if parsed.document is not None else "crashed"
        return ProbeOutcome(parsed.document, status, parsed.errors, stderr, elapsed)
