"""An ELF image held in memory, read with pyelftools, hardened against hostile bytes.

pyelftools does the parsing. This module adds what an analysis of untrusted images needs on top
of it: bounds checks against the real length of the bytes before anything is read (so a
truncated image is one clear line of text, not an exception deep inside construct), caps on
every count an attacker controls (sections, symbols, versions, tags), and string tables that
never read past their own section. It also holds the helpers shared by the vDSO and libc
analyses: symbols with their GNU versions, virtual address to file bytes, executable regions,
and a capstone disassembler for the image's machine (x86-64, i386, AArch64).
"""

from __future__ import annotations

import io
import itertools
import struct
from dataclasses import dataclass
from typing import Any

import capstone
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from vdsomatrix.text import one_line

MAX_SECTIONS = 4096
MAX_SEGMENTS = 1024
MAX_VERSIONS = 4096
MAX_VERSION_AUX = 64
MAX_TAGS = 4096
MAX_NAME = 1024
MAX_RELOCATIONS = 1 << 20
R_X86_64_GLOB_DAT = 6
R_386_GLOB_DAT = 6
PF_X = 1
SHF_EXECINSTR = SH_FLAGS.SHF_EXECINSTR
SHF_ALLOC = SH_FLAGS.SHF_ALLOC
SHF_WRITE = SH_FLAGS.SHF_WRITE
SHF_COMPRESSED = SH_FLAGS.SHF_COMPRESSED
# pyelftools names the OS-specific values generically unless the ELF says ELFOSABI_GNU; on Linux
# they are GNU's, whatever EI_OSABI says.
_GNU_TYPE = {"STT_LOOS": "GNU_IFUNC", "STT_GNU_IFUNC": "GNU_IFUNC"}
_GNU_BIND = {"STB_LOOS": "GNU_UNIQUE", "STB_GNU_UNIQUE": "GNU_UNIQUE"}
SPECIAL_SECTIONS = {"SHN_UNDEF": "*UND*", "SHN_ABS": "*ABS*", "SHN_COMMON": "*COM*"}


class ElfProblem(Exception):
    """The image cannot be analysed at all; the message is one line, without the label."""


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str
    flags: int
    addr: int
    offset: int
    size: int
    entsize: int
    link: int
    info: int

    @property
    def label(self) -> str:
        return self.name or f"section #{self.index}"

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR)

    @property
    def has_bytes(self) -> bool:
        return self.type not in ("SHT_NOBITS", "SHT_NULL") and not self.flags & SHF_COMPRESSED


@dataclass(frozen=True)
class Segment:
    type: str
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    binding: str  # GLOBAL, WEAK, LOCAL, GNU_UNIQUE, ...
    type: str  # FUNC, OBJECT, NOTYPE, GNU_IFUNC, SECTION, FILE, ...
    section: str  # section name, or *UND* / *ABS* / *COM*
    defined: bool
    version: str | None = None  # GNU version name (definition or requirement), None if none
    version_hidden: bool = False  # not the default version (objdump prints it in parentheses)
    version_index: int | None = None  # raw versym index without the hidden bit

    @property
    def is_function(self) -> bool:
        return self.type in ("FUNC", "GNU_IFUNC")


class BoundedStrings:
    """A string table that never reads outside its section and never returns huge strings.

    Stands in for pyelftools' StringTableSection, whose get_string() reads until a NUL byte
    however far away that is.
    """

    def __init__(self, data: bytes, offset: int, size: int):
        self._data = data
        self._start = max(0, offset)
        self._end = max(self._start, min(len(data), offset + size))

    def get_string(self, offset: int) -> str:
        if not isinstance(offset, int) or offset < 0:
            return ""
        pos = self._start + offset
        if pos >= self._end:
            return ""
        stop = min(self._end, pos + MAX_NAME)
        nul = self._data.find(b"\x00", pos, stop)
        raw = self._data[pos: nul if nul >= 0 else stop]
        return raw.decode("utf-8", errors="replace")


def _strip(value: Any, prefix: str) -> str:
    text = str(value)
    return text[len(prefix):] if text.startswith(prefix) else text


class ElfImage:
    """Parsed view of ELF bytes. Raises ElfProblem when nothing at all can be read;
    lesser problems (one section out of bounds, a bad version table) land in ``problems``."""

    def __init__(self, data: bytes):
        self.data = data
        self.problems: list[str] = []
        if len(data) < 4 or data[:4] != b"\x7fELF":
            raise ElfProblem(f"not an ELF file (starts with {data[:4]!r})")
        try:
            self.elf = ELFFile(io.BytesIO(data))
        except Exception as exc:  # pyelftools/construct raise many kinds
            raise ElfProblem(f"truncated or malformed ELF header ({one_line(exc)})") from None
        hdr = self.elf.header
        self.bits = self.elf.elfclass
        self.little_endian = self.elf.little_endian
        self.machine = str(hdr["e_machine"])
        self.elf_type = _strip(hdr["e_type"], "ET_")
        self.sections: list[Section] = self._load_sections()
        self.segments: list[Segment] = self._load_segments()
        self._by_index = {s.index: s for s in self.sections}

    # -- structure --------------------------------------------------------------------------

    def _load_sections(self) -> list[Section]:
        hdr = self.elf.header
        n_bytes = len(self.data)
        shoff, shnum, shentsize = hdr["e_shoff"], hdr["e_shnum"], hdr["e_shentsize"]
        if shoff == 0:
            if shnum:
                self.problems.append(f"e_shnum is {shnum} but there is no section header table")
            return []
        want = self.elf.structs.Elf_Shdr.sizeof()
        if shentsize != want:
            self.problems.append(f"bad e_shentsize {shentsize} (expected {want}); sections ignored")
            return []
        if shoff + want > n_bytes:
            self.problems.append(
                f"truncated ELF (section header table past end of {n_bytes} bytes)")
            return []
        try:
            count = self.elf.num_sections()
        except Exception as exc:
            self.problems.append(f"cannot count sections ({one_line(exc)})")
            return []
        if count > MAX_SECTIONS:
            self.problems.append(f"{count} sections is more than the cap of {MAX_SECTIONS}")
            return []
        if shoff + count * want > n_bytes:
            self.problems.append(
                f"truncated ELF (section header table past end of {n_bytes} bytes)")
            return []
        names = self._section_names(count)
        # pyelftools names sections through this (cached) table: give it the bounded one, so
        # that a bad e_shstrndx or an unterminated name cannot break or slow every section.
        self.elf._section_header_stringtable = names
        out = []
        out_of_bounds = []
        for i in range(count):
            try:
                h = self.elf._get_section_header(i)  # the raw header; no linked tables yet
            except Exception as exc:
                self.problems.append(f"section {i}: unreadable header ({one_line(exc)})")
                continue
            name = names.get_string(h["sh_name"])
            sec = Section(index=i, name=name, type=str(h["sh_type"]), flags=int(h["sh_flags"]),
                          addr=h["sh_addr"], offset=h["sh_offset"], size=h["sh_size"],
                          entsize=h["sh_entsize"], link=h["sh_link"], info=h["sh_info"])
            if sec.has_bytes and sec.offset + sec.size > n_bytes:
                out_of_bounds.append(sec.name or f"#{i}")
                continue
            out.append(sec)
        if out_of_bounds:
            shown = ", ".join(out_of_bounds[:5]) + (" …" if len(out_of_bounds) > 5 else "")
            self.problems.append(
                f"truncated ELF ({len(out_of_bounds)} section(s) past end of {n_bytes} bytes: "
                f"{shown})")
        return out

    def _section_names(self, count: int) -> BoundedStrings:
        """The section name table (e_shstrndx), bounded; an empty one when it is unusable."""
        try:
            shstrndx = self.elf.get_shstrndx()
            strtab_hdr = self.elf._get_section_header(shstrndx) if 0 < shstrndx < count else None
            if strtab_hdr is not None and strtab_hdr["sh_type"] == "SHT_STRTAB":
                return BoundedStrings(self.data, strtab_hdr["sh_offset"], strtab_hdr["sh_size"])
        except Exception:
            pass
        self.problems.append("no usable section name table (e_shstrndx); names are blank")
        return BoundedStrings(b"", 0, 0)

    def _load_segments(self) -> list[Segment]:
        hdr = self.elf.header
        n_bytes = len(self.data)
        phoff, phnum, phentsize = hdr["e_phoff"], hdr["e_phnum"], hdr["e_phentsize"]
        if phoff == 0 or phnum == 0:
            return []
        want = self.elf.structs.Elf_Phdr.sizeof()
        if phentsize != want:
            self.problems.append(f"bad e_phentsize {phentsize} (expected {want}); segments ignored")
            return []
        if phnum >= 0xFFFF or phnum > MAX_SEGMENTS:
            self.problems.append(f"{phnum} program headers is more than the cap; ignored")
            return []
        if phoff + phnum * want > n_bytes:
            self.problems.append(
                f"truncated ELF (program header table past end of {n_bytes} bytes)")
            return []
        out = []
        for i in range(phnum):
            try:
                h = self.elf._get_segment_header(i)
            except Exception as exc:
                self.problems.append(f"segment {i}: unreadable header ({one_line(exc)})")
                continue
            out.append(Segment(type=str(h["p_type"]), flags=int(h["p_flags"]),
                               offset=h["p_offset"], vaddr=h["p_vaddr"],
                               filesz=h["p_filesz"], memsz=h["p_memsz"]))
        return out

    def section(self, index: int) -> Section | None:
        return self._by_index.get(index)

    def section_bytes(self, sec: Section) -> bytes:
        if not sec.has_bytes:
            return b""
        return self.data[sec.offset: sec.offset + sec.size]

    def sections_of_type(self, sh_type: str) -> list[Section]:
        return [s for s in self.sections if s.type == sh_type]

    def read_vaddr(self, addr: int, size: int) -> bytes:
        """Bytes at a virtual address (through PT_LOAD, else allocated sections); may be short."""
        for seg in self.segments:
            if seg.type == "PT_LOAD" and seg.vaddr <= addr < seg.vaddr + seg.filesz:
                start = seg.offset + (addr - seg.vaddr)
                end = min(seg.offset + seg.filesz, start + size, len(self.data))
                return self.data[start:end] if start < end else b""
        for sec in self.sections:
            if sec.flags & SHF_ALLOC and sec.has_bytes and sec.addr <= addr < sec.addr + sec.size:
                start = sec.offset + (addr - sec.addr)
                end = min(sec.offset + sec.size, start + size)
                return self.data[start:end]
        return b""

    def section_at(self, addr: int) -> Section | None:
        for sec in self.sections:
            if sec.flags & SHF_ALLOC and sec.addr <= addr < sec.addr + sec.size:
                return sec
        return None

    def executable_regions(self) -> tuple[list[tuple[str, int, Any]], str]:
        """(name, vaddr, bytes) of the code to sweep, and where they came from.

        Like ``objdump -d``: every section with SHF_EXECINSTR and contents. Without section
        headers, the executable PT_LOAD segments. The bytes are views into the image, not
        copies: hostile headers may claim the whole file as code thousands of times over.
        """
        view = memoryview(self.data)
        regions: list[tuple[str, int, Any]] = [
            (s.name, s.addr, view[s.offset: s.offset + s.size])
            for s in self.sections if s.executable and s.has_bytes and s.size]
        if regions or self.sections:
            return regions, "sections"
        for i, seg in enumerate(self.segments):
            if seg.type == "PT_LOAD" and seg.flags & PF_X and seg.filesz:
                data = view[seg.offset: seg.offset + seg.filesz]
                regions.append((f"PT_LOAD[{i}]", seg.vaddr, data))
        return regions, "segments"

    # -- symbols ----------------------------------------------------------------------------

    def _strings_for(self, sec: Section) -> BoundedStrings | None:
        link = self.section(sec.link)
        if link is None or link.type != "SHT_STRTAB":
            return None
        return BoundedStrings(self.data, link.offset, link.size)

    def symbols(self, sh_type: str, cap: int) -> list[Symbol]:
        """Symbols of every SHT_SYMTAB or SHT_DYNSYM section, with GNU versions for dynsym."""
        out: list[Symbol] = []
        for sec in self.sections_of_type(sh_type):
            want = self.elf.structs.Elf_Sym.sizeof()
            if sec.entsize != want:
                self.problems.append(f"{sec.label}: bad entry size {sec.entsize}; symbols skipped")
                continue
            strings = self._strings_for(sec)
            if strings is None:
                self.problems.append(f"{sec.label}: no linked string table; symbols skipped")
                continue
            count = sec.size // want
            if count > cap:
                self.problems.append(f"{sec.label}: {count} symbols, only the first {cap} read")
                count = cap
            versions = self._versions_for(sec) if sh_type == "SHT_DYNSYM" else None
            try:
                table = self.elf.get_section(sec.index)
                table.stringtable = strings  # bounded reads instead of read-until-NUL
                for i in range(count):
                    sym = table.get_symbol(i)
                    out.append(self._symbol(i, sym, versions))
            except MemoryError:
                raise  # a limit of the analysis, not an unreadable symbol: see analyse_bounded
            except Exception as exc:
                self.problems.append(f"{sec.label}: unreadable symbol ({one_line(exc)})")
        return out

    def _symbol(self, i: int, sym: Any, versions: _Versions | None) -> Symbol:
        info = sym["st_info"]
        shndx = sym["st_shndx"]
        if isinstance(shndx, int):
            sec = self.section(shndx)
            section = sec.name if sec is not None else f"#{shndx}"
        else:
            section = SPECIAL_SECTIONS.get(str(shndx), str(shndx))
        version = hidden = index = None
        if versions is not None:
            version, hidden, index = versions.lookup(i)
        return Symbol(
            index=i, name=sym.name, value=sym["st_value"], size=sym["st_size"],
            binding=_GNU_BIND.get(str(info["bind"]), _strip(info["bind"], "STB_")),
            type=_GNU_TYPE.get(str(info["type"]), _strip(info["type"], "STT_")),
            section=section, defined=str(shndx) != "SHN_UNDEF",
            version=version, version_hidden=bool(hidden), version_index=index,
        )

    def _versions_for(self, dynsym: Section) -> _Versions | None:
        try:
            return _Versions(self, dynsym)
        except MemoryError:
            raise
        except Exception as exc:
            self.problems.append(f"symbol versions unreadable ({one_line(exc)})")
            return None

    # -- misc -------------------------------------------------------------------------------

    def soname(self) -> str | None:
        for sec in self.sections_of_type("SHT_DYNAMIC"):
            strings = self._strings_for(sec)
            if strings is None:
                continue
            try:
                dyn = self.elf.get_section(sec.index)
                dyn._stringtable = strings  # bounded reads, see BoundedStrings
                cap = min(MAX_TAGS, sec.size // max(1, self.elf.structs.Elf_Dyn.sizeof()))
                for tag in itertools.islice(dyn.iter_tags(), cap):
                    if tag.entry.d_tag == "DT_SONAME":
                        return tag.soname
            except Exception as exc:
                self.problems.append(f"{sec.label}: unreadable dynamic tags ({one_line(exc)})")
        return None

    def got_names(self, dynsym: list[Symbol]) -> dict[int, str]:
        """GOT slot address -> name of the symbol whose address the dynamic linker puts there
        (``R_X86_64_GLOB_DAT`` in the RELA tables of x86-64 ELF64, ``R_386_GLOB_DAT`` in the
        REL tables of i386 ELF32); ``{}`` for anything else."""
        if not self.elf.little_endian:
            return {}
        if self.machine == "EM_X86_64" and self.elf.elfclass == 64:
            sh_type, entsize, layout = "SHT_RELA", 24, "<QQq"
            glob_dat, shift = R_X86_64_GLOB_DAT, 32  # r_info: symbol << 32 | type
        elif self.machine == "EM_386" and self.elf.elfclass == 32:
            sh_type, entsize, layout = "SHT_REL", 8, "<II"
            glob_dat, shift = R_386_GLOB_DAT, 8  # r_info: symbol << 8 | type
        else:
            return {}
        type_mask = (1 << shift) - 1
        names = {s.index: s.name for s in dynsym if s.name}
        out: dict[int, str] = {}
        budget = MAX_RELOCATIONS
        for sec in self.sections_of_type(sh_type):
            link = self.section(sec.link)
            if link is None or link.type != "SHT_DYNSYM" or sec.entsize != entsize:
                continue
            blob = self.section_bytes(sec)
            count = min(len(blob) // entsize, budget)
            budget -= count
            for offset, info, *_addend in struct.iter_unpack(layout, blob[: count * entsize]):
                if info & type_mask == glob_dat and (info >> shift) in names:
                    out.setdefault(offset, names[info >> shift])
            if budget <= 0:
                self.problems.append(f"more than {MAX_RELOCATIONS} relocations; the rest ignored")
                break
        return out

    def build_id(self) -> str | None:
        notes: list[Any] = []
        try:
            for sec in self.sections_of_type("SHT_NOTE"):
                notes.append(self.elf.get_section(sec.index))
            if not notes:
                for i, seg in enumerate(self.segments):
                    if seg.type == "PT_NOTE" and seg.offset + seg.filesz <= len(self.data):
                        notes.append(self.elf.get_segment(i))
            for holder in notes:
                for note in itertools.islice(holder.iter_notes(), 256):
                    if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                        return bytes(note["n_descdata"]).hex()
        except Exception as exc:
            self.problems.append(f"unreadable notes ({one_line(exc)})")
        return None

    def disassembler(self, detail: bool = False, att: bool = False) -> capstone.Cs | None:
        """A capstone disassembler for this machine; None (and a problem) if unsupported.
        ``att`` (AT&T syntax) means something for x86 only."""
        if self.machine == "EM_AARCH64" and self.elf.little_endian:
            md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
            md.detail = detail
            return md
        if self.machine == "EM_X86_64":
            mode = capstone.CS_MODE_64
        elif self.machine == "EM_386":
            mode = capstone.CS_MODE_32
        else:
            self.problems.append(f"machine {self.machine} is neither x86 nor little-endian "
                                 "AArch64: no disassembly")
            return None
        md = capstone.Cs(capstone.CS_ARCH_X86, mode)
        md.detail = detail
        if att:
            md.syntax = capstone.CS_OPT_SYNTAX_ATT
        return md


class _Versions:
    """GNU symbol versions of one dynamic symbol table (versym + verdef + verneed)."""

    def __init__(self, image: ElfImage, dynsym: Section):
        self.defs: dict[int, str] = {}
        self.needs: dict[int, str] = {}
        self.versym: Any = None
        self.versym_count = 0
        for sec in image.sections:
            if sec.type == "SHT_GNU_versym" and sec.link == dynsym.index:
                if sec.entsize not in (0, 2):
                    raise ElfProblem(f"{sec.label}: bad entry size {sec.entsize}")
                self.versym = image.elf.get_section(sec.index)
                # versym.get_symbol() also reads the symbol's name: keep that bounded too.
                self.versym.symboltable.stringtable = image._strings_for(dynsym)
                self.versym_count = sec.size // 2
            elif sec.type in ("SHT_GNU_verdef", "SHT_GNU_verneed"):
                strings = image._strings_for(sec)
                if strings is None:
                    continue
                table = image.elf.get_section(sec.index)
                table.stringtable = strings
                if sec.type == "SHT_GNU_verdef":
                    self._read_defs(table, sec)
                else:
                    self._read_needs(table, sec)

    def _read_defs(self, table: Any, sec: Section) -> None:
        count = min(MAX_VERSIONS, sec.info)
        for verdef, aux_iter in itertools.islice(table.iter_versions(), count):
            aux = next(itertools.islice(aux_iter, 1), None)
            if aux is not None:
                self.defs.setdefault(int(verdef["vd_ndx"]), aux.name)
            if not verdef["vd_next"]:
                break

    def _read_needs(self, table: Any, sec: Section) -> None:
        count = min(MAX_VERSIONS, sec.info)
        for verneed, aux_iter in itertools.islice(table.iter_versions(), count):
            for aux in itertools.islice(aux_iter, MAX_VERSION_AUX):
                self.needs.setdefault(int(aux["vna_other"]), aux.name)
                if not aux["vna_next"]:
                    break
            if not verneed["vn_next"]:
                break

    def lookup(self, i: int) -> tuple[str | None, bool, int | None]:
        if self.versym is None or i >= self.versym_count:
            return None, False, None
        ndx = self.versym.get_symbol(i).entry["ndx"]
        if ndx == "VER_NDX_LOCAL":
            return None, False, 0
        if ndx == "VER_NDX_GLOBAL":
            return None, False, 1
        ndx = int(ndx)
        hidden = bool(ndx & 0x8000)
        ndx &= 0x7FFF
        if ndx in self.defs and ndx > 1:
            return self.defs[ndx], hidden, ndx
        if ndx in self.needs:
            return self.needs[ndx], hidden, ndx
        return None, hidden, ndx
