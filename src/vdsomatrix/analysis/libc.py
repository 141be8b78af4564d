"""How a C library enters the kernel, read statically from its code.

Three questions, each answered from the bytes of the libc an environment really loaded (or of
the static probe binary, which has its libc linked in):

* census (census.py): how many ``syscall`` / ``sysenter`` / ``int 0x80`` instructions the
  executable code holds (and, in a 32-bit libc, ``call *%gs:0x10``: the call of the vDSO's
  ``__kernel_vsyscall``), and in which functions;
* entry points (entrypoints.py): whether ``syscall()``, ``clock_gettime``, ``gettimeofday`` and
  ``time`` reach the vDSO or enter the kernel themselves (``syscall``; in 32-bit code
  ``int $0x80`` or ``__kernel_vsyscall``), with the addresses of the evidence;
* vDSO names (vdsonames.py): which ``__vdso_*`` symbols and ``LINUX_*`` versions the libc's
  read-only data names, i.e. what it will ask the vDSO for. Dynamic glibc asks for most of them
  in its loader (ld.so, ``setup_vdso_pointers``): ``analyse_ldso`` reads those. In 32-bit
  code the names are found, but not yet which functions use them (``referenced_from`` stays
  empty: i386 code addresses them relative to its GOT register, not to RIP).

An AArch64 libc (arm64) gets the census (``svc``) and the vDSO names (``__kernel_*`` at
LINUX_2.6.39, asked for by ld.so); its entry points are not walked (the walk reads x86
registers), and ``referenced_from`` stays empty (its code reaches data with ``adrp``/``add``).
"""

from __future__ import annotations

from typing import Any

from vdsomatrix.analysis.census import take_census
from vdsomatrix.analysis.elfimage import ElfImage, ElfProblem
from vdsomatrix.analysis.entrypoints import ENTRY_POINTS, EntryWalker
from vdsomatrix.analysis.functions import FunctionIndex
from vdsomatrix.analysis.sweep import sweep, sweep_starts
from vdsomatrix.analysis.vdsonames import attribute_names, scan_vdso_names

LABEL = "libc artefact"
LDSO_LABEL = "ldso artefact"
MAX_SYMBOLS = 400_000
STRIPPED = "none (stripped: function attribution is an estimate)"


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
        out = {**identity(image, meta), "vdso_names": scan_vdso_names(image)}
    finally:
        errors = [f"{LDSO_LABEL}: {p}" for p in image.problems]
    return out, errors


def identity(image: ElfImage, meta: dict[str, Any]) -> dict[str, Any]:
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
        **identity(image, meta),
        "symbols": source,
        "census": None,
        "functions": [],
        "functions_capped": False,
        "functions_total": 0,
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
    attribute_names(names, result.refs, index, symtab, meta.get("role"),
                    refs_complete=result.refs_total == len(result.refs))
    if result.truncated:
        image.problems.append(f"executable sections add up to more than the file's "
                              f"{len(image.data)} bytes; the census stops there")
    out["census"], listing = take_census(result, index, bool(symbols), regions, region_source)
    out.update(listing)
    walker = EntryWalker(image, index, symtab or dynsym, image.got_names(dynsym))
    for name in ENTRY_POINTS:
        out["entry_points"][name] = walker.describe(name)
    return out
