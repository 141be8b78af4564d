"""What a vDSO image exports: the ``objdump -T`` view plus syscall fallbacks.

The vDSO is a small shared object the kernel maps into every process. Its dynamic symbol table
(with GNU symbol versions, ``LINUX_2.6`` on x86-64) says which calls userland may make without
entering the kernel; the code of each function says whether it can still fall back to a real
``syscall`` (for example when the clocksource cannot be read from user space).

A 32-bit vDSO (i386, ELF32) also exports ``__kernel_vsyscall``, the function 32-bit libcs call
to make a system call. The kernel patches it at boot to the fastest instruction this CPU has
(``sysenter`` on Intel, ``syscall`` on AMD, ``int $0x80`` otherwise), so its code says what a
32-bit system call really executes here, as long as the bytes are the live mapping the probe
copied (the ``vdso32.so`` file of a kernel package holds the unpatched ``int $0x80``):
``kernel_vsyscall`` lists its instructions and the first that enters the kernel.

An arm64 vDSO (AArch64, ELF64) exports ``__kernel_*`` functions at LINUX_2.6.39; its fallback to
the kernel is ``svc #0`` with the number in x8, found and counted like ``syscall`` (the census's
``svc``). Its signal trampoline ``__kernel_rt_sigreturn`` is a NOTYPE symbol: counted by the
census, not listed as a function with a fallback.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vdsomatrix.analysis.elfimage import ElfImage, ElfProblem
from vdsomatrix.analysis.limits import MAX_LISTED_SITES, MAX_SITES_PER_FUNCTION, set_capped
from vdsomatrix.analysis.sweep import classify, decode, sweep, sweep_starts

LABEL = "vdso image"
MAX_SYMBOLS = 4096
MAX_FUNCTION_BYTES = 64 << 10  # per function; real vDSO functions are under 2 KiB
MAX_DISASSEMBLY = 4 << 20  # bytes disassembled per image, all functions together
KERNEL_VSYSCALL = "__kernel_vsyscall"
MAX_VSYSCALL_BYTES = 256  # of __kernel_vsyscall decoded; the real one is 13 to 16 bytes
MAX_VSYSCALL_INSTRUCTIONS = 64
# A kernel-entry kind (sweep.KINDS) as kernel_vsyscall["enters_with"] names it.
ENTERS_WITH = {"syscall": "syscall", "sysenter": "sysenter", "int80": "int 0x80"}


def analyse_vdso(data: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """Analyse vDSO bytes; (analysis or None when unreadable, one-line errors)."""
    errors: list[str] = []
    try:
        image = ElfImage(data)
    except ElfProblem as exc:
        return None, [f"{LABEL}: {exc}"]
    try:
        out = _analyse(image)
    finally:
        errors.extend(f"{LABEL}: {p}" for p in image.problems)
    return out, errors


def _analyse(image: ElfImage) -> dict[str, Any]:
    data = image.data
    symbols = image.symbols("SHT_DYNSYM", MAX_SYMBOLS)
    md = image.disassembler()
    out: dict[str, Any] = {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "machine": image.machine,
        "elf_class": image.bits,
        "soname": image.soname(),
        "build_id": image.build_id(),
        "versions": sorted({s.version for s in symbols if s.version and s.defined}),
        "symbols": [],
        "census": None,
        "kernel_vsyscall": None,
    }
    budget = MAX_DISASSEMBLY
    listed_budget = MAX_LISTED_SITES  # sites listed in all rows together
    cache: dict[tuple[int, int], tuple[list[int], int] | None] = {}
    # A 32-bit vDSO's functions fall back to the kernel by calling its own __kernel_vsyscall.
    vsyscall_at = next((s.value for s in symbols if s.name == KERNEL_VSYSCALL and s.defined
                        and s.is_function and s.value), None)
    for sym in symbols:
        if sym.index == 0 and not sym.name:
            continue  # the null symbol, which objdump -T does not print either
        row: dict[str, Any] = {
            "name": sym.name, "version": sym.version, "version_hidden": sym.version_hidden,
            "value": sym.value, "size": sym.size, "binding": sym.binding, "type": sym.type,
            "section": sym.section, "syscall_fallback": None, "syscall_sites": None,
            "syscall_sites_capped": False, "syscall_sites_total": None,
        }
        if sym.is_function and sym.defined and md is not None and sym.size:
            key = (sym.value, sym.size)
            if key not in cache:
                size = min(sym.size, MAX_FUNCTION_BYTES)
                code = image.read_vaddr(sym.value, size) if budget > 0 else b""
                budget -= len(code)
                if not code:
                    image.problems.append(f"{sym.name}: no code at {sym.value:#x} in the image")
                    cache[key] = None
                else:
                    if len(code) < sym.size:
                        image.problems.append(
                            f"{sym.name}: only {len(code)} of {sym.size} bytes of code readable")
                    cache[key] = _entry_sites(md, code, sym.value, vsyscall_at)
            found = cache[key]
            if found is not None:
                sites, total = found
                listed = sites[:listed_budget]
                listed_budget -= len(listed)
                set_capped(row, "syscall_sites", listed, total)
                row["syscall_fallback"] = bool(total)
        out["symbols"].append(row)
    out["functions"] = len({(r["value"], r["size"]) for r in out["symbols"]
                            if r["type"] in ("FUNC", "GNU_IFUNC") and r["section"] != "*UND*"})
    if md is not None:
        out["census"] = _census(image, symbols, md)
        out["kernel_vsyscall"] = kernel_vsyscall(image, symbols, md)
    return out


def _census(image: ElfImage, symbols: list[Any], md: Any) -> dict[str, Any]:
    """The entry instructions of the whole image's executable code, by kind."""
    data = image.data
    regions, source = image.executable_regions()
    result = sweep(md, regions, sweep_starts(symbols), max_bytes=len(data))
    if result.truncated:
        image.problems.append(f"executable sections add up to more than the image's "
                              f"{len(data)} bytes; the census stops there")
    return {**result.counts, "instructions": result.instructions,
            "undecodable_bytes": result.undecodable_bytes, "source": source,
            "complete": not result.truncated}


def kernel_vsyscall(image: ElfImage, symbols: list[Any], md: Any) -> dict[str, Any] | None:
    """``__kernel_vsyscall`` disassembled: ``{"address", "size", "bytes" (hex),
    "instructions" (Intel syntax, one string each), "enters_with", "complete"}``, or None when
    the image exports no such function (every 64-bit vDSO).

    ``enters_with`` is the first kernel-entry instruction of a linear walk ("sysenter",
    "syscall" or "int 0x80"; None if there is none): the patched-in fast path comes first, and
    the ``int $0x80`` after it is only where the kernel returns to (or, unpatched, the path).
    The walk covers the symbol's size, or runs to the first ``ret`` when the size is 0, and
    stops at MAX_VSYSCALL_BYTES and MAX_VSYSCALL_INSTRUCTIONS (``complete`` is then false).
    """
    sym = next((s for s in symbols if s.name == KERNEL_VSYSCALL and s.defined
                and s.is_function), None)
    if sym is None:
        return None
    want = sym.size if sym.size else MAX_VSYSCALL_BYTES
    code = image.read_vaddr(sym.value, min(want, MAX_VSYSCALL_BYTES))
    complete = bool(sym.size) and len(code) == sym.size
    if not code:
        image.problems.append(f"{KERNEL_VSYSCALL}: no code at {sym.value:#x} in the image")
    md.detail = False
    md.skipdata = True
    instructions: list[str] = []
    enters_with = None
    for _address, _size, mnemonic, op_str in decode(md, code, sym.value):
        if len(instructions) >= MAX_VSYSCALL_INSTRUCTIONS:
            complete = False
            break
        instructions.append(f"{mnemonic} {op_str}".strip())
        kind = classify(mnemonic, op_str)
        if enters_with is None and kind in ENTERS_WITH:
            enters_with = ENTERS_WITH[kind]
        if not sym.size and mnemonic == "ret":
            complete = True
            break
    return {"address": sym.value, "size": sym.size, "bytes": code.hex(),
            "instructions": instructions, "enters_with": enters_with, "complete": complete}


def _entry_sites(md: Any, code: bytes, address: int, vsyscall_at: int | None = None,
                 ) -> tuple[list[int], int]:
    """Kernel-entry instructions in a linear sweep of one function's bytes: the addresses of
    the first MAX_SITES_PER_FUNCTION, and how many there are. A direct call to the vDSO's own
    ``__kernel_vsyscall`` (at ``vsyscall_at``) is one too: it is how the 32-bit vDSO's
    functions fall back to a system call."""
    md.detail = False
    md.skipdata = True
    sites: list[int] = []
    total = 0
    for a, _size, mnemonic, op_str in decode(md, code, address):
        if classify(mnemonic, op_str) or (
                vsyscall_at is not None and mnemonic == "call" and op_str == f"{vsyscall_at:#x}"):
            total += 1
            if len(sites) < MAX_SITES_PER_FUNCTION:
                sites.append(a)
    return sites, total
