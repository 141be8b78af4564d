"""Whether ``syscall()``, ``clock_gettime``, ``gettimeofday`` and ``time`` reach the vDSO.

Each entry point is walked linearly (a bounded number of instructions, plus a few direct
callees) and classified by what the walk saw: an indirect call through a pointer loaded from data
(glibc keeps the vDSO's addresses in ``GLRO(dl_vdso_*)``, musl in a static ``vdso_func``), a
``syscall`` instruction, or, for an IFUNC, a resolver that returns a pointer read from data, so
that calls land in the vDSO itself. The addresses of the evidence come with it. This is a static
estimate, not a trace: branches are not followed.

32-bit code (i386) is read the same way. Position-independent i386 code has no RIP-relative
addressing: it calls a ``__x86.get_pc_thunk.*`` (``mov reg, [esp]; ret``) and adds the distance
to the GOT, and the walk follows that register so that GOT slots (``R_386_GLOB_DAT``) and the
``__vdso_*`` strings are found as on x86-64. A 32-bit libc enters the kernel with ``int $0x80``
or through the vDSO's ``__kernel_vsyscall`` (``call *%gs:0x10``): an entry point that does so
directly is classified ``int80`` or ``kernel_vsyscall``, and ``fallback`` names the kind of
kernel entry found behind a vDSO route (``syscall``, ``int80``, ``kernel_vsyscall``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import capstone
from capstone import x86

from vdsomatrix.analysis.elfimage import ElfImage, Symbol
from vdsomatrix.analysis.functions import FunctionIndex
from vdsomatrix.analysis.sweep import classify

ENTRY_POINTS = ("syscall", "clock_gettime", "gettimeofday", "time")
# The kinds that enter the kernel directly (sweep.KINDS) are classifications of their own.
DIRECT = ("syscall", "int80", "kernel_vsyscall", "sysenter")
CLASSES = ("vdso-then-syscall-fallback", "vdso-via-ifunc-resolver", *DIRECT, "unknown")
DIRECT_SHOWN = {"syscall": "syscall", "int80": "int $0x80",
                "kernel_vsyscall": "call *%gs:0x10 to __kernel_vsyscall",
                "sysenter": "sysenter"}
# __x86.get_pc_thunk.<reg>: ``mov reg, [esp]; ret`` (8b /r with SIB esp, then c3).
PC_THUNK_REGS = {0x04: "eax", 0x0C: "ecx", 0x14: "edx", 0x1C: "ebx", 0x2C: "ebp", 0x34: "esi",
                 0x3C: "edi"}
MAX_WALK = 64  # instructions per function walked for an entry point
MAX_FOLLOW = 6  # direct callees (or IFUNC candidates) walked per entry point
MAX_RETURNS = 16  # data-pointer returns recorded per walk
# Where a glibc keeps the vDSO's function pointers: GLRO(dl_vdso_*) in ld.so's _rtld_global_ro
# (dynamic), or the _dl_vdso_* variables (static).
VDSO_POINTER_HOMES = ("_rtld_global_ro", "_rtld_global", "_dl_vdso_")
CALLER_SAVED = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")


@dataclass(frozen=True)
class Value:
    """What a register holds, as far as a linear walk can tell.

    ``kind`` is ``"got"`` after a load from a GOT slot (``origin``: the symbol whose address
    the dynamic linker puts there), ``"data"`` after any other load from memory (``origin``:
    where), ``"code"`` after a ``lea`` of code in this object, ``"pc"`` for a known address in
    this object (i386: what a ``__x86.get_pc_thunk`` returns, plus what is added to it; ``at``
    is that address). ``loaded_at`` is the address of the instruction that produced it.
    """

    kind: str
    origin: str
    loaded_at: int
    at: int | None = None

    @property
    def from_memory(self) -> bool:
        return self.kind in ("got", "data")


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
    returns: list[dict[str, Any]] = field(default_factory=list)  # ret with a data pointer
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


def _set(regs: dict[str, Value], reg: str, value: Value | None) -> None:
    if value is None:
        regs.pop(reg, None)
    else:
        regs[reg] = value


class EntryWalker:
    """Walks entry points with capstone (detail on) and classifies what they reach."""

    def __init__(self, image: ElfImage, index: FunctionIndex, lookup_symbols: list[Symbol],
                 got: dict[int, str] | None = None):
        self.image = image
        self.index = index
        self.got = got or {}  # GOT slot -> the symbol whose address the dynamic linker puts there
        self.names = FunctionIndex(lookup_symbols) if lookup_symbols else index
        # The walk follows x86 registers and operands; other machines' entry points are not
        # walked (their census and vDSO analysis still are).
        x86 = image.machine in ("EM_X86_64", "EM_386")
        self.md = image.disassembler(detail=True) if x86 else None
        self.att = image.disassembler(detail=True, att=True) if x86 else None
        self.no_walk = (None if x86 else
                        f"entry points are walked in x86 code only ({image.machine})")
        self._walks: dict[int, Walk] = {}
        self.mask = (1 << 32) - 1 if image.machine == "EM_386" else (1 << 64) - 1
        self._thunks: dict[int, str | None] = {}

    def describe(self, name: str) -> dict[str, Any]:
        sym = self.names.lookup(name) or self.index.lookup(name)
        if sym is None or self.md is None:
            return {"symbol": None, "address": None, "classification": "unknown",
                    "evidence": [], "listing": [],
                    "reason": f"no symbol {name!r} in the symbol table"
                    if self.md is not None else self.no_walk or "no disassembler for this machine"}
        try:
            return self._describe(sym)
        except MemoryError:
            raise  # not the input's fault alone: the bounded analysis reports it as such
        except Exception as exc:  # hostile code must not stop the rest of the analysis
            self.image.problems.append(f"entry point {name}: {type(exc).__name__}: {exc}")
            return {"symbol": sym.name, "address": sym.value, "classification": "unknown",
                    "evidence": [], "listing": [], "reason": "could not disassemble"}

    def _describe(self, sym: Symbol) -> dict[str, Any]:
        ifunc = sym.type == "GNU_IFUNC"
        top = self.walk(sym.value, sym.size)
        evidence: list[dict[str, Any]] = []
        vdso_seen = bool(top.indirect or top.vdso_strings)
        kernel_seen = bool(top.kernel_entries)
        kinds = [e["kind"] for e in top.kernel_entries]
        for item in top.indirect + top.vdso_strings + top.kernel_entries:
            evidence.append({**item, "in": sym.name})
        followed = top.code_refs if ifunc else top.callees
        for target in followed[:MAX_FOLLOW]:
            callee_name = self.index.label(target) or f"{target:#x}"
            sub = self.walk(target, self.index.size_at(target))
            if ifunc and not sub.kernel_entries:
                continue  # a code address the resolver merely mentions
            for item in sub.indirect + sub.kernel_entries:
                evidence.append({**item, "in": callee_name})
            vdso_seen = vdso_seen or bool(sub.indirect) and not ifunc
            kernel_seen = kernel_seen or bool(sub.kernel_entries)
            kinds += [e["kind"] for e in sub.kernel_entries]
        # The kind of kernel entry seen first ("syscall" on x86-64; "kernel_vsyscall" or
        # "int80" in 32-bit code).
        entry_kind = kinds[0] if kinds else None
        returns = top.returns if ifunc else []
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
            classification = entry_kind if entry_kind in DIRECT else "syscall"
        else:
            classification = "unknown"
        for item in returns[:4]:
            evidence.insert(0, {"address": item["address"], "kind": item["kind"],
                                "text": item["text"], "in": sym.name})
        reason = self._reason(classification, ifunc, top, returns, kernel_seen,
                              None if identified else top.vdso_strings, entry_kind)
        return {
            "symbol": sym.name, "address": sym.value, "size": sym.size, "ifunc": ifunc,
            "classification": classification, "reason": reason,
            "fallback": entry_kind if kernel_seen and classification not in DIRECT else None,
            "evidence": evidence, "walked": len(top.instructions), "truncated": top.truncated,
            "listing": self.listing(sym, top),
        }

    @staticmethod
    def _reason(classification: str, ifunc: bool, top: Walk,
                returns: list[dict[str, Any]] | None = None, fallback: bool = False,
                looked_up: list[dict[str, Any]] | None = None,
                entry_kind: str | None = None) -> str:
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
            if entry_kind in DIRECT and entry_kind != "syscall":
                how += f" ({DIRECT_SHOWN[entry_kind]})"
        elif classification in DIRECT:
            how = "enters the kernel directly; no indirect call through data seen"
            if classification != "syscall":
                how = (f"enters the kernel with {DIRECT_SHOWN[classification]}; no indirect "
                       "call through data seen")
        elif returns:
            how = (f"the IFUNC resolver returns a pointer read from {returns[0]['origin']}, "
                   "not identified as the vDSO's")
        else:
            how = ("no kernel-entry instruction seen" if top.instructions else "no code")
        return f"static estimate over {len(top.instructions)} instructions: {how}"

    # -- the walk ---------------------------------------------------------------------------

    def walk(self, address: int, size: int) -> Walk:
        """Walk the function at ``address`` (``size`` bytes, or to its first ``ret``/``jmp``
        when unknown), at most MAX_WALK instructions; walks are cached by address."""
        if address in self._walks:
            return self._walks[address]
        w = Walk(address)
        self._walks[address] = w
        bounded = size > 0
        code = self.image.read_vaddr(address, min(size, MAX_WALK * 15) if bounded
                                     else MAX_WALK * 15)
        regs: dict[str, Value] = {}
        assert self.md is not None
        for insn in self.md.disasm(code, address):
            if len(w.instructions) >= MAX_WALK:
                w.truncated = True
                break
            w.instructions.append(insn)
            self._observe(w, insn, regs, address, size)
            self._flow(insn, regs)
            if not bounded and self._ends(insn):
                break
        return w

    @staticmethod
    def _ends(insn: Any) -> bool:
        return (insn.group(capstone.CS_GRP_RET) or insn.mnemonic in ("jmp", "hlt", "ud2"))

    def _observe(self, w: Walk, insn: Any, regs: dict[str, Value], start: int,
                 size: int) -> None:
        """Record what one instruction shows, given the register values before it."""
        kind = classify(insn.mnemonic, insn.op_str)
        if kind:
            w.kernel_entries.append({"address": insn.address, "kind": kind,
                                     "text": f"{insn.mnemonic} {insn.op_str}".strip()})
            return
        if insn.group(capstone.CS_GRP_RET):
            value = regs.get("rax")
            if value is not None and value.kind == "data" and len(w.returns) < MAX_RETURNS:
                w.returns.append({"address": insn.address, "kind": "returns-data-pointer",
                                  "origin": value.origin,
                                  "text": f"resolver returns the pointer read from "
                                          f"{value.origin}"})
            return
        ops = insn.operands
        is_call = insn.group(capstone.CS_GRP_CALL)
        if (is_call or insn.group(capstone.CS_GRP_JUMP)) and len(ops) == 1:
            self._observe_transfer(w, insn, ops[0], regs, start, size, is_call)
            return
        if insn.mnemonic == "lea" and len(ops) == 2 and ops[1].type == x86.X86_OP_MEM:
            self._observe_lea(w, insn, ops[1], regs, start, size)

    def _observe_transfer(self, w: Walk, insn: Any, op: Any, regs: dict[str, Value],
                          start: int, size: int, is_call: bool) -> None:
        """A call or jump: a direct callee to follow, or an indirect one and where its pointer
        came from."""
        if op.type == x86.X86_OP_IMM:
            target = op.imm & self.mask
            if is_call and self.pc_thunk(target):
                return  # the PIC base, not a callee: see _flow
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
            origin = self._loaded(insn, op.mem, regs).origin
            where = "memory" if origin.startswith("memory") else origin
            w.indirect.append({"address": insn.address, "kind": "indirect-call",
                               "text": f"{insn.mnemonic} {insn.op_str}: pointer read "
                                       f"from {where}"})
        elif op.type == x86.X86_OP_REG:
            value = regs.get(_family(insn.reg_name(op.reg)))
            if value is not None and value.from_memory:
                named = "" if value.origin.startswith(("memory", "0x")) \
                    else f" ({value.origin})"
                w.indirect.append({"address": insn.address, "kind": "indirect-call",
                                   "text": f"{insn.mnemonic} {insn.op_str}: pointer loaded "
                                           f"from data at {value.loaded_at:#x}{named}"})

    def _observe_lea(self, w: Walk, insn: Any, op: Any, regs: dict[str, Value], start: int,
                     size: int) -> None:
        """An address computed: code it points at, or a vDSO symbol name it references."""
        target = self._target(insn, op.mem, regs)
        if target is not None:
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

    # -- register dataflow ------------------------------------------------------------------

    def _flow(self, insn: Any, regs: dict[str, Value]) -> None:
        """The register values after ``insn``: the one dataflow both questions read (is this
        indirect call through a pointer from data? does this resolver return one?).

        A load from memory gives a ``got`` or ``data`` value, a ``lea`` of code a ``code``
        value, a register move copies; ``cmov`` keeps a data pointer (the resolver may return
        it), ``add``/``sub`` keep it (pointer arithmetic); a call forgets the caller-saved
        registers, any other write forgets what it writes. Branches are not followed.
        """
        if insn.group(capstone.CS_GRP_RET):
            return
        if insn.group(capstone.CS_GRP_CALL):
            for reg in CALLER_SAVED:
                regs.pop(reg, None)
            ops = insn.operands
            if len(ops) == 1 and ops[0].type == x86.X86_OP_IMM:
                reg = self.pc_thunk(ops[0].imm & self.mask)
                if reg:  # the thunk returns the address after the call in ``reg``
                    after = (insn.address + insn.size) & self.mask
                    regs[_family(reg)] = Value("pc", f"{after:#x}", insn.address, after)
            return
        ops = insn.operands
        mnemonic = insn.mnemonic
        if len(ops) == 2 and ops[0].type == x86.X86_OP_REG:
            dst = _family(insn.reg_name(ops[0].reg))
            src = ops[1]
            if src.type == x86.X86_OP_MEM:
                loaded = self._loaded(insn, src.mem, regs)
            else:
                loaded = (regs.get(_family(insn.reg_name(src.reg)))
                          if src.type == x86.X86_OP_REG else None)
            if mnemonic in ("mov", "movq"):
                _set(regs, dst, loaded)
                return
            if mnemonic == "lea" and src.type == x86.X86_OP_MEM:
                _set(regs, dst, self._address_of(insn, src.mem, regs))
                return
            if mnemonic.startswith("cmov"):
                old = regs.get(dst)
                _set(regs, dst, old if old is not None and old.kind == "data"
                     else loaded if loaded is not None and loaded.kind == "data"
                     else old or loaded)
                return
            if mnemonic in ("add", "sub") and getattr(regs.get(dst), "kind", "") == "data":
                return
            old = regs.get(dst)
            if mnemonic in ("add", "sub") and old is not None and old.at is not None \
                    and src.type == x86.X86_OP_IMM:
                at = (old.at + (src.imm if mnemonic == "add" else -src.imm)) & self.mask
                regs[dst] = Value("pc", f"{at:#x}", insn.address, at)
                return
        try:
            _read, written = insn.regs_access()
        except capstone.CsError:
            written = []
        for reg in written:
            regs.pop(_family(insn.reg_name(reg)), None)

    def _target(self, insn: Any, mem: Any, regs: dict[str, Value]) -> int | None:
        """The address ``mem`` names, when the walk knows it: RIP-relative (x86-64), or
        relative to a register holding a known address (i386 PIC: the GOT in ebx)."""
        if mem.index or mem.segment:
            return None
        if mem.base == x86.X86_REG_RIP:
            return (insn.address + insn.size + mem.disp) & self.mask
        if mem.base:
            base = regs.get(_family(insn.reg_name(mem.base)))
            if base is not None and base.at is not None:
                return (base.at + mem.disp) & self.mask
        return None

    def pc_thunk(self, target: int) -> str | None:
        """The register a ``__x86.get_pc_thunk.<reg>`` at ``target`` loads (i386 only)."""
        if self.image.machine != "EM_386":
            return None
        if target not in self._thunks:
            code = self.image.read_vaddr(target, 4)
            found = None
            if len(code) == 4 and code[0] == 0x8B and code[2] == 0x24 and code[3] == 0xC3:
                found = PC_THUNK_REGS.get(code[1])
            self._thunks[target] = found
        return self._thunks[target]

    def _loaded(self, insn: Any, mem: Any, regs: dict[str, Value]) -> Value:
        """What a load from ``mem`` yields."""
        slot = self._target(insn, mem, regs)
        if slot is not None:
            if slot in self.got:
                return Value("got", self.got[slot], insn.address)
            return Value("data", f"{slot:#x}", insn.address)
        base = regs.get(_family(insn.reg_name(mem.base))) if mem.base else None
        if base is not None and base.kind == "got" and not mem.index:
            origin = f"{base.origin}+{mem.disp:#x}" if mem.disp else base.origin
            return Value("data", origin, insn.address)
        return Value("data", f"memory (load at {insn.address:#x})", insn.address)

    def _address_of(self, insn: Any, mem: Any, regs: dict[str, Value]) -> Value | None:
        target = self._target(insn, mem, regs)
        if target is None:
            return None
        sec = self.image.section_at(target)
        if sec is None or not sec.executable:
            return None
        return Value("code", f"{target:#x}", insn.address)

    # -- listing ----------------------------------------------------------------------------

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
