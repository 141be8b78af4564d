"""`vdsomatrix test PROGRAM`: a user's program in each chosen environment, the verdict of what
happened there beside the prediction made from its ELF and the environment's probed facts.

Containers only, for now (x86_64 and i386 userlands): a guest environment, or the host, is
listed as skipped with :data:`NOT_YET`. Images are prepared as for a probe run
(runner.prepare); the runs themselves are :mod:`.containers`'.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdsomatrix.engine.client import close, docker_client, find_image
from vdsomatrix.engine.workdirs import owned_tempdir
from vdsomatrix.errors import BadInput, VdsomatrixError
from vdsomatrix.images import probe_image
from vdsomatrix.matrix import BackendName, Build, Environment, Matrix
from vdsomatrix.program import containers
from vdsomatrix.program.elf import ProgramRefused, analyse_program, read_program
from vdsomatrix.program.predict import Prediction, disagreement, predict
from vdsomatrix.program.verdict import Verdict, judge, outcome_from_dict
from vdsomatrix.results import read_result
from vdsomatrix.text import one_line

NOT_YET = "not yet: containers only (guests and the host come later)"
WORK_PREFIX = "vdsomatrix-test-"
API_TIMEOUT = 120.0  # seconds for ordinary engine requests, as the docker backend's


@dataclass
class EnvironmentTest:
    """What happened to the program in one environment. ``skipped`` is the reason it did not
    run there (then there is no verdict)."""

    env: Environment
    skipped: str = ""
    verdict: Verdict | None = None
    prediction: Prediction | None = None
    disagreement: str | None = None
    run: containers.ProgramRun | None = None


@dataclass(frozen=True)
class Program:
    """The program as read and analysed on the host, and how it is to be run."""

    path: Path
    data: bytes
    facts: dict[str, Any]
    arguments: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    expected_exit: int = 0
    timeout: float = 60.0


def load_program(path: Path, *, arguments: list[str], files: list[Path], expected_exit: int,
                 timeout: float) -> Program:
    """Read and analyse PROGRAM on the host; BadInput (one line) when it cannot be a program:
    missing, a directory, not a regular file, too large. A file that is neither ELF nor #! is
    still run (the verdict is then the kernel's ENOEXEC)."""
    try:
        data = read_program(path)
    except ProgramRefused as exc:
        raise BadInput(f"{exc}: give the path of a program file") from None
    checked = tuple(containers.check_file(Path(f)) for f in files)
    return Program(path=path, data=data, facts=analyse_program(data, path.name),
                   arguments=tuple(arguments), files=checked, expected_exit=expected_exit,
                   timeout=timeout)


def default_out(program: Program, reports: Path) -> Path:
    """Where the JSON document goes without --out: reports/tests/<program name>.json."""
    return reports / "tests" / f"{containers.folder_name(program.path.name)}.json"


def default_environments(matrix: Matrix) -> list[Environment]:
    """Every docker environment but the runtimes, time-namespace and seccomp variants, one per
    userland image: the static and musl builds of a suite are the same image (they differ only
    in the probe's build), so the program would run there three times to the same end."""
    return [env for env in matrix.environments.values()
            if env.backend == BackendName.DOCKER and env.build == Build.DYNAMIC
            and not env.time_namespace and env.seccomp == "probe"]


def select(matrix: Matrix, patterns: list[str]) -> list[Environment]:
    """Environments by name or glob, in matrix order; the default set without ``patterns``."""
    if not patterns:
        return default_environments(matrix)
    chosen: set[str] = set()
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?["):
            chosen.add(matrix.get(pattern).name)
            continue
        found = fnmatch.filter(matrix.environments, pattern)
        if not found:
            raise BadInput(f"--env {pattern!r} matches no environment: run `vdsomatrix list` "
                           "to see them")
        chosen.update(found)
    return [env for env in matrix.environments.values() if env.name in chosen]


def why_not(env: Environment) -> str:
    """Why ``env`` cannot run a program at all in this version ("" when it can)."""
    if env.backend != BackendName.DOCKER:
        return NOT_YET
    if env.runtimes:
        return "a language-runtime environment measures runtimes: test in its plain suite"
    return ""


def prediction_for(env: Environment, facts: dict[str, Any], results_dir: Path
                   ) -> tuple[Prediction, dict[str, Any] | None]:
    """The prediction from ``results_dir/<env>.json`` (bounded read), and that document."""
    path = results_dir / f"{env.name}.json"
    if not path.is_file():
        # Some programs need no fact of the environment (not a program at all, a #! line
        # without an interpreter): their prediction stands without a probe result.
        alone = predict(facts, {})
        if alone.kind != "unknown" and not alone.missing_facts:
            return alone, None
        return Prediction("unknown", f"no probe result for {env.name}: run `vdsomatrix probe "
                          f"{env.name}` first"), None
    try:
        doc = read_result(path)
    except VdsomatrixError as exc:
        return Prediction("unknown", one_line(f"the probe result cannot be used: {exc}", 300)
                          ), None
    return predict(facts, doc), doc


def verdict_of(run: containers.ProgramRun, program: Program,
               env_doc: dict[str, Any] | None) -> Verdict:
    """The verdict of one container run; a run the launcher reported nothing of is a failure
    saying why, unless the container's deadline or memory limit explains it."""
    outcome = outcome_from_dict(containers.outcome_fields(run, program.expected_exit))
    if run.document is None and not (outcome.timed_out or outcome.oom_killed):
        why = "; ".join(run.problems) or "the launcher reported nothing"
        return Verdict("failed", one_line(f"no verdict: {why}", 300))
    return judge(outcome, env_doc, program.facts)


def run_in(env: Environment, program: Program, *, client, folder: Path, name: str,
            results_dir: Path, log: Callable[[str], Any]) -> EnvironmentTest:
    """Run the staged program in one (prepared) docker environment and judge it."""
    prediction, env_doc = prediction_for(env, program.facts, results_dir)
    image = find_image(client, probe_image.image_tag(env.userland))
    if image is None:
        return EnvironmentTest(env, skipped="its image is not built", prediction=prediction)
    run = containers.run_program(client, image.id, folder, name, list(program.arguments),
                                 name=env.name, timeout=program.timeout, log=log)
    verdict = verdict_of(run, program, env_doc)
    return EnvironmentTest(env, verdict=verdict, prediction=prediction,
                           disagreement=disagreement(prediction, verdict), run=run)


def run_everywhere(program: Program, envs: list[Environment], *, results_dir: Path,
                 prepare: Callable[..., Any] | None = None,
                 client_factory: Callable[..., Any] | None = None,
                 log: Callable[[str], Any] = print) -> list[EnvironmentTest]:
    """The program in each of ``envs``, in order: prepared (runner.prepare unless ``prepare``
    is given: env -> a record with a ``message`` when it cannot run, None when ready), run,
    judged. ``client_factory`` (tests) stands in for engine.client.docker_client."""
    if prepare is None:
        from vdsomatrix.runner import prepare as prepare_env

        def prepare(env):
            return prepare_env(env, rebuild=False, log=log)

    tests: list[EnvironmentTest] = []
    runnable = []
    for env in envs:
        reason = why_not(env)
        if not reason:
            record = prepare(env)
            reason = record.message if record is not None else ""
        if reason:
            tests.append(EnvironmentTest(env, skipped=reason))
        else:
            runnable.append(env)
    if runnable:
        tests += _run_all(program, runnable, results_dir=results_dir,
                          client_factory=client_factory or docker_client, log=log)
    order = {env.name: i for i, env in enumerate(envs)}
    return sorted(tests, key=lambda t: order[t.env.name])


def _run_all(program: Program, envs: list[Environment], *, results_dir: Path,
             client_factory: Callable[..., Any], log: Callable[[str], Any]
             ) -> list[EnvironmentTest]:
    client = client_factory(timeout=API_TIMEOUT)
    try:
        with owned_tempdir(WORK_PREFIX) as folder:
            name = containers.stage(folder, program.path.name, program.data,
                                    list(program.files))
            tests = []
            for env in envs:
                started = time.monotonic()
                test = run_in(env, program, client=client, folder=folder, name=name,
                               results_dir=results_dir, log=log)
                log(f"[{env.name}] {test.verdict.kind if test.verdict else 'skipped'} "
                    f"({time.monotonic() - started:.1f} s)")
                tests.append(test)
            return tests
    finally:
        close(client)
