"""Running environments: prepare them in parallel, then measure, then store each result.

Latency is what is measured, so the schedule keeps measurements apart from each other and from
builds: first every environment is prepared (images built, kernels fetched) in parallel; then
the environments that share the host's CPUs (host, containers) are measured one at a time, and
last the QEMU guests, several at a time, each pinned to a host CPU of its own by its backend.
A result is written the moment its environment finishes, so nothing finished is lost if a later
one fails or the run is interrupted.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vdsomatrix import __version__
from vdsomatrix.backends import get_backend
from vdsomatrix.backends.base import ProbeOutcome
from vdsomatrix.errors import VdsomatrixError
from vdsomatrix.matrix import Environment
from vdsomatrix.results import check_document, failure_document, write_result

# A guest boots and probes in 10-20 s under TCG here; the deadline leaves room for slow machines.
DEFAULT_DEADLINE = {"host": 300.0, "docker": 300.0, "qemu": 240.0}


@dataclass
class RunRecord:
    env: Environment
    status: str  # ok | crashed | timeout | failed | unavailable
    message: str = ""
    path: Path | None = None
    seconds: float = 0.0


class Progress:
    """Plain timestamped lines (CI logs), plus a one-line live status on a terminal."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.live = self.stream.isatty()

    def _status(self) -> None:
        if self.live:
            running = ", ".join(sorted(self.running)) or "-"
            self.stream.write(f"\r\033[K[{self.done}/{self.total}] running: {running}"[:200])
            self.stream.flush()

    def log(self, message: str) -> None:
        with self.lock:
            if self.live:
                self.stream.write("\r\033[K")
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            self.stream.write(f"{stamp} {message}\n")
            self._status()
            self.stream.flush()

    def start(self, name: str) -> None:
        with self.lock:
            self.running.add(name)
            self._status()

    def finish(self, record: RunRecord) -> None:
        with self.lock:
            self.running.discard(record.env.name)
            self.done += 1
        self.log(
            f"[{self.done}/{self.total}] {record.env.name}: {record.status}"
            f" ({record.seconds:.1f} s){' - ' + record.message if record.message else ''}"
        )

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


def finalize(env: Environment, outcome: ProbeOutcome, started: dt.datetime, note: str) -> dict:
    """Turn what came back into a stored result: checked, named by the host, analysed."""
    doc = outcome.document
    status = outcome.status
    errors = list(outcome.errors)
    if doc is not None:
        problems = check_document(doc)
        if problems:
            errors += [f"probe output unusable: {p}" for p in problems[:5]]
            doc, status = None, "crashed"
    if doc is None:
        doc = failure_document(env, status if status != "ok" else "crashed", errors,
                               outcome.log_tail)
    else:
        doc["errors"] = [str(e) for e in doc.get("errors", [])] + errors
        if outcome.log_tail:
            doc["log_tail"] = [str(line) for line in outcome.log_tail]
    identity = doc.setdefault("environment", {})
    # The host names the environment; whatever the probe claimed is kept aside.
    if identity.get("name") != env.name and identity.get("name") is not None:
        identity["probe_name"] = identity.get("name")
    identity.update(name=env.name, backend=env.backend, suite=env.suite, build=env.build)
    if env.backend == "qemu":
        identity.update(kernel_suite=env.kernel, matrix_cmdline=env.cmdline)
    doc["run"] = {
        **(doc.get("run") or {}),
        "status": status,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(outcome.seconds, 2),
        "machine": platform.node(),
        "vdsomatrix": __version__,
        "concurrency": note,
    }
    if doc.get("calls") or doc.get("vdso"):
        try:
            from vdsomatrix.analysis import analyse_result

            doc["analysis"] = analyse_result(doc)
        except Exception as exc:  # analysis must never lose a measured result
            doc["errors"].append(f"analysis failed: {type(exc).__name__}: {exc}")
    return doc


def measure(env: Environment, out_dir: Path, *, deadline: float | None, note: str,
            log) -> RunRecord:
    backend = get_backend(env.backend)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    limit = deadline or DEFAULT_DEADLINE[env.backend]
    try:
        outcome = backend.run_probe(env, deadline=limit, log=log)
    except VdsomatrixError as exc:
        outcome = ProbeOutcome(None, "failed", [str(exc)])
    except Exception as exc:  # one broken environment never takes the matrix down
        outcome = ProbeOutcome(None, "failed", [f"backend error: {type(exc).__name__}: {exc}"])
    outcome.seconds = outcome.seconds or time.monotonic() - t0
    doc = finalize(env, outcome, started, note)
    path = write_result(doc, out_dir)
    status = doc["run"]["status"]
    message = "" if status == "ok" else "; ".join(doc["errors"][-2:])[:300]
    return RunRecord(env, status, message, path, time.monotonic() - t0)


def prepare(env: Environment, *, rebuild: bool, log) -> RunRecord | None:
    """Build what ``env`` needs; a RunRecord when it cannot run, None when it is ready."""
    backend = get_backend(env.backend)
    t0 = time.monotonic()
    try:
        backend.prepare(env, rebuild=rebuild, log=log)
        availability = backend.availability(env)
    except VdsomatrixError as exc:
        return RunRecord(env, "unavailable", str(exc), seconds=time.monotonic() - t0)
    except Exception as exc:
        return RunRecord(env, "unavailable", f"preparing failed: {type(exc).__name__}: {exc}",
                         seconds=time.monotonic() - t0)
    if not availability.ok:
        return RunRecord(env, "unavailable", availability.reason, seconds=time.monotonic() - t0)
    return None


def run_environments(envs: list[Environment], out_dir: Path, *, jobs: int, rebuild: bool = False,
                     deadline: float | None = None, progress: Progress | None = None
                     ) -> list[RunRecord]:
    progress = progress or Progress(len(envs))
    log = progress.log
    records: dict[str, RunRecord] = {}

    # 1. Fast refusal for environments whose backend cannot work here at all (no engine...).
    ready: list[Environment] = []
    for env in envs:
        gate = getattr(get_backend(env.backend), "can_start", None)
        verdict = gate() if gate else None
        if verdict is not None and not verdict.ok:
            rec = RunRecord(env, "unavailable", verdict.reason)
            records[env.name] = rec
            progress.finish(rec)
        else:
            ready.append(env)

    # 2. Prepare in parallel.
    def prep(env: Environment) -> None:
        rec = prepare(env, rebuild=rebuild, log=log)
        if rec is not None:
            records[env.name] = rec
            progress.finish(rec)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(prep, ready))
    ready = [env for env in ready if env.name not in records]

    # 3. Measure: CPU-sharing environments alone, then guests in parallel.
    shared = [e for e in ready if get_backend(e.backend).shares_host_cpu]
    pinned = [e for e in ready if not get_backend(e.backend).shares_host_cpu]
    note_shared = "measured alone: no other probe or build of this run ran meanwhile"
    note_pinned = (f"guests ran up to {jobs} at a time, each pinned to its own host CPU; "
                   "no host or container probe ran meanwhile")

    def run_one(env: Environment, note: str) -> None:
        progress.start(env.name)
        rec = measure(env, out_dir, deadline=deadline, note=note, log=log)
        records[env.name] = rec
        progress.finish(rec)

    for env in shared:
        run_one(env, note_shared)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda e: run_one(e, note_pinned), pinned))
    progress.close()
    return [records[e.name] for e in envs if e.name in records]
