"""The report's content, assembled: the answers to the questions that close "linux syscalls on
x86_64" (atp, *Atp's external memory*, 21 May 2011).

``assemble(docs)`` reads nothing but the result documents, so a report can be re-rendered
without re-probing and results from several machines can be merged. This module orders the
environments, names them (with their machine when there are several), and builds the parts of
the page that are not tables: at a glance, the glossary, the method, the problems and the
metadata that makes the report reproducible. The tables come from :mod:`measurements` and
:mod:`binary`. Everything here is plain text: the renderers in :mod:`exports` escape it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vdsomatrix import __version__
from vdsomatrix.matrix import BackendName
from vdsomatrix.report import (
    architectures,
    correctness,
    entry_costs,
    i386,
    measurements,
    recent_vdso,
    runtimes,
)
from vdsomatrix.report.binary import analysis_sections
from vdsomatrix.report.cells import (
    Result,
    call_row,
    enters_kernel,
    entries,
    fmt_ns,
    median,
    number,
    part,
    plain_line,
    read_results,
    text,
    whole_number,
)
from vdsomatrix.report.measurements import RESOLUTION_NS, SECTION_TITLES, VSYSCALL_CALLS
from vdsomatrix.report.model import Finding, Problem, Report, Section, Subject, Term

# Where the questions come from: the seed article, cited (it is not part of this repository).
ARTICLE = "“linux syscalls on x86_64”, by atp, on the blog Atp's external memory (21 May 2011)"
BACKEND_ORDER = {str(b): i for i, b in enumerate(BackendName)}
NATIVE = (BackendName.HOST, BackendName.DOCKER)  # share this machine's kernel
EMULATED = (BackendName.QEMU,)
EMULATED_MARK = " †"
MACHINE_JOIN = " @ "
UNKNOWN_MACHINE = "unknown machine"
# The tables whose 32-bit and arm64 rows the Markdown page leaves out (it links the table's own
# file, and the sections "32-bit code" and "Across architectures" carry what a reader then
# misses): the page keeps its budget.
I386_OFF_PAGE = ("environments", "vdso", "vsyscall")


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


def _names(results: list[Result]) -> str:
    # without the † of emulated guests: the summary comes before the glossary that explains it
    return ", ".join(r.label.removesuffix(EMULATED_MARK) for r in results) or "none"


def summary(results: list[Result]) -> list[Finding]:
    """The answers in a few lines, each computed from the measured rows (no expectations), with
    the same counted-mechanism rules as the tables below: the vDSO and the vsyscall page of
    every environment, the costs of the x86_64 ones (a 32-bit process's are in
    :func:`i386.findings`)."""
    probed = [r for r in results if r.calls]
    if not probed:  # no C rows at all (only runtime environments): nothing to say here
        return []
    x86 = [r for r in probed if not r.i386 and not r.arm64]
    found = []
    with_vdso = [r for r in probed if r.get("vdso", "present") is True]
    without = [r for r in probed if r not in with_vdso]
    found.append(Finding("The vDSO", f"is mapped in {len(with_vdso)} of {len(probed)} "
                                     f"environments; absent in: {_names(without)}."))
    runs = [r for r in probed if all(
        (row := call_row(r, c, "vsyscall")) and row.get("status") == "ok" for c in VSYSCALL_CALLS)]
    dies = [r for r in probed if any(
        (row := call_row(r, c, "vsyscall")) and row.get("status") == "crashed"
        for c in VSYSCALL_CALLS)]
    found.append(Finding("Legacy vsyscall calls",
                         f"work in {len(runs)} environments and kill the caller in "
                         f"{len(dies)}: {_names(dies)}."))
    for where, backends in (("natively", NATIVE), ("under QEMU", EMULATED)):
        costs = [c for r in x86 if r.backend in backends
                 if (c := median(call_row(r, "getppid", "syscall"))) is not None]
        if costs:
            found.append(Finding("A system call",
                                 f"(getppid, raw syscall instruction) costs "
                                 f"{fmt_ns(min(costs))}–{fmt_ns(max(costs))} ns {where} "
                                 f"({len(costs)} environments, medians)"
                                 + (", emulated time" if where == "under QEMU" else "") + "."))
    call = "clock_gettime(CLOCK_MONOTONIC)"
    speedups, fallbacks = [], []
    for r in x86:
        vdso_row = call_row(r, call, "vdso")
        fast, slow = median(vdso_row), median(call_row(r, call, "syscall"))
        if fast is None or slow is None:
            continue
        if enters_kernel(vdso_row):
            fallbacks.append(r)
        elif fast >= RESOLUTION_NS:
            speedups.append(slow / fast)
    if speedups:
        found.append(Finding(f"The vDSO's {call}",
                             f"is {min(speedups):.1f}–{max(speedups):.1f}× faster than the "
                             f"system call where it stays in user space; it makes the system "
                             f"call itself in: {_names(fallbacks)}."))
    libc_kernel = [r for r in x86 if enters_kernel(call_row(r, call, "libc"))]
    found.append(Finding(f"libc's {call}",
                         f"enters the kernel on every call in: {_names(libc_kernel)}."))
    return found


GLOSSARY = [
    Term("vDSO", "a small shared library the kernel maps into every process (AT_SYSINFO_EHDR); "
                 "its clock functions answer in user space when the clock source allows it."),
    Term("vsyscall", "the older fixed page at 0xffffffffff600000 with gettimeofday, time and "
                     "getcpu. Modes: xonly (execute only: a call traps and the kernel emulates "
                     "it; the page cannot be read), emulate (readable, calls emulated), none "
                     "(no page: a legacy call is killed by SIGSEGV)."),
    Term("user", "the call made no system call and no trap: the vDSO or libc answered in user "
             "space."),
    Term("trap", "no system call, but one page-fault trap per call (how vsyscall emulation "
             "enters the kernel)."),
    Term("syscall", "one system call per call, as ptrace counts them (the way strace does); "
                    "\"N syscalls\" when there were several."),
    Term("no syscall", "no system call, but traps could not be counted (Docker's default "
                       "seccomp profile forbids perf_event_open)."),
    Term("?", "the environment allowed no counting at all."),
    Term("ns", "median nanoseconds per call; (a–b) after it: the min and p90 over the same "
               "batches."),
    Term("†", "a guest under TCG software emulation: its nanoseconds are emulated time, "
              "compare ratios only."),
    Term("—", "no value: the result lacks it (the notes or Problems say why where known)."),
    Term("MONOTONIC, REALTIME, …", "clock_gettime(CLOCK_MONOTONIC), clock_gettime("
                                   "CLOCK_REALTIME), … in column headers."),
]
MACHINE_TERM = Term("env @ machine", "an environment as measured on one machine (the report "
                                     "merges results of several).")


def method_lines(results: list[Result]) -> list[str]:
    batches = sorted({b for r in results
                      if (b := whole_number(part(r.get("method"), "batches")))})
    concurrency = sorted({plain_line(c, 300) for r in results
                          if (c := r.text("run", "concurrency"))})
    lines = [
        f"Each latency is the median of {', '.join(str(b) for b in batches) or '?'} batches, "
        "one batch lasting at least 1 ms, on a single pinned CPU, with the measured empty-loop "
        "overhead subtracted; min and p90 are over the same batches. Every call runs in a child "
        "process, so a crash is a result.",
        "The mechanism after each number was counted, not inferred from speed: system calls "
        "with ptrace, traps with the kernel's software page-fault counter (see the glossary).",
        f"Speed-ups with a vDSO median under {RESOLUTION_NS:g} ns are shown as lower bounds: "
        "such a median is within the noise of the subtracted loop overhead.",
        "Containers enter the kernel through a seccomp filter: Docker's default profile (of the "
        "engine's own version) with perf_event_open allowed, so that their rows count traps as "
        "the host's do; every system call pays for the filter (at a glance says how much, where "
        "a measurement-only allow-all container ran); the host has no filter.",
        "Each median is one run's. How far two runs on one machine lie apart is measured by "
        "`nox -s bench -- wall --repeat` (two warm runs back to back, compared row by row; "
        "docs/method.md gives the development machine's figures); a difference within that "
        "spread is no difference.",
        "The binary analysis reads the bytes each environment shipped (its vDSO image and its "
        "libc) with pyelftools and capstone, on the host; its classifications are static "
        "estimates.",
    ]
    return lines + [f"Concurrency: {c}." for c in concurrency]


def problems(results: list[Result], load_problems: list[str]) -> list[Problem]:
    out = []
    for r in results:
        for error in entries(r.get("errors")):
            if (shown := plain_line(error, 300)):
                out.append(Problem(r.label, shown))
        tail = [plain_line(line, 160) for line in entries(r.get("log_tail"))
                if text(line) is not None]
        if tail and r.run_status != "ok":
            out.append(Problem(r.label, "last lines: " + " ⏎ ".join(tail[-5:])))
    out += [Problem(None, "result file skipped: " + plain_line(p, 300)) for p in load_problems]
    return out


def _machine(doc: dict) -> dict[str, Any]:
    """``run.machine`` as JSON for report.json (older results name a host only: the other
    fields are then empty)."""
    machine = part(doc, "run", "machine")
    if not isinstance(machine, dict):
        machine = {"id": machine}
    mitigations = machine.get("mitigations")
    return {
        "id": plain_line(machine.get("id"), 200) or UNKNOWN_MACHINE,
        "label": plain_line(machine.get("label"), 200) or None,
        "cpu": plain_line(machine.get("cpu"), 200) or None,
        "kernel": plain_line(machine.get("kernel"), 200) or None,
        "hypervisor": machine.get("hypervisor") if isinstance(machine.get("hypervisor"), bool)
        else None,
        # older results have a string here; keep it as the one text it is
        "mitigations": ({plain_line(k, 100): plain_line(v, 300)
                         for k, v in mitigations.items() if text(v) is not None}
                        if isinstance(mitigations, dict)
                        else ({"all": plain_line(mitigations, 300)}
                              if text(mitigations) is not None else {})),
        "mitigations_param": plain_line(machine.get("mitigations_param"), 200) or None,
    }


def meta(results: list[Result], machines: list[str]) -> dict[str, Any]:
    """What a reader needs to reproduce the report: versions, machines, environments."""
    def distinct(*keys: str) -> list[str]:
        return sorted({v for r in results if (v := plain_line(r.get(*keys), 200))})

    machine_docs: dict[str, dict] = {}
    for r in results:
        if r.machine:
            machine_docs.setdefault(r.machine, _machine(r.doc))
    return {
        "report_vdsomatrix": __version__,
        "vdsomatrix": distinct("run", "vdsomatrix"),
        "commits": distinct("run", "commit"),
        "docker_engines": distinct("environment", "engine", "version"),
        "qemu": distinct("environment", "qemu", "version"),
        "machines": [{"name": name, **machine_docs.get(name, {})} for name in machines],
        "environments": [{
            "environment": r.subject.environment,
            "machine": r.machine,
            "label": r.label,
            "backend": r.subject.backend,
            "group": r.subject.group,
            "emulated": r.emulated,
            "status": plain_line(r.run_status, 40),
            "build": plain_line(r.get("environment", "build"), 40) or None,
            "abi": r.abi,
            "arch": r.arch,
            "description": plain_line(r.get("environment", "description"), 300) or None,
            "started": plain_line(r.get("run", "started"), 40) or None,
            "seconds": number(r.get("run", "seconds")),
            "vdsomatrix": plain_line(r.get("run", "vdsomatrix"), 40) or None,
            "commit": plain_line(r.get("run", "commit"), 60) or None,
            "docker_engine": plain_line(r.get("environment", "engine", "version"), 100) or None,
            "qemu": plain_line(r.get("environment", "qemu", "version"), 100) or None,
            "kernel_package": plain_line(r.get("environment", "kernel_package"), 200) or None,
            "image": plain_line(r.get("environment", "image", "id"), 200) or None,
            "fingerprint": plain_line(r.get("run", "fingerprint"), 300) or None,
        } for r in results],
    }


def _guarded(section_id: str, title: str, build: Callable[[], list[Section]],
             broken: list[Problem]) -> list[Section]:
    """A section's content; if a bug breaks it, a section that says so, not a lost report."""
    try:
        return build()
    except Exception as exc:  # the report is the product: the other sections still stand
        broken.append(Problem(None, f"the section {section_id} could not be built: "
                                    f"{type(exc).__name__}"))
        return [Section(section_id, title, [f"(this section could not be built: "
                                            f"{type(exc).__name__})"])]


def _table_section(section_id: str, build: Callable[[], list]) -> Callable[[], list[Section]]:
    def make() -> list[Section]:
        tables = build()
        if section_id in I386_OFF_PAGE:
            for table in tables:
                table.page_leaves_out = (i386.SECTION_ID, "arm64")  # the groups' ids (GROUPS)
        if section_id == "environments":  # the runtime section lists their versions
            for table in tables:
                table.page_leaves_out += ("runtimes-native", "runtimes-qemu")
        return [Section(section_id, SECTION_TITLES[section_id], [], tables)]
    return make


def assemble(docs: Any, *, order: list[str] | None = None,
             load_problems: list[str] | None = None) -> Report:
    results = ordered(read_results(list(docs) if isinstance(docs, list | tuple) else []), order)
    machines = name_subjects(results)
    several = len(machines) > 1
    # Runtime environments measure no C rows: they are in the environment list and the runtime
    # section, and in none of the C tables, figures or the census (no empty rows or columns).
    measured = [r for r in results if not r.runtime_only]
    runtime_envs = [r for r in results if r.runtime_only]
    # A 32-bit process's rows are of another ABI: in the vDSO and vsyscall tables (their own
    # group), in a section of their own, and in none of the x86_64 latency tables or census.
    x86 = [r for r in measured if not r.i386 and not r.arm64]
    i386_envs = [r for r in measured if r.i386]
    # arm64 rows likewise: the vDSO and vsyscall tables, and the section across architectures.
    arm64_envs = [r for r in measured if r.arm64]
    broken: list[Problem] = []
    sections: list[Section] = []
    # a report of runtime environments alone has no C sections (they would have no rows)
    c_sections = bool(measured) or not runtime_envs
    for section_id, build in (
        ("environments", lambda: measurements.identity_tables(results, several)),
        ("vdso", lambda: [measurements.vdso_table(measured)]),
        ("vsyscall", lambda: [measurements.vsyscall_table(measured)]),
        ("syscall-cost", lambda: [measurements.syscall_cost_table(x86),
                                  *entry_costs.tables(x86)]),
        ("speedup", lambda: [measurements.speedup_table(x86)]),
        ("latency", lambda: measurements.latency_tables(x86)),
    ):
        if c_sections or section_id == "environments":
            sections += _guarded(section_id, SECTION_TITLES[section_id],
                                 _table_section(section_id, build), broken)
    # getrandom, time namespaces and the rest read x86 names (__vdso_getrandom): arm64's
    # vDSO functions are in the section across architectures
    x86_and_i386 = [r for r in measured if not r.arm64]
    if c_sections and recent_vdso.has_section(x86_and_i386):
        sections += _guarded(recent_vdso.SECTION_ID, recent_vdso.TITLE,
                             lambda: [recent_vdso.section(x86_and_i386)], broken)
    if c_sections and correctness.has_section(measured):
        sections += _guarded(correctness.SECTION_ID, correctness.TITLE,
                             lambda: [correctness.section(measured)], broken)
    if runtime_envs:
        sections += _guarded(runtimes.SECTION_ID, runtimes.TITLE,
                             lambda: [runtimes.section(runtime_envs)], broken)
    if i386_envs:
        sections += _guarded(i386.SECTION_ID, i386.TITLE, lambda: [i386.section(i386_envs, x86)],
                             broken)
    if arm64_envs:
        sections += _guarded(architectures.SECTION_ID, architectures.TITLE,
                             lambda: [architectures.section(measured)], broken)
    if c_sections:
        sections += _guarded("binary-symbols", "Binary analysis",
                             lambda: analysis_sections(measured, x86), broken)

    def guarded_list(build: Callable[[], list], what: str) -> list:
        try:
            return build()
        except Exception as exc:  # as above: one broken part, the rest still stands
            broken.append(Problem(None, f"the {what} could not be built: {type(exc).__name__}"))
            return []

    glossary = GLOSSARY + (i386.TERMS if i386_envs else []) + (
        [MACHINE_TERM] if several else [])
    if runtime_envs:  # the runtimes' rows count system calls only
        glossary = [Term(t.term, t.definition.removesuffix(".") + "; the language runtimes' "
                         "traps are not counted at all.") if t.term == "no syscall" else t
                    for t in glossary]
    where = f" on {len(machines)} machines ({', '.join(machines)})" if several else ""
    return Report(
        title="vdsomatrix report",
        intro=(f"{len(results)} environments{where}. Generated by vdsomatrix report from result "
               "files alone; every number was measured in the environment of its row. The "
               f"questions are those that close {ARTICLE}: the vDSO and the vsyscall page are "
               "the kernel's ways of answering a few calls (the clocks, getcpu) without a system "
               "call; how to read the tables follows the answers."),
        summary=guarded_list(lambda: summary(measured), "summary")
        + guarded_list(lambda: entry_costs.findings(
            [r for r in x86 if r.backend in NATIVE], [r for r in x86 if r.backend in EMULATED]),
            "entry-cost summary")
        + guarded_list(lambda: recent_vdso.findings(x86_and_i386), "recent vDSO summary")
        + guarded_list(lambda: [f for f in [correctness.finding(measured)] if f],
                       "correctness summary")
        + guarded_list(lambda: i386.findings(i386_envs, x86, several), "32-bit summary")
        + guarded_list(lambda: runtimes.findings(runtime_envs), "runtimes summary"),
        glossary=glossary,
        sections=sections,
        method_lines=guarded_list(lambda: method_lines(measured)
                                  + entry_costs.method_lines([r for r in x86
                                                              if r.backend in NATIVE]),
                                  "method")
        if c_sections else [],  # the runtime section says its own method
        problems=guarded_list(lambda: problems(
            results, [text(p) or "" for p in load_problems or []]), "problems") + broken,
        meta=(guarded_list(lambda: [meta(results, machines)], "metadata") or [{}])[0],
        machines=machines,
    )
