"""Section 6 of the report: the binary analysis of what each environment shipped.

``render_analysis(results)`` reads ``doc["analysis"]``, computed beforehand (by the runner, or by
``vdsomatrix report --reanalyse``) from the bytes the probe copied out: rendering decodes no
machine code. Everything in a document came from an environment and is written through
:mod:`cells`; a document with missing or malformed parts shows the missing-value mark and the
reason.
"""

from __future__ import annotations

from vdsomatrix.report.cells import (
    MISSING,
    Result,
    call_row,
    cell,
    code_block,
    enters_kernel,
    entries,
    html_line,
    part,
    table,
    text,
    whole_number,
)

ENTRY_POINTS = ("syscall", "clock_gettime", "gettimeofday", "time")
# The row of calls[] that measures each entry point (path "libc"); the probe does not time
# libc's syscall() wrapper itself.
MEASURED_CALL = {"clock_gettime": "clock_gettime(CLOCK_MONOTONIC)",
                 "gettimeofday": "gettimeofday", "time": "time"}
VDSO_CLASSES = ("vdso-then-syscall-fallback", "vdso-via-ifunc-resolver")


def libc_label(result: Result) -> str:
    """The libc an environment reports, as "name version linkage"."""
    return " ".join(w for key in ("name", "version", "linkage")
                    if (w := part(result.environment, "libc", key)) and isinstance(w, str))


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


def _footnotes(missing: list[tuple[str, str]]) -> list[str]:
    if not missing:
        return []
    lines = ["", f"{MISSING}: no data for that environment:"]
    lines += [f"- {cell(name)}: {cell(reason, 240)}" for name, reason in missing]
    return lines


def _identity(vdso: dict | None) -> str:
    """A vDSO's soname and the start of its build-id."""
    if vdso is None:
        return MISSING
    soname = text(vdso.get("soname")) or "?"
    return cell(f"{soname} {(text(vdso.get('build_id')) or '')[:12]}")


def _vdso_symbols(results: list[Result]) -> list[str]:
    out = ["### vDSO symbols", "",
           "Functions each environment's vDSO exports, with their symbol version (the "
           "`objdump -T` view). \\* marks a function whose code holds a `syscall` fallback.", ""]
    per_result: list[dict[str, str] | None] = []
    names: set[str] = set()
    missing = []
    for result in results:
        if result.vdso_analysis is None:
            per_result.append(None)
            missing.append((result.name, vdso_reason(result)))
            continue
        versions: dict[str, str] = {}
        for sym in entries(result.vdso_analysis.get("symbols")):
            if not isinstance(sym, dict) or not isinstance(sym.get("name"), str):
                continue
            if sym.get("type") not in ("FUNC", "GNU_IFUNC") or sym.get("section") == "*UND*":
                continue
            version = sym.get("version") if isinstance(sym.get("version"), str) else "unversioned"
            shown = f"({version})" if sym.get("version_hidden") is True else version
            if sym.get("syscall_fallback") is True:
                shown += " *"
            versions[sym["name"]] = shown
            names.add(sym["name"])
        per_result.append(versions)
    if not names and all(t is None for t in per_result):
        out.append("No environment has an analysed vDSO.")
        return out + _footnotes(missing)
    ordered = sorted(names, key=lambda n: (n.lstrip("_").removeprefix("vdso_"), n))
    rows = []
    for name in ordered:
        row = [cell(name)]
        for versions in per_result:
            row.append(MISSING if versions is None else cell(versions.get(name, "")))
        rows.append(row)
    rows.append(["*soname / build-id*"] + [_identity(r.vdso_analysis) for r in results])
    out.append(table(["symbol"] + [cell(r.name) for r in results], rows))
    return out + _footnotes(missing)


def _census(results: list[Result]) -> list[str]:
    out = ["### Kernel-entry instructions", "",
           "Instructions that enter the kernel, counted in the executable code of the libc the "
           "environment loaded, the way `objdump -d` decodes it. Static builds count the whole "
           "probe binary: libc linked in, plus the probe's own deliberate `syscall` and "
           "`int 0x80`. *functions*: how many functions hold them; an estimate when the binary "
           "has no full symbol table.", ""]
    rows = []
    missing = []
    for result in results:
        census = part(result.libc_analysis, "census")
        vdso_census = part(result.vdso_analysis, "census")
        vdso_text = MISSING
        if isinstance(vdso_census, dict):
            vdso_text = cell(whole_number(vdso_census.get("syscall")))
        if not isinstance(census, dict):
            missing.append((result.name, libc_reason(result)))
            rows.append([cell(result.name), cell(libc_label(result)), *[MISSING] * 5, vdso_text])
            continue
        functions = whole_number(census.get("functions"))
        symbols = part(result.libc_analysis, "symbols")
        rows.append([
            cell(result.name), cell(libc_label(result)),
            cell(whole_number(census.get("syscall"))), cell(whole_number(census.get("sysenter"))),
            cell(whole_number(census.get("int80"))),
            cell(functions if functions is not None else "?"),
            cell(symbols if isinstance(symbols, str) else ""),
            vdso_text,
        ])
    out.append(table(["environment", "libc", "syscall", "sysenter", "int 0x80", "functions",
                      "symbols from", "syscall in vDSO"], rows))
    return out + _footnotes(missing)


def _usage(results: list[Result]) -> list[str]:
    out = ["### vDSO: what the kernel offers, what the libc uses", "",
           "*offers*: the vDSO's `__vdso_*` functions; *asks for*: the `__vdso_*` names in the "
           "libc's read-only data (in a static probe binary, without the names only the probe's "
           "own code mentions) and, for a dynamic build, in its loader's (ld.so, where dynamic "
           "glibc looks most of them up); each name says which object asks for it when both "
           "were analysed; *used*: both.", ""]
    rows = []
    missing = []
    notes: list[tuple[str, str]] = []
    for result in results:
        usage = part(result.libc_analysis, "vdso_usage")
        if not isinstance(usage, dict):
            missing.append((result.name, libc_reason(result)))
            rows.append([cell(result.name), cell(libc_label(result)), *[MISSING] * 4])
            continue
        offered = [n for n in entries(usage.get("offered")) if isinstance(n, str)]
        asked = [n for n in entries(usage.get("requested")) if isinstance(n, str)]
        used = [n for n in entries(usage.get("used")) if isinstance(n, str)]
        gone = [n for n in entries(usage.get("missing")) if isinstance(n, str)]
        by = usage.get("requested_by")
        if isinstance(by, dict) and len(entries(usage.get("objects"))) > 1:
            asked = [n + (" (" + ", ".join(o for o in entries(by.get(n)) if isinstance(o, str))
                          + ")" if entries(by.get(n)) else "") for n in asked]
        offered_text = (f"{len(offered)}: " + ", ".join(offered)) if offered else "none"
        if result.vdso_analysis is None:
            offered_text = f"{MISSING} (no vDSO data)"
        rows.append([
            cell(result.name), cell(libc_label(result)), cell(offered_text, 400),
            cell(", ".join(asked) or "none", 600),
            cell(f"{len(used)} of {len(offered)}" if result.vdso_analysis is not None else MISSING),
            cell(", ".join(gone), 400),
        ])
        notes.extend((result.name, n) for n in entries(usage.get("notes")) if isinstance(n, str))
    out.append(table(["environment", "libc", "kernel offers", "libc asks for", "used",
                      "asked for, not offered"], rows))
    out += _footnotes(missing)
    if notes:
        out += ["", "Notes:"] + [f"- {cell(name)}: {cell(note, 300)}" for name, note in notes]
    return out


def _measured(result: Result, name: str) -> tuple[str, bool | None]:
    """The measured mechanism of an entry point's libc call, as text, and as syscall or not."""
    call = MEASURED_CALL.get(name)
    if call is None:
        return "not measured", None
    row = call_row(result, call, "libc")
    if row is None:
        return "not measured", None
    entered = enters_kernel(row)
    if entered is None:
        status = row.get("status")
        return ("system calls not counted" if status == "ok"
                else f"measured: {status if isinstance(status, str) else '?'}"), None
    return ("syscall" if entered else "no syscall"), entered


def _expected(result: Result, name: str, klass: str) -> bool | None:
    """Whether the static classification predicts a system call for the measured call here:
    a vDSO route behaves like the vDSO symbol called directly in the same environment (which
    itself falls back to the kernel for a clock source it cannot read), or like the fallback
    when the vDSO lacks the symbol; None when it predicts nothing checkable."""
    if klass == "syscall":
        return True
    if klass not in VDSO_CLASSES or name not in MEASURED_CALL:
        return None
    row = call_row(result, MEASURED_CALL[name], "vdso")
    if isinstance(row, dict) and row.get("status") == "unsupported":
        return True
    return enters_kernel(row)


def _entry_points(results: list[Result]) -> list[str]:
    out = ["### How the libc's entry points reach the kernel (static estimate, and measured)", "",
           "From a bounded linear walk of each function's code: *vdso-then-syscall-fallback* "
           "means an indirect call through a pointer loaded from data (where a libc keeps the "
           "vDSO's address) plus a `syscall` on another path; *vdso-via-ifunc-resolver* means an "
           "IFUNC whose resolver returns the vDSO's own function (looked up by name, or read from "
           "glibc's `GLRO(dl_vdso_*)`), so calls jump straight into the vDSO, with libc code that "
           "makes the system call as the fallback; *syscall* means a `syscall` and no such call. "
           "A reading of the code, not a trace: after each, *measured* is what the probe counted "
           "for the same libc call in the same environment (`clock_gettime` on "
           "`CLOCK_MONOTONIC`; `syscall()` itself is not timed), and *(disagrees)* marks a "
           "static reading the measurement contradicts (a vDSO route is expected to behave like "
           "the vDSO symbol called directly there).", ""]
    rows = []
    missing = []
    disagreements: list[tuple[str, str]] = []
    for result in results:
        eps = part(result.libc_analysis, "entry_points")
        row = [cell(result.name)]
        for name in ENTRY_POINTS:
            measured, entered = _measured(result, name)
            beside = f"measured: {measured}" if entered is not None else measured
            if not isinstance(eps, dict):
                row.append(cell(f"{MISSING}; {beside}"))
                continue
            ep = eps.get(name)
            klass = part(ep, "classification")
            reading = klass if isinstance(klass, str) else MISSING
            if part(ep, "ifunc") is True and "ifunc" not in reading:
                reading += " (IFUNC)"
            reading += f"; {beside}"
            expected = _expected(result, name, klass) if isinstance(klass, str) else None
            if expected is not None and entered is not None and expected != entered:
                reading += " (disagrees)"
                disagreements.append((result.name, f"{name}: static {klass}, measured {measured}"))
            row.append(cell(reading))
        if not isinstance(eps, dict):
            missing.append((result.name, libc_reason(result)))
        rows.append(row)
    out.append(table(["environment"] + [f"`{n}`" if n != "syscall" else "`syscall()`"
                                        for n in ENTRY_POINTS], rows))
    out += _footnotes(missing)
    if disagreements:
        out += ["", "Static reading and measurement disagree (the measurement is the truth; "
                "the analysis misreads this code):"]
        out += [f"- {cell(name)}: {cell(reading, 300)}" for name, reading in disagreements]
    return out


def _wrappers(results: list[Result]) -> list[str]:
    out = ["### The `syscall()` wrapper, per distinct libc", ""]
    groups: dict[str, list[Result]] = {}
    order: list[str] = []
    for result in results:
        ep = part(result.libc_analysis, "entry_points", "syscall")
        listing = part(ep, "listing")
        if not isinstance(listing, list) or not listing:
            continue
        digest = part(result.libc_analysis, "sha256")
        key = digest if isinstance(digest, str) and digest else f"unhashed:{result.name}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(result)
    if not groups:
        out.append("No libc was disassembled.")
        return out
    for key in order:
        members = groups[key]
        first = members[0]
        ep = part(first.libc_analysis, "entry_points", "syscall")
        lines = [text(x) or "" for x in entries(part(ep, "listing"))[:200]]
        path = part(first.libc_analysis, "path")
        role = part(first.libc_analysis, "role")
        summary = (f"{libc_label(first) or 'libc'}: {path if isinstance(path, str) else '?'}"
                   f"{' (probe binary)' if role == 'probe-binary' else ''}"
                   f" in {', '.join(e.name for e in members)}"
                   f" (sha256 {key[:12]}, {text(part(ep, 'classification')) or '?'})")
        out += ["<details>", f"<summary>{html_line(summary, 400)}</summary>", "",
                code_block(lines), "", "</details>", ""]
    return out


def render_analysis(results: list[Result]) -> str:
    """Markdown: vDSO symbols, instruction census, vDSO use and syscall() listings.

    Level-3 sections under no heading of their own: the caller puts them under its "Binary
    analysis" heading.
    """
    if not results:
        return "No results to analyse.\n"
    out = ["Read from the bytes each environment shipped (its vDSO image and its libc) with "
           "pyelftools and capstone, on the host. Classifications are static estimates.", ""]
    for section in (_vdso_symbols, _census, _usage, _entry_points, _wrappers):
        out += section(results)
        out.append("")
    return "\n".join(out)
