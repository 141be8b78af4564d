"""Result documents: validation, atomic storage, loading.

A result is one JSON document per environment (schema ``vdsomatrix/1``), as the probe printed
it, plus what the host added: the run's metadata and the binary analysis. Documents come from
untrusted environments, so they are size-capped, parsed as plain JSON and checked for shape
before anything else reads them.

Shape (fields the host relies on; the probe may add more)::

    {"schema": "vdsomatrix/1",
     "environment": {"name", "backend", "userland": {...}, "libc": {"name", "version", "linkage"},
                     "kernel": {"release", "cmdline", "clocksource"}, "cpu": {...}, "accel"},
     "vdso": {"present", "base", "size", "image" (base64)},
     "vsyscall": {"mode", "readable", "callable"},
     "calls": [{"call", "path", "status", "ns": {"min", "median", "p90"},
                "syscalls_per_call", "detail"}],
     "artefacts": {"libc": {...}, "ldso": {...}},  # zlib+base64 bytes for the analysis
     "analysis": {"vdso", "libc", "ldso", "errors"}, "run": {...},
     "errors": [str]}
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdsomatrix import SCHEMA
from vdsomatrix.errors import BadInput

MAX_DOCUMENT = 64 << 20
STATUSES = ("ok", "unsupported", "crashed", "timeout", "error")
PATHS = ("libc", "vdso", "syscall", "vsyscall", "int80")
RUN_STATUSES = ("ok", "crashed", "timeout", "failed", "unavailable")


def check_document(doc: Any) -> list[str]:
    """Problems with a document's shape, as one-line messages (empty when it is usable)."""
    if not isinstance(doc, dict):
        return ["result is not a JSON object"]
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    env = doc.get("environment")
    if not isinstance(env, dict) or not isinstance(env.get("name"), str):
        problems.append("environment.name missing")
    for key, kind in (("vdso", dict), ("vsyscall", dict), ("calls", list), ("errors", list)):
        if not isinstance(doc.get(key), kind):
            problems.append(f"{key} missing or not a {kind.__name__}")
    for i, row in enumerate(doc.get("calls") or []):
        if not isinstance(row, dict):
            problems.append(f"calls[{i}] is not an object")
            continue
        if not isinstance(row.get("call"), str) or row.get("path") not in PATHS:
            problems.append(f"calls[{i}] has no call name or an unknown path {row.get('path')!r}")
        if row.get("status") not in STATUSES:
            problems.append(f"calls[{i}] has unknown status {row.get('status')!r}")
        ns = row.get("ns")
        if row.get("status") == "ok" and not (
            isinstance(ns, dict)
            and all(isinstance(ns.get(k), int | float) for k in ("min", "median", "p90"))
        ):
            problems.append(f"calls[{i}] is ok but has no numeric ns.min/median/p90")
        spc = row.get("syscalls_per_call")
        if spc is not None and not isinstance(spc, int | float):
            problems.append(f"calls[{i}].syscalls_per_call is not a number")
    return problems


def failure_document(env, status: str, errors: list[str], log_tail: list[str]) -> dict:
    """The result of an environment that produced no usable document: still a result."""
    return {
        "schema": SCHEMA,
        "environment": {"name": env.name, "backend": env.backend, "suite": env.suite,
                        "build": env.build, "cmdline": env.cmdline or None},
        "vdso": {},
        "vsyscall": {},
        "calls": [],
        "errors": list(errors),
        "log_tail": list(log_tail),
        "run": {"status": status},
    }


def write_result(doc: dict, out_dir: Path) -> Path:
    """Write ``out_dir/<name>.json`` atomically: a reader sees the old file or the new one."""
    name = doc["environment"]["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def parse_document(data: bytes | str, origin: str) -> dict:
    """Parse and check a result document; BadInput with a one-line reason when unusable."""
    if len(data) > MAX_DOCUMENT:
        raise BadInput(f"{origin}: larger than {MAX_DOCUMENT} bytes, not a result")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{origin}: not valid JSON ({exc}); re-run its probe") from None
    problems = check_document(doc)
    if problems:
        raise BadInput(f"{origin}: not a {SCHEMA} result ({problems[0]}); re-run its probe")
    return doc


@dataclass
class LoadedResults:
    documents: list[dict]
    problems: list[str]  # files that could not be used, one line each


def load_results(paths: list[Path]) -> LoadedResults:
    """Load result files and folders of them; unusable files are reported, not fatal."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.json") if not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    docs: dict[str, dict] = {}
    for file in files:
        try:
            with file.open("rb") as fh:
                data = fh.read(MAX_DOCUMENT + 1)
            doc = parse_document(data, str(file))
        except OSError as exc:
            problems.append(f"{file}: cannot read ({exc.strerror})")
            continue
        except BadInput as exc:
            problems.append(str(exc))
            continue
        name = doc["environment"]["name"]
        if name in docs:
            problems.append(f"{file}: a second result for {name!r}; the later file wins")
        docs[name] = doc
    return LoadedResults(documents=list(docs.values()), problems=problems)
