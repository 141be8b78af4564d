"""Running environments: prepare them in parallel, then measure, then store each result.

Latency is what is measured, so the schedule keeps measurements apart from each other and from
builds: first every environment is prepared (images built, kernels fetched) in parallel; then
the environments that use every CPU (the host, runtime containers) are measured one at a time,
then the containers and last the QEMU guests, several at a time, each pinned to a host CPU of
its own by its backend (a container's cpuset, a guest's vCPU thread).

A result is written the moment its environment finishes, so nothing finished is lost if a later
one fails or the run is interrupted. An environment that was still running when the run was
interrupted writes nothing: its previous result, if any, stays as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vdsomatrix import __version__, contract, machine
from vdsomatrix.backends import get_backend
from vdsomatrix.backends.base import ProbeOutcome
from vdsomatrix.errors import BadInput, VdsomatrixError
from vdsomatrix.matrix import Environment
from vdsomatrix.paths import checkout_root
from vdsomatrix.processes import Interrupted, stopping
from vdsomatrix.results import (
    RunStatus,
    check_document,
    failure_document,
    read_result,
    write_result,
)
from vdsomatrix.text import one_line


@dataclass
class RunRecord:
    env: Environment
    status: RunStatus
    message: str = ""
    path: Path | None = None
    seconds: float = 0.0
    reused: bool = False


class Progress:
    """Plain timestamped lines (CI logs), plus a one-line live status on a terminal."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.live = self.stream.isatty()
        # GitHub Actions folds the lines between ::group:: and ::endgroup:: in a job's log.
        self.folds = os.environ.get("GITHUB_ACTIONS") == "true"

    def _status(self) -> None:
        if self.live:
            running = ", ".join(sorted(self.running)) or "-"
            self.stream.write(f"\r\033[K[{self.done}/{self.total}] running: {running}"[:200])
            self.stream.flush()

    def _line(self, text: str) -> None:
        with self.lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(f"{text}\n")
            self._status()
            self.stream.flush()

    def log(self, message: str) -> None:
        self._line(f"{dt.datetime.now():%H:%M:%S} {message}")

    def group(self, title: str) -> None:
        """Start a folded section of the log under GitHub Actions; elsewhere, nothing."""
        if self.folds:
            self._line(f"::group::{title}")

    def end_group(self) -> None:
        if self.folds:
            self._line("::endgroup::")

    def start(self, name: str) -> None:
        with self.lock:
            self.running.add(name)
            self._status()

    def finish(self, record: RunRecord) -> None:
        with self.lock:
            self.running.discard(record.env.name)
            self.done += 1
        what = "reused" if record.reused else record.status
        self.log(
            f"[{self.done}/{self.total}] {record.env.name}: {what}"
            f" ({record.seconds:.1f} s){' - ' + record.message if record.message else ''}"
        )

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


def deadline_for(env: Environment, deadline: float | None) -> float:
    return deadline or get_backend(env.backend).deadline(env)


def finalize(env: Environment, outcome: ProbeOutcome, started: dt.datetime, note: str,
             fingerprint: str | None = None, label: str | None = None) -> dict:
    """Turn what came back into a stored result: checked, named by the host, analysed.

    Never raises on anything the environment sent: a document that is not usable becomes a
    failure document that says why, and the analysis runs bounded, apart from this process.
    """
    doc, status, errors = outcome.document, RunStatus(outcome.status), list(outcome.errors)
    if doc is not None:
        for host_field in ("run", "analysis"):  # the host's to write, whatever the probe said
            doc.pop(host_field, None)
        problems = check_document(doc)
        if problems:
            errors += [f"probe output unusable: {p}" for p in problems]
            doc, status = None, RunStatus.CRASHED
        else:
            contract.stamp_identity(doc, env, outcome.identity)
    if doc is None:
        if status == RunStatus.OK:
            status = RunStatus.CRASHED
        doc = failure_document(env, status, errors, outcome.log_tail)
        contract.stamp_identity(doc, env, outcome.identity)
    else:
        doc["errors"] = [*doc.get("errors", []), *errors]
        if outcome.log_tail:
            doc["log_tail"] = list(outcome.log_tail)
    doc["run"] = {
        "status": str(status),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(outcome.seconds, 2),
        "machine": machine.identity(label),
        "vdsomatrix": __version__,
        "commit": machine.vdsomatrix_commit(checkout) if (checkout := checkout_root()) else None,
        "concurrency": note,
        "fingerprint": fingerprint,
    }
    if doc.get("calls") or doc.get("vdso"):
        from vdsomatrix.analysis import analyse_bounded

        try:
            analysis = analyse_bounded(doc)
        except Exception as exc:  # analysis must never lose a measured result
            analysis = {"errors": [f"bounded: analysis failed: {type(exc).__name__}: "
                                   f"{one_line(exc)}"]}
        doc["analysis"] = analysis
        doc["errors"] += [f"analysis: {e}" for e in analysis.get("errors", [])
                          if isinstance(e, str) and e.startswith("bounded:")]
    return doc


def measure(env: Environment, out_dir: Path, *, deadline: float | None, note: str,
            log, label: str | None = None) -> RunRecord:
    backend = get_backend(env.backend)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()

    def record(status: RunStatus, message: str = "", path: Path | None = None) -> RunRecord:
        return RunRecord(env, status, message, path, time.monotonic() - t0)

    try:
        outcome = backend.run_probe(env, deadline=deadline_for(env, deadline), log=log)
    except Interrupted:
        outcome = None
    except VdsomatrixError as exc:
        outcome = ProbeOutcome(None, RunStatus.FAILED, [str(exc)])
    except Exception as exc:  # one broken environment never takes the matrix down
        outcome = ProbeOutcome(None, RunStatus.FAILED,
                               [f"backend error: {type(exc).__name__}: {one_line(exc)}"])
    if outcome is None or stopping.is_set():
        # Whatever came back was cut short by the interrupt: it must not replace a result.
        return record(RunStatus.INTERRUPTED, "interrupted; no result written")
    outcome.seconds = outcome.seconds or time.monotonic() - t0
    try:
        doc = finalize(env, outcome, started, note, _fingerprint(env, log), label)
    except Exception as exc:  # a bug of ours: still a result that says so
        doc = failure_document(env, RunStatus.CRASHED,
                               [f"finalizing failed: {type(exc).__name__}: {one_line(exc)}"],
                               outcome.log_tail)
        contract.stamp_identity(doc, env, {})
    if stopping.is_set():
        return record(RunStatus.INTERRUPTED, "interrupted; no result written")
    try:
        path = write_result(doc, out_dir)
    except (OSError, ValueError) as exc:  # a full disk, a read-only folder: the old file stays
        return record(RunStatus.FAILED, f"result not written ({one_line(exc)}); the previous "
                      f"{out_dir / (env.name + '.json')} is unchanged")
    status = RunStatus(doc["run"]["status"])
    message = "" if status == RunStatus.OK else "; ".join(doc["errors"][-2:])[:300]
    return record(status, message, path)


def _fingerprint(env: Environment, log) -> str | None:
    try:
        return get_backend(env.backend).fingerprint(env)
    except Exception as exc:  # only --resume needs it; never a reason to lose a result
        log(f"{env.name}: no fingerprint ({one_line(exc)}); --resume will re-run it")
        return None


def reusable(env: Environment, out_dir: Path, log, label: str | None = None) -> Path | None:
    """The stored result of ``env`` if it is complete and was made by the same probe, image and
    kernel as what would run now (its backend's fingerprint), under the same label; None
    otherwise."""
    path = out_dir / f"{env.name}.json"
    if not path.is_file():
        return None
    try:
        doc = read_result(path)
    except BadInput:
        return None
    run = doc.get("run") or {}
    stored_label = run["machine"].get("label") if isinstance(run.get("machine"), dict) else None
    if run.get("status") != RunStatus.OK or stored_label != label:
        return None
    now = _fingerprint(env, log)
    if not now or run.get("fingerprint") != now:
        return None
    return path


def prepare(env: Environment, *, rebuild: bool, log) -> RunRecord | None:
    """Build what ``env`` needs; a RunRecord when it cannot run, None when it is ready."""
    backend = get_backend(env.backend)
    t0 = time.monotonic()
    try:
        backend.prepare(env, rebuild=rebuild, log=log)
        availability = backend.availability(env)
    except Interrupted:
        return RunRecord(env, RunStatus.INTERRUPTED, "interrupted while preparing",
                         seconds=time.monotonic() - t0)
    except VdsomatrixError as exc:
        return RunRecord(env, RunStatus.UNAVAILABLE, str(exc), seconds=time.monotonic() - t0)
    except Exception as exc:
        return RunRecord(env, RunStatus.UNAVAILABLE,
                         f"preparing failed: {type(exc).__name__}: {one_line(exc)}",
                         seconds=time.monotonic() - t0)
    if not availability.ok:
        return RunRecord(env, RunStatus.UNAVAILABLE, availability.reason,
                         seconds=time.monotonic() - t0)
    return None


def prepare_order(envs: list[Environment]) -> list[Environment]:
    """The order to prepare in: the first environment of every suite, then the second of every
    suite, and so on. Environments of one suite share its images, whose builds take the suite's
    lock in turn: in matrix order, every worker would wait on the same suite while the others'
    debootstraps waited for their turn."""
    seen: dict[str, int] = {}
    ranked = []
    for position, env in enumerate(envs):
        suite = env.suite or env.name
        ranked.append((seen.get(suite, 0), position, env))
        seen[suite] = seen.get(suite, 0) + 1
    return [env for _, _, env in sorted(ranked, key=lambda item: item[:2])]


def in_parallel(jobs: int, work: Callable[[Environment], None],
                envs: Iterable[Environment]) -> None:
    """``work`` on each environment, ``jobs`` at a time. On an interrupt the workers are told
    to stop (processes.stopping) and are waited for, so that nothing is left running."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            for future in [pool.submit(work, env) for env in envs]:
                future.result()
        except BaseException:
            stopping.set()
            raise


def sweep_orphans(backends: Iterable, log) -> None:
    """Remove what killed runs left behind (containers no live run owns), before anything new."""
    for backend in backends:
        try:
            backend.clean(log=log)
        except Exception as exc:  # an engine that went away: its environments will say so
            log(f"{backend.name}: could not look for leftovers ({one_line(exc)})")


def run_environments(envs: list[Environment], out_dir: Path, *, jobs: int, rebuild: bool = False,
                     deadline: float | None = None, resume: bool = False,
                     label: str | None = None, progress: Progress | None = None
                     ) -> list[RunRecord]:
    """Refuse what cannot start here, prepare the rest in parallel, then measure them."""
    stopping.clear()
    progress = progress or Progress(len(envs))
    records: dict[str, RunRecord] = {}

    def done(rec: RunRecord) -> None:
        records[rec.env.name] = rec
        progress.finish(rec)

    ready = _startable(envs, done, progress.log)
    _prepare_all(ready, out_dir, jobs=jobs, rebuild=rebuild, resume=resume, label=label,
                 done=done, progress=progress)
    ready = [env for env in ready if env.name not in records]
    _measure_all(ready, out_dir, jobs=jobs, deadline=deadline, label=label, done=done,
                 progress=progress)
    return [records[e.name] for e in envs if e.name in records]


def _startable(envs: list[Environment], done: Callable[[RunRecord], None], log
               ) -> list[Environment]:
    """The environments whose backend can work here at all (the others are refused at once,
    with the backend's reason: no engine, no QEMU); what killed runs left is swept first."""
    ready: list[Environment] = []
    gates = {name: get_backend(name).can_start() for name in {e.backend for e in envs}}
    for name, gate in gates.items():
        if gate.ok and gate.note:
            log(f"note: {name}: {gate.note}")
    for env in envs:
        verdict = gates[env.backend]
        if verdict.ok:
            ready.append(env)
        else:
            done(RunRecord(env, RunStatus.UNAVAILABLE, verdict.reason))
    sweep_orphans({get_backend(e.backend) for e in ready}, log)
    return ready


def _prepare_all(ready: list[Environment], out_dir: Path, *, jobs: int, rebuild: bool,
                 resume: bool, label: str | None, done: Callable[[RunRecord], None],
                 progress: Progress) -> None:
    """Images and kernels, in parallel; an environment that cannot be prepared, or whose
    result can be reused (--resume), is done here."""
    log = progress.log

    def prep(env: Environment) -> None:
        rec = prepare(env, rebuild=rebuild, log=log)
        if rec is None and resume and (path := reusable(env, out_dir, log, label)):
            rec = RunRecord(env, RunStatus.OK, "", path, reused=True)
            _mark_reused(path, log)
        if rec is not None:
            done(rec)

    progress.group("prepare: images and kernels")
    in_parallel(jobs, prep, prepare_order(ready))
    progress.end_group()
    if stopping.is_set():
        raise KeyboardInterrupt


def _measure_all(ready: list[Environment], out_dir: Path, *, jobs: int, deadline: float | None,
                 label: str | None, done: Callable[[RunRecord], None], progress: Progress
                 ) -> None:
    """The environments that use every CPU alone, then each backend's pinned ones (containers,
    then guests), up to ``jobs`` at a time, each on a host CPU of its own."""
    alone = [e for e in ready if not get_backend(e.backend).pinned(e)]
    note_alone = "measured alone: no other probe or build of this run ran meanwhile"

    def note_pinned(backend: str) -> str:
        kind = "guests" if backend == "qemu" else "containers"
        return (f"{kind} ran up to {jobs} at a time, each pinned to its own host CPU; no other "
                "kind of environment and no build ran meanwhile")

    def run_one(env: Environment, note: str) -> None:
        progress.start(env.name)
        done(measure(env, out_dir, deadline=deadline, note=note, log=progress.log, label=label))

    try:
        for env in alone:
            run_one(env, note_alone)
    except BaseException:
        stopping.set()
        raise
    for backend in dict.fromkeys(str(e.backend) for e in ready):
        pinned = [e for e in ready if str(e.backend) == backend and e not in alone]
        if pinned:
            in_parallel(jobs, lambda e, b=backend: run_one(e, note_pinned(b)), pinned)
    progress.close()
    if stopping.is_set():
        raise KeyboardInterrupt


def _mark_reused(path: Path, log) -> None:
    """Note in a reused result when it was reused, so the report can say so."""
    try:
        doc = read_result(path)
        doc["run"]["reused"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        write_result(doc, path.parent)
    except (BadInput, OSError, KeyError, TypeError) as exc:
        log(f"{path.name}: reused, but could not be marked so ({one_line(exc)})")
