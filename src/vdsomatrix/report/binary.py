"""The binary-analysis tables: what each environment shipped, as read from its bytes.

Built from ``doc["analysis"]``, computed beforehand (by the runner, or by ``vdsomatrix report
--reanalyse``) from the bytes the probe copied out: building the report decodes no machine code.
Four sections: the vDSO's symbols (one column per distinct vDSO), the kernel-entry instructions
in each libc, which vDSO functions each libc asks for, and how libc's entry points reach the
kernel (a static reading beside the measurement), with the ``syscall()`` disassembly as
listings. A document with missing or malformed parts shows the missing-value mark, and a note
under the table says why.
"""

from __future__ import annotations

import dataclasses

from vdsomatrix.report.cells import (
    MISSING,
    Result,
    call_row,
    enters_kernel,
    entries,
    mechanism,
    number,
    part,
    plain_line,
    text,
    whole_number,
)
from vdsomatrix.report.measurements import label_value, libc_label, plain, slug, vdso_name
from vdsomatrix.report.model import MISSING_VALUE, Listing, Table, Value

ENTRY_POINTS = ("syscall", "clock_gettime", "gettimeofday", "time")
# The row of calls[] that measures each entry point (path "libc"); the probe does not time
# libc's syscall() wrapper itself.
MEASURED_CALL = {"clock_gettime": "clock_gettime(CLOCK_MONOTONIC)",
                 "gettimeofday": "gettimeofday", "time": "time"}
VDSO_CLASSES = ("vdso-then-syscall-fallback", "vdso-via-ifunc-resolver")
# The static classifications, as a table shows them (the section's intro spells them out).
CLASS_SHOWN = {"vdso-then-syscall-fallback": "vDSO, else syscall",
               "vdso-via-ifunc-resolver": "IFUNC to vDSO", "syscall": "syscall",
               "int80": "int $0x80", "kernel_vsyscall": "__kernel_vsyscall",
               "sysenter": "sysenter"}
# The classifications that say the function enters the kernel itself, whatever the instruction
# (32-bit code has three ways: int $0x80, the vDSO's __kernel_vsyscall, sysenter).
KERNEL_ENTRIES = ("syscall", "int80", "kernel_vsyscall", "sysenter")
# A vDSO route's fallback as the "else" of its cell (x86_64: the syscall instruction).
FALLBACK_SHOWN = {"kernel_vsyscall": "__kernel_vsyscall", "int80": "int $0x80",
                  "sysenter": "sysenter"}
VDSO_PREFIX = "__vdso_"
ARM64_PREFIX = "__kernel_"  # an arm64 vDSO's names (__kernel_rt_sigreturn is its trampoline)
LISTING_LINES = 200


def _reason(result: Result, prefix: str, fallback: str) -> str:
    """Why a part of the analysis is missing: the analysis's own error, or the fallback."""
    if result.analysis is None:
        return "no analysis in this result"
    for error in result.analysis_errors:
        if error.startswith(prefix):
            return error
    return fallback


def vdso_reason(result: Result) -> str:
    vdso = result.get("vdso")
    if part(vdso, "present") is False:
        fallback = "no vDSO in this environment"
    elif isinstance(vdso, dict) and not vdso.get("image"):
        fallback = "the probe copied no vDSO image"
    else:
        fallback = "vDSO not analysed"
    return _reason(result, "vdso image:", fallback)


def libc_reason(result: Result) -> str:
    fallback = ("the probe shipped no libc artefact" if result.get("artefacts", "libc") is None
                else "libc not analysed")
    return _reason(result, "libc artefact:", fallback)


def _libc_part(result: Result, key: str, missing: list[tuple[str, str]]) -> dict | None:
    """The object ``key`` of the libc's analysis; None, with why noted in ``missing``, when
    the result has none."""
    found = part(result.libc_analysis, key)
    if isinstance(found, dict):
        return found
    missing.append((result.label, libc_reason(result)))
    return None


def _missing_notes(missing: list[tuple[str, str]]) -> list[str]:
    return [f"{MISSING} {plain_line(name, 80)}: {plain_line(reason, 240)}"
            for name, reason in missing]


def _symbol_versions(vdso: dict) -> dict[str, str]:
    versions: dict[str, str] = {}
    for sym in entries(vdso.get("symbols")):
        if not isinstance(sym, dict) or not isinstance(sym.get("name"), str):
            continue
        if sym.get("type") not in ("FUNC", "GNU_IFUNC") or sym.get("section") == "*UND*":
            continue
        version = sym.get("version") if isinstance(sym.get("version"), str) else "unversioned"
        shown = f"({version})" if sym.get("version_hidden") is True else version
        if sym.get("syscall_fallback") is True:
            shown += " *"
        versions[sym["name"]] = shown
    return versions


def symbols_contents(results: list[Result]) -> tuple[list[str], list[Table]]:
    """The intro and table of the symbols of each distinct vDSO (containers share their host's):
    a row per symbol."""
    images: dict[str, dict[str, str]] = {}
    users: dict[str, list[str]] = {}
    bits32: set[str] = set()  # the vDSOs of 32-bit processes
    arm64: set[str] = set()  # the vDSOs of arm64 processes (__kernel_* names)
    missing = []
    for result in results:
        name = vdso_name(result)
        if name is None:
            missing.append((result.label, vdso_reason(result)))
            continue
        if name not in images:
            images[name] = _symbol_versions(result.vdso_analysis or {})
            users[name] = []
        users[name].append(result.label)
        if result.i386:
            bits32.add(name)
        if result.arm64:
            arm64.add(name)
    names = sorted({n for versions in images.values() for n in versions},
                   key=lambda n: (n.removeprefix(VDSO_PREFIX).lstrip("_"), n))
    rows = [[plain(n, 60)] + [plain(images[i].get(n, ""), 60) if images[i].get(n)
                              else Value("") for i in images] for n in names]
    notes = [f"vDSO {i}: {', '.join(users[i])}" for i in images] + _missing_notes(missing)
    if not images:
        notes.insert(0, "No environment has an analysed vDSO.")
    table = Table(
        id="vdso-symbols", title="vDSO symbols", section="binary-symbols",
        question="Which functions each distinct vDSO exports, with their symbol version (the "
                 "objdump -T view); * marks a function whose code holds a syscall fallback.",
        columns=["symbol"] + [f"vDSO {i}" + (" (32-bit)" if i in bits32 else
                                             " (arm64)" if i in arm64 else "")
                              for i in images],
        keys=["symbol"] + [f"vdso_{slug(i)}" for i in images],
        rows=rows, subjects=[None] * len(rows), notes=notes,
        on_page=False)  # a reference listing: REPORT.md links it (its 40 KB budget)
    return _exported(
        {i: v for i, v in images.items() if i not in bits32 and i not in arm64}) + _exported(
        {i: {n: v for n, v in versions.items() if n.startswith(VDSO_PREFIX)}
         for i, versions in images.items() if i in bits32}, "32-bit ") + _exported(
        {i: {n.removeprefix(ARM64_PREFIX): v for n, v in versions.items()
             if n.startswith(ARM64_PREFIX) and "sigreturn" not in n}
         for i, versions in images.items() if i in arm64}, "arm64 ") + [
        "Read from the vDSO image each environment's probe copied out, with pyelftools on the "
        "host. One column per distinct vDSO, named by the start of its build-id: containers "
        "share their host's vDSO, so the host's column stands for all of them (the notes say "
        "which environments have which)."], [table]


def _exported(images: dict[str, dict[str, str]], kind: str = "") -> list[str]:
    """What the vDSOs export, in one sentence (a function and its __vdso_ alias count once):
    what every one exports, then what only some do, with how many. ``kind``: "32-bit " for the
    vDSOs of 32-bit processes (given their __vdso_ functions only: __kernel_vsyscall and the
    signal trampolines are no clock functions), which get a sentence of their own."""
    if not images:
        return []
    exporting: dict[str, int] = {}
    for versions in images.values():
        for name in {plain_line(n.removeprefix(VDSO_PREFIX), 60) for n in versions}:
            exporting[name] = exporting.get(name, 0) + 1
    every = sorted(n for n, count in exporting.items() if count == len(images))
    some = sorted((n for n in exporting if n not in every), key=lambda n: (-exporting[n], n))
    whom = f"The one {kind}vDSO" if len(images) == 1 else \
        f"Each of the {len(images)} distinct {kind}vDSOs"
    line = f"{whom} exports {_names(every) or 'no function'}"
    if some:
        line += "; some also " + _names([f"{n} ({exporting[n]})" for n in some])
    return [plain_line(line, 600) + "."]


def _count(value: object) -> Value:
    n = number(whole_number(value))  # None for more digits than a float holds
    return Value(f"{n:.0f}", number=n, unit="count") if n is not None else MISSING_VALUE


def census_contents(results: list[Result]) -> tuple[list[str], list[Table]]:
    rows, missing = [], []
    for result in results:
        census = _libc_part(result, "census", missing)
        vdso_census = part(result.vdso_analysis, "census")
        in_vdso = _count(vdso_census.get("syscall")) if isinstance(vdso_census, dict) \
            else MISSING_VALUE
        libc = plain(libc_label(result), 40)
        if census is None:
            rows.append([label_value(result), libc, *[MISSING_VALUE] * 5, in_vdso])
            continue
        functions = whole_number(census.get("functions"))
        symbols = part(result.libc_analysis, "symbols")
        rows.append([
            label_value(result), libc, _count(census.get("syscall")),
            _count(census.get("sysenter")), _count(census.get("int80")),
            _count(functions) if functions is not None else Value("?"),
            plain(symbols, 30) if isinstance(symbols, str) else Value(""),
            in_vdso,
        ])
    columns = ["environment", "libc", "syscall", "sysenter", "int 0x80", "functions",
               "symbols from", "syscall in vDSO"]
    table = Table(
        id="binary-census", title="Kernel-entry instructions", section="binary-census",
        question="How many instructions that enter the kernel each libc's executable code "
                 "holds, and in how many functions.",
        columns=columns, keys=[slug(c) for c in columns], rows=rows,
        subjects=[r.subject for r in results], notes=_missing_notes(missing), on_page=False)
    return [
        "Counted in the executable code of the libc the environment loaded, the way objdump -d "
        "decodes it. Static builds count the whole probe binary: libc linked in, plus the "
        "probe's own deliberate syscall and int 0x80. functions: how many functions hold them "
        "(an estimate when the binary has no full symbol table)."], [table]


def _names(names: list[str]) -> str:
    return ", ".join(n.removeprefix(VDSO_PREFIX) for n in names)


def usage_contents(results: list[Result]) -> tuple[list[str], list[Table]]:
    rows, missing, notes = [], [], []
    for result in results:
        usage = _libc_part(result, "vdso_usage", missing)
        if usage is None:
            rows.append([label_value(result), plain(libc_label(result), 40),
                         *[MISSING_VALUE] * 3])
            continue
        offered = [n for n in entries(usage.get("offered")) if isinstance(n, str)]
        asked = [n for n in entries(usage.get("requested")) if isinstance(n, str)]
        used = [n for n in entries(usage.get("used")) if isinstance(n, str)]
        gone = [n for n in entries(usage.get("missing")) if isinstance(n, str)]
        by = usage.get("requested_by")
        shown = [n.removeprefix(VDSO_PREFIX) for n in asked]
        if isinstance(by, dict) and len(entries(usage.get("objects"))) > 1:
            # Only the names the loader alone asks for are marked: the libc asks for the rest.
            shown = [s + ("°" if [o for o in entries(by.get(n)) if isinstance(o, str)]
                          == ["ld.so"] else "") for s, n in zip(shown, asked, strict=True)]
        count = (Value(f"{len(used)} of {len(offered)}", number=float(len(used)), unit="count")
                 if result.vdso_analysis is not None else MISSING_VALUE)
        rows.append([label_value(result), plain(libc_label(result), 40),
                     plain(", ".join(shown) or "none", 300), count,
                     plain(_names(gone), 200) if gone else Value("")])
        notes.extend(f"{result.label}: {plain_line(n, 300)}" for n in entries(usage.get("notes"))
                     if isinstance(n, str))
    columns = ["environment", "libc", "asks for", "used", "asked for, not offered"]
    table = Table(
        id="binary-usage", title="vDSO functions each libc uses", section="binary-usage",
        question="Which of the vDSO's functions each libc asks for, and how many of those the "
                 "kernel offers.",
        columns=columns, keys=[slug(c) for c in columns], rows=rows,
        subjects=[r.subject for r in results], notes=_missing_notes(missing) + notes,
        on_page=False)
    return [
        "Names are the vDSO's __vdso_* functions, written without that prefix. asks for: the "
        "names in the libc's read-only data (in a static probe binary, without those only the "
        "probe's own code mentions) and, for a dynamic build, in its loader's (ld.so, where "
        "dynamic glibc looks most of them up); ° marks a name only ld.so asks for. used: asked "
        "for and offered, of all the vDSO offers."], [table]


def _measured(result: Result, name: str) -> tuple[Value, bool | None]:
    """The counted mechanism of an entry point's libc call, and whether it entered the kernel."""
    call = MEASURED_CALL.get(name)
    row = call_row(result, call, "libc") if call else None
    if row is None:
        return Value("not measured"), None
    entered = enters_kernel(row)
    if entered is None:
        status = row.get("status")
        if status == "ok":
            return Value("not counted", status="ok"), None
        shown = plain_line(status, 40) or "?"
        return Value(shown, status=shown), None
    how = mechanism(row)  # the glossary's words: user, trap, syscall, no syscall
    return Value(how, mechanism=how, status="ok"), entered


def _expected(result: Result, name: str, klass: str) -> bool | None:
    """Whether the static classification predicts a system call for the measured call here:
    a vDSO route behaves like the vDSO symbol called directly in the same environment (which
    itself falls back to the kernel for a clock source it cannot read), or like the fallback
    when the vDSO lacks the symbol; None when it predicts nothing checkable."""
    if klass in KERNEL_ENTRIES:
        return True
    if klass not in VDSO_CLASSES or name not in MEASURED_CALL:
        return None
    row = call_row(result, MEASURED_CALL[name], "vdso")
    if isinstance(row, dict) and row.get("status") == "unsupported":
        return True
    return enters_kernel(row)


def _reading(ep: object) -> tuple[Value, str | None]:
    klass = part(ep, "classification")
    if not isinstance(klass, str):
        return MISSING_VALUE, None
    shown = CLASS_SHOWN.get(klass, plain_line(klass, 40))
    fallback = part(ep, "fallback")
    # a hostile document may hold any JSON here: only a string can name a fallback
    if klass == "vdso-then-syscall-fallback" and isinstance(fallback, str) \
            and fallback in FALLBACK_SHOWN:
        shown = f"vDSO, else {FALLBACK_SHOWN[fallback]}"
    if part(ep, "ifunc") is True and "IFUNC" not in shown:
        shown += " (IFUNC)"
    return Value(shown), klass


def _listings(results: list[Result]) -> list[Listing]:
    """The syscall() wrapper's disassembly, once per distinct libc."""
    groups: dict[str, list[Result]] = {}
    for result in results:
        listing = part(result.libc_analysis, "entry_points", "syscall", "listing")
        if not isinstance(listing, list) or not listing:
            continue
        digest = part(result.libc_analysis, "sha256")
        key = digest if isinstance(digest, str) and digest else f"unhashed:{result.name}"
        groups.setdefault(key, []).append(result)
    out = []
    for key, members in groups.items():
        first = members[0]
        ep = part(first.libc_analysis, "entry_points", "syscall")
        path = part(first.libc_analysis, "path")
        role = part(first.libc_analysis, "role")
        title = (f"{libc_label(first) or 'libc'}: {path if isinstance(path, str) else '?'}"
                 f"{' (probe binary)' if role == 'probe-binary' else ''}"
                 f" (sha256 {key[:12]}, {text(part(ep, 'classification')) or '?'})")
        lines = [plain_line(x, 400) for x in entries(part(ep, "listing"))[:LISTING_LINES]]
        out.append(Listing(plain_line(title, 300), [m.label for m in members], lines))
    return out


@dataclasses.dataclass
class _EntryPointRows:
    """The entry-point table's rows, and what its notes and intro say about them."""

    rows: list[list[Value]]
    missing: list[tuple[str, str]]
    disagreements: list[str]
    compared: int = 0


def _entry_point_rows(results: list[Result]) -> _EntryPointRows:
    """A row per environment: each entry point's static reading, and beside the measured ones
    what the probe counted (marked where the two disagree)."""
    found = _EntryPointRows([], [], [])
    for result in results:
        eps = _libc_part(result, "entry_points", found.missing)
        row = [label_value(result)]
        for name in ENTRY_POINTS:
            reading, klass = _reading(part(eps, name))
            row.append(reading)
            if name not in MEASURED_CALL:
                continue
            measured, entered = _measured(result, name)
            expected = _expected(result, name, klass) if klass else None
            found.compared += expected is not None and entered is not None
            if expected is not None and entered is not None and expected != entered:
                measured = dataclasses.replace(measured, text=f"{measured.text} (disagrees)",
                                               detail="disagrees", strong=True)
                found.disagreements.append(f"{result.label}: {name}: static {klass}, measured "
                                           f"{measured.mechanism}")
            row.append(measured)
        found.rows.append(row)
    return found


def _entry_points_table(results: list[Result], found: _EntryPointRows) -> Table:
    columns = ["environment", "syscall()"]
    keys = ["environment", "syscall_static"]
    for name in ENTRY_POINTS[1:]:
        columns += [name, "measured"]
        keys += [f"{name}_static", f"{name}_measured"]
    # How to read the table: its notes (the page links the table, the notes go with it)
    notes = [
        "A static estimate from a bounded linear walk of each function's code. vDSO, else "
        "syscall: an indirect call through a pointer loaded from data (where a libc keeps the "
        "vDSO's address) plus a syscall on another path. IFUNC to vDSO: an IFUNC whose resolver "
        "returns the vDSO's own function, so calls jump straight into the vDSO, with libc code "
        "that makes the system call as the fallback. syscall: a syscall instruction and no such "
        "call.",
        "measured: what the probe counted for the same libc call in the same environment "
        "(clock_gettime on CLOCK_MONOTONIC; syscall() itself is not timed); (disagrees) marks "
        "a static reading the measurement contradicts (a vDSO route is expected to behave like "
        "the vDSO symbol called directly there).",
    ] + _missing_notes(found.missing)
    if found.disagreements:
        notes.append("Static reading and measurement disagree (the measurement is the truth; "
                     "the analysis misreads this code):")
        notes += found.disagreements
    return Table(
        id="binary-entry-points", title="How libc's entry points reach the kernel",
        section="binary-entry-points",
        question="What a reading of each libc's code predicts for syscall(), clock_gettime, "
                 "gettimeofday and time, beside what the probe counted for the same call.",
        columns=columns, keys=keys, rows=found.rows, subjects=[r.subject for r in results],
        notes=notes, on_page=False)  # a static reading: REPORT.md links it (its 40 KB budget)


def _entry_points_intro(found: _EntryPointRows) -> list[str]:
    intro = ["A static estimate, from each libc's code, of how syscall(), clock_gettime, "
             "gettimeofday and time reach the kernel, beside what the probe counted."]
    if found.disagreements:
        intro.append(f"The static reading and the measurement disagree in "
                     f"{len(found.disagreements)} of {found.compared} calls (the table's notes "
                     "list them; the measurement is the truth).")
    elif found.compared:
        intro.append(f"The static reading agrees with the measurement in all {found.compared} "
                     "calls where both exist.")
    return intro


def entry_points_contents(results: list[Result]
                          ) -> tuple[list[str], list[Table], list[Listing]]:
    """The intro, the table and the syscall() listings of how libc's entry points reach the
    kernel."""
    found = _entry_point_rows(results)
    return (_entry_points_intro(found), [_entry_points_table(results, found)],
            _listings(results))
