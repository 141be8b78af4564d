"""Markdown sections of the report built from the binary analysis of each result.

``render_analysis(results)`` is a pure function of result documents that already carry
``doc["analysis"]`` (see ``analyse_result``). Everything in a document came from an environment
and is untrusted: table cells go through ``markdown.cell()``, listings through
``markdown.code_block()``, and a document with missing or malformed parts shows "—" and the
reason instead of breaking the report.
"""

from __future__ import annotations

import html
import re
from typing import Any

from tabulate import tabulate

from vdsomatrix.markdown import cell, code_block

DASH = "—"
ENTRY_POINTS = ("syscall", "clock_gettime", "gettimeofday", "time")
# The row of calls[] that measures each entry point (path "libc"); the probe does not time
# libc's syscall() wrapper itself.
MEASURED_CALL = {"clock_gettime": "clock_gettime(CLOCK_MONOTONIC)",
                 "gettimeofday": "gettimeofday", "time": "time"}
VDSO_CLASSES = ("vdso-then-syscall-fallback", "vdso-via-ifunc-resolver")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MD_IN_HTML = re.compile(r"[\\`*_{}\[\]()#+!|~]")


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _list(obj: Any) -> list:
    return obj if isinstance(obj, list) else []


def _int(obj: Any) -> int | None:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else None


def _html_line(value: object, limit: int = 160) -> str:
    """Untrusted text as one inert line of HTML: escaped, and every Markdown special written
    as a character reference, so it stays plain text whether or not a renderer looks for
    Markdown inside the HTML block."""
    text = _CONTROL.sub("?", str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_IN_HTML.sub(lambda m: f"&#{ord(m.group())};", html.escape(text, quote=True))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


class _Env:
    """The parts of one result document the analysis report reads, already type-checked."""

    def __init__(self, doc: Any, position: int):
        self.doc = doc if isinstance(doc, dict) else {}
        name = _get(self.doc, "environment", "name")
        self.name = name if isinstance(name, str) and name else f"result #{position + 1}"
        analysis = self.doc.get("analysis")
        self.analysis = analysis if isinstance(analysis, dict) else None
        vdso = _get(self.analysis, "vdso")
        libc = _get(self.analysis, "libc")
        self.vdso = vdso if isinstance(vdso, dict) else None
        self.libc = libc if isinstance(libc, dict) else None
        self.errors = [e for e in _list(_get(self.analysis, "errors")) if isinstance(e, str)]
        self.calls = [r for r in _list(self.doc.get("calls")) if isinstance(r, dict)]
        env_libc = _get(self.doc, "environment", "libc")
        self.libc_name = " ".join(
            str(x) for x in (_get(env_libc, "name"), _get(env_libc, "version"),
                             _get(env_libc, "linkage")) if isinstance(x, str) and x)

    def call(self, call: str, path: str) -> dict | None:
        for row in self.calls:
            if row.get("call") == call and row.get("path") == path:
                return row
        return None

    def _reason(self, prefix: str, fallback: str) -> str:
        if self.analysis is None:
            return "no analysis in this result"
        for err in self.errors:
            if err.startswith(prefix):
                return err
        return fallback

    def vdso_reason(self) -> str:
        vdso = _get(self.doc, "vdso")
        if _get(vdso, "present") is False:
            fallback = "no vDSO in this environment"
        elif isinstance(vdso, dict) and not vdso.get("image"):
            fallback = "the probe copied no vDSO image"
        else:
            fallback = "vDSO not analysed"
        return self._reason("vdso image:", fallback)

    def libc_reason(self) -> str:
        art = _get(self.doc, "artefacts", "libc")
        fallback = ("the probe shipped no libc artefact" if art is None
                    else "libc not analysed")
        return self._reason("libc artefact:", fallback)


def _footnotes(missing: list[tuple[str, str]]) -> list[str]:
    if not missing:
        return []
    lines = ["", f"{DASH}: no data for that environment:"]
    lines += [f"- {cell(name)}: {cell(reason, 240)}" for name, reason in missing]
    return lines


def _vdso_symbols(envs: list[_Env]) -> list[str]:
    out = ["### vDSO symbols", "",
           "Functions each environment's vDSO exports, with their symbol version (the "
           "`objdump -T` view). \\* marks a function whose code holds a `syscall` fallback.", ""]
    per_env: list[dict[str, str] | None] = []
    names: set[str] = set()
    missing = []
    for env in envs:
        if env.vdso is None:
            per_env.append(None)
            missing.append((env.name, env.vdso_reason()))
            continue
        table: dict[str, str] = {}
        for sym in _list(env.vdso.get("symbols")):
            if not isinstance(sym, dict) or not isinstance(sym.get("name"), str):
                continue
            if sym.get("type") not in ("FUNC", "GNU_IFUNC") or sym.get("section") == "*UND*":
                continue
            version = sym.get("version") if isinstance(sym.get("version"), str) else "unversioned"
            text = f"({version})" if sym.get("version_hidden") is True else version
            if sym.get("syscall_fallback") is True:
                text += " *"
            table[sym["name"]] = text
            names.add(sym["name"])
        per_env.append(table)
    if not names and all(t is None for t in per_env):
        out.append("No environment has an analysed vDSO.")
        return out + _footnotes(missing)
    ordered = sorted(names, key=lambda n: (n.lstrip("_").removeprefix("vdso_"), n))
    rows = []
    for name in ordered:
        row = [cell(name)]
        for table in per_env:
            row.append(DASH if table is None else cell(table.get(name, "")))
        rows.append(row)
    rows.append(["*soname / build-id*"] + [
        DASH if env.vdso is None else cell(
            f"{env.vdso.get('soname') or '?'} {str(env.vdso.get('build_id') or '')[:12]}")
        for env in envs])
    out.append(_table(["symbol"] + [cell(e.name) for e in envs], rows))
    return out + _footnotes(missing)


def _census(envs: list[_Env]) -> list[str]:
    out = ["### Kernel-entry instructions", "",
           "Instructions that enter the kernel, counted in the executable code of the libc the "
           "environment loaded, the way `objdump -d` decodes it. Static builds count the whole "
           "probe binary: libc linked in, plus the probe's own deliberate `syscall` and "
           "`int 0x80`. *functions*: how many functions hold them; an estimate when the binary "
           "has no full symbol table.", ""]
    rows = []
    missing = []
    for env in envs:
        census = _get(env.libc, "census")
        vdso_census = _get(env.vdso, "census")
        vdso_text = DASH
        if isinstance(vdso_census, dict):
            vdso_text = cell(_int(vdso_census.get("syscall")))
        if not isinstance(census, dict):
            missing.append((env.name, env.libc_reason()))
            rows.append([cell(env.name), cell(env.libc_name), DASH, DASH, DASH, DASH, DASH,
                         vdso_text])
            continue
        functions = _int(census.get("functions"))
        symbols = _get(env.libc, "symbols")
        rows.append([
            cell(env.name), cell(env.libc_name),
            cell(_int(census.get("syscall"))), cell(_int(census.get("sysenter"))),
            cell(_int(census.get("int80"))),
            cell(functions if functions is not None else "?"),
            cell(symbols if isinstance(symbols, str) else ""),
            vdso_text,
        ])
    out.append(_table(["environment", "libc", "syscall", "sysenter", "int 0x80", "functions",
                       "symbols from", "syscall in vDSO"], rows))
    return out + _footnotes(missing)


def _usage(envs: list[_Env]) -> list[str]:
    out = ["### vDSO: what the kernel offers, what the libc uses", "",
           "*offers*: the vDSO's `__vdso_*` functions; *asks for*: the `__vdso_*` names in the "
           "libc's read-only data (in a static probe binary, without the names only the probe's "
           "own code mentions) and, for a dynamic build, in its loader's (ld.so, where dynamic "
           "glibc looks most of them up); each name says which object asks for it when both "
           "were analysed; *used*: both.", ""]
    rows = []
    missing = []
    notes: list[tuple[str, str]] = []
    for env in envs:
        usage = _get(env.libc, "vdso_usage")
        if not isinstance(usage, dict):
            missing.append((env.name, env.libc_reason()))
            rows.append([cell(env.name), cell(env.libc_name), DASH, DASH, DASH, DASH])
            continue
        offered = [n for n in _list(usage.get("offered")) if isinstance(n, str)]
        asked = [n for n in _list(usage.get("requested")) if isinstance(n, str)]
        used = [n for n in _list(usage.get("used")) if isinstance(n, str)]
        gone = [n for n in _list(usage.get("missing")) if isinstance(n, str)]
        by = usage.get("requested_by")
        if isinstance(by, dict) and len(_list(usage.get("objects"))) > 1:
            asked = [n + (" (" + ", ".join(o for o in _list(by.get(n)) if isinstance(o, str))
                          + ")" if _list(by.get(n)) else "") for n in asked]
        offered_text = (f"{len(offered)}: " + ", ".join(offered)) if offered else "none"
        if env.vdso is None:
            offered_text = f"{DASH} (no vDSO data)"
        rows.append([
            cell(env.name), cell(env.libc_name), cell(offered_text, 400),
            cell(", ".join(asked) or "none", 600),
            cell(f"{len(used)} of {len(offered)}" if env.vdso is not None else DASH),
            cell(", ".join(gone), 400),
        ])
        notes.extend((env.name, n) for n in _list(usage.get("notes")) if isinstance(n, str))
    out.append(_table(["environment", "libc", "kernel offers", "libc asks for", "used",
                       "asked for, not offered"], rows))
    out += _footnotes(missing)
    if notes:
        out += ["", "Notes:"] + [f"- {cell(name)}: {cell(note, 300)}" for name, note in notes]
    return out


def _syscalls(row: dict | None) -> bool | None:
    """Whether a measured row entered the kernel with a system call (None: not measured)."""
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None
    spc = row.get("syscalls_per_call")
    if not isinstance(spc, int | float) or isinstance(spc, bool):
        return None
    return spc >= 0.5


def _measured(env: _Env, name: str) -> tuple[str, bool | None]:
    """The measured mechanism of an entry point's libc call, as text, and as syscall or not."""
    call = MEASURED_CALL.get(name)
    if call is None:
        return "not measured", None
    row = env.call(call, "libc")
    if row is None:
        return "not measured", None
    entered = _syscalls(row)
    if entered is None:
        status = row.get("status")
        return ("system calls not counted" if status == "ok"
                else f"measured: {status if isinstance(status, str) else '?'}"), None
    return ("syscall" if entered else "no syscall"), entered


def _expected(env: _Env, name: str, klass: str) -> bool | None:
    """Whether the static classification predicts a system call for the measured call here:
    a vDSO route behaves like the vDSO symbol called directly in the same environment (which
    itself falls back to the kernel for a clock source it cannot read), or like the fallback
    when the vDSO lacks the symbol; None when it predicts nothing checkable."""
    if klass == "syscall":
        return True
    if klass not in VDSO_CLASSES or name not in MEASURED_CALL:
        return None
    row = env.call(MEASURED_CALL[name], "vdso")
    if isinstance(row, dict) and row.get("status") == "unsupported":
        return True
    return _syscalls(row)


def _entry_points(envs: list[_Env]) -> list[str]:
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
    for env in envs:
        eps = _get(env.libc, "entry_points")
        row = [cell(env.name)]
        for name in ENTRY_POINTS:
            measured, entered = _measured(env, name)
            beside = f"measured: {measured}" if entered is not None else measured
            if not isinstance(eps, dict):
                row.append(cell(f"{DASH}; {beside}"))
                continue
            ep = eps.get(name)
            klass = _get(ep, "classification")
            text = klass if isinstance(klass, str) else DASH
            if _get(ep, "ifunc") is True and "ifunc" not in text:
                text += " (IFUNC)"
            text += f"; {beside}"
            expected = _expected(env, name, klass) if isinstance(klass, str) else None
            if expected is not None and entered is not None and expected != entered:
                text += " (disagrees)"
                disagreements.append((env.name, f"{name}: static {klass}, measured {measured}"))
            row.append(cell(text))
        if not isinstance(eps, dict):
            missing.append((env.name, env.libc_reason()))
        rows.append(row)
    out.append(_table(["environment"] + [f"`{n}`" if n != "syscall" else "`syscall()`"
                                         for n in ENTRY_POINTS], rows))
    out += _footnotes(missing)
    if disagreements:
        out += ["", "Static reading and measurement disagree (the measurement is the truth; "
                "the analysis misreads this code):"]
        out += [f"- {cell(name)}: {cell(text, 300)}" for name, text in disagreements]
    return out


def _wrappers(envs: list[_Env]) -> list[str]:
    out = ["### The `syscall()` wrapper, per distinct libc", ""]
    groups: dict[str, list[_Env]] = {}
    order: list[str] = []
    for env in envs:
        ep = _get(env.libc, "entry_points", "syscall")
        listing = _get(ep, "listing")
        if not isinstance(listing, list) or not listing:
            continue
        digest = _get(env.libc, "sha256")
        key = digest if isinstance(digest, str) and digest else f"unhashed:{env.name}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(env)
    if not groups:
        out.append("No libc was disassembled.")
        return out
    for key in order:
        members = groups[key]
        first = members[0]
        ep = _get(first.libc, "entry_points", "syscall") or {}
        lines = [str(x) for x in _list(ep.get("listing"))[:200]]
        path = _get(first.libc, "path")
        role = _get(first.libc, "role")
        summary = (f"{first.libc_name or 'libc'}: {path if isinstance(path, str) else '?'}"
                   f"{' (probe binary)' if role == 'probe-binary' else ''}"
                   f" in {', '.join(e.name for e in members)}"
                   f" (sha256 {key[:12]}, {ep.get('classification', '?')})")
        out += ["<details>", f"<summary>{_html_line(summary, 400)}</summary>", "",
                code_block(lines), "", "</details>", ""]
    return out


def render_analysis(results: list[dict]) -> str:
    """Markdown: vDSO symbols, instruction census, vDSO use and syscall() listings.

    Level-3 sections under no heading of their own: the caller puts them under its "Binary
    analysis" heading.
    """
    envs = [_Env(doc, i) for i, doc in enumerate(results if isinstance(results, list) else [])]
    out: list[str] = []
    if not envs:
        return "\n".join(out + ["No results to analyse.", ""])
    out += ["Read from the bytes each environment shipped (its vDSO image and its libc) with "
            "pyelftools and capstone, on the host. Classifications are static estimates.", ""]
    for part in (_vdso_symbols, _census, _usage, _entry_points, _wrappers):
        try:
            out += part(envs)
        except Exception as exc:  # a report must render even if one section cannot
            out.append(f"(this section could not be rendered: {cell(type(exc).__name__)})")
        out.append("")
    return "\n".join(out)
