"""A user's program run in one docker environment: staged on the host, launched in a container
with the probe's confinement, and what came back read bounded.

The program and its files are copied into a host folder of this run's own (engine/workdirs.py)
that is bind-mounted read-only at ``contract.PROGRAM_FOLDER``: the program can change neither
itself nor the image (the root is read-only too), and it cannot run anything it writes, since
the one writable place, the tmpfs /tmp, is noexec. It runs under the image's launcher
(``contract.launch_argv``) in an engine.Container (no network, nobody, no capabilities, the
probe's seccomp profile, memory and pid limits, a deadline), removed whatever happens.

Everything the container sends back is hostile: the launcher's document is decoded bounded
(results.decode_json) and type-checked where it is read (verdict.outcome_from_dict), the
output is the engine's bounded tail. A program could forge the document of its own run (it
runs as the same user as its launcher); it would only lie about itself, and a forged
document is still only data.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vdsomatrix import contract
from vdsomatrix.engine import seccomp
from vdsomatrix.engine.client import is_engine_error
from vdsomatrix.engine.container import (
    MEM_LIMIT,
    PIDS_LIMIT,
    Container,
    ContainerRun,
    probe_confinement,
)
from vdsomatrix.errors import BadInput, VdsomatrixError
from vdsomatrix.results import decode_json
from vdsomatrix.text import one_line

OUTPUT_CAP = 256 << 10  # bytes of each of the program's stdout and stderr passed through
# Creating, starting and removing a container, and the launcher's own start and report: the
# container's deadline is the program's plus this.
STARTUP_ALLOWANCE = 20.0
SELF_KILL_GRACE = 15.0  # as the probe's containers: when nobody is left to kill it
MAX_FILES_BYTES = 256 << 20  # the program's --file files together
SAFE_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


@dataclass
class ProgramRun:
    """One container run of the program: the launcher's document (None when none came back,
    ``problems`` say why), the container's run, the seconds it took."""

    document: dict[str, Any] | None = None
    container: ContainerRun | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def folder_name(name: str) -> str:
    """A file name for the program or a file inside the folder: ``name``'s own when it is plain,
    else a plain one (the name a user gave is hostile text in a command line)."""
    plain = name if name and set(name) <= SAFE_NAME and name not in (".", "..") else ""
    return plain[:100] or "program"


def stage(folder: Path, program_name: str, program: bytes, files: list[Path]) -> str:
    """Write the program (its bytes as read and analysed) and copies of ``files`` into
    ``folder``, readable by the container's user (nobody); the program's name there."""
    folder.chmod(0o755)
    name = folder_name(program_name)
    target = folder / name
    target.write_bytes(program)
    target.chmod(0o755)
    total = 0
    for path in files:
        copy = folder / folder_name(path.name)
        if copy.exists():
            raise BadInput(f"--file {one_line(path)}: a file named {copy.name} is already "
                           "there (the program or another --file); rename one")
        info = path.stat()
        total += info.st_size
        if total > MAX_FILES_BYTES:
            raise BadInput(f"the --file files are more than {MAX_FILES_BYTES >> 20} MiB together")
        shutil.copyfile(path, copy)
        copy.chmod(0o755 if info.st_mode & stat.S_IXUSR else 0o644)
    return name


def check_file(path: Path) -> Path:
    """A --file: an existing regular file (BadInput otherwise)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise BadInput(f"--file {one_line(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise BadInput(f"--file {one_line(path)} is {what}: give a regular file")
    if not os.access(path, os.R_OK):
        raise BadInput(f"--file {one_line(path)}: not readable")
    return path


def engine_version(client) -> str | None:
    """The engine's version, for the seccomp profile's base; None when it does not say."""
    try:
        version = client.version().get("Version")
    except Exception:  # the engine's default profile is used then, as for the probe
        return None
    return None if version is None else str(version)


def run_program(client, image_id: str, folder: Path, program: str, arguments: list[str], *,
                name: str, timeout: float, log: Callable[[str], Any] = print) -> ProgramRun:
    """Run ``folder/program arguments`` in a container of ``image_id`` under the launcher, the
    program's deadline ``timeout`` seconds; what came back (never raises for what the program
    or the engine did)."""
    profile = seccomp.build(seccomp.PROBE, time_namespace=False,
                            engine_version=engine_version(client))
    confinement = replace(probe_confinement(seccomp=profile.text),
                          volumes=((str(folder), contract.PROGRAM_FOLDER, "ro"),))
    argv = contract.launch_argv(program, arguments, timeout=timeout, output_cap=OUTPUT_CAP)
    limit = timeout + STARTUP_ALLOWANCE
    try:
        with Container(client, image_id, argv, name=f"test-{name}",
                       lifetime=limit + SELF_KILL_GRACE, confinement=confinement,
                       log=log) as box:
            run = box.run(limit, stdout_cap=contract.MAX_LAUNCH_DOCUMENT)
    except Exception as exc:
        if not is_engine_error(exc):
            raise
        return ProgramRun(problems=[f"the engine failed: {one_line(exc)}"])
    return read_run(run)


def read_run(run: ContainerRun) -> ProgramRun:
    """The launcher's document out of a finished container run, or why there is none."""
    out = ProgramRun(container=run, seconds=run.seconds, problems=list(run.errors))
    if run.timed_out:
        out.problems.append("the container did not finish within its deadline; killed")
        return out
    if run.overflow:
        out.problems.append("the launcher's document passed its cap; the container was killed")
        return out
    if not run.stdout.strip():
        why = "out of memory" if run.oom_killed else f"the container's status {run.exit_code}"
        out.problems.append(f"the launcher wrote no document ({why})")
        return out
    try:
        doc = decode_json(run.stdout, "the launcher's document")
    except VdsomatrixError as exc:
        out.problems.append(str(exc))
        return out
    if not isinstance(doc, dict) or doc.get("launcher") != "vdsomatrix-launch/1":
        out.problems.append("the launcher's document is not a vdsomatrix-launch/1 object")
        return out
    out.document = doc
    return out


def outcome_fields(run: ProgramRun, expected_exit: int) -> dict[str, Any]:
    """The fields verdict.outcome_from_dict reads: the launcher's, the container's stderr (the
    program's output, bounded) and its OOMKilled state, and the expected exit status."""
    doc = dict(run.document or {})
    container = run.container
    doc["stderr"] = container.stderr if container is not None else b""
    doc["oom_killed"] = bool(container is not None and container.oom_killed)
    if container is not None and container.timed_out:
        doc["timed_out"] = True
        doc["seconds"] = container.seconds
    doc["expected_exit"] = expected_exit
    return doc


LIMITS = {"memory": MEM_LIMIT, "pids": PIDS_LIMIT, "output_cap": OUTPUT_CAP}
