"""What a user's program is, read from its bytes on the host: the facts a prediction needs.

The program is untrusted input like the artefacts :mod:`vdsomatrix.analysis` reads, and is read
the same way: through :class:`~vdsomatrix.analysis.elfimage.ElfImage` (bounded pyelftools), with
capstone decoding a window at a time (:func:`~vdsomatrix.analysis.sweep.decode`) and the same
kernel-entry classification (:func:`~vdsomatrix.analysis.sweep.classify`). Every count is exact;
every list is capped, with ``<list>_total`` and ``<list>_capped`` beside it. A problem is one
line in ``errors``, never an exception.

The vsyscall page is the one fixed address x86-64 code may call: glibc before 2.14 compiled
``time``, ``gettimeofday`` and ``getcpu`` into static binaries as calls to 0xffffffffff600400,
…000 and …800. The compiler emits them either as a direct call to the absolute address (a rel32
that wraps around) or as a 64-bit move of the address into a register followed by an indirect
call or jump through it; a function pointer kept in data is a third form, found by scanning
data for the three addresses.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from itertools import islice
from typing import Any

from vdsomatrix.analysis.elfimage import BoundedStrings, ElfImage, ElfProblem, Section
from vdsomatrix.analysis.limits import MAX_LISTED_NAMES, set_capped
from vdsomatrix.analysis.sweep import KINDS, classify, decode, sweep_starts
from vdsomatrix.analysis.vdsonames import scan_vdso_names
from vdsomatrix.text import one_line, plain

MAX_PROGRAM_BYTES = 256 << 20  # a larger file is refused, not analysed
MAX_CODE_BYTES = 64 << 20  # disassembled at most; a Go binary's text is a few MiB
MAX_SYMBOLS = 1 << 18  # sweep restarts read from .symtab; Go binaries have ~10 000
MAX_LISTED_SITES = 64  # addresses listed per kind of site
MAX_LISTED_LIBRARIES = 256  # DT_NEEDED entries and version-requirement rows
MAX_VERSIONS = 4096  # verneed entries read
MAX_VERSION_AUX = 256  # versions read per needed library
MAX_TAGS = 4096  # dynamic tags read
MAX_INTERP = 4096  # PATH_MAX: the longest PT_INTERP worth reading
SHEBANG_BYTES = 256  # BINPRM_BUF_SIZE: what the kernel reads of a #! line (Linux 5.1+)
MAX_COMMENT = 4096  # bytes of .comment read
# How far (in instructions) a register loaded with a vsyscall address is followed to a call.
VSYSCALL_WINDOW = 16

VSYSCALL_ENTRIES = {0xFFFFFFFFFF600000: "gettimeofday", 0xFFFFFFFFFF600400: "time",
                    0xFFFFFFFFFF600800: "getcpu"}
ARCHES = {"EM_X86_64": "x86_64", "EM_386": "i386", "EM_AARCH64": "aarch64"}
DF_1_PIE = 0x08000000
GO_BUILDINFO_MAGIC = b"\xff Go buildinf:"
GO_SECTIONS = (".go.buildinfo", ".note.go.buildid")
VERSION_FAMILIES = ("GLIBC", "GLIBCXX", "CXXABI")
_VERSION_NAME = re.compile(r"(GLIBC|GLIBCXX|CXXABI)_(\d+(?:\.\d+)*)")
# What the kernel's vDSOs export (x86-64, i386, arm64): the names a Go runtime, or any program
# that parses the vDSO itself, looks up. Longest first, so that __vdso_clock_gettime64 is not
# also counted as __vdso_clock_gettime.
KNOWN_VDSO_NAMES = (
    "__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu",
    "__vdso_clock_getres", "__vdso_getrandom", "__vdso_sgx_enter_enclave",
    "__vdso_clock_gettime64", "__kernel_vsyscall", "__kernel_sigreturn",
    "__kernel_rt_sigreturn", "__kernel_clock_gettime", "__kernel_gettimeofday",
    "__kernel_clock_getres", "__kernel_getrandom")
_KNOWN_VDSO_NAME = re.compile(b"|".join(
    re.escape(name.encode()) for name in sorted(KNOWN_VDSO_NAMES, key=len, reverse=True)))
_MUSL_INTERP = re.compile(r"/lib/ld-musl-[^/]+\.so\.1")
_LEGACY_REGISTERS = {"ax", "bx", "cx", "dx", "si", "di", "bp", "sp"}
_NUMBERED_REGISTER = re.compile(r"r(\d+)[dwb]?")


class ProgramRefused(Exception):
    """The path cannot be a program to analyse (a directory, a device, too large)."""


def read_program(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, at most MAX_PROGRAM_BYTES of them; ProgramRefused otherwise.

    The file is opened first and checked through its descriptor, so what is checked is what is
    read (no race with a rename). A FIFO is opened without blocking and then refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ProgramRefused(f"cannot open {one_line(path)}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ProgramRefused(f"{one_line(path)} is {what}")
        if info.st_size > MAX_PROGRAM_BYTES:
            raise ProgramRefused(f"{one_line(path)} is {info.st_size} bytes, more than the cap "
                                 f"of {MAX_PROGRAM_BYTES}")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        data = handle.read(MAX_PROGRAM_BYTES + 1)
    if len(data) > MAX_PROGRAM_BYTES:
        raise ProgramRefused(f"{one_line(path)} grew past the cap of {MAX_PROGRAM_BYTES} bytes")
    return data


def analyse_program(data: bytes, name: str) -> dict[str, Any]:
    """The facts of one program: see the module's docstring and docs in ``_empty_facts``."""
    facts = _empty_facts(data, name)
    if len(data) > MAX_PROGRAM_BYTES:
        facts["kind"] = "not-executable"
        facts["reason"] = f"{len(data)} bytes is more than the cap of {MAX_PROGRAM_BYTES}"
        facts["errors"].append(f"not analysed: {facts['reason']}")
    elif data[:4] == b"\x7fELF":
        facts["kind"] = "elf"
        _analyse_elf(data, facts)
    elif data[:2] == b"#!":
        facts["kind"] = "script"
        _read_shebang(data, facts)
    else:
        facts["kind"] = "not-executable"
        facts["reason"] = ("an empty file" if not data else
                           f"neither an ELF file nor a #! script (starts with {data[:8]!r})")
    return facts


def _empty_facts(data: bytes, name: str) -> dict[str, Any]:
    """Every key ``analyse_program`` returns, with the value it has when nothing is known."""
    return {
        "name": one_line(name, 120),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "kind": None,  # "elf", "script", "not-executable"
        "reason": None,  # why not-executable
        "interpreter": None,  # PT_INTERP, or a script's #! interpreter
        "interpreter_argument": None,  # a script's optional #! argument
        "elf_class": None,  # 32, 64
        "machine": None,  # e_machine as pyelftools names it: EM_X86_64, EM_ARM, ...
        "arch": None,  # "x86_64", "i386", "aarch64", or "other"
        "elf_type": None,  # EXEC, DYN, REL, CORE
        "linkage": None,  # "static", "static-pie", "dynamic", "shared-library"
        "needed": [],  # DT_NEEDED
        "soname": None,
        "version_requirements": [],  # [{"library", "versions": [...]}] from .gnu.version_r
        "newest_versions": {},  # {"GLIBC": "2.34", "GLIBCXX": ..., "CXXABI": ...}
        "musl": False,  # its interpreter is /lib/ld-musl-*.so.1
        "libc": None,  # "glibc" / "musl" when the interpreter says so
        "toolchain": None,  # "go", "gcc", "clang", "rust"
        "go_version": None,
        "comment": [],  # .comment lines (compiler identification)
        "vsyscall_sites": [],  # [{"address", "target", "entry", "how"}]
        "vsyscall_pointers": [],  # [{"address", "target", "entry", "section"}] in data
        "syscall_sites": dict.fromkeys(KINDS, 0),  # counts by kind
        "syscall_site_addresses": {},  # kind -> capped list of hex addresses
        "vdso_names": [],  # __vdso_* / __kernel_* strings in the file
        "disassembly": None,  # {"bytes", "instructions", "truncated", "source"}
        "errors": [],
    }


# -- scripts ---------------------------------------------------------------------------------

def _read_shebang(data: bytes, facts: dict[str, Any]) -> None:
    """The interpreter and its one optional argument, split as the kernel's binfmt_script
    splits them: blanks after ``#!``, the path up to the next blank, the rest as one word."""
    head = data[:SHEBANG_BYTES]
    line, newline, _rest = head[2:].partition(b"\n")
    text = line.decode("utf-8", "replace").strip(" \t\r")
    path, _blank, argument = text.replace("\t", " ").partition(" ")
    if not newline and len(head) == SHEBANG_BYTES and not _blank:
        facts["errors"].append(f"the #! line is longer than {SHEBANG_BYTES} bytes: the kernel "
                               "cannot tell where the interpreter's path ends")
    if not path:
        facts["errors"].append("#! without an interpreter")
    facts["interpreter"] = plain(path) or None
    facts["interpreter_argument"] = plain(argument.strip()) or None


# -- ELF ---------------------------------------------------------------------------------------

def _analyse_elf(data: bytes, facts: dict[str, Any]) -> None:
    errors = facts["errors"]
    try:
        image = ElfImage(data)
    except ElfProblem as exc:
        errors.append(f"ELF: {exc}")
        return
    facts["elf_class"] = image.bits
    facts["machine"] = image.machine
    facts["arch"] = ARCHES.get(image.machine, "other")
    facts["elf_type"] = image.elf_type
    steps = (_read_interpreter, _read_dynamic, _read_version_needs, _read_toolchain,
             _read_code, _read_vsyscall_pointers, _read_vdso_names)
    for step in steps:
        try:
            step(image, facts)
        except MemoryError:
            raise
        except Exception as exc:  # a malformed part: the other steps still say what they can
            errors.append(f"{step.__name__.lstrip('_').replace('_', ' ')}: {one_line(exc)}")
    _settle_linkage(facts)
    errors.extend(one_line(problem) for problem in image.problems)


def _read_interpreter(image: ElfImage, facts: dict[str, Any]) -> None:
    for seg in image.segments:
        if seg.type != "PT_INTERP":
            continue
        if seg.offset + seg.filesz > len(image.data):
            facts["errors"].append("PT_INTERP lies past the end of the file")
            facts["interpreter"] = ""  # present but unreadable: the kernel refuses it
            return
        raw = image.data[seg.offset: seg.offset + min(seg.filesz, MAX_INTERP)]
        facts["interpreter"] = plain(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        if _MUSL_INTERP.fullmatch(facts["interpreter"]):
            facts["musl"], facts["libc"] = True, "musl"
        elif "/ld-linux" in facts["interpreter"]:
            facts["libc"] = "glibc"
        return


def _settle_linkage(facts: dict[str, Any]) -> None:
    """static / static-pie / dynamic / shared-library, from PT_INTERP, e_type and the tags."""
    if facts["interpreter"] is not None:
        facts["linkage"] = "dynamic"
    elif facts["elf_type"] == "DYN":
        pie = facts.pop("_pie", False)
        facts["linkage"] = "shared-library" if facts["soname"] and not pie else "static-pie"
    elif facts["elf_type"] == "EXEC":
        facts["linkage"] = "static"
    facts.pop("_pie", None)


def _strings(image: ElfImage, sec: Section) -> BoundedStrings | None:
    link = image.section(sec.link)
    if link is None or link.type != "SHT_STRTAB":
        return None
    return BoundedStrings(image.data, link.offset, link.size)


def _read_dynamic(image: ElfImage, facts: dict[str, Any]) -> None:
    needed: list[str] = []
    for sec in image.sections_of_type("SHT_DYNAMIC"):
        strings = _strings(image, sec)
        if strings is None:
            facts["errors"].append(f"{sec.label}: no linked string table; tags skipped")
            continue
        table = image.elf.get_section(sec.index)
        table._stringtable = strings  # bounded reads instead of read-until-NUL
        cap = min(MAX_TAGS, sec.size // max(1, image.elf.structs.Elf_Dyn.sizeof()))
        for tag in islice(table.iter_tags(), cap):
            kind = tag.entry.d_tag
            if kind == "DT_NEEDED":
                needed.append(plain(tag.needed))
            elif kind == "DT_SONAME":
                facts["soname"] = plain(tag.soname)
            elif kind == "DT_FLAGS_1":
                facts["_pie"] = bool(tag.entry.d_val & DF_1_PIE)
            elif kind == "DT_NULL":
                break
    set_capped(facts, "needed", needed[:MAX_LISTED_LIBRARIES], len(needed))


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _read_version_needs(image: ElfImage, facts: dict[str, Any]) -> None:
    """``.gnu.version_r`` as auditwheel's policy reads it: the versions each library is asked
    for, and the newest of each family (GLIBC_, GLIBCXX_, CXXABI_), compared numerically."""
    rows: list[dict[str, Any]] = []
    newest: dict[str, tuple[int, ...]] = {}
    for sec in image.sections_of_type("SHT_GNU_verneed"):
        strings = _strings(image, sec)
        if strings is None:
            facts["errors"].append(f"{sec.label}: no linked string table; versions skipped")
            continue
        table = image.elf.get_section(sec.index)
        table.stringtable = strings
        for verneed, aux_iter in islice(table.iter_versions(), min(MAX_VERSIONS, sec.info)):
            versions = [plain(aux.name) for aux in islice(aux_iter, MAX_VERSION_AUX)]
            rows.append({"library": plain(verneed.name), "versions": sorted(set(versions))})
            for version in versions:
                match = _VERSION_NAME.fullmatch(version)
                if match:
                    family, key = match.group(1), _version_key(match.group(2))
                    newest[family] = max(newest.get(family, key), key)
            if not verneed["vn_next"]:
                break
    set_capped(facts, "version_requirements", rows[:MAX_LISTED_LIBRARIES], len(rows))
    facts["newest_versions"] = {family: ".".join(map(str, newest[family]))
                                for family in VERSION_FAMILIES if family in newest}


def _read_toolchain(image: ElfImage, facts: dict[str, Any]) -> None:
    names = {sec.name for sec in image.sections}
    magic = image.data.find(GO_BUILDINFO_MAGIC)
    if names.intersection(GO_SECTIONS) or magic >= 0:
        facts["toolchain"] = "go"
        facts["go_version"] = _go_version(image.data, magic) if magic >= 0 else None
    comment = next((s for s in image.sections if s.name == ".comment"), None)
    if comment is not None:
        raw = image.section_bytes(comment)[:MAX_COMMENT]
        lines = [one_line(part.decode("utf-8", "replace"), 120)
                 for part in raw.split(b"\0") if part.strip()]
        facts["comment"] = sorted(set(lines))[:8]
    if facts["toolchain"] is None:
        joined = " ".join(facts["comment"])
        for needle, toolchain in (("rustc", "rust"), ("clang", "clang"), ("GCC:", "gcc")):
            if needle in joined:
                facts["toolchain"] = toolchain
                break


def _go_version(data: bytes, magic: int) -> str | None:
    """The Go version in a Go 1.18+ build-info header: after the 14-byte magic, a pointer size
    and a flags byte; with flag 2 the version follows at offset 32 as a varint-sized string."""
    head = data[magic: magic + 32 + 10 + 64]
    if len(head) < 33 or not head[15] & 2:
        return None  # older Go: the version sits behind a pointer; not followed here
    length, shift, pos = 0, 0, 32
    while pos < len(head) and shift < 35:
        byte = head[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    text = head[pos: pos + length].decode("utf-8", "replace")
    return plain(text) if 0 < length <= 64 and len(text) == length else None


# -- code --------------------------------------------------------------------------------------

def _register(operand: str) -> str:
    """One name per register whatever its width (rax/eax/ax -> ax, r8/r8d -> r8)."""
    operand = operand.strip()
    if operand[:1] in ("r", "e") and operand[1:] in _LEGACY_REGISTERS:
        return operand[1:]
    match = _NUMBERED_REGISTER.fullmatch(operand)
    return f"r{match.group(1)}" if match else operand


def _immediate(text: str) -> int | None:
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


class _SiteFinder:
    """Kernel-entry sites and vsyscall call sites, one instruction at a time."""

    def __init__(self, vsyscall: bool):
        self.vsyscall = vsyscall  # only x86-64 processes have a vsyscall page
        self.counts = dict.fromkeys(KINDS, 0)
        self.addresses: dict[str, list[str]] = {}
        self.vsyscall_sites: list[dict[str, Any]] = []
        self.vsyscall_total = 0
        self.loaded: dict[str, tuple[int, int, int]] = {}  # register -> (target, at, age)
        self.instructions = 0

    def restart(self) -> None:
        self.loaded.clear()

    def see(self, address: int, _size: int, mnemonic: str, op_str: str) -> None:
        self.instructions += 1
        kind = classify(mnemonic, op_str)
        if kind:
            self.counts[kind] += 1
            listed = self.addresses.setdefault(kind, [])
            if len(listed) < MAX_LISTED_SITES:
                listed.append(f"{address:#x}")
        if self.vsyscall and mnemonic != ".byte":
            self._vsyscall(address, mnemonic, op_str)

    def _vsyscall(self, address: int, mnemonic: str, op_str: str) -> None:
        dst, _comma, src = op_str.partition(", ")
        if mnemonic in ("call", "jmp") and not _comma:
            target = _immediate(dst)
            if target in VSYSCALL_ENTRIES:
                self._site(address, target, mnemonic)
            elif (held := self.loaded.get(_register(dst))) is not None:
                self._site(address, held[0], f"mov {dst} at {held[1]:#x}, {mnemonic} {dst}")
        elif mnemonic in ("mov", "movabs") and _immediate(src) in VSYSCALL_ENTRIES:
            self.loaded[_register(dst)] = (_immediate(src) or 0, address, 0)
            return
        elif _comma and mnemonic not in ("cmp", "test", "push"):
            self.loaded.pop(_register(dst), None)  # overwritten
        if self.loaded:
            self.loaded = {reg: (t, at, age + 1) for reg, (t, at, age) in self.loaded.items()
                           if age + 1 < VSYSCALL_WINDOW}

    def _site(self, address: int, target: int, how: str) -> None:
        self.vsyscall_total += 1
        if len(self.vsyscall_sites) < MAX_LISTED_SITES:
            self.vsyscall_sites.append({"address": f"{address:#x}", "target": f"{target:#x}",
                                        "entry": VSYSCALL_ENTRIES[target], "how": how})


def _cuts(vaddr: int, length: int, starts: list[int]) -> list[tuple[int, int]]:
    """(start, end) pieces of one region, cut at every sweep restart inside it."""
    inner = [s for s in starts if vaddr < s < vaddr + length]
    bounds = [vaddr, *inner, vaddr + length]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _read_code(image: ElfImage, facts: dict[str, Any]) -> None:
    md = image.disassembler()
    if md is None:
        return
    md.detail, md.skipdata = False, True
    regions, source = image.executable_regions()
    # objdump's restarts (every symbol), and the entry point: without section headers the
    # sweep begins at the ELF header, whose bytes may run into the first real instruction.
    starts = sorted({*sweep_starts(image.symbols("SHT_SYMTAB", MAX_SYMBOLS)),
                     image.elf.header["e_entry"]})
    finder = _SiteFinder(vsyscall=image.machine == "EM_X86_64")
    swept, truncated = 0, False
    for _name, vaddr, code in regions:
        if swept + len(code) > MAX_CODE_BYTES:
            truncated = True
            facts["errors"].append(f"more than {MAX_CODE_BYTES} bytes of code: the rest is not "
                                   "disassembled")
            break
        swept += len(code)
        for a, b in _cuts(vaddr, len(code), starts):
            finder.restart()
            for insn in decode(md, code[a - vaddr: b - vaddr], a):
                finder.see(*insn)
    facts["syscall_sites"] = finder.counts
    facts["syscall_site_addresses"] = finder.addresses
    set_capped(facts, "vsyscall_sites", finder.vsyscall_sites, finder.vsyscall_total)
    facts["disassembly"] = {"bytes": swept, "instructions": finder.instructions,
                            "truncated": truncated, "source": source}


def _read_vsyscall_pointers(image: ElfImage, facts: dict[str, Any]) -> None:
    """Eight-byte-aligned vsyscall addresses in allocated, non-executable data: function
    pointers the program may call (and may not: a prediction weighs them less than calls)."""
    if image.machine != "EM_X86_64":
        return
    wanted = {target.to_bytes(8, "little"): target for target in VSYSCALL_ENTRIES}
    pattern = re.compile(b"|".join(re.escape(raw) for raw in wanted))
    found: list[dict[str, Any]] = []
    total = 0
    for sec in image.sections:
        if not sec.flags & 0x2 or sec.executable or not sec.has_bytes:  # SHF_ALLOC
            continue
        for match in pattern.finditer(image.section_bytes(sec)):
            address = sec.addr + match.start()
            if address % 8:
                continue
            total += 1
            if len(found) < MAX_LISTED_SITES:
                target = wanted[match.group()]
                found.append({"address": f"{address:#x}", "target": f"{target:#x}",
                              "entry": VSYSCALL_ENTRIES[target], "section": sec.label})
    set_capped(facts, "vsyscall_pointers", found, total)


def _read_vdso_names(image: ElfImage, facts: dict[str, Any]) -> None:
    """NUL-terminated ``__vdso_*``/``__kernel_*`` strings (as a libc keeps them), and the names
    the kernel's vDSOs export found anywhere (a Go binary keeps its strings unterminated)."""
    names = set(scan_vdso_names(image)["symbols"])
    names.update(match.group().decode("ascii") for match in _KNOWN_VDSO_NAME.finditer(image.data))
    listed = sorted(names)
    set_capped(facts, "vdso_names", listed[:MAX_LISTED_NAMES], len(listed))
