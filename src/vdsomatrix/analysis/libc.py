"""How a C library enters the kernel, read statically from its code.

Three questions, each answered from the bytes of the libc an environment really loaded (or of
the static probe binary, which has its libc linked in):

* census: how many ``syscall`` / ``sysenter`` / ``int 0x80`` instructions the executable code
  holds (counted exactly as ``objdump -d`` shows them, see sweep.py) and in which functions;
* entry points: whether ``syscall()``, ``clock_gettime``, ``gettimeofday`` and ``time`` reach the
  vDSO (an indirect call through a pointer loaded from data: glibc keeps the vDSO's addresses in
  ``GLRO(dl_vdso_*)``, musl in a static ``vdso_func``) or a ``syscall`` instruction, with the
  addresses of the evidence. This is a static estimate over a bounded linear walk, not a trace;
* vDSO names: which ``__vdso_*`` symbols and ``LINUX_*`` versions the libc's read-only data
  names, i.e. what it will ask the vDSO for.
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
MAX_SYMBOLS = 400_000
ENTRY_POINTS = ("syscall", "clock_gettime", "gettimeofday", "time")
MAX_WALK = 64  # instructions per function walked for an entry point
MAX_FOLLOW = 6  # direct callees (or IFUNC candidates) walked per entry point
STRIPPED = "none (stripped: function attribution is an estimate)"
VDSO_NAME = re.compile(
    rb"(?<![\w.])(__vdso_\w{1,64}|__kernel_\w{1,64}|LINUX_\d{1,3}(?:\.\d{1,3}){0,3})\x00")
CLASSES = ("vdso-then-syscall-fallback", "syscall", "unknown")


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
        "path": meta.get("path"),
        "role": meta.get("role"),
        "size": len(image.data),
        "sha256": meta.get("sha256"),
        "machine": image.machine,
        "elf_type": image.elf_type,
        "soname": image.soname(),
        "build_id": image.build_id(),
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
    walker = EntryWalker(image, index, symtab or dynsym)
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
               env_libc: dict[str, Any] | None) -> dict[str, Any]:
    """Kernel offers X, this libc asks for Y of them: the intersection, with caveats."""
    program_only = list(libc.get("vdso_names", {}).get("program_only", []))
    asked = [n for n in libc.get("vdso_names", {}).get("symbols", []) if n not in program_only]
    asked_versions = list(libc.get("vdso_names", {}).get("versions", []))
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
    if env_libc.get("name") == "glibc" and libc.get("role") == "shared-object":
        notes.append("dynamic glibc looks most vDSO symbols up in ld.so (rtld), which is not "
                     "analysed here: the names found in libc.so alone undercount its use")
    return {"offered": offered, "offered_versions": offered_versions,
            "requested": asked, "requested_versions": asked_versions,
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


class EntryWalker:
    """Walks entry points with capstone (detail on) and classifies what they reach."""

    def __init__(self, image: ElfImage, index: FunctionIndex, lookup_symbols: list[Symbol]):
        self.image = image
        self.index = index
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
        if vdso_seen and kernel_seen:
            classification = "vdso-then-syscall-fallback"
        elif kernel_seen and not vdso_seen:
            classification = "syscall"
        else:
            classification = "unknown"
        reason = self._reason(classification, ifunc, top)
        return {
            "symbol": sym.name, "address": sym.value, "size": sym.size, "ifunc": ifunc,
            "classification": classification, "reason": reason,
            "evidence": evidence, "walked": len(top.instructions), "truncated": top.truncated,
            "listing": self.listing(sym, top),
        }

    @staticmethod
    def _reason(classification: str, ifunc: bool, top: Walk) -> str:
        if classification == "vdso-then-syscall-fallback":
            how = ("IFUNC resolver looks up a vDSO symbol, fallback code enters the kernel"
                   if ifunc else "indirect call through a pointer loaded from data, and a "
                   "kernel-entry instruction on another path")
        elif classification == "syscall":
            how = "enters the kernel directly; no indirect call through data seen"
        else:
            how = ("no kernel-entry instruction seen" if top.instructions else "no code")
        return f"static estimate over {len(top.instructions)} instructions: {how}"

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
