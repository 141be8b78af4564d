"""Binary analysis of a result's raw artefacts: the vDSO image and the libc the probe used.

``analyse_result(doc)`` is a pure function of a result document. It reads the vDSO bytes and the
libc artefact the probe shipped (and, for a dynamic build, its dynamic loader), and returns what
pyelftools and capstone make of them::

    {"vdso": {...} | None, "libc": {...} | None, "ldso": {...} | None,
     "errors": ["one line each", ...]}

``libc["vdso_usage"]`` merges the ``__vdso_*`` names the libc and the loader ask for (dynamic
glibc looks most of them up in ld.so). Results without an ldso artefact (older probes, static
builds) get ``"ldso": None`` and a usage of the libc alone.

Every problem with the (untrusted) input becomes one line in ``errors``; only a MemoryError
passes through. Counts are exact, long lists are capped (see limits.py).

``analyse_bounded(doc)`` is the one to call: the same analysis in a child process with a time
and a memory limit (worker.py). It never raises: when the child is stopped (a limit, a crash, an
interrupt), the analysis is empty and its one error starts with ``bounded:``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdsomatrix import processes
from vdsomatrix.analysis.artefacts import decode_ldso, decode_libc, decode_vdso
from vdsomatrix.analysis.libc import analyse_ldso, analyse_libc
from vdsomatrix.analysis.vdso import analyse_vdso
from vdsomatrix.analysis.vdsonames import vdso_usage
from vdsomatrix.errors import BadInput
from vdsomatrix.results import decode_json
from vdsomatrix.text import one_line

__all__ = ["LIMITS", "AnalysisLimits", "analyse_bounded", "analyse_result"]

BOUNDED = "bounded: analysis stopped: "  # the runner copies errors with "bounded:" into a result
EXIT_OUT_OF_MEMORY = 3  # the worker's exit status after a MemoryError


def analyse_result(doc: Any) -> dict[str, Any]:
    """Analyse the vDSO image and libc artefact of one result document (raises MemoryError
    only)."""
    out: dict[str, Any] = {"vdso": None, "libc": None, "ldso": None, "errors": []}
    errors: list[str] = out["errors"]
    steps = (
        ("vdso", "vdso image", decode_vdso, lambda d: analyse_vdso(d.data)),
        ("libc", "libc artefact", decode_libc, lambda d: analyse_libc(d.data, d.meta)),
        ("ldso", "ldso artefact", decode_ldso, lambda d: analyse_ldso(d.data, d.meta)),
    )
    for key, label, decode, analyse in steps:
        try:
            decoded = decode(doc)
            errors.extend(decoded.errors)
            if decoded.data is not None:
                out[key], errs = analyse(decoded)
                errors.extend(errs)
        except MemoryError:
            raise  # the bounded analysis says so, rather than half an analysis
        except Exception as exc:  # a bug or an input nobody foresaw: still one line, a result
            errors.append(f"{label}: analysis failed ({type(exc).__name__}: {one_line(exc)})")
    if out["libc"] is not None:
        try:
            env = doc.get("environment") if isinstance(doc, dict) else None
            env_libc = env.get("libc") if isinstance(env, dict) else None
            out["libc"]["vdso_usage"] = vdso_usage(out["vdso"], out["libc"], env_libc,
                                                   out["ldso"])
        except MemoryError:
            raise
        except Exception as exc:
            errors.append(f"vdso usage: failed ({type(exc).__name__}: {one_line(exc)})")
    return out


# -- bounded ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisLimits:
    """What one bounded analysis may cost. The largest artefact allowed (8 MiB, see
    artefacts.py) needs well under half of each; a real libc a tenth."""

    address_space: int = 3 << 29  # RLIMIT_AS of the child: 1.5 GiB
    cpu_seconds: int = 60  # RLIMIT_CPU of the child
    wall_seconds: float = 120.0  # then the parent kills it, busy or not (a loaded machine)
    output_bytes: int = 8 << 20  # the child's JSON; a real analysis is about 100 KB
    stderr_bytes: int = 8 << 10  # the tail kept, for the reason a child died


LIMITS = AnalysisLimits()


def _stopped(reason: str) -> dict[str, Any]:
    return {"vdso": None, "libc": None, "ldso": None, "errors": [BOUNDED + one_line(reason)]}


def analyse_bounded(doc: Any, limits: AnalysisLimits = LIMITS) -> dict[str, Any]:
    """analyse_result, bounded in time and memory (never raises)."""
    if processes.stopping.is_set():
        return _stopped("interrupted")
    try:
        return _analyse_in_child(doc, limits)
    except processes.Interrupted:
        return _stopped("interrupted")
    except Exception as exc:  # spawning failed, or a bug here: still an analysis
        return _stopped(f"{type(exc).__name__}: {exc}")


def _request(doc: Any) -> dict[str, Any]:
    """The parts of a result document the analysis reads."""
    if not isinstance(doc, dict):
        return {}
    env = doc.get("environment")
    return {"vdso": doc.get("vdso"), "artefacts": doc.get("artefacts"),
            "environment": {"libc": env.get("libc") if isinstance(env, dict) else None}}


def worker_command(limits: AnalysisLimits) -> list[str]:
    # -P: no current directory on sys.path, whatever folder vdsomatrix runs in
    return [sys.executable, "-P", "-m", "vdsomatrix.analysis.worker",
            "--address-space", str(limits.address_space),
            "--cpu-seconds", str(limits.cpu_seconds)]


def _worker_env() -> dict[str, str]:
    """This environment, with the folder vdsomatrix is imported from first on the path (it
    may run from a checkout rather than an installed package)."""
    env = dict(os.environ)
    home = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return env


def _analyse_in_child(doc: Any, limits: AnalysisLimits) -> dict[str, Any]:
    with tempfile.TemporaryFile() as request:
        request.write(json.dumps(_request(doc), allow_nan=False).encode("utf-8"))
        request.seek(0)
        done = processes.run_bounded(worker_command(limits), timeout=limits.wall_seconds,
                                     stdout_cap=limits.output_bytes,
                                     stderr_keep=limits.stderr_bytes, env=_worker_env(),
                                     stdin=request)
    if done.timed_out:
        return _stopped(f"wall-clock limit of {limits.wall_seconds:g} s passed")
    if done.overflow:
        return _stopped(f"output larger than {limits.output_bytes} bytes")
    if done.returncode != 0:
        return _stopped(_exit_reason(done.returncode, done.stderr, limits))
    try:
        result = decode_json(done.stdout, "analysis output")
    except BadInput as exc:
        return _stopped(str(exc))
    if not (isinstance(result, dict) and set(result) == {"vdso", "libc", "ldso", "errors"}
            and isinstance(result["errors"], list)
            and all(isinstance(e, str) for e in result["errors"])):
        return _stopped("analysis output is not an analysis")
    return result


def _exit_reason(code: int, stderr: bytes, limits: AnalysisLimits) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    said = f" ({lines[-1]})" if lines else ""
    if code == EXIT_OUT_OF_MEMORY:
        return f"out of memory (address-space limit of {limits.address_space >> 20} MiB)"
    if code == -signal.SIGXCPU:
        return f"CPU time limit of {limits.cpu_seconds} s reached"
    if code < 0:
        with contextlib.suppress(ValueError):
            name = signal.Signals(-code).name
            if name == "SIGKILL":
                return (f"killed (SIGKILL: the CPU limit of {limits.cpu_seconds} s, or the "
                        f"system out of memory){said}")
            return f"the worker died of {name}{said}"
        return f"the worker died of signal {-code}{said}"
    return f"the worker exited with status {code}{said}"
