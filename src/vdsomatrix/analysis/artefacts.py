"""Getting raw bytes out of a result document, defensively.

A result document comes from an environment we do not trust: every field may be missing, of the
wrong type, not base64, not zlib, or a zlib bomb. These functions turn each of those into one
line of text instead of an exception, and cap every size before any memory is spent on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any

from vdsomatrix.text import one_line

# The caps bound what one analysis may cost (limits.py bounds what it lists). Real sizes: a
# vDSO is 8-16 KiB, ld.so about 250 KB, a static probe binary about 1 MB, libc.so.6 about 2 MB.
MAX_VDSO_IMAGE = 1 << 20
MAX_LIBC_BYTES = 8 << 20  # decompressed; applies to every shipped artefact (libc, ld.so)
# Incompressible data grows by 5 bytes per 64 KiB stored block, plus the zlib header and trailer.
MAX_LIBC_COMPRESSED = MAX_LIBC_BYTES + (MAX_LIBC_BYTES >> 12) + 64


@dataclass
class Decoded:
    """Bytes decoded from a document, or why there are none (``reason``) and what went wrong."""

    data: bytes | None = None
    reason: str | None = None  # why there is no data, when that is not an error (no vDSO here)
    errors: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _b64decode(text: str, limit: int, label: str) -> tuple[bytes | None, str | None]:
    if len(text) > (limit // 3 + 2) * 4:
        return None, (f"{label}: base64 text of {len(text)} characters exceeds the cap "
                      f"of {limit} bytes")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True), None
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        return None, f"{label}: bad base64 ({one_line(exc)})"


def decode_vdso(doc: Any) -> Decoded:
    """The vDSO image bytes of a result, or the reason there are none."""
    label = "vdso image"
    vdso = doc.get("vdso") if isinstance(doc, dict) else None
    if not isinstance(vdso, dict):
        return Decoded(reason="no vdso section in result")
    image = vdso.get("image")
    if image is None:
        if vdso.get("present") is False:
            return Decoded(reason="no vDSO in this environment (no AT_SYSINFO_EHDR)")
        return Decoded(reason="the probe copied no vDSO image")
    if not isinstance(image, str):
        return Decoded(errors=[f"{label}: expected base64 text, got {type(image).__name__}"])
    data, err = _b64decode(image, MAX_VDSO_IMAGE, label)
    if err:
        return Decoded(errors=[err])
    assert data is not None
    if len(data) > MAX_VDSO_IMAGE:
        return Decoded(errors=[f"{label}: {len(data)} bytes exceeds the cap of {MAX_VDSO_IMAGE}"])
    if not data:
        return Decoded(errors=[f"{label}: empty"])
    out = Decoded(data=data)
    size = vdso.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size != len(data):
        out.errors.append(f"{label}: {len(data)} bytes but the probe reported size {size}")
    return out


def decode_libc(doc: Any) -> Decoded:
    """The libc artefact (shared object, or the static probe binary) and its metadata."""
    return decode_artefact(doc, "libc", "libc artefact")


def decode_ldso(doc: Any) -> Decoded:
    """The dynamic loader the probe ran under (ld.so), shipped by dynamic builds only."""
    return decode_artefact(doc, "ldso", "ldso artefact")


def decode_artefact(doc: Any, key: str, label: str) -> Decoded:
    """One file the probe shipped in ``artefacts[key]`` (zlib, base64), checked and capped."""
    arts = doc.get("artefacts") if isinstance(doc, dict) else None
    art = arts.get(key) if isinstance(arts, dict) else None
    if art is None:
        return Decoded(reason=f"the probe shipped no {label}")
    if not isinstance(art, dict):
        return Decoded(errors=[f"{label}: expected an object, got {type(art).__name__}"])
    meta = {
        "path": art.get("path") if isinstance(art.get("path"), str) else None,
        "role": art.get("role") if isinstance(art.get("role"), str) else None,
    }
    if art.get("error") is not None:
        why = one_line(art["error"])
        return Decoded(meta=meta, errors=[f"{label}: the probe could not ship it ({why})"])
    text = art.get("zlib_base64")
    if not isinstance(text, str):
        return Decoded(meta=meta, errors=[f"{label}: no zlib_base64 data"])
    compressed, err = _b64decode(text, MAX_LIBC_COMPRESSED, label)
    if err:
        return Decoded(meta=meta, errors=[err])
    assert compressed is not None
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(compressed, MAX_LIBC_BYTES + 1)
    except zlib.error as exc:
        return Decoded(meta=meta, errors=[f"{label}: bad zlib data ({one_line(exc)})"])
    if len(data) > MAX_LIBC_BYTES:
        return Decoded(meta=meta, errors=[
            f"{label}: decompresses to more than {MAX_LIBC_BYTES} bytes (cap), not analysed"])
    if not inflater.eof:
        return Decoded(meta=meta, errors=[f"{label}: truncated zlib stream"])
    if not data:
        return Decoded(meta=meta, errors=[f"{label}: empty"])
    out = Decoded(data=data, meta=meta)
    digest = hashlib.sha256(data).hexdigest()
    meta["sha256"] = digest
    meta["size"] = len(data)
    claimed = art.get("sha256")
    if isinstance(claimed, str) and claimed.lower() != digest:
        out.errors.append(f"{label}: sha256 mismatch (probe said {one_line(claimed, 80)}, "
                          f"data is {digest})")
    size = art.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size != len(data):
        out.errors.append(f"{label}: {len(data)} bytes but the probe reported size {size}")
    return out
