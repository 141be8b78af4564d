"""Two runs compared: what behaves differently now, and which latencies moved beyond the noise.

:func:`compare` is a pure function of two sets of result documents; :func:`render` writes its
outcome as Markdown for a pull-request comment, and :func:`exit_code` turns it into the verdict of
``vdsomatrix compare --fail-on``. Everything read from a document goes through
:mod:`vdsomatrix.report.cells` (type-checked reading, the report's vocabulary of mechanisms, the
escaping of every cell), because result files are hostile input.

Behaviour is what the probe saw: the vDSO and its symbols, the vsyscall page, the libc and
kernel, the run's status, and per measured call its status and how it entered the kernel.
Latency is judged against each run's own spread, so that noise is not called a regression:
see :data:`RULE`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vdsomatrix import results
from vdsomatrix.errors import BadInput
from vdsomatrix.report.cells import (
    MISSING,
    Result,
    cell,
    fmt_ns,
    mechanism,
    number,
    part,
    table,
    text,
    vdso_functions,
)
from vdsomatrix.results import LoadedResults, load_results
from vdsomatrix.text import one_line

FAIL_ON = ("behaviour", "latency", "none")
DEFAULT_THRESHOLD = 0.10  # --threshold 10
# Below a nanosecond a median is lost in the loop overhead the probe subtracted (the report's
# RESOLUTION_NS draws the same line), so a move of 1.4 -> 2.2 ns is not a 57% regression.
FLOOR_NS = 1.0
RULE = ("A latency change is listed when the medians differ by more than {threshold} and by at "
        "least {floor} ns, and the min–p90 ranges of the two runs do not overlap; only rows "
        "measured (ok) in both runs are compared")
ROWS_SHOWN = 15  # rows of a table before the fold; the rest go into a collapsed block
# A pull-request comment holds 65,536 characters; past this many rows a table is cut short.
ROWS_AT_MOST = 150
NAMES_PER_CELL = 8  # environments or symbols named in one cell before "and N more"
EMULATED_NOTE = ("emulated (QEMU TCG): absolute ns are the emulator's; comparable run to run "
                 "on the same machine, not with native numbers")

# Mechanisms (cells.mechanism) that only say a trap could not be counted: "no syscall" against
# "user" or "trap" is a difference in what perf allowed, not in what the call did.
_TRAPS_UNCOUNTED = "no syscall"


# ----------------------------------------------------------------------------- loading -------

SourceReader = Callable[[Path], LoadedResults | None]


def _result_files(path: Path) -> LoadedResults:
    """A folder of result files, or one result file."""
    return load_results([path])


# Each reader claims the paths it understands (returning None for the others), tried in order.
# A ``report.json`` export is one more reader, placed before the catch-all one above.
SOURCE_READERS: list[SourceReader] = [_result_files]


def load_side(path: Path, label: str, warn: Callable[[str], None]) -> list[dict]:
    """The result documents of one side (``label``: OLD or NEW); BadInput when there are none.

    Files that cannot be used are passed to ``warn``, one line each, and skipped.
    """
    if not path.exists():
        raise BadInput(f"{label} {path}: no such file or folder; give a folder of result files "
                       "(such as reports/results) or one result file")
    needs = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, needs):
        raise BadInput(f"{label} {path}: not readable; check its permissions")
    loaded = None
    for reader in SOURCE_READERS:
        loaded = reader(path)
        if loaded is not None:
            break
    if loaded is None:
        raise BadInput(f"{label} {path}: not a result file or folder of them")
    for problem in loaded.problems:
        warn(f"{label}: {problem}")
    if not loaded.documents:
        skipped = f" ({len(loaded.problems)} skipped, see above)" if loaded.problems else ""
        raise BadInput(f"{label} {path}: no usable result files{skipped}; give a folder that "
                       "`vdsomatrix run` wrote (reports/results)")
    return loaded.documents


def parse_percent(value: str) -> float:
    """``--threshold``: a percentage ("10" or "10%") above 0, as a fraction."""
    try:
        percent = float(value.strip().removesuffix("%"))
    except ValueError:
        raise BadInput(f"--threshold {one_line(value, 40)}: not a percentage; give one such "
                       "as 10") from None
    if not math.isfinite(percent) or percent <= 0:
        raise BadInput(f"--threshold {one_line(value, 40)}: give a percentage above 0, such "
                       "as 10")
    return percent / 100


# ----------------------------------------------------------------------------- comparing -----

@dataclass(frozen=True)
class BehaviourChange:
    """One fact of one environment that differs; texts are raw (escaped when rendered)."""

    environment: str
    what: str
    old: str
    new: str


@dataclass(frozen=True)
class Spread:
    low: float  # min
    median: float
    high: float  # p90


@dataclass(frozen=True)
class LatencyChange:
    environment: str
    call: str
    path: str
    old: Spread
    new: Spread
    emulated: tuple[bool, bool]  # OLD, NEW
    machines: tuple[str, str] | None  # (OLD, NEW) when they differ

    @property
    def relative(self) -> float:
        if self.old.median <= 0:
            return math.inf
        return self.new.median / self.old.median - 1


@dataclass
class Comparison:
    environments: list[str]  # in both runs
    only_old: list[str]
    only_new: list[str]
    behaviour: list[BehaviourChange]
    latency: list[LatencyChange]
    threshold: float
    different_machines: dict[str, tuple[str, str]] = field(default_factory=dict)
    latency_skipped: list[str] = field(default_factory=list)  # --same-machine


def machine_id(result: Result) -> str | None:
    return results.machine_id(result.doc)


def _by_environment(docs: list[dict]) -> dict[str, dict[str | None, Result]]:
    """Results by environment, then by machine (a folder may hold several machines' runs)."""
    results: dict[str, dict[str | None, Result]] = {}
    for position, doc in enumerate(docs):
        result = Result(doc, position)
        results.setdefault(result.name, {}).setdefault(machine_id(result), result)
    return results


@dataclass(frozen=True)
class Pair:
    label: str  # the environment, with its machine when a run holds it from several
    old: Result
    new: Result


def _label(name: str, machine: str | None) -> str:
    return f"{name} @ {machine or 'unknown machine'}"


def _pairs(old: dict[str, dict[str | None, Result]], new: dict[str, dict[str | None, Result]]
           ) -> tuple[list[Pair], list[str], list[str]]:
    """The runs to compare, and the labels of those only in OLD and only in NEW.

    An environment's runs on the same machine are paired; one run on each side is paired
    whatever its machine (the rows then say the machines differ); the others stand alone.
    """
    pairs, only_old, only_new = [], [], []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, {}), new.get(name, {})
        several = len(before) > 1 or len(after) > 1
        if len(before) == 1 and len(after) == 1:
            pairs.append(Pair(name, *before.values(), *after.values()))
            continue
        for machine in sorted(before.keys() & after.keys(), key=str):
            pairs.append(Pair(_label(name, machine), before[machine], after[machine]))
        for side, runs, others in ((only_old, before, after), (only_new, after, before)):
            side.extend(_label(name, m) if several else name
                        for m in sorted(runs.keys() - others.keys(), key=str))
    return pairs, only_old, only_new


def _yes_no(value) -> str | None:
    return {True: "yes", False: "no"}.get(value) if isinstance(value, bool) else None


def _libc(result: Result) -> str | None:
    words = [result.text("environment", "libc", key) for key in ("name", "version")]
    return " ".join(w for w in words if w) or None


# The facts of a whole environment, each compared only when both runs know it: a run that
# crashed before printing knows no libc, and that is not a change of libc.
FACTS: list[tuple[str, Callable[[Result], str | None]]] = [
    ("run status", lambda r: r.run_status),
    ("vDSO present", lambda r: _yes_no(r.get("vdso", "present"))),
    ("vsyscall mode", lambda r: r.text("vsyscall", "mode")),
    ("vsyscall callable", lambda r: _yes_no(r.get("vsyscall", "callable"))),
    ("libc", _libc),
    ("kernel", lambda r: r.text("environment", "kernel", "release")),
    ("accelerator", lambda r: r.text("environment", "accel")),
]


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_PER_CELL])
    more = len(names) - NAMES_PER_CELL
    return f"{shown} and {more} more" if more > 0 else shown


def _rows(result: Result) -> dict[tuple[str, str], dict]:
    """The measured rows by (call, path); a language runtime's rows by (call, runtime), where
    the runtime is its variant ("openjdk-17", "go-static"): both kinds carry a status, ns and
    system calls per call, so one rule compares them."""
    rows: dict[tuple[str, str], dict] = {}
    for row in result.calls:
        call, path = row.get("call"), row.get("path")
        if isinstance(call, str) and isinstance(path, str):
            rows.setdefault((call, path), row)  # the first, as the report's call_row does
    for row in result.runtimes:
        call, variant = row.get("call"), row.get("variant") or row.get("runtime")
        if isinstance(call, str) and isinstance(variant, str):
            rows.setdefault((call, variant), row)
    return rows


def _what_row_did(row: dict | None) -> str:
    if row is None:
        return MISSING
    status = text(row.get("status")) or "?"
    if status == "ok":
        return mechanism(row)
    signal = text(row.get("signal"))
    return f"{status} ({signal})" if status == "crashed" and signal else status


def _mechanisms_differ(old: dict, new: dict) -> bool:
    before, after = mechanism(old), mechanism(new)
    if before == after or "?" in (before, after):
        return False
    # "no syscall" against "user" or "trap": one run could not count traps; whether the call
    # trapped in both is unknown. Against a syscall it is a change all the same.
    pair = {before, after}
    return not (_TRAPS_UNCOUNTED in pair and pair <= {_TRAPS_UNCOUNTED, "user", "trap"})


def _behaviour(name: str, old: Result, new: Result) -> list[BehaviourChange]:
    changes = []
    for what, read in FACTS:
        before, after = read(old), read(new)
        if before is not None and after is not None and before != after:
            changes.append(BehaviourChange(name, what, before, after))

    old_functions, new_functions = vdso_functions(old), vdso_functions(new)
    if old_functions is not None and new_functions is not None:
        gone, came = sorted(old_functions - new_functions), sorted(new_functions - old_functions)
        if gone or came:
            changes.append(BehaviourChange(name, "vDSO functions only in one run",
                                           _some(gone) or MISSING, _some(came) or MISSING))

    # A run that printed no rows (it crashed, or timed out) is told by its status above;
    # thirty rows that "went" would only hide it.
    if (old.calls or old.runtimes) and (new.calls or new.runtimes):
        old_rows, new_rows = _rows(old), _rows(new)
        for key in [*old_rows, *(k for k in new_rows if k not in old_rows)]:
            before, after = old_rows.get(key), new_rows.get(key)
            if before is not None and after is not None:
                same_status = before.get("status") == after.get("status")
                if same_status and (before.get("status") != "ok"
                                    or not _mechanisms_differ(before, after)):
                    continue
            changes.append(BehaviourChange(name, " · ".join(key), _what_row_did(before),
                                           _what_row_did(after)))
    return changes


def _spread(row: dict | None) -> Spread | None:
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None
    values = [number(part(row, "ns", key)) for key in ("min", "median", "p90")]
    if any(v is None for v in values):
        return None
    low, median, high = values
    return Spread(min(low, median), median, max(high, median))


def _moved(old: Spread, new: Spread, threshold: float) -> bool:
    """The rule of :data:`RULE`."""
    step = abs(new.median - old.median)
    if step < FLOOR_NS:
        return False
    if old.median > 0 and step / old.median <= threshold:
        return False
    return new.low > old.high or new.high < old.low


def _latency(name: str, old: Result, new: Result, threshold: float,
             machines: tuple[str, str] | None) -> list[LatencyChange]:
    changes = []
    new_rows = _rows(new)
    for key, old_row in _rows(old).items():
        before, after = _spread(old_row), _spread(new_rows.get(key))
        if before is not None and after is not None and _moved(before, after, threshold):
            changes.append(LatencyChange(name, *key, before, after,
                                         (old.emulated, new.emulated), machines))
    return changes


def compare(old_docs: list[dict], new_docs: list[dict], *, threshold: float = DEFAULT_THRESHOLD,
            same_machine: bool = False) -> Comparison:
    """What differs between two runs, environment by environment.

    ``threshold``: the relative change of the medians (0.10 for 10%) a latency must exceed.
    ``same_machine``: compare no latency of an environment whose two runs came from different
    machines (their numbers are not comparable). BadInput when no environment is in both.
    """
    old, new = _by_environment(old_docs), _by_environment(new_docs)
    pairs, only_old, only_new = _pairs(old, new)
    if not pairs:
        # The same names, all measured on different machines of a shared folder.
        machines = bool(old.keys() & new.keys())
        raise BadInput(f"OLD and NEW have no environment in common"
                       f"{' on the same machine' if machines else ''}: OLD has "
                       f"{_listed(old, machines=machines)}; NEW has "
                       f"{_listed(new, machines=machines)}")
    comparison = Comparison(environments=[p.label for p in pairs], only_old=only_old,
                            only_new=only_new, behaviour=[], latency=[], threshold=threshold)
    for pair in pairs:
        machines = (machine_id(pair.old), machine_id(pair.new))
        differ = None not in machines and machines[0] != machines[1]
        if differ:
            comparison.different_machines[pair.label] = machines
        comparison.behaviour += _behaviour(pair.label, pair.old, pair.new)
        if differ and same_machine:
            comparison.latency_skipped.append(pair.label)
            continue
        comparison.latency += _latency(pair.label, pair.old, pair.new, threshold,
                                       machines if differ else None)
    return comparison


def _listed(results: dict[str, dict[str | None, Result]], limit: int = 10, *,
            machines: bool = False) -> str:
    """Environment names (with ``machines``, each run as name @ machine) for a one-line
    terminal message: inert and bounded."""
    names = [one_line(_label(name, m) if machines else name, 100)
             for name in sorted(results)
             for m in (sorted(results[name], key=str) if machines else [None])]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def exit_code(comparison: Comparison, fail_on: str) -> int:
    """1 when changes of the kind ``fail_on`` names were found, else 0.

    ``latency`` is the stricter gate and fails on either kind: a behaviour change (a call that
    now enters the kernel) matters at least as much as the latency it explains.
    """
    if fail_on == "behaviour":
        return 1 if comparison.behaviour else 0
    if fail_on == "latency":
        return 1 if comparison.behaviour or comparison.latency else 0
    return 0


# ----------------------------------------------------------------------------- writing -------

def _count(n: int, noun: str) -> str:
    return f"{n or 'no'} {noun}{'' if n == 1 else 's'}"


def summary(comparison: Comparison) -> str:
    """The one line that says it all (also the first line of :func:`render`)."""
    line = (f"{_count(len(comparison.behaviour), 'behaviour change')}, "
            f"{_count(len(comparison.latency), 'latency change')} in "
            f"{_count(len(comparison.environments), 'environment')}")
    aside = [f"{len(names)} only in {side}" for side, names
             in (("OLD", comparison.only_old), ("NEW", comparison.only_new)) if names]
    line += f" ({', '.join(aside)})" if aside else ""
    return line[0].upper() + line[1:]


def _environments_cell(names: list[str]) -> str:
    return _some([cell(n, 60) for n in names])


def _folded(headers: list[str], rows: list[list[str]], noun: str) -> list[str]:
    """A table of its first :data:`ROWS_SHOWN` rows, the rest collapsed below it, and no more
    than :data:`ROWS_AT_MOST` rows in all."""
    shown, rest = rows[:ROWS_SHOWN], rows[ROWS_SHOWN:ROWS_AT_MOST]
    lines = [table(headers, shown)]
    if rest:
        lines += ["", f"<details><summary>{len(rest)} more {noun}</summary>", "",
                  table(headers, rest), "", "</details>"]
    if len(rows) > ROWS_AT_MOST:
        lines += ["", f"And {len(rows) - ROWS_AT_MOST} more {noun}, not listed."]
    return lines


def _behaviour_table(changes: list[BehaviourChange]) -> list[str]:
    # The same change in many environments (a new kernel under every container) is one row.
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for c in changes:
        grouped.setdefault((c.what, c.old, c.new), []).append(c.environment)
    rows = [[_environments_cell(names), cell(what), cell(old, 300), cell(new, 300)]
            for (what, old, new), names in grouped.items()]
    return _folded(["environment", "what", "old", "new"], rows, "behaviour changes")


def _ns(spread: Spread) -> str:
    return f"{fmt_ns(spread.median)} ({fmt_ns(spread.low)}–{fmt_ns(spread.high)})"


def _change(change: LatencyChange) -> str:
    relative = change.relative
    if math.isinf(relative):
        return f"+{fmt_ns(change.new.median - change.old.median)} ns"
    return f"{relative:+.0%}"


def _latency_environment(change: LatencyChange) -> str:
    words = [cell(change.environment, 60)]
    old_emulated, new_emulated = change.emulated
    if old_emulated and new_emulated:
        words.append("†")
    elif old_emulated or new_emulated:
        words.append(f"† {'OLD' if old_emulated else 'NEW'} only")
    if change.machines:
        words.append(f"(machines {cell(change.machines[0], 40)} → {cell(change.machines[1], 40)})")
    return " ".join(words)


def _latency_table(changes: list[LatencyChange]) -> list[str]:
    # Largest first, so that what a reviewer reads before the fold matters most.
    ordered = sorted(changes, key=lambda c: -abs(c.relative))
    rows = [[_latency_environment(c), cell(f"{c.call} · {c.path}"), _ns(c.old), _ns(c.new),
             _change(c)] for c in ordered]
    lines = _folded(["environment", "call · path", "old ns (min–p90)", "new ns (min–p90)",
                     "change"], rows, "latency changes")
    if any(any(c.emulated) for c in changes):
        lines += ["", f"† {EMULATED_NOTE}."]
    return lines


def render(comparison: Comparison) -> str:
    """The comparison as Markdown: the summary line, then the behaviour and latency tables."""
    threshold = f"{comparison.threshold * 100:g}%"
    parts = [summary(comparison), ""]

    parts += ["### Behaviour changes", ""]
    parts += _behaviour_table(comparison.behaviour) if comparison.behaviour else ["None."]
    parts += ["", "### Latency changes", "",
              RULE.format(threshold=threshold, floor=f"{FLOOR_NS:g}") + ".", ""]
    parts += _latency_table(comparison.latency) if comparison.latency else ["None."]

    notes = []
    if comparison.latency_skipped:
        notes.append("Latency not compared (runs on different machines, `--same-machine`): "
                     f"{_environments_cell(comparison.latency_skipped)}.")
    elif comparison.different_machines:
        notes.append("Runs on different machines, whose latencies are not comparable: "
                     f"{_environments_cell(sorted(comparison.different_machines))}.")
    for side, names in (("OLD", comparison.only_old), ("NEW", comparison.only_new)):
        if names:
            notes.append(f"Only in {side} (not compared): {_environments_cell(names)}.")
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"
