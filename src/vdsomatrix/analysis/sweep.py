"""Finding kernel-entry instructions in code the way ``objdump -d`` finds them.

A linear sweep decodes one instruction after another from a start address. Where it starts
matters on x86, whose instructions have variable length: start in the wrong place and the
sweep may read a ``0f 05`` (syscall) that is really the middle of another instruction. To count
exactly what ``objdump -d`` shows, this sweep starts where objdump starts: at the beginning of
every executable section and again at every symbol inside it (objdump disassembles from one
symbol to the next and never lets an instruction run over the next symbol). Bytes capstone
cannot decode are skipped one at a time, as objdump's ``(bad)`` lines resynchronise the same way
in practice.

The kinds of kernel entry counted: ``syscall``, ``sysenter`` and ``int 0x80`` themselves, and,
in 32-bit code, ``call dword ptr gs:[0x10]`` (AT&T: ``call *%gs:0x10``): glibc and musl on i386
call the vDSO's ``__kernel_vsyscall`` through the address the thread control block keeps at
``%gs:0x10`` (AT_SYSINFO), and that function enters the kernel with whichever instruction the
kernel patched in at boot (see ``vdso.kernel_vsyscall``). In AArch64 code the one way in is
``svc`` (Linux reads the number from x8 and ignores the immediate, always ``#0`` in practice):
every ``svc`` is counted. Its instructions are four bytes, aligned, so where a sweep starts
does not change what it decodes; objdump's sweep is followed all the same.
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import capstone

from vdsomatrix.analysis.elfimage import Symbol

KINDS = ("syscall", "sysenter", "int80", "kernel_vsyscall", "svc")
# The indirect call through the TCB's sysinfo word, as capstone prints it in 32-bit mode (in
# 64-bit mode the same bytes are "qword ptr gs:[rip + 0x10]", which enters nothing).
KERNEL_VSYSCALL_CALL = "dword ptr gs:[0x10]"
KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}
_RIP = re.compile(r"\[rip ([+-]) (0x[0-9a-f]+|\d+)\]")
# capstone decodes a whole buffer into a C array (about 250 bytes an instruction) before it
# yields the first one: code is handed to it a window at a time, so that a flood of two-byte
# instructions costs a few MiB, not gigabytes.
WINDOW = 16 << 10
MAX_INSTRUCTION = 15  # bytes: the longest x86 instruction
MAX_REFS = 1 << 16  # RIP-relative references kept for attribution; more are only counted


@dataclass
class SweepResult:
    """What a sweep found. Sites are kept compactly (two arrays), not as objects: a hostile
    region of ``0f 05`` holds one for every two bytes."""

    site_addresses: array = field(default_factory=lambda: array("Q"))
    site_kinds: bytearray = field(default_factory=bytearray)  # index into KINDS
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    instructions: int = 0
    undecodable_bytes: int = 0
    bytes: int = 0
    truncated: bool = False  # stopped at the byte budget
    refs: list[tuple[int, int]] = field(default_factory=list)  # (target, instruction address)
    refs_total: int = 0  # all references found; ``refs`` holds the first MAX_REFS

    def sites(self) -> Iterator[tuple[int, str]]:
        """(address, kind) of every kernel-entry instruction, in sweep order."""
        for address, kind in zip(self.site_addresses, self.site_kinds, strict=True):
            yield address, KINDS[kind]


def classify(mnemonic: str, op_str: str) -> str | None:
    """The kernel-entry kind of one decoded instruction, or None."""
    if mnemonic == "syscall":
        return "syscall"
    if mnemonic == "sysenter":
        return "sysenter"
    if mnemonic == "int" and op_str.strip().lstrip("$") in ("0x80", "128"):
        return "int80"
    if mnemonic == "call" and op_str.strip() == KERNEL_VSYSCALL_CALL:
        return "kernel_vsyscall"
    if mnemonic == "svc":
        return "svc"
    return None


def sweep_starts(symbols: Iterable[Symbol]) -> list[int]:
    """Addresses where objdump restarts its sweep: every named, defined, non-section symbol."""
    return sorted({s.value for s in symbols
                   if s.name and s.defined and s.type not in ("SECTION", "FILE")
                   and s.section != "*COM*"})


def decode(md: capstone.Cs, code: bytes | memoryview, address: int
           ) -> Iterator[tuple[int, int, str, str]]:
    """``md.disasm_lite(code, address)``, the same instructions, decoded a window at a time.

    A window ends where an instruction might run past it; the next one starts at that
    instruction, so every instruction is decoded from all of its bytes, as in one pass.
    """
    pos, end = 0, len(code)
    while pos < end:
        stop = min(end, pos + WINDOW)
        final = stop == end
        decoded_to = pos
        instructions = md.disasm_lite(code[pos:stop], address + pos)
        try:
            for insn in instructions:
                offset = insn[0] - address
                if not final and offset + MAX_INSTRUCTION > stop:
                    break
                decoded_to = offset + insn[1]
                yield insn
        except capstone.CsError as exc:
            if exc.errno == capstone.CS_ERR_MEM:  # a memory limit, like any other allocation
                raise MemoryError("capstone could not allocate") from None
            raise
        finally:
            instructions.close()  # frees capstone's array now, not at garbage collection
        # Done, or capstone stopped early (undecodable bytes without skipdata): one pass over
        # the whole buffer would have stopped there too.
        if final or decoded_to < stop - MAX_INSTRUCTION:
            return
        pos = decoded_to


def sweep(md: capstone.Cs, regions: list[tuple[str, int, Any]], starts: list[int],
          max_bytes: int | None = None, targets: frozenset[int] = frozenset(),
          ) -> SweepResult:
    """Sweep every (name, vaddr, bytes) region, restarting at each address in ``starts``.

    ``max_bytes`` bounds the work on hostile input (sections that overlap, or claim the whole
    file many times over): regions beyond it are not swept and ``truncated`` is set.
    Instructions addressing one of ``targets`` RIP-relatively are listed in ``refs`` (the
    first MAX_REFS of them; ``refs_total`` counts all).
    """
    md.detail = False
    md.skipdata = True
    result = SweepResult()
    for _name, vaddr, data in regions:
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
            for address, size, mnemonic, op_str in decode(md, chunk, a):
                result.instructions += 1
                if mnemonic == ".byte":  # skipdata: one byte on x86, one word on AArch64
                    result.undecodable_bytes += size
                    continue
                if targets and "rip" in op_str:
                    m = _RIP.search(op_str)
                    if m:
                        disp = int(m.group(2), 0)
                        target = address + size + (disp if m.group(1) == "+" else -disp)
                        if target in targets:
                            result.refs_total += 1
                            if len(result.refs) < MAX_REFS:
                                result.refs.append((target, address))
                kind = classify(mnemonic, op_str)
                if kind:
                    result.site_addresses.append(address)
                    result.site_kinds.append(KIND_CODES[kind])
                    result.counts[kind] += 1
    return result
