"""The host backend: the probe on this machine itself, no engine at all. It always works.

The C helper is compiled with the host's own compiler into a cache folder keyed by the hash of
the probe sources, so repeated runs do not rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome, plain_tail
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.paths import cache_dir, probes_dir

COMPILERS = {"dynamic": "cc", "static": "cc", "musl": "musl-gcc"}
_build_lock = threading.Lock()


def probe_sources_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(probes_dir().iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def tail(output: bytes | str, lines: int = 20) -> list[str]:
    return plain_tail(output.strip(), lines)


class HostBackend(Backend):
    name = "host"

    def helper_path(self, build: str) -> Path:
        return cache_dir() / "host" / probe_sources_hash() / f"vdsoprobe-{build}"

    def availability(self, env) -> Availability:
        compiler = COMPILERS[env.build]
        if not shutil.which(compiler) and not self.helper_path(env.build).exists():
            package = "musl-tools" if env.build == "musl" else "gcc libc6-dev"
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
            log(f"{env.name}: building the probe helper ({env.build}) with the host's toolchain")
            proc = subprocess.run(
                ["sh", str(probes_dir() / "build.sh"), str(helper.parent), env.build],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise EnvironmentUnavailable(
                    f"{env.name}: building the probe failed: {' | '.join(tail(proc.stderr, 3))}"
                )

    def run_probe(self, env, *, deadline: float, log=print) -> ProbeOutcome:
        cmd = [sys.executable, "-B", str(probes_dir() / "probe.py"),
               "--helper", str(self.helper_path(env.build)),
               "--name", env.name, "--backend", self.name,
               "--helper-timeout", str(max(1, int(deadline) - 5))]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=deadline)
        except subprocess.TimeoutExpired as exc:
            return ProbeOutcome(None, "timeout", [f"probe did not finish within {deadline:.0f} s"],
                                tail(exc.stderr or b""),
                                time.monotonic() - started)
        elapsed = time.monotonic() - started
        stderr = tail(proc.stderr)
        if proc.returncode != 0:
            return ProbeOutcome(None, "crashed", [f"probe exited {proc.returncode}"], stderr,
                                elapsed)
        try:
            doc = json.loads(proc.stdout)
        except ValueError as exc:
            return ProbeOutcome(None, "crashed", [f"probe printed no valid JSON: {exc}"], stderr,
                                elapsed)
        return ProbeOutcome(doc, "ok", [], stderr, elapsed)
