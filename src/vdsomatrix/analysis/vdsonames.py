"""Which ``__vdso_*`` names a libc (or its loader) will ask the vDSO for, and what it gets.

The names sit in read-only data as NUL-terminated strings, next to the ``LINUX_*`` version they
are looked up with. ``scan_vdso_names`` finds them, ``attribute_names`` says which functions use
each one (from the census sweep's RIP-relative references), and ``vdso_usage`` sets what the
libc and ld.so ask for against what the environment's vDSO offers.
"""

from __future__ import annotations

import re
from typing import Any

from vdsomatrix.analysis.elfimage import SHF_ALLOC, ElfImage, Symbol
from vdsomatrix.analysis.functions import FunctionIndex, program_functions
from vdsomatrix.analysis.limits import MAX_LISTED_NAMES, MAX_REFERENCING_FUNCTIONS, set_capped

VDSO_NAME = re.compile(
    rb"(?<![\w.])(__vdso_\w{1,64}|__kernel_\w{1,64}|LINUX_\d{1,3}(?:\.\d{1,3}){0,3})\x00")
OBJECT_LABELS = {"dynamic-loader": "ld.so"}  # any other role: "libc"


def scan_vdso_names(image: ElfImage) -> dict[str, Any]:
    """``__vdso_*`` symbol names and ``LINUX_*`` versions in the image's read-only data."""
    found: dict[str, int] = {}
    spans: list[tuple[int, int, int]] = []  # (vaddr, file offset, size)
    for sec in image.sections:
        if (sec.flags & SHF_ALLOC and not sec.executable and sec.type == "SHT_PROGBITS"
                and sec.has_bytes):
            spans.append((sec.addr, sec.offset, sec.size))
    if not image.sections:
        for seg in image.segments:
            if seg.type == "PT_LOAD" and not seg.flags & 1:
                spans.append((seg.vaddr, seg.offset, seg.filesz))
    view = memoryview(image.data)  # slices of it copy nothing
    budget = len(image.data)  # overlapping sections must not multiply the work
    for base, offset, size in spans:
        blob = view[offset: offset + size]
        budget -= len(blob)
        if budget < 0:
            image.problems.append("read-only sections add up to more than the file; "
                                  "vDSO name scan stopped")
            break
        for m in VDSO_NAME.finditer(blob):
            found.setdefault(m.group(1).decode("ascii"), base + m.start(1))
    names = sorted(n for n in found if not n.startswith("LINUX_"))
    versions = sorted(n for n in found if n.startswith("LINUX_"))
    out: dict[str, Any] = {}
    set_capped(out, "symbols", names[:MAX_LISTED_NAMES], len(names))
    set_capped(out, "versions", versions[:MAX_LISTED_NAMES], len(versions))
    kept = out["symbols"] + out["versions"]
    out["addresses"] = {n: found[n] for n in sorted(kept)}
    out["referenced_from"] = {}
    out["referenced_from_capped"] = False
    out["program_only"] = []
    return out


def attribute_names(names: dict[str, Any], refs: list[tuple[int, int]], index: FunctionIndex,
                    symtab: list[Symbol], role: str | None, refs_complete: bool = True) -> None:
    """Which functions reference each vDSO name; in a static probe binary, set apart the
    names only the program itself (not its libc) looks up.

    ``refs_complete`` is false when the sweep kept only some of the references: then, like a
    list cut at MAX_REFERENCING_FUNCTIONS, ``referenced_from_capped`` is set.
    """
    by_address: dict[int, set[str]] = {}
    for target, address in refs:
        fn, _exact = index.containing(address)
        by_address.setdefault(target, set()).add(fn.name if fn else f"{address:#x}")
    referenced = {name: sorted(by_address.get(addr, ()))
                  for name, addr in names["addresses"].items()}
    names["referenced_from_capped"] = not refs_complete or any(
        len(fns) > MAX_REFERENCING_FUNCTIONS for fns in referenced.values())
    referenced = {name: fns[:MAX_REFERENCING_FUNCTIONS] for name, fns in referenced.items()}
    names["referenced_from"] = referenced
    names["program_only"] = []
    if role == "probe-binary" and symtab:
        own = program_functions(symtab)
        names["program_only"] = [n for n in names["symbols"]
                                 if referenced.get(n) and set(referenced[n]) <= own]


def vdso_usage(vdso: dict[str, Any] | None, libc: dict[str, Any],
               env_libc: dict[str, Any] | None,
               ldso: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kernel offers X, this libc (with its loader, when analysed) asks for Y: the intersection,
    with caveats. ``requested_by`` says which object asks for each name (``libc``, ``ld.so``)."""
    libc_names = libc.get("vdso_names") if isinstance(libc.get("vdso_names"), dict) else {}
    program_only = list(libc_names.get("program_only", []))
    requested_by: dict[str, list[str]] = {}
    versions: set[str] = set()
    objects = []
    for obj, names in ((libc, libc_names),
                       (ldso, ldso.get("vdso_names") if isinstance(ldso, dict) else None)):
        if not isinstance(names, dict):
            continue
        label = OBJECT_LABELS.get(str(obj.get("role")), "libc") if obj is not None else "libc"
        objects.append(label)
        for name in names.get("symbols", []):
            if isinstance(name, str) and name not in program_only:
                sources = requested_by.setdefault(name, [])
                if label not in sources:
                    sources.append(label)
        versions.update(v for v in names.get("versions", []) if isinstance(v, str))
    asked = sorted(requested_by)
    asked_versions = sorted(versions)
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
    if (env_libc.get("name") == "glibc" and libc.get("role") == "shared-object"
            and "ld.so" not in objects):
        notes.append("dynamic glibc looks most vDSO symbols up in ld.so (rtld), which is not "
                     "analysed here: the names found in libc.so alone undercount its use")
    return {"offered": offered, "offered_versions": offered_versions,
            "requested": asked, "requested_versions": asked_versions,
            "requested_by": requested_by, "objects": objects,
            "used": used if version_ok else [], "missing": missing,
            "program_lookups": program_only, "notes": notes}
