"""Binary analysis of a result's raw artefacts: the vDSO image and the libc the probe used.

``analyse_result(doc)`` is a pure function of a result document. It reads the vDSO bytes and the
libc artefact the probe shipped (and, for a dynamic build, its dynamic loader), and returns what
pyelftools and capstone make of them::

    {"vdso": {...} | None, "libc": {...} | None, "ldso": {...} | None,
     "errors": ["one line each", ...]}

``libc["vdso_usage"]`` merges the ``__vdso_*`` names the libc and the loader ask for (dynamic
glibc looks most of them up in ld.so). Results without an ldso artefact (older probes, static
builds) get ``"ldso": None`` and a usage of the libc alone.

It never raises: every problem with the (untrusted) input becomes one line in ``errors``.
"""

from __future__ import annotations

from typing import Any

from vdsomatrix.analysis.artefacts import decode_ldso, decode_libc, decode_vdso, one_line
from vdsomatrix.analysis.libc import analyse_ldso, analyse_libc, vdso_usage
from vdsomatrix.analysis.vdso import analyse_vdso

__all__ = ["analyse_result"]


def analyse_result(doc: Any) -> dict[str, Any]:
    """Analyse the vDSO image and libc artefact of one result document (never raises)."""
    out: dict[str, Any] = {"vdso": None, "libc": None, "ldso": None, "errors": []}
    errors: list[str] = out["errors"]
    steps = (
        ("vdso", "vdso image", decode_vdso, lambda d: analyse_vdso(d.data)),
        ("libc", "libc artefact", decode_libc, lambda d: analyse_libc(d.data, d.meta)),
        ("ldso", "ldso artefact", decode_ldso, lambda d: analyse_ldso(d.data, d.meta)),
    )
    for key, label, decode, analyse in steps:
        try:
            decoded = decode(doc)
            errors.extend(decoded.errors)
            if decoded.data is not None:
                out[key], errs = analyse(decoded)
                errors.extend(errs)
        except Exception as exc:  # a bug or an input nobody foresaw: still one line, a result
            errors.append(f"{label}: analysis failed ({type(exc).__name__}: {one_line(exc)})")
    if out["libc"] is not None:
        try:
            env = doc.get("environment") if isinstance(doc, dict) else None
            env_libc = env.get("libc") if isinstance(env, dict) else None
            out["libc"]["vdso_usage"] = vdso_usage(out["vdso"], out["libc"], env_libc,
                                                   out["ldso"])
        except Exception as exc:
            errors.append(f"vdso usage: failed ({type(exc).__name__}: {one_line(exc)})")
    return out
