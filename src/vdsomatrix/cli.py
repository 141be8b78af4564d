"""The command line: list, probe, run, images, test, report, compare, clean.

Exit codes: 0 ok; 1 a run that failed (an environment produced no result) or, for compare, the
changes --fail-on names, or, for test, a program that did not pass everywhere it ran; 2 bad
input (unknown environment, malformed matrix, no usable result files, no such program); 130
interrupted. Every error is one line saying what to do.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import signal
import sys
from pathlib import Path

from tabulate import tabulate

from vdsomatrix import __version__
from vdsomatrix.backends import get_backend
from vdsomatrix.errors import BadInput, VdsomatrixError
from vdsomatrix.machine import check_label
from vdsomatrix.matrix import BACKENDS, BackendName, Environment, Matrix, load_matrix
from vdsomatrix.paths import default_reports_dir, default_results_dir
from vdsomatrix.processes import stopping


def _matrix(args) -> Matrix:
    return load_matrix(Path(args.matrix) if args.matrix else None)


def _where(env: Environment) -> str:
    # What differs from the plain environment of its kind, said last.
    extra = "".join([", time namespace" if env.time_namespace else "",
                     ", seccomp allow-all" if env.seccomp != "probe" else ""])
    if env.backend == BackendName.HOST:
        return f"this machine, {env.build}"
    if env.backend == BackendName.DOCKER:
        if env.arch != "amd64":
            return f"{env.userland.release} {env.arch} userland (32-bit), {env.build}{extra}"
        return f"{env.suite} userland, {env.build}{extra}"
    return (f"{env.kernel.suite} kernel {env.cmdline or '(default cmdline)'}, "
            f"{env.suite} userland, {env.build}{extra}")


def cmd_list(args) -> int:
    matrix = _matrix(args)
    gates = {name: get_backend(name).can_start() for name in BACKENDS}
    if args.json:
        entries = []
        for env in matrix.environments.values():
            gate = gates[env.backend]
            verdict = gate if not gate.ok else get_backend(env.backend).availability(env)
            entries.append({
                "name": env.name, "backend": str(env.backend), "suite": env.suite,
                "build": str(env.build), "kernel": env.kernel.suite if env.kernel else None,
                "cmdline": env.cmdline, "description": env.description,
                "runs_here": verdict.ok, "reason": verdict.reason or None,
                "note": gate.note or None,
                "tags": [str(env.backend)],
            })
        print(json.dumps(entries, indent=1))
        return 0
    # A reason shared by many environments (no engine, no QEMU) is said once, below the table.
    notes: dict[str, int] = {}
    rows = []
    for env in matrix.environments.values():
        gate = gates[env.backend]
        verdict = gate if not gate.ok else get_backend(env.backend).availability(env)
        why = verdict.reason
        if not gate.ok:
            why = f"see [{notes.setdefault(why, len(notes) + 1)}]"
        rows.append([env.name, str(env.backend), _where(env), "yes" if verdict.ok else "no", why])
    print(tabulate(rows, headers=["environment", "backend", "what", "runs here", "why not"],
                   tablefmt="simple"))
    for reason, number in notes.items():
        print(f"\n[{number}] {reason}")
    for name, gate in gates.items():
        if gate.ok and gate.note:
            print(f"\nnote: {name}: {gate.note}")
    return 0


def _select(matrix: Matrix, names: list[str], backends: list[str]) -> list[Environment]:
    """Environments by name or glob (``--env 'k6.1-*'``), in matrix order, then by backend."""
    if names:
        chosen: dict[str, Environment] = {}
        for pattern in names:
            if not any(ch in pattern for ch in "*?["):
                env = matrix.get(pattern)
                chosen[env.name] = env
                continue
            found = fnmatch.filter(matrix.environments, pattern)
            if not found:
                raise BadInput(f"--env {pattern!r} matches no environment: run `vdsomatrix "
                               "list` to see them")
            chosen.update((n, matrix.environments[n]) for n in found)
        envs = [e for e in matrix.environments.values() if e.name in chosen]
    else:
        envs = list(matrix.environments.values())
    if backends:
        envs = [e for e in envs if e.backend in backends]
    return envs


def _run(args, envs: list[Environment]) -> int:
    from vdsomatrix.runner import run_environments

    out = Path(args.out) if args.out else default_results_dir()
    records = run_environments(envs, out, jobs=args.jobs, rebuild=args.rebuild,
                               deadline=args.deadline, resume=getattr(args, "resume", False),
                               label=args.label)
    produced = [r for r in records if r.path is not None and not r.reused]
    reused = [r for r in records if r.reused]
    skipped = [r for r in records if r.status == "unavailable"]
    failed = [r for r in records if r.status not in ("ok", "unavailable")]
    print(f"{len(produced)} result(s) written to {out}"
          f"{f', {len(reused)} reused' if reused else ''}; {len(failed)} environment(s) "
          f"failed, {len(skipped)} skipped", file=sys.stderr)
    by_reason: dict[str, list[str]] = {}
    for r in skipped:
        by_reason.setdefault(r.message, []).append(r.env.name)
    for reason, names in by_reason.items():
        print(f"  skipped {', '.join(names)}: {reason}", file=sys.stderr)
    for r in failed:
        where = f" (see {r.path})" if r.path else ""
        print(f"  {r.status} {r.env.name}: {r.message}{where}", file=sys.stderr)
    if args.strict and skipped:
        return 1
    return 1 if failed or not produced else 0


def cmd_probe(args) -> int:
    matrix = _matrix(args)
    name = args.env or args.name
    if not name or (args.env and args.name and args.env != args.name):
        raise BadInput("name one environment: `vdsomatrix probe NAME` (see `vdsomatrix list`)")
    env = matrix.get(name)
    args.strict = True
    return _run(args, [env])


def cmd_run(args) -> int:
    matrix = _matrix(args)
    return _run(args, _select(matrix, args.env or [], args.backend or []))


def cmd_images(args) -> int:
    from vdsomatrix.runner import Progress, in_parallel, prepare

    matrix = _matrix(args)
    envs = [e for e in matrix.environments.values() if e.backend == BackendName.DOCKER]
    # A suite no container runs (arm64: guests only) gets its image by preparing one of its
    # guests, which also fetches that guest's kernel and makes its initramfs.
    in_containers = {e.suite for e in envs}
    envs += [e for e in matrix.environments.values() if e.backend == BackendName.QEMU
             and not e.runtimes and e.suite not in in_containers]
    if args.suite:
        unknown = set(args.suite) - set(matrix.suites)
        if unknown:
            raise BadInput(f"unknown suite(s) {sorted(unknown)}: see [suites] in {matrix.path}")
        envs = [e for e in envs if e.suite in args.suite]
    gate = get_backend(BackendName.DOCKER).can_start()
    if not gate.ok:
        print(f"vdsomatrix: {gate.reason}", file=sys.stderr)
        return 1
    # One environment per suite is enough: the image carries all three builds.
    per_suite = {e.suite: e for e in envs}
    progress = Progress(len(per_suite))
    records = []
    in_parallel(args.jobs, lambda e: records.append(prepare(e, rebuild=args.rebuild,
                                                            log=progress.log)),
                per_suite.values())
    progress.close()
    bad = [r for r in records if r is not None]
    for r in bad:
        print(f"vdsomatrix: image for {r.env.suite} not built: {r.message}", file=sys.stderr)
    return 1 if bad else 0


def cmd_test(args) -> int:
    """A user's program in each chosen environment: verdict, prediction, disagreement."""
    from vdsomatrix.program import summary, testing
    from vdsomatrix.results import write_atomic

    matrix = _matrix(args)
    formats = _test_formats(args.format)
    program = testing.load_program(Path(args.program), arguments=args.arguments,
                                   files=[Path(f) for f in args.file or []],
                                   expected_exit=args.expect_exit, timeout=args.timeout)
    envs = testing.select(matrix, args.env or [])
    envs = [e for e in envs if not args.backend or str(e.backend) in args.backend]
    if not envs:
        raise BadInput("no environment chosen: see `vdsomatrix list`")
    tests = testing.run_everywhere(program, envs, results_dir=default_results_dir(),
                                   log=lambda m: print(m, file=sys.stderr))
    if "md" in formats:
        sys.stdout.write(summary.markdown(program, tests))
    if "json" in formats:
        out = Path(args.out) if args.out else testing.default_out(program, default_reports_dir())
        text = json.dumps(summary.document(program, tests), indent=1, allow_nan=False) + "\n"
        print(f"wrote {write_atomic(out, text)}", file=sys.stderr)
    code = summary.exit_code(tests)
    if code:
        ran = sum(t.verdict is not None for t in tests)
        print("vdsomatrix: " + ("the program ran nowhere" if not ran else
                                "the program did not pass everywhere it ran"), file=sys.stderr)
    return code


def _test_formats(values: list[str] | None) -> set[str]:
    words = {w.strip() for v in values or ["md,json"] for w in v.split(",") if w.strip()}
    unknown = words - {"md", "json"}
    if unknown or not words:
        raise BadInput(f"--format {','.join(sorted(unknown)) or '(empty)'}: give md, json or "
                       "md,json")
    return words


def cmd_report(args) -> int:
    """Render the report of result files: REPORT.md, per-table Markdown and CSV, report.json,
    and REPORT.html."""
    from vdsomatrix.report import build_report
    from vdsomatrix.report.exports import parse_formats, write_exports
    from vdsomatrix.report.sections import SECTION_IDS
    from vdsomatrix.results import load_results

    try:
        formats = parse_formats(args.format)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    unknown = [s for s in args.section or [] if s not in SECTION_IDS]
    if unknown:
        raise BadInput(f"unknown section {', '.join(unknown)} (valid: {', '.join(SECTION_IDS)})")
    sources = [Path(p) for p in args.results] if args.results else [default_results_dir()]
    loaded = load_results(sources)
    for problem in loaded.problems:
        print(f"vdsomatrix: skipped {problem}", file=sys.stderr)
    if not loaded.documents:
        raise BadInput(
            f"no usable result files in {', '.join(map(str, sources))}: run `vdsomatrix run` "
            "(or `nox`) first"
        )
    if args.reanalyse:
        from vdsomatrix.analysis import analyse_bounded

        # The stored vDSO and libc bytes are enough: a better analysis needs no re-probing.
        for doc in loaded.documents:
            if doc.get("calls") or doc.get("vdso"):
                doc["analysis"] = analyse_bounded(doc)
    try:
        order = list(_matrix(args).environments)
    except VdsomatrixError:
        order = None
    report = build_report(loaded.documents, order=order, load_problems=loaded.problems,
                          layout=args.layout).only(args.section)
    out_dir = Path(args.out) if args.out else default_reports_dir()
    written = write_exports(report, out_dir, formats)
    print(f"wrote {len(written)} files under {out_dir} ({len(loaded.documents)} environments)",
          file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    """Behaviour and latency changes between two runs, as Markdown for a pull request."""
    from vdsomatrix import compare
    from vdsomatrix.results import write_atomic

    def warn(problem: str) -> None:
        print(f"vdsomatrix: skipped {problem}", file=sys.stderr)

    threshold = compare.parse_percent(args.threshold)
    old = compare.load_side(Path(args.old), "OLD", warn)
    new = compare.load_side(Path(args.new), "NEW", warn)
    comparison = compare.compare(old, new, threshold=threshold, same_machine=args.same_machine)
    text = compare.render(comparison)
    if args.out:
        print(f"wrote {write_atomic(Path(args.out), text)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    code = compare.exit_code(comparison, args.fail_on)
    if code:
        print(f"vdsomatrix: {compare.summary(comparison)} (--fail-on {args.fail_on})",
              file=sys.stderr)
    return code


def cmd_clean(args) -> int:
    """Remove what killed runs left behind; with --images, also images no current tag uses."""
    for name in BACKENDS:
        backend = get_backend(name)
        gate = backend.can_start()
        if not gate.ok:
            print(f"vdsomatrix: {name}: nothing to clean ({gate.reason})", file=sys.stderr)
            continue
        backend.clean(images=args.images, log=lambda m: print(m, file=sys.stderr))
    return 0


def _seconds(text: str) -> float:
    """argparse type of --deadline: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _label(text: str) -> str:
    """argparse type of --label."""
    try:
        return check_label(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _count(text: str) -> int:
    """argparse type of --jobs: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error of vdsomatrix."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vdsomatrix",
        description="vDSO, vsyscall and system-call entry, measured across environments.",
    )
    parser.add_argument("--version", action="version", version=f"vdsomatrix {__version__}")
    parser.add_argument("--matrix", help="matrix file (default: images/matrix.toml)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add_command in (_add_list, _add_probe, _add_run, _add_images, _add_test, _add_report,
                        _add_compare, _add_clean):
        add_command(sub)
    return parser


def _run_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that probes (probe, run)."""
    p.add_argument("--out", help="folder for result files (default: reports/results)")
    p.add_argument("--rebuild", action="store_true", help="rebuild images and helpers")
    p.add_argument("--deadline", type=_seconds, help="seconds before a probe is killed")
    p.add_argument("--jobs", type=_count, default=os.cpu_count() or 1,
                   help="environments prepared (and guests run) at once (default: CPUs)")
    p.add_argument("--label", type=_label,
                   help="name this machine in the results (merging several machines' "
                        "results keeps each machine's; default: an anonymous machine id)")


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="environments of the matrix, and which can run here")
    p.add_argument("--json", action="store_true",
                   help="a JSON array, one object per environment (for CI job matrices)")
    p.set_defaults(func=cmd_list)


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="probe one environment, write OUT/NAME.json")
    p.add_argument("name", nargs="?", help="environment name (see `vdsomatrix list`)")
    p.add_argument("--env", help="the same, as an option")
    _run_options(p)
    p.set_defaults(func=cmd_probe)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="probe several environments (default: all that can run)")
    p.add_argument("--env", action="append",
                   help="an environment, or a glob such as 'k6.1-*' (repeatable)")
    p.add_argument("--backend", action="append", choices=[str(b) for b in BACKENDS],
                   help="only this backend (repeatable)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when an environment is skipped as unavailable")
    p.add_argument("--resume", action="store_true",
                   help="keep each stored result that is complete and was made by the same "
                        "probe, image and kernel; run the others")
    _run_options(p)
    p.set_defaults(func=cmd_run)


def _add_images(sub) -> None:
    p = sub.add_parser("images", help="build (or refresh) the Docker images of the matrix")
    p.add_argument("--suite", action="append", help="only this suite (repeatable)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even when up to date")
    p.add_argument("--jobs", type=_count, default=os.cpu_count() or 1)
    p.set_defaults(func=cmd_images)


def _add_test(sub) -> None:
    p = sub.add_parser(
        "test", help="run your program in each environment: verdict beside prediction "
                     "(containers only for now; exit 1 when it does not pass everywhere)",
        description="Run PROGRAM confined (no network, read-only, as nobody, memory, process "
                    "and time limits) in each chosen environment under the image's launcher, "
                    "and print its verdict there beside the prediction made from its ELF and "
                    "the environment's probe result (reports/results/<env>.json). Not yet: "
                    "containers only; guest (qemu) environments and the host are listed as "
                    "skipped. Arguments for PROGRAM go after `--`.")
    p.add_argument("program", help="the program (an ELF binary or a #! script) to run")
    p.add_argument("arguments", nargs="*", help="its arguments (after `--`)")
    p.add_argument("--env", action="append", metavar="NAME|GLOB",
                   help="an environment or a glob (repeatable; default: every docker "
                        "environment's userland but the runtimes and other variants)")
    p.add_argument("--backend", action="append", choices=[str(BackendName.DOCKER)],
                   help="only this backend (containers: docker)")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                   help="seconds the program may run in each environment (default: 60)")
    p.add_argument("--expect-exit", type=int, default=0, metavar="N",
                   help="the exit status that counts as passing (default: 0)")
    p.add_argument("--file", action="append", metavar="PATH",
                   help="a file the program needs, copied beside it (repeatable; read-only)")
    p.add_argument("--out", help="the JSON document (default: reports/tests/<program>.json)")
    p.add_argument("--format", action="append", metavar="md,json",
                   help="md: the table on stdout; json: the document at --out (default both)")
    p.set_defaults(func=cmd_test)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="render the report (REPORT.md, tables, report.json, "
                                      "REPORT.html) from result files")
    p.add_argument("--results", action="append",
                   help="result file or folder (repeatable; default: reports/results)")
    p.add_argument("--out", help="folder for the report's files (default: reports)")
    p.add_argument("--format", action="append", metavar="md,html,csv,json",
                   help="formats to write, comma-separated and/or repeated (default: all)")
    p.add_argument("--section", action="append", metavar="ID",
                   help="only this section (repeatable; ids as in the report's anchors)")
    p.add_argument("--layout", choices=("rows", "columns"), default="rows",
                   help="rows: a row per environment (default); columns: a column per "
                        "environment (Markdown and HTML; CSV and JSON keep a record per row)")
    p.add_argument("--reanalyse", action="store_true",
                   help="redo the binary analysis from the bytes stored in each result")
    p.set_defaults(func=cmd_report)


# vdsomatrix.compare is imported by the handler only (as report is), so that no other
# command depends on it; its tests check these choices against compare.FAIL_ON.
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="behaviour and latency changes between two runs, as "
                                       "Markdown (exit 1 on changes, see --fail-on)")
    p.add_argument("old", help="OLD run: a folder of result files, or one result file")
    p.add_argument("new", help="NEW run: the same")
    p.add_argument("--threshold", default="10", metavar="PERCENT",
                   help="relative change of the median a latency must exceed (default: 10)")
    p.add_argument("--fail-on", choices=("behaviour", "latency", "none"), default="behaviour",
                   help="exit 1 on behaviour changes (default), on behaviour or latency "
                        "changes, or never")
    p.add_argument("--same-machine", action="store_true",
                   help="compare no latency of an environment whose runs came from different "
                        "machines")
    p.add_argument("--out", help="write the Markdown here instead of to stdout")
    p.set_defaults(func=cmd_compare)


def _add_clean(sub) -> None:
    p = sub.add_parser("clean", help="remove containers and files that killed runs left behind")
    p.add_argument("--images", action="store_true",
                   help="also remove images and caches that no current environment uses")
    p.set_defaults(func=cmd_clean)


def _interrupt(signum, frame) -> None:
    # SIGTERM and SIGHUP stop a run the way Ctrl-C does: children stopped, nothing half-written.
    raise KeyboardInterrupt


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments; for `test`, everything after the first `--` is the program's (argparse
    alone would not take them after options)."""
    words = sys.argv[1:] if argv is None else list(argv)
    if "--" in words:
        cut = words.index("--")
        head = parser.parse_args(words[:cut])
        if head.command == "test":
            head.arguments = [*head.arguments, *words[cut + 1:]]
            return head
    return parser.parse_args(words)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return args.func(args)
    except VdsomatrixError as exc:
        print(f"vdsomatrix: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        stopping.set()
        print("vdsomatrix: interrupted; finished results are kept, unfinished ones not written",
              file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
