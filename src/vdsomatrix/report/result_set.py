"""The result model every section is a function of: the result documents read (defensively,
through :mod:`cells`), ordered, named, and split into the sets the sections read.

``read_result_set(docs)`` gives each result its Subject and label (with its machine when there
are several) and its row group (``GROUPS``). Nothing here builds a table: the sections do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vdsomatrix.matrix import BackendName
from vdsomatrix.report.cells import Result, plain_line, read_results, text
from vdsomatrix.report.model import Subject

BACKEND_ORDER = {str(b): i for i, b in enumerate(BackendName)}
NATIVE = (BackendName.HOST, BackendName.DOCKER)  # share this machine's kernel
EMULATED = (BackendName.QEMU,)
EMULATED_MARK = " †"
MACHINE_JOIN = " @ "
UNKNOWN_MACHINE = "unknown machine"


def group_of(result: Result) -> str:
    if result.runtime_only and result.backend in NATIVE + EMULATED:
        return "runtimes-native" if result.backend in NATIVE else "runtimes-qemu"
    if result.arm64:  # every arm64 environment is a guest: its own group, wherever it ran
        return "arm64"
    if result.backend in NATIVE:
        return "i386" if result.i386 else "native"
    if result.backend in EMULATED:
        return "qemu"
    return "other"  # a failed environment's, an old or hand-made result: still a row


def ordered(results: list[Result], order: list[str] | None = None) -> list[Result]:
    """Matrix order where known, then by backend and name; machines apart, in name order."""
    position = {name: i for i, name in enumerate(order or [])}
    return sorted(results, key=lambda r: (position.get(r.name, len(position)),
                                          BACKEND_ORDER.get(r.backend or "", 9), r.name,
                                          r.machine or ""))


def name_subjects(results: list[Result]) -> list[str]:
    """Give each result its Subject and label; returns the distinct machines the results name.
    With results of more than one machine every label names its machine too (a result that
    names none is then of "unknown machine")."""
    machines = sorted({r.machine for r in results if r.machine})
    several = len(machines) > 1
    for r in results:
        label = plain_line(r.name, 80)
        machine = (r.machine or UNKNOWN_MACHINE) if several else None
        if machine:
            label += MACHINE_JOIN + machine
        if r.emulated:
            label += EMULATED_MARK
        r.subject = Subject(environment=plain_line(r.name, 200), machine=machine,
                            backend=plain_line(r.backend, 40) or None, emulated=r.emulated,
                            group=group_of(r), label=label)
    return machines


@dataclass
class ResultSet:
    """The results of one report, in page order, and the subsets the sections read."""

    results: list[Result]
    machines: list[str]
    # the files that could not be read, as plain text (the section "Problems" lists them)
    load_problems: list[str] = field(default_factory=list)

    @property
    def several(self) -> bool:
        """Results of more than one machine: labels name their machine."""
        return len(self.machines) > 1

    @property
    def measured(self) -> list[Result]:
        """Runtime environments measure no C rows: they are in the environment list and the
        runtime section, and in none of the C tables, figures or the census."""
        return [r for r in self.results if not r.runtime_only]

    @property
    def runtime_envs(self) -> list[Result]:
        return [r for r in self.results if r.runtime_only]

    @property
    def x86(self) -> list[Result]:
        """The x86_64 processes. A 32-bit process's rows are of another ABI: in the vDSO and
        vsyscall tables (their own group), in a section of their own, and in none of the
        x86_64 latency tables or census; arm64's likewise."""
        return [r for r in self.measured if not r.i386 and not r.arm64]

    @property
    def i386_envs(self) -> list[Result]:
        return [r for r in self.measured if r.i386]

    @property
    def arm64_envs(self) -> list[Result]:
        return [r for r in self.measured if r.arm64]

    @property
    def x86_and_i386(self) -> list[Result]:
        """getrandom, time namespaces and the rest read x86 names (__vdso_getrandom): arm64's
        vDSO functions are in the section across architectures."""
        return [r for r in self.measured if not r.arm64]

    @property
    def native_x86(self) -> list[Result]:
        return [r for r in self.x86 if r.backend in NATIVE]

    @property
    def emulated_x86(self) -> list[Result]:
        return [r for r in self.x86 if r.backend in EMULATED]

    @property
    def c_sections(self) -> bool:
        """Whether the report has the C sections: a report of runtime environments alone has
        none (they would have no rows)."""
        return bool(self.measured) or not self.runtime_envs


def read_result_set(docs: Any, *, order: list[str] | None = None,
                    load_problems: list[str] | None = None) -> ResultSet:
    """The result set of result documents (dicts as loaded; anything else reads as absent)."""
    results = ordered(read_results(list(docs) if isinstance(docs, list | tuple) else []), order)
    machines = name_subjects(results)
    return ResultSet(results, machines, [text(p) or "" for p in load_problems or []])
