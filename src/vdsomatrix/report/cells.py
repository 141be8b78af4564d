"""What every cell of the report is made of, in one place.

Reading: a result document came from an environment, so each part is type-checked as it is read
(:class:`Result`, :func:`part`), never indexed blindly: a part of the wrong type reads as absent.
Counting: the medians and the "entered the kernel" threshold every table shares.
Writing: the missing-value mark, numbers, and the escaping of everything an environment said
(symbol names, paths, os-release fields, console lines), so that no environment can put markup,
links, headings or HTML into the report. Control characters are made inert by
:mod:`vdsomatrix.text`, the invisible characters that reorder text here.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from tabulate import tabulate

from vdsomatrix.matrix import Build
from vdsomatrix.results import machine_id
from vdsomatrix.text import plain

MISSING = "—"  # the mark of a value a table needs and the document does not have
# A count per call is an average over many calls, so it is rounded: at least one kernel entry
# per call on average (a system call, or a trap) means the call entered the kernel.
ENTERS_KERNEL = 0.5
# Above this a median is not a latency anyone measured; it is written compactly, not in full.
LARGEST_PLAIN_NS = 1e12
RUNTIMES_BUILD = str(Build.RUNTIMES)  # the build of an environment that runs only runtime rows
I386 = "i386"  # the ABI of a 32-bit x86 process (environment.abi; environment.arch says "i386")
AARCH64 = "aarch64"  # the ABI of an arm64 process (environment.abi; environment.arch says "arm64")
# Each ABI's Debian architecture, the userland's ``environment.arch``.
DEBIAN_ARCH = {"x86_64": "amd64", I386: "i386", AARCH64: "arm64"}


# ----------------------------------------------------------------------- reading --------------

def part(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None as soon as a step is not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def entries(value: Any) -> list:
    """A list, or an empty one for anything else."""
    return value if isinstance(value, list) else []


def whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (integers no float can hold
    among them)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def text(value: Any) -> str | None:
    """A string or a number as text; None for anything else (an object, a list, a boolean)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # an integer with more digits than Python will print
            return "(a number too long to show)"
    return None


class Result:
    """One result document as the report reads it: the parts every table needs, type-checked."""

    def __init__(self, doc: Any, position: int = 0):
        self.doc = doc if isinstance(doc, dict) else {}
        environment = self.doc.get("environment")
        self.environment = environment if isinstance(environment, dict) else {}
        name = self.environment.get("name")
        self.name = name if isinstance(name, str) and name else f"result #{position + 1}"
        self.backend = text(self.environment.get("backend"))
        self.emulated = self.environment.get("accel") == "tcg"
        self.calls = [row for row in entries(self.doc.get("calls")) if isinstance(row, dict)]
        analysis = self.doc.get("analysis")
        self.analysis = analysis if isinstance(analysis, dict) else None
        vdso, libc = part(self.analysis, "vdso"), part(self.analysis, "libc")
        self.vdso_analysis = vdso if isinstance(vdso, dict) else None
        self.libc_analysis = libc if isinstance(libc, dict) else None
        self.analysis_errors = [e for e in entries(part(self.analysis, "errors"))
                                if isinstance(e, str)]
        self.machine = machine_of(self.doc)
        # The language runtimes' rows (only in a runtime environment's result: see runtimes.py)
        self.runtimes = [row for row in entries(self.doc.get("runtimes"))
                         if isinstance(row, dict)]
        self.abi = abi_of(self.environment)
        self.subject = None  # its model.Subject, given by the page

    @property
    def arch(self) -> str:
        """The userland's Debian architecture (``environment.arch``, else the ABI's)."""
        arch = self.environment.get("arch")
        return arch if arch in DEBIAN_ARCH.values() else DEBIAN_ARCH[self.abi]

    @property
    def arm64(self) -> bool:
        """Whether the probe ran as an arm64 process (its rows are of another architecture)."""
        return self.abi == AARCH64

    @property
    def i386(self) -> bool:
        """Whether the probe ran as a 32-bit x86 process (its rows are of another ABI)."""
        return self.abi == I386

    @property
    def label(self) -> str:
        """What the tables call it: its Subject's label (the page adds machine and †)."""
        return self.subject.label if self.subject is not None else self.name

    def get(self, *keys: str) -> Any:
        return part(self.doc, *keys)

    def text(self, *keys: str) -> str | None:
        return text(self.get(*keys))

    @property
    def runtime_only(self) -> bool:
        """Whether this environment measured the language runtimes instead of the C rows
        (``environment.build == "runtimes"``, or no C rows beside a ``runtimes`` list): its
        place is the runtime section and the environment list, not the C tables."""
        return self.environment.get("build") == RUNTIMES_BUILD or (
            not self.calls and isinstance(self.doc.get("runtimes"), list))

    @property
    def run_status(self) -> str:
        return self.text("run", "status") or "ok"


def abi_of(environment: dict) -> str:
    """The ABI the probe process ran with: ``environment.abi`` ("i386", "x86_64" or
    "aarch64"), else the userland's ``environment.arch`` ("i386" | "amd64" | "arm64");
    "x86_64" for a result that says neither (every result before 32-bit userlands)."""
    abi, arch = environment.get("abi"), environment.get("arch")
    if abi in DEBIAN_ARCH:
        return abi
    return {I386: I386, "arm64": AARCH64}.get(arch, "x86_64") if isinstance(arch, str) \
        else "x86_64"


def machine_of(doc: dict) -> str | None:
    """The machine a result names (``run.machine``: an object since 0.2, a host name before),
    as a bounded line; None when it names none."""
    name = machine_id(doc)
    return plain_line(name, 60) or None if name else None


def read_results(docs: Any) -> list[Result]:
    return [Result(doc, i) for i, doc in enumerate(docs if isinstance(docs, list) else [])]


def vdso_functions(result: Result) -> set[str] | None:
    """The names of the vDSO's FUNC symbols as the analysis read them; None when the result
    has no analysed symbol table."""
    symbols = part(result.vdso_analysis, "symbols")
    if not isinstance(symbols, list):
        return None
    return {name for s in symbols
            if isinstance(s, dict) and s.get("type") == "FUNC"
            and isinstance(name := s.get("name"), str)}


def call_row(result: Result, call: str, path: str, rows: str = "calls") -> dict | None:
    """The row of ``calls`` (or of another list of rows of the same shape, such as
    ``entry_costs``) that measured ``call`` by ``path``, if the probe wrote one."""
    found = result.calls if rows == "calls" else entries(result.get(rows))
    for row in found:
        if isinstance(row, dict) and row.get("call") == call and row.get("path") == path:
            return row
    return None


def _identity(result: Result, *keys: str) -> tuple:
    return tuple(result.text("environment", k) for k in keys)


def in_time_namespace(result: Result) -> bool:
    """Whether the environment asked for its probe to run in a new time namespace."""
    return part(result.environment, "time_namespace", "requested") is True


def plain_twin(result: Result, results: list[Result]) -> Result | None:
    """The environment ``result`` is a variant of (a time namespace, a boot option, an allow-all
    seccomp filter): same backend, userland, build and kernel, and none of those variations:
    no time namespace, a guest with no command line of its own, a container with Docker's
    profile. None when the results hold no such environment."""
    keys = ("backend", "suite", "build", "kernel_suite")
    for other in results:
        if other is result or in_time_namespace(other) or _identity(other, *keys) != _identity(
                result, *keys):
            continue
        if other.backend == "qemu" and (other.text("environment", "matrix_cmdline") or ""):
            continue
        if other.backend == "docker" and not (plain_line(part(
                other.environment, "seccomp", "profile"), 80) or "docker").startswith("docker"):
            continue  # the allow-all measurement variant
        return other
    return None


# ----------------------------------------------------------------------- counting -------------

def median(row: dict | None) -> float | None:
    """The median nanoseconds of a row that measured something, else None."""
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None
    return number(part(row, "ns", "median"))


def enters_kernel(row: dict | None) -> bool | None:
    """Whether a measured call made a system call each time (None: not measured, not counted)."""
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None
    syscalls = number(row.get("syscalls_per_call"))
    return None if syscalls is None else syscalls >= ENTERS_KERNEL


def mechanism(row: dict) -> str:
    """How one call entered the kernel, from what was counted (ptrace, perf), never from speed."""
    syscalls = number(row.get("syscalls_per_call"))
    if syscalls is None:
        return "?"
    if syscalls >= ENTERS_KERNEL:
        return "syscall" if round(syscalls) == 1 else f"{syscalls:g} syscalls"
    traps = number(row.get("faults_per_call"))
    if traps is None:
        return "no syscall"  # traps could not be counted here (no perf counter allowed)
    return "trap" if traps >= ENTERS_KERNEL else "user"


# ----------------------------------------------------------------------- writing --------------

def plain_line(value: object, limit: int = 120) -> str:
    """Untrusted text for the report's model: one line, control and invisible characters
    replaced, bounded; NOT escaped for any format (each renderer escapes). Objects, lists and
    booleans give ""."""
    raw = text(value)
    if raw is None:
        return ""
    return _bounded(plain(raw).replace("\r", " ").replace("\n", " ").replace("\t", " "),
                    limit)


def fmt_ns(value: Any) -> str:
    """Nanoseconds: one decimal below 10, whole above; the mark for anything not a number."""
    ns = number(value)
    if ns is None:
        return MISSING
    if abs(ns) >= LARGEST_PLAIN_NS:
        return f"{ns:.3g}"
    return f"{ns:.1f}" if ns < 10 else f"{ns:.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub table of cells already escaped (numbers stay as written)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_LINK_IN_HTML = re.compile(r"[\[\]]")
_HEADING_AT_LINE_START = re.compile(r"^( {0,3})#", re.M)
# A cell can open a list item ("- {name}: ..."), where a leading "#", "+", "-", "=" or "1." would
# start a heading, a nested list or an ordered list: that first character gets a backslash.
_BLOCK_START = re.compile(r"^(\s*)(?:([#+=-])|(\d{1,9})([.)])(?=\s|$))")
_SCHEME = re.compile(r"://")
_WWW = re.compile(r"(www)\.", re.I)


def _unlinked(escaped: str) -> str:
    """Bare URLs that GitHub would make links of, with the ':' or '.' that makes them one
    written as a character reference: the reader sees the same text, and no link."""
    return _WWW.sub(r"\1&#46;", _SCHEME.sub("&#58;//", escaped))


def _bounded(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def cell(value: object, limit: int = 120) -> str:
    """A table cell (or a word in a list item): one line, Markdown and HTML specials escaped,
    bare URLs unlinked, length bounded. Objects, lists and booleans give an empty cell."""
    raw = text(value)
    if raw is None:
        return ""
    line = _bounded(plain(raw).replace("\n", " "), limit)
    # HTML first (so "<" can open no tag), then the specials that matter inside a table cell
    # (emphasis, code, links, the cell separator) get a backslash.
    escaped = _MD_SPECIAL.sub(r"\\\1", html.escape(line, quote=False))
    return _unlinked(_BLOCK_START.sub(_escape_block_start, escaped, count=1))


def unblocked(line: str) -> str:
    """An escaped line that continues a wrapped paragraph or list item, with the character
    that would open a heading, list or ordered list there backslashed."""
    return _BLOCK_START.sub(_escape_block_start, line, count=1)


def _escape_block_start(match: re.Match) -> str:
    space, mark, digits, delimiter = match.groups()
    return f"{space}\\{mark}" if mark else f"{space}{digits}\\{delimiter}"


def code_block(lines: list[str], limit: int = 400) -> str:
    """A listing as a <pre> HTML block (where Markdown is not rendered): HTML-escaped, and the
    few Markdown constructs a renderer that ignores HTML blocks would act on (links, headings,
    bare URLs) written as character references."""
    body = html.escape("\n".join(plain(line)[:limit] for line in lines), quote=False)
    body = _LINK_IN_HTML.sub(lambda m: f"&#{ord(m.group())};", body)
    body = _HEADING_AT_LINE_START.sub(r"\1&#35;", body)
    return "<pre>\n" + _unlinked(body) + "\n</pre>"
