"""Result documents: the published schema, bounded decoding, validation, atomic storage, loading.

A result is one JSON document per environment (schema ``vdsomatrix/1``, published as
``schema/result.schema.json`` in this package): what the probe printed, plus what the host added
(``run``, ``analysis``). Documents come from untrusted environments and result files from
anywhere, so every read is bounded in size, nesting and number of containers before it is
decoded, NaN and Infinity are refused, and the shape is checked against the schema before
anything else reads it. Writes are atomic and fsync'd, and compact (indentation can turn a small
deeply nested document into a huge file).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from vdsomatrix import SCHEMA
from vdsomatrix.errors import BadInput

# A real result is about 1.4 MB (most of it the compressed libc and loader the analysis reads),
# with about 1,400 objects and arrays and 5,000 values; the caps leave room for several times
# that plus an analysis at its own cap, and bound what decoding a hostile file can cost.
MAX_DOCUMENT = 16 << 20
MAX_CONTAINERS = 100_000  # objects and arrays
MAX_VALUES = 500_000  # commas: an upper bound on the values of all arrays and objects
MAX_DEPTH = 64


class RunStatus(StrEnum):
    """What happened to an environment as a whole."""

    OK = "ok"
    CRASHED = "crashed"  # the probe or the guest died
    TIMEOUT = "timeout"  # the deadline passed
    FAILED = "failed"  # the backend could not start it
    UNAVAILABLE = "unavailable"  # cannot run on this machine (never written as a result)
    INTERRUPTED = "interrupted"  # the run was stopped meanwhile (never written as a result)


class CallStatus(StrEnum):
    """What happened to one measured call."""

    OK = "ok"
    UNSUPPORTED = "unsupported"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    ERROR = "error"


class RuntimeStatus(StrEnum):
    """What happened to one call of a language runtime (runtime environments)."""

    OK = "ok"
    NOT_SHIPPED = "not_shipped"  # the suite has no package of this runtime
    NOT_INSTALLED = "not_installed"  # the host lacks it
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    ERROR = "error"


class Runtime(StrEnum):
    """The language runtimes a runtime environment measures, in the order reports show them."""

    JAVA = "java"
    PYTHON = "python"
    GO = "go"
    NODE = "node"
    RUST = "rust"


class CallPath(StrEnum):
    """The way into the kernel a row measures."""

    LIBC = "libc"
    VDSO = "vdso"
    SYSCALL = "syscall"
    VSYSCALL = "vsyscall"
    INT80 = "int80"
    KERNEL_VSYSCALL = "kernel_vsyscall"  # i386: call *%gs:0x10 into the vDSO's __kernel_vsyscall


class EntryPath(StrEnum):
    """How an ``entry_costs`` row enters the kernel (or the hypervisor)."""

    INSTRUCTION = "instruction"  # cpuid: a VM exit in a guest, nothing in the kernel
    SYSCALL = "syscall"  # tgkill to self: the system call entry, then the signal round trip
    INT3 = "int3"  # #BP through the IDT, then the signal round trip
    BRK = "brk"  # arm64: the breakpoint instruction's debug exception, then the signal round trip


# ----------------------------------------------------------------------------- decoding ------


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a recursive walk would be the attack)."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((child, level + 1)
                     for child in (node.values() if isinstance(node, dict) else node)
                     if isinstance(child, dict | list))
    return deepest


def decode_json(data: bytes | str, origin: str) -> Any:
    """Standard JSON, bounded: BadInput with a one-line reason for anything beyond the caps.

    The counts are taken on the raw bytes before decoding (a brace or comma inside a string
    counts too, which only makes the bound stricter), so the decoder never builds more than
    :data:`MAX_CONTAINERS` objects and arrays or :data:`MAX_VALUES` values.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_DOCUMENT:
        raise BadInput(f"{origin}: {len(raw)} bytes, more than the {MAX_DOCUMENT >> 20} MiB "
                       "a result may have")
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > MAX_CONTAINERS:
        raise BadInput(f"{origin}: {containers} objects and arrays, more than the "
                       f"{MAX_CONTAINERS} a result may have")
    values = raw.count(b",")
    if values > MAX_VALUES:
        raise BadInput(f"{origin}: {values} values, more than the {MAX_VALUES} a result may "
                       "have")
    try:
        doc = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise BadInput(f"{origin}: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise BadInput(f"{origin}: not valid JSON ({detail})") from None
    if _depth(doc) > MAX_DEPTH:
        raise BadInput(f"{origin}: nested deeper than {MAX_DEPTH} levels")
    return doc


# ----------------------------------------------------------------------------- validation ----


@functools.cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of a result document."""
    text = resources.files("vdsomatrix").joinpath("schema/result.schema.json").read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator():
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def check_document(doc: Any) -> list[str]:
    """Problems with a document's shape, one line each (empty when it is usable)."""
    problems = []
    for error in sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))[:5]:
        where = "/".join(str(p) for p in error.absolute_path) or "the document"
        message = " ".join(error.message.split())
        if len(message) > 160:
            message = message[:159] + "…"
        problems.append(f"{where}: {message}")
    return problems


def parse_document(data: bytes | str, origin: str) -> dict:
    """Decode and check a stored result; BadInput with a one-line reason when unusable."""
    try:
        doc = decode_json(data, origin)
    except BadInput as exc:
        raise BadInput(f"{exc}; re-run its probe") from None
    problems = check_document(doc)
    if problems:
        raise BadInput(f"{origin}: not a {SCHEMA} result ({problems[0]}); re-run its probe")
    return doc


def failure_document(env, status: str, errors: list[str], log_tail: list[str]) -> dict:
    """The result of an environment that produced no usable document: still a result."""
    return {
        "schema": SCHEMA,
        "environment": {"name": env.name},
        "vdso": {},
        "vsyscall": {},
        "calls": [],
        "errors": list(errors),
        "log_tail": list(log_tail),
        "run": {"status": str(status)},
    }


# ----------------------------------------------------------------------------- storage -------


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``path`` so that a reader sees the old file or the new one, never a part.

    The data reaches the disk (fsync) before the rename; on any failure (a full disk among
    them) the temporary file is removed and the old file stays as it was.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_result(doc: dict, out_dir: Path) -> Path:
    """Write ``out_dir/<name>.json`` atomically and compactly."""
    name = doc["environment"]["name"]
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"
    return write_atomic(out_dir / f"{name}.json", text)


def read_result(path: Path) -> dict:
    """One stored result, read with the caps (BadInput when it is unusable)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_DOCUMENT + 1)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    return parse_document(data, str(path))


def machine_id(doc: Any) -> str | None:
    """Which machine a result was made on: ``run.machine.id`` (its --label when one was given);
    results before 0.2 name it by host name alone; None when it says nothing."""
    run = doc.get("run") if isinstance(doc, dict) else None
    machine = run.get("machine") if isinstance(run, dict) else None
    if isinstance(machine, dict):
        machine = machine.get("id")
    return machine if isinstance(machine, str) and machine else None


@dataclass
class LoadedResults:
    documents: list[dict]
    problems: list[str]  # files that could not be used, one line each


def load_results(paths: list[Path]) -> LoadedResults:
    """Load result files and folders of them; unusable files are reported, not fatal.

    Results of several machines are all kept: one per (environment, machine). Two of the same
    environment and machine: the newer (``run.started``) wins, and a problem line says so.
    """
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.json") if not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    docs: dict[tuple[str, str], tuple[dict, Path]] = {}
    for file in files:
        try:
            doc = read_result(file)
        except BadInput as exc:
            problems.append(str(exc))
            continue
        key = (doc["environment"]["name"], machine_id(doc) or "unknown machine")
        if key in docs:
            other, other_file = docs[key]
            newer, older = ((doc, file), (other, other_file))
            if _started(doc) < _started(other):
                newer, older = older, newer
            problems.append(f"{older[1]}: {key[0]!r} of machine {key[1]!r} again, older than "
                            f"{newer[1]}; the newer result is used")
            docs[key] = newer
        else:
            docs[key] = (doc, file)
    return LoadedResults(documents=[doc for doc, _ in docs.values()], problems=problems)


def _started(doc: dict) -> str:
    started = (doc.get("run") or {}).get("started")
    return started if isinstance(started, str) else ""
