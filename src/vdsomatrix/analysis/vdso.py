"""What a vDSO image exports: the ``objdump -T`` view plus syscall fallbacks.

The vDSO is a small shared object the kernel maps into every process. Its dynamic symbol table
(with GNU symbol versions, ``LINUX_2.6`` on x86-64) says which calls userland may make without
entering the kernel; the code of each function says whether it can still fall back to a real
``syscall`` (for example when the clocksource cannot be read from user space).
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
    }
    budget = MAX_DISASSEMBLY
    listed_budget = MAX_LISTED_SITES  # sites listed in all rows together
    cache: dict[tuple[int, int], tuple[list[int], int] | None] = {}
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
                    cache[key] = _entry_sites(md, code, sym.value)
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
        regions, source = image.executable_regions()
        result = sweep(md, regions, sweep_starts(symbols), max_bytes=len(data))
        if result.truncated:
            image.problems.append(f"executable sections add up to more than the image's "
                                  f"{len(data)} bytes; the census stops there")
        out["census"] = {**result.counts, "instructions": result.instructions,
                         "undecodable_bytes": result.undecodable_bytes, "source": source,
                         "complete": not result.truncated}
    return out


def _entry_sites(md: Any, code: bytes, address: int) -> tuple[list[int], int]:
    """Kernel-entry instructions in a linear sweep of one function's bytes: the addresses of
    the first MAX_SITES_PER_FUNCTION, and how many there are."""
    md.detail = False
    md.skipdata = True
    sites: list[int] = []
    total = 0
    for a, _size, mnemonic, op_str in decode(md, code, address):
        if classify(mnemonic, op_str):
            total += 1
            if len(sites) < MAX_SITES_PER_FUNCTION:
                sites.append(a)
    return sites, total
