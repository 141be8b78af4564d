"""Functions of a binary, as its symbol table tells: which one holds an address, which name to
show among aliases, and, in a static probe binary, which functions are the program's own.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from vdsomatrix.analysis.elfimage import Symbol

PROGRAM_SOURCE = (".c", ".cc", ".cpp", ".cxx")
STARTUP_FILES = ("crt1.c", "Scrt1.c", "rcrt1.c", "crtstuff.c", "crti.c", "crtn.c")


def preference(sym: Symbol) -> tuple:
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
            if cur is None or (-sym.size, preference(sym)) < (-cur.size, preference(cur)):
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

    def size_at(self, address: int) -> int:
        """The size of the function that starts exactly at ``address``, else 0 (unknown)."""
        sym, exact = self.containing(address)
        if sym is not None and exact and sym.value == address:
            return sym.size
        return 0


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
