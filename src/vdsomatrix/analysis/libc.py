"""How a C library enters the kernel, read statically from its code.

Three questions, each answered from the bytes of the libc an environment really loaded (or of
the static probe binary, which has its libc linked in):

* census: how many ``syscall`` / ``sysenter`` / ``int 0x80`` instructions the executable code
  holds (counted exactly as ``objdump -d`` shows them, see sweep.py) and in which functions;
* entry points: whether ``syscall()``, ``clock_gettime``, ``gettimeofday`` and ``time`` reach the
  vDSO (an indirect call through a pointer loaded from data: glibc keeps the vDSO's addresses in
  ``GLRO(dl_vdso_*)``, musl in a static ``vdso_func``; or, for an IFUNC, a resolver that returns
  such a pointer, so that calls land in the vDSO itself) or a ``syscall`` instruction, with the
  addresses of the evidence. This is a static estimate over a bounded linear walk, not a trace;
* vDSO names: which ``__vdso_*`` symbols and ``LINUX_*`` versions the libc's read-only data
  names, i.e. what it will ask the vDSO for. Dynamic glibc asks for most of them in its loader
  (ld.so, ``setup_vdso_pointers``): ``analyse_ldso`` reads those, and ``vdso_usage`` merges both.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import capstone
from capstone import x86

from vdsomatrix.analysis.elfimage import SHF_ALLOC, ElfImage, ElfProblem, Symbol
from vdsomatrix.analysis.sweep import KINDS, classify, sweep, sweep_starts

LABEL = "libc artefact"
LDSO_LABEL = "ldso artefact"
MAX_SYMBOLS = 400_000
ENTRY_POINTS = ("syscall", "clock_gettime", "gettimeofday", "time")
MAX_WALK = 64  # instructions per function walked for an entry point
MAX_FOLLOW = 6  # direct callees (or IFUNC candidates) walked per entry point
STRIPPED = "none (stripped: function attribution is an estimate)"
VDSO_NAME = re.compile(
    rb"(?<![\w.])(__vdso_\w{1,64}|__kernel_\w{1,64}|LINUX_\d{1,3}(?:\.\d{1,3}){0,3})\x00")
CLASSES = ("vdso-then-syscall-fallback", "vdso-via-ifunc-resolver", "syscall", "unknown")
# Where a glibc keeps the vDSO's function pointers: GLRO(dl_vdso_*) in ld.so's _rtld_global_ro
# (dynamic), or the _dl_vdso_* variables (static).
VDSO_POINTER_HOMES = ("_rtld_global_ro", "_rtld_global", "_dl_vdso_")
CALLER_SAVED = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")
OBJECT_LABELS = {"dynamic-loader": "ld.so"}  # any other role: "libc"


def analyse_libc(data: bytes, meta: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """Analyse a libc (or static binary); (analysis or None when unreadable, errors)."""
    try:
        image = ElfImage(data)
    except ElfProblem as exc:
        return None, [f"{LABEL}: {exc}"]
    try:
        out = _analyse(image, meta)
    finally:
        errors = [f"{LABEL}: {p}" for p in image.problems]
    return out, errors


def analyse_ldso(data: bytes, meta: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The dynamic loader: identity and the ``__vdso_*`` names it asks the vDSO for."""
    try:
        image = ElfImage(data)
    except ElfProblem as exc:
        return None, [f"{LDSO_LABEL}: {exc}"]
    try:
        out = {**_identity(image, meta), "vdso_names": scan_vdso_names(image)}
    finally:
        errors = [f"{LDSO_LABEL}: {p}" for p in image.problems]
    return out, errors


def _identity(image: ElfImage, meta: dict[str, Any]) -> dict[str, Any]:
    """What a shipped object is: where it came from (meta) and what its ELF headers say."""
    return {
        "path": meta.get("path"),
        "role": meta.get("role"),
        "size": len(image.data),
        "sha256": meta.get("sha256"),
        "machine": image.machine,
        "elf_type": image.elf_type,
        "soname": image.soname(),
        "build_id": image.build_id(),
    }


def _analyse(image: ElfImage, meta: dict[str, Any]) -> dict[str, Any]:
    symtab = image.symbols("SHT_SYMTAB", MAX_SYMBOLS)
    dynsym = image.symbols("SHT_DYNSYM", MAX_SYMBOLS)
    if any(s.name for s in symtab):
        symbols, source = symtab, "symtab"
    elif any(s.name for s in dynsym):
        symbols, source = dynsym, "dynsym"
    else:
        symbols, source = [], STRIPPED
    out: dict[str, Any] = {
        **_identity(image, meta),
        "symbols": source,
        "census": None,
        "functions": [],
        "entry_points": {},
        "vdso_names": scan_vdso_names(image),
        "vdso_usage": None,
    }
    md = image.disassembler()
    if md is None:
        return out
    index = FunctionIndex(symbols)
    regions, region_source = image.executable_regions()
    names = out["vdso_names"]
    result = sweep(md, regions, sweep_starts(symbols), max_bytes=len(image.data),
                   targets=frozenset(names["addresses"].values()))
    _attribute_names(names, result.refs, index, symtab, meta.get("role"))
    if result.truncated:
        image.problems.append(f"executable sections add up to more than the file's "
                              f"{len(image.data)} bytes; the census stops there")
    counts = {k: 0 for k in KINDS}
    functions: dict[int | None, dict[str, Any]] = {}
    for site in result.sites:
        counts[site.kind] += 1
        fn, exact = index.containing(site.address)
        key = fn.value if fn else None
        row = functions.get(key)
        if row is None:
            row = functions[key] = {"name": fn.name if fn else None,
                                    "address": fn.value if fn else None,
                                    "exact": exact, **{k: 0 for k in KINDS}, "sites": []}
        row[site.kind] += 1
        row["sites"].append({"address": site.address, "kind": site.kind})
        row["exact"] = row["exact"] and exact
    out["functions"] = sorted(functions.values(), key=lambda r: (r["address"] is None,
                                                                  r["address"] or 0))
    attributed = [r for r in out["functions"] if r["name"] is not None]
    out["census"] = {
        **counts,
        "functions": len(attributed) if symbols else None,
        "attribution": ("none" if not symbols else
                        "exact" if all(r["exact"] for r in out["functions"]) else "estimate"),
        "instructions": result.instructions,
        "bytes": result.bytes,
        "undecodable_bytes": result.undecodable_bytes,
        "source": region_source,
        "complete": not result.truncated,
        "sections": [name for name, _a, _d in regions][:64],
    }
    walker = EntryWalker(image, index, symtab or dynsym, image.got_names(dynsym))
    for name in ENTRY_POINTS:
        out["entry_points"][name] = walker.describe(name)
    return out


# -- functions and names ------------------------------------------------------------------------


def _preference(sym: Symbol) -> tuple:
    """Sort key choosing the name to show among aliases at one address (public names first)."""
    underscores = len(sym.name) - len(sym.name.lstrip("_"))
    binding = {"GLOBAL": 0, "WEAK": 1}.get(sym.binding, 2)
    return (underscores, binding, sym.version_hidden, len(sym.name), sym.name)


class FunctionIndex:
    """Function symbols by address: which function holds an address, what is at an address."""

    def __init__(self, symbols: Iterable[Symbol]):
        best: dict[int, Symbol] = {}
        self.by_name: dict[str, list[Symbol]] = {}
        for sym in symbols:
            if not sym.name or not sym.defined or sym.section in ("*ABS*", "*COM*"):
                continue
            if sym.is_function or sym.type == "NOTYPE":
                self.by_name.setdefault(sym.name, []).append(sym)
            if not sym.is_function:
                continue
            cur = best.get(sym.value)
            # Among aliases at one address: the one with a size, then the public name.
            if cur is None or (-sym.size, _preference(sym)) < (-cur.size, _preference(cur)):
                best[sym.value] = sym
        self.starts = sorted(best)
        self.syms = [best[a] for a in self.starts]

    def containing(self, address: int) -> tuple[Symbol | None, bool]:
        """The function at or before ``address`` and whether its size really covers it."""
        i = bisect.bisect_right(self.starts, address) - 1
        if i < 0:
            return None, False
        sym = self.syms[i]
        return sym, bool(sym.size) and address < sym.value + sym.size

    def label(self, address: int) -> str | None:
        """``name+0xoff`` when a sized function symbol covers ``address``, else None."""
        sym, exact = self.containing(address)
        if sym is None or not (exact or sym.value == address):
            return None
        off = address - sym.value
        return f"{sym.name}+{off:#x}" if off else sym.name

    def lookup(self, name: str) -> Symbol | None:
        cands = [s for s in self.by_name.get(name, []) if s.value]
        if not cands:
            return None
        return min(cands, key=lambda s: (s.version_hidden, not s.is_function, s.index))


def scan_vdso_names(image: ElfImage) -> dict[str, Any]:
    """``__vdso_*`` symbol names and ``LINUX_*`` versions in the image's read-only data."""
    found: dict[str, int] = {}
    areas: list[tuple[int, bytes]] = []
    budget = len(image.data)  # overlapping sections must not multiply the work
    for sec in image.sections:
        if (sec.flags & SHF_ALLOC and not sec.executable and sec.type == "SHT_PROGBITS"
                and sec.has_bytes):
            areas.append((sec.addr, image.section_bytes(sec)))
    if not image.sections:
        for seg in image.segments:
            if seg.type == "PT_LOAD" and not seg.flags & 1:
                areas.append((seg.vaddr, image.data[seg.offset: seg.offset + seg.filesz]))
    for base, blob in areas:
        budget -= len(blob)
        if budget < 0:
            image.problems.append("read-only sections add up to more than the file; "
                                  "vDSO name scan stopped")
            break
        for m in itertools.islice(VDSO_NAME.finditer(blob), 4096):
            found.setdefault(m.group(1).decode("ascii"), base + m.start(1))
    names = sorted(n for n in found if not n.startswith("LINUX_"))
    versions = sorted(n for n in found if n.startswith("LINUX_"))
    return {"symbols": names, "versions": versions,
            "addresses": {n: found[n] for n in sorted(found)},
            "referenced_from": {}, "program_only": []}


PROGRAM_SOURCE = (".c", ".cc", ".cpp", ".cxx")
STARTUP_FILES = ("crt1.c", "Scrt1.c", "rcrt1.c", "crtstuff.c", "crti.c", "crtn.c")


def program_functions(symtab: list[Symbol]) -> set[str]:
    """Functions of the program itself in a static binary, as far as the symbol table tells:
    ``main``, and the local functions of compilation units named as sources (``probe.c``);
    libc's objects are named ``*.o`` (glibc) or ``*.lo`` (musl)."""
    own = {"main"}
    current = ""
    for sym in symtab:
        if sym.type == "FILE":
            current = sym.name
        elif sym.is_function and sym.binding == "LOCAL" and current.endswith(PROGRAM_SOURCE) \
                and current not in STARTUP_FILES:
            own.add(sym.name)
    return own


def _attribute_names(names: dict[str, Any], refs: list[tuple[int, int]], index: FunctionIndex,
                     symtab: list[Symbol], role: str | None) -> None:
    """Which functions reference each vDSO name; in a static probe binary, set apart the
    names only the program itself (not its libc) looks up."""
    by_address: dict[int, set[str]] = {}
    for target, address in refs:
        fn, _exact = index.containing(address)
        by_address.setdefault(target, set()).add(fn.name if fn else f"{address:#x}")
    referenced = {name: sorted(by_address.get(addr, ()))[:16]
                  for name, addr in names["addresses"].items()}
    names["referenced_from"] = referenced
    names["program_only"] = []
    if role == "probe-binary" and symtab:
        own = program_functions(symtab)
        names["program_only"] = [n for n in names["symbols"]
                                 if referenced.get(n) and set(referenced[n]) <= own]


def vdso_usage(vdso: dict[str, Any] | None, libc: dict[str, Any],
               env_libc: dict[str, Any] | None,
               ldso: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kernel offers X, this libc (with its loader, when analysed) asks for Y: the intersection,
    with caveats. ``requested_by`` says which object asks for each name (``libc``, ``ld.so``)."""
    libc_names = libc.get("vdso_names") if isinstance(libc.get("vdso_names"), dict) else {}
    program_only = list(libc_names.get("program_only", []))
    requested_by: dict[str, list[str]] = {}
    versions: set[str] = set()
    objects = []
    for obj, names in ((libc, libc_names),
                       (ldso, ldso.get("vdso_names") if isinstance(ldso, dict) else None)):
        if not isinstance(names, dict):
            continue
        label = OBJECT_LABELS.get(str(obj.get("role")), "libc") if obj is not None else "libc"
        objects.append(label)
        for name in names.get("symbols", []):
            if isinstance(name, str) and name not in program_only:
                sources = requested_by.setdefault(name, [])
                if label not in sources:
                    sources.append(label)
        versions.update(v for v in names.get("versions", []) if isinstance(v, str))
    asked = sorted(requested_by)
    asked_versions = sorted(versions)
    notes = []
    if vdso is None:
        offered: list[str] = []
        offered_versions: list[str] = []
        notes.append("no vDSO analysed in this environment: every such call takes the "
                     "libc's syscall fallback")
    else:
        funcs = [s for s in vdso.get("symbols", [])
                 if s.get("type") in ("FUNC", "GNU_IFUNC") and s.get("section") != "*UND*"]
        prefixed = sorted({s["name"] for s in funcs
                           if s["name"].startswith(("__vdso_", "__kernel_"))})
        offered = prefixed or sorted({s["name"] for s in funcs})
        offered_versions = list(vdso.get("versions", []))
    used = [n for n in asked if n in offered]
    missing = [n for n in asked if n not in offered]
    version_ok = (not asked_versions or not offered_versions
                  or bool(set(asked_versions) & set(offered_versions)))
    if not version_ok:
        notes.append("the libc asks for version(s) " + ", ".join(asked_versions)
                     + " but the vDSO defines " + ", ".join(offered_versions))
    if program_only:
        notes.append("static build: the probe program's own direct lookups ("
                     + ", ".join(program_only) + ") are not counted as the libc's")
    env_libc = env_libc if isinstance(env_libc, dict) else {}
    if (env_libc.get("name") == "glibc" and libc.get("role") == "shared-object"
            and "ld.so" not in objects):
        notes.append("dynamic glibc looks most vDSO symbols up in ld.so (rtld), which is not "
                     "analysed here: the names found in libc.so alone undercount its use")
    return {"offered": offered, "offered_versions": offered_versions,
            "requested": asked, "requested_versions": asked_versions,
            "requested_by": requested_by, "objects": objects,
            "used": used if version_ok else [], "missing": missing,
            "program_lookups": program_only, "notes": notes}


# -- entry points -------------------------------------------------------------------------------


@dataclass
class Walk:
    """What a bounded linear walk over one function saw."""

    address: int
    instructions: list[Any] = field(default_factory=list)
    kernel_entries: list[dict[str, Any]] = field(default_factory=list)
    indirect: list[dict[str, Any]] = field(default_factory=list)  # through a data pointer
    callees: list[int] = field(default_factory=list)  # direct call/jmp targets outside
    code_refs: list[int] = field(default_factory=list)  # lea of code addresses (IFUNC)
    vdso_strings: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def _family(name: str) -> str:
    """64-bit register family of a register name: eax/ax/al -> rax, r8d -> r8."""
    m = re.fullmatch(r"r(\d+)[dwb]?", name)
    if m:
        return "r" + m.group(1)
    base = {"al": "ax", "ah": "ax", "bl": "bx", "bh": "bx", "cl": "cx", "ch": "cx",
            "dl": "dx", "dh": "dx", "sil": "si", "dil": "di", "bpl": "bp", "spl": "sp"}
    core = base.get(name, name[-2:] if len(name) == 3 and name[0] in "er" else name)
    return "r" + core if core in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp") else name


def _set(state: dict[str, tuple[str, str]], reg: str, value: tuple[str, str] | None) -> None:
    if value is None:
        state.pop(reg, None)
    else:
        state[reg] = value


class EntryWalker:
    """Walks entry points with capstone (detail on) and classifies what they reach."""

    def __init__(self, image: ElfImage, index: FunctionIndex, lookup_symbols: list[Symbol],
                 got: dict[int, str] | None = None):
        self.image = image
        self.index = index
        self.got = got or {}  # GOT slot -> the symbol whose address the dynamic linker puts there
        self.names = FunctionIndex(lookup_symbols) if lookup_symbols else index
        self.md = image.disassembler(detail=True)
        self.att = image.disassembler(detail=True, att=True)
        self._walks: dict[int, Walk] = {}

    def describe(self, name: str) -> dict[str, Any]:
        sym = self.names.lookup(name) or self.index.lookup(name)
        if sym is None or self.md is None:
            return {"symbol": None, "address": None, "classification": "unknown",
                    "evidence": [], "listing": [],
                    "reason": f"no symbol {name!r} in the symbol table"
                    if self.md is not None else "no disassembler for this machine"}
        try:
            return self._describe(name, sym)
        except Exception as exc:  # hostile code must not stop the rest of the analysis
            self.image.problems.append(f"entry point {name}: {type(exc).__name__}: {exc}")
            return {"symbol": sym.name, "address": sym.value, "classification": "unknown",
                    "evidence": [], "listing": [], "reason": "could not disassemble"}

    def _describe(self, name: str, sym: Symbol) -> dict[str, Any]:
        ifunc = sym.type == "GNU_IFUNC"
        top = self.walk(sym.value, sym.size)
        evidence: list[dict[str, Any]] = []
        vdso_seen = bool(top.indirect or top.vdso_strings)
        kernel_seen = bool(top.kernel_entries)
        for item in top.indirect + top.vdso_strings + top.kernel_entries:
            evidence.append({**item, "in": sym.name})
        followed = top.code_refs if ifunc else top.callees
        for target in followed[:MAX_FOLLOW]:
            callee_name = self.index.label(target) or f"{target:#x}"
            sub = self.walk(target, self._size_at(target))
            if ifunc and not sub.kernel_entries:
                continue  # a code address the resolver merely mentions
            for item in sub.indirect + sub.kernel_entries:
                evidence.append({**item, "in": callee_name})
            vdso_seen = vdso_seen or bool(sub.indirect) and not ifunc
            kernel_seen = kernel_seen or bool(sub.kernel_entries)
        returns = self.resolver_returns(top) if ifunc else []
        identified = [r for r in returns if r["origin"].startswith(VDSO_POINTER_HOMES)]
        if returns and (identified or top.vdso_strings):
            # The resolver hands the dynamic linker the vDSO's own function: every call jumps
            # straight into the vDSO, with no libc code (and no syscall) on the way.
            classification = "vdso-via-ifunc-resolver"
            returns = identified or returns
        elif returns:
            classification = "unknown"
        elif vdso_seen and kernel_seen:
            classification = "vdso-then-syscall-fallback"
        elif kernel_seen and not vdso_seen:
            classification = "syscall"
        else:
            classification = "unknown"
        for item in returns[:4]:
            evidence.insert(0, {"address": item["address"], "kind": item["kind"],
                                "text": item["text"], "in": sym.name})
        reason = self._reason(classification, ifunc, top, returns, kernel_seen,
                              None if identified else top.vdso_strings)
        return {
            "symbol": sym.name, "address": sym.value, "size": sym.size, "ifunc": ifunc,
            "classification": classification, "reason": reason,
            "fallback": "syscall" if kernel_seen and classification != "syscall" else None,
            "evidence": evidence, "walked": len(top.instructions), "truncated": top.truncated,
            "listing": self.listing(sym, top),
        }

    @staticmethod
    def _reason(classification: str, ifunc: bool, top: Walk,
                returns: list[dict[str, Any]] | None = None, fallback: bool = False,
                looked_up: list[dict[str, Any]] | None = None) -> str:
        if classification == "vdso-via-ifunc-resolver":
            origin = returns[0]["origin"] if returns else "data"
            if looked_up:  # seen in glibc 2.31 and 2.36: dl_vdso_vsym() in the resolver itself
                name = looked_up[0]["text"].rsplit(" ", 1)[-1]
                what = (f"looks {name} up in the vDSO and returns the address it finds "
                        f"(read from {origin})")
            else:  # seen in glibc 2.41 and 2.43: GLRO(dl_vdso_*), filled in by ld.so at start-up
                what = (f"returns the pointer at {origin} (GLRO(dl_vdso_*): where ld.so keeps "
                        "the vDSO's functions)")
            how = (f"the IFUNC resolver {what}, so calls jump straight into the vDSO"
                   + ("; without one it returns libc code that enters the kernel"
                      if fallback else ""))
        elif classification == "vdso-then-syscall-fallback":
            how = ("IFUNC resolver looks up a vDSO symbol, fallback code enters the kernel"
                   if ifunc else "indirect call through a pointer loaded from data, and a "
                   "kernel-entry instruction on another path")
        elif classification == "syscall":
            how = "enters the kernel directly; no indirect call through data seen"
        elif returns:
            how = (f"the IFUNC resolver returns a pointer read from {returns[0]['origin']}, "
                   "not identified as the vDSO's")
        else:
            how = ("no kernel-entry instruction seen" if top.instructions else "no code")
        return f"static estimate over {len(top.instructions)} instructions: {how}"

    def resolver_returns(self, w: Walk) -> list[dict[str, Any]]:
        """The ``ret``s of an IFUNC resolver at which ``rax`` may hold a pointer read from data
        (rather than the address of code in this object), with where it was read from.

        A linear dataflow over the walked instructions: a register holds ``("got", name)``
        after a load from a GOT slot (the address of ``name``), ``("data", origin)`` after a
        load from memory, ``("code", address)`` after a ``lea`` of code; ``cmov`` keeps a data
        pointer (the resolver may return it), ``add``/``sub`` keep it (pointer arithmetic), a
        call or any other write forgets. Branches are not followed: an estimate, like the walk.
        """
        state: dict[str, tuple[str, str]] = {}
        found: list[dict[str, Any]] = []
        for insn in w.instructions:
            if insn.group(capstone.CS_GRP_RET):
                value = state.get("rax")
                if value is not None and value[0] == "data" and len(found) < 16:
                    found.append({"address": insn.address, "kind": "returns-data-pointer",
                                  "origin": value[1],
                                  "text": f"resolver returns the pointer read from {value[1]}"})
                continue
            if insn.group(capstone.CS_GRP_CALL):
                for reg in CALLER_SAVED:
                    state.pop(reg, None)
                continue
            ops = insn.operands
            mnemonic = insn.mnemonic
            if len(ops) == 2 and ops[0].type == x86.X86_OP_REG:
                dst = _family(insn.reg_name(ops[0].reg))
                src = ops[1]
                if src.type == x86.X86_OP_MEM:
                    loaded = self._loaded(insn, src.mem, state)
                else:
                    loaded = (state.get(_family(insn.reg_name(src.reg)))
                              if src.type == x86.X86_OP_REG else None)
                if mnemonic in ("mov", "movq"):
                    _set(state, dst, loaded)
                    continue
                if mnemonic == "lea" and src.type == x86.X86_OP_MEM:
                    _set(state, dst, self._address_of(insn, src.mem))
                    continue
                if mnemonic.startswith("cmov"):
                    old = state.get(dst)
                    _set(state, dst, old if old is not None and old[0] == "data"
                         else loaded if loaded is not None and loaded[0] == "data"
                         else old or loaded)
                    continue
                if mnemonic in ("add", "sub") and state.get(dst, ("",))[0] == "data":
                    continue
            try:
                _read, written = insn.regs_access()
            except capstone.CsError:
                written = []
            for reg in written:
                state.pop(_family(insn.reg_name(reg)), None)
        return found

    def _loaded(self, insn: Any, mem: Any, state: dict[str, tuple[str, str]]
                ) -> tuple[str, str]:
        """What a load from ``mem`` yields, as a dataflow value (see resolver_returns)."""
        if mem.base == x86.X86_REG_RIP and not mem.index:
            slot = insn.address + insn.size + mem.disp
            if slot in self.got:
                return ("got", self.got[slot])
            return ("data", f"{slot:#x}")
        base = state.get(_family(insn.reg_name(mem.base))) if mem.base else None
        if base is not None and base[0] == "got" and not mem.index:
            return ("data", f"{base[1]}+{mem.disp:#x}" if mem.disp else base[1])
        return ("data", f"memory (load at {insn.address:#x})")

    def _address_of(self, insn: Any, mem: Any) -> tuple[str, str] | None:
        if mem.base != x86.X86_REG_RIP or mem.index:
            return None
        target = insn.address + insn.size + mem.disp
        sec = self.image.section_at(target)
        return ("code", f"{target:#x}") if sec is not None and sec.executable else None

    def _size_at(self, address: int) -> int:
        sym, exact = self.index.containing(address)
        if sym is not None and exact and sym.value == address:
            return sym.size
        return 0

    def walk(self, address: int, size: int) -> Walk:
        if address in self._walks:
            return self._walks[address]
        w = Walk(address)
        self._walks[address] = w
        bounded = size > 0
        code = self.image.read_vaddr(address, min(size, MAX_WALK * 15) if bounded
                                     else MAX_WALK * 15)
        tainted: dict[str, int] = {}  # register family -> address of the load that set it
        assert self.md is not None
        for insn in self.md.disasm(code, address):
            if len(w.instructions) >= MAX_WALK:
                w.truncated = True
                break
            w.instructions.append(insn)
            self._step(w, insn, tainted, address, size)
            if not bounded and self._ends(insn):
                break
        return w

    @staticmethod
    def _ends(insn: Any) -> bool:
        return (insn.group(capstone.CS_GRP_RET) or insn.mnemonic in ("jmp", "hlt", "ud2"))

    def _step(self, w: Walk, insn: Any, tainted: dict[str, int], start: int, size: int) -> None:
        kind = classify(insn.mnemonic, insn.op_str)
        if kind:
            w.kernel_entries.append({"address": insn.address, "kind": kind,
                                     "text": f"{insn.mnemonic} {insn.op_str}".strip()})
            return
        ops = insn.operands
        is_call = insn.group(capstone.CS_GRP_CALL)
        is_jump = insn.group(capstone.CS_GRP_JUMP)
        if (is_call or is_jump) and len(ops) == 1:
            op = ops[0]
            if op.type == x86.X86_OP_IMM:
                target = op.imm
                inside = start <= target < start + size if size else False
                if not inside and target not in w.callees and (is_call or insn.mnemonic == "jmp"):
                    sec = self.image.section_at(target)
                    # Follow code only, and not PLT stubs: their indirect jump is the dynamic
                    # linker's, not a vDSO pointer.
                    if (sec is None and not self.image.sections) or (
                            sec is not None and sec.executable
                            and not sec.name.startswith(".plt")):
                        w.callees.append(target)
            elif op.type == x86.X86_OP_MEM:
                w.indirect.append({"address": insn.address, "kind": "indirect-call",
                                   "text": f"{insn.mnemonic} {insn.op_str}: pointer read "
                                           "from memory"})
            elif op.type == x86.X86_OP_REG:
                reg = _family(insn.reg_name(op.reg))
                if reg in tainted:
                    w.indirect.append({"address": insn.address, "kind": "indirect-call",
                                       "text": f"{insn.mnemonic} {insn.op_str}: pointer loaded "
                                               f"from data at {tainted[reg]:#x}"})
            return
        if insn.mnemonic == "lea" and len(ops) == 2 and ops[1].type == x86.X86_OP_MEM \
                and ops[1].mem.base == x86.X86_REG_RIP:
            target = insn.address + insn.size + ops[1].mem.disp
            sec = self.image.section_at(target)
            if sec is not None and sec.executable:
                if not (start <= target < start + size) and target not in w.code_refs:
                    w.code_refs.append(target)
            else:
                text = self.image.read_vaddr(target, 80).split(b"\x00", 1)[0]
                if text.startswith((b"__vdso_", b"__kernel_")):
                    w.vdso_strings.append({"address": insn.address, "kind": "vdso-name",
                                           "text": "references the string "
                                                   + text.decode("ascii", "replace")})
        if insn.mnemonic in ("mov", "movq") and len(ops) == 2 and ops[0].type == x86.X86_OP_REG:
            dst = _family(insn.reg_name(ops[0].reg))
            if ops[1].type == x86.X86_OP_MEM:
                tainted[dst] = insn.address
                return
            if ops[1].type == x86.X86_OP_REG:
                src = _family(insn.reg_name(ops[1].reg))
                if src in tainted:
                    tainted[dst] = tainted[src]
                else:
                    tainted.pop(dst, None)
                return
        try:
            _read, written = insn.regs_access()
        except capstone.CsError:
            written = []
        for reg in written:
            tainted.pop(_family(insn.reg_name(reg)), None)

    def listing(self, sym: Symbol, w: Walk) -> list[str]:
        """An objdump-like AT&T listing of the walked instructions."""
        if self.att is None or not w.instructions:
            return []
        first = w.instructions[0].address
        last = w.instructions[-1]
        code = self.image.read_vaddr(first, last.address + last.size - first)
        lines = [f"{sym.value:016x} <{sym.name}>:"]
        for insn in self.att.disasm(code, first):
            text = f"{insn.mnemonic:<6} {insn.op_str}".rstrip()
            if (insn.group(capstone.CS_GRP_CALL) or insn.group(capstone.CS_GRP_JUMP)) \
                    and insn.op_str.startswith("0x"):
                try:
                    label = self.index.label(int(insn.op_str, 16))
                except ValueError:
                    label = None
                text = f"{insn.mnemonic:<6} {insn.op_str[2:]}" + (f" <{label}>" if label else "")
            lines.append(f"{insn.address:8x}:\t{insn.bytes.hex(' '):<21}\t{text}")
        if w.truncated:
            lines.append(f"\t... (walk stopped after {MAX_WALK} instructions)")
        return lines
