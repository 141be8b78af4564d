"""What `vdsomatrix test` says: a Markdown table (program x environment) for a reader, a JSON
document (``vdsomatrix-test/1``) for tools, and the exit code that gates a user's CI.

Every string that came from the program or its container (the cause quotes the program's
stderr, the launcher's errors) is made inert: one line, control characters replaced, and in the
table every Markdown and HTML special escaped (report/cells.py).
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
from typing import Any

from vdsomatrix import __version__
from vdsomatrix.matrix import DEFAULT_ARCH
from vdsomatrix.paths import probes_dir
from vdsomatrix.program.containers import LIMITS
from vdsomatrix.program.testing import EnvironmentTest, Program
from vdsomatrix.report.cells import MISSING, cell, table
from vdsomatrix.text import one_line

SCHEMA = "vdsomatrix-test/1"
MAX_SYSCALL_KEYS = 1024  # distinct numbers kept of a launcher's counts (x86_64 has ~460)
MAX_LAUNCHER_ERRORS = 16
EXIT_PASSED, EXIT_FAILED = 0, 1


@functools.cache
def x86_64_syscall_names() -> dict[int, str]:
    """The x86_64 system-call names the probe's runtime rows already carry
    (probes/runtime_rows.py's SYSCALL_NAMES), read from that file: one table for the tree."""
    tree = ast.parse((probes_dir() / "runtime_rows.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "SYSCALL_NAMES" for t in node.targets):
            return dict(ast.literal_eval(node.value))
    return {}


def syscall_counts(value: Any) -> dict[str, int]:
    """The launcher's counts by number ("59", ..., "other"), type-checked and bounded."""
    if not isinstance(value, dict):
        return {}
    counts = {}
    for key, count in list(value.items())[:MAX_SYSCALL_KEYS]:
        if (isinstance(key, str) and (key.isdigit() or key == "other") and len(key) < 8
                and isinstance(count, int) and not isinstance(count, bool) and count >= 0):
            counts[key] = count
    return counts


def by_name(counts: dict[str, int], arch: str) -> dict[str, int] | None:
    """``counts`` by x86_64 name (unknown numbers as ``syscall_<n>``); None for other ABIs,
    whose numbers the table does not name."""
    if arch != DEFAULT_ARCH:
        return None
    names = x86_64_syscall_names()
    return {(names.get(int(k), f"syscall_{k}") if k.isdigit() else k): n
            for k, n in counts.items()}


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def launcher_facts(test: EnvironmentTest) -> dict[str, Any] | None:
    """What the launcher counted, type-checked and made inert; None when it reported nothing."""
    doc = test.run.document if test.run is not None else None
    if doc is None:
        return None
    counts = syscall_counts(doc.get("syscalls"))
    errors = doc.get("errors") if isinstance(doc.get("errors"), list) else []
    return {
        "traced": doc.get("traced") if isinstance(doc.get("traced"), bool) else None,
        "method": one_line(doc["method"], 40) if isinstance(doc.get("method"), str) else None,
        "processes": _whole(doc.get("processes")), "threads": _whole(doc.get("threads")),
        "syscalls_total": _whole(doc.get("syscalls_total")),
        "syscalls": counts, "syscalls_by_name": by_name(counts, test.env.arch),
        "vsyscall_traps": _whole(doc.get("vsyscall_traps")),
        "output": _output(doc.get("output")),
        "errors": [one_line(e, 300) for e in errors[:MAX_LAUNCHER_ERRORS]],
    }


def _output(value: Any) -> dict[str, dict[str, int | None]]:
    value = value if isinstance(value, dict) else {}
    out = {}
    for stream in ("stdout", "stderr"):
        part = value.get(stream) if isinstance(value.get(stream), dict) else {}
        out[stream] = {key: _whole(part.get(key)) for key in ("passed", "dropped")}
    return out


def entry(test: EnvironmentTest) -> dict[str, Any]:
    """One environment's part of the JSON document."""
    run = test.run
    return {
        "environment": test.env.name, "backend": str(test.env.backend),
        "userland": test.env.suite, "arch": test.env.arch,
        "status": "skipped" if test.skipped else "ran",
        "skipped": one_line(test.skipped, 300) if test.skipped else None,
        "verdict": test.verdict.as_dict() if test.verdict else None,
        "prediction": test.prediction.as_dict() if test.prediction else None,
        "disagreement": test.disagreement,
        "seconds": round(run.seconds, 3) if run is not None else None,
        "problems": [one_line(p, 300) for p in run.problems] if run is not None else [],
        "launcher": launcher_facts(test),
    }


def exit_code(tests: list[EnvironmentTest]) -> int:
    """0 when the program ran somewhere and passed (its expected exit status) everywhere it
    ran; 1 otherwise. Skipped environments fail nothing, but nowhere at all is a failure."""
    ran = [t for t in tests if t.verdict is not None]
    if not ran or any(t.verdict.kind != "passed" for t in ran):
        return EXIT_FAILED
    return EXIT_PASSED


def document(program: Program, tests: list[EnvironmentTest]) -> dict[str, Any]:
    """The ``vdsomatrix-test/1`` document of one program's runs."""
    ran = [t for t in tests if t.verdict is not None]
    return {
        "schema": SCHEMA,
        "vdsomatrix": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "program": {"path": one_line(program.path, 300),
                    "arguments": [one_line(a, 300) for a in program.arguments],
                    "files": [one_line(f.name, 120) for f in program.files],
                    "expected_exit": program.expected_exit, "timeout": program.timeout,
                    "limits": LIMITS, "facts": program.facts},
        "environments": [entry(t) for t in tests],
        "summary": {"ran": len(ran),
                    "passed": sum(t.verdict.kind == "passed" for t in ran),
                    "failed": sum(t.verdict.kind != "passed" for t in ran),
                    "skipped": len(tests) - len(ran),
                    "disagreements": sum(t.disagreement is not None for t in tests),
                    "exit_code": exit_code(tests)},
    }


def markdown(program: Program, tests: list[EnvironmentTest]) -> str:
    """The table a reader sees: one row per environment."""
    name = program.facts.get("name") or program.path.name
    rows = []
    for t in tests:
        prediction = t.prediction.kind if t.prediction else MISSING
        if t.verdict is None:
            rows.append([cell(name), cell(t.env.name), "skipped", cell(t.skipped, 160),
                         cell(prediction), MISSING])
            continue
        flag = MISSING if t.prediction is None or t.prediction.kind == "unknown" else (
            "**yes**: " + cell(t.disagreement, 160) if t.disagreement else "no")
        rows.append([cell(name), cell(t.env.name), cell(t.verdict.kind),
                     cell(t.verdict.cause, 160), cell(prediction), flag])
    headers = ["program", "environment", "verdict", "cause", "prediction", "disagrees"]
    return table(headers, rows) + "\n"
