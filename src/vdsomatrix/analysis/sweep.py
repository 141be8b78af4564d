"""Finding kernel-entry instructions in code the way ``objdump -d`` finds them.

A linear sweep decodes one instruction after another from a start address. Where it starts
matters on x86, whose instructions have variable length: start in the wrong place and the
sweep may read a ``0f 05`` (syscall) that is really the middle of another instruction. To count
exactly what ``objdump -d`` shows, this sweep starts where objdump starts: at the beginning of
every executable section and again at every symbol inside it (objdump disassembles from one
symbol to the next and never lets an instruction run over the next symbol). Bytes capstone
cannot decode are skipped one at a time, as objdump's ``(bad)`` lines resynchronise the same way
in practice.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import capstone

from vdsomatrix.analysis.elfimage import Symbol

KINDS = ("syscall", "sysenter", "int80")
_RIP = re.compile(r"\[rip ([+-]) (0x[0-9a-f]+|\d+)\]")


@dataclass(frozen=True)
class Site:
    address: int
    kind: str  # one of KINDS
    section: str


@dataclass
class SweepResult:
    sites: list[Site]
    instructions: int = 0
    undecodable_bytes: int = 0
    bytes: int = 0
    truncated: bool = False  # stopped at the byte budget
    refs: list[tuple[int, int]] = field(default_factory=list)  # (target, instruction address)


def classify(mnemonic: str, op_str: str) -> str | None:
    """The kernel-entry kind of one decoded instruction, or None."""
    if mnemonic == "syscall":
        return "syscall"
    if mnemonic == "sysenter":
        return "sysenter"
    if mnemonic == "int" and op_str.strip().lstrip("$") in ("0x80", "128"):
        return "int80"
    return None


def sweep_starts(symbols: Iterable[Symbol]) -> list[int]:
    """Addresses where objdump restarts its sweep: every named, defined, non-section symbol."""
    return sorted({s.value for s in symbols
                   if s.name and s.defined and s.type not in ("SECTION", "FILE")
                   and s.section != "*COM*"})


def sweep(md: capstone.Cs, regions: list[tuple[str, int, bytes]], starts: list[int],
          max_bytes: int | None = None, targets: frozenset[int] = frozenset(),
          ) -> SweepResult:
    """Sweep every (name, vaddr, bytes) region, restarting at each address in ``starts``.

    ``max_bytes`` bounds the work on hostile input (sections that overlap, or claim the whole
    file many times over): regions beyond it are not swept and ``truncated`` is set.
    Instructions addressing one of ``targets`` RIP-relatively are listed in ``refs``.
    """
    md.detail = False
    md.skipdata = True
    result = SweepResult(sites=[])
    for name, vaddr, data in regions:
        if max_bytes is not None and result.bytes + len(data) > max_bytes:
            result.truncated = True
            break
        end = vaddr + len(data)
        lo = bisect.bisect_right(starts, vaddr)
        hi = bisect.bisect_left(starts, end)
        cuts = [vaddr, *starts[lo:hi], end]
        result.bytes += len(data)
        for a, b in zip(cuts, cuts[1:], strict=False):
            if b <= a:
                continue
            chunk = data[a - vaddr: b - vaddr]
            for address, size, mnemonic, op_str in md.disasm_lite(chunk, a):
                result.instructions += 1
                if mnemonic == ".byte":
                    result.undecodable_bytes += 1
                    continue
                if targets and "rip" in op_str:
                    m = _RIP.search(op_str)
                    if m:
                        disp = int(m.group(2), 0)
                        target = address + size + (disp if m.group(1) == "+" else -disp)
                        if target in targets:
                            result.refs.append((target, address))
                kind = classify(mnemonic, op_str)
                if kind:
                    result.sites.append(Site(address, kind, name))
    return result
