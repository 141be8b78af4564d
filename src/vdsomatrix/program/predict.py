"""What should happen when a user's program runs in one environment, said before it runs.

A prediction weighs the program's ELF facts (:func:`vdsomatrix.program.elf.analyse_program`)
against the environment's probed result document, in the order the kernel and the loader meet
them: the file format and architecture (execve), the interpreter (execve again), the libraries
and symbol versions (the loader), and the vsyscall page (the program's own first calls). The
first check that fails is the prediction. When a fact the next check needs is not in the
document, the prediction is ``unknown`` and says which fact: it never guesses a pass.

The result document describes the probe's build: ``environment.libc`` is the libc of the
probe's own process, which is the userland's glibc only when the build is ``dynamic``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from vdsomatrix.program.verdict import VSYSCALL_PAGE, Verdict
from vdsomatrix.text import one_line

PREDICTION_KINDS = ("passed", "crashed", "cannot-execute", "loader-error", "unknown")
# The loaders each glibc userland ABI carries (Debian's paths through /lib64 and /lib).
GLIBC_INTERPRETERS = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "i386": "/lib/ld-linux.so.2",
                      "aarch64": "/lib/ld-linux-aarch64.so.1"}
# Libraries every glibc (or musl) userland has: the libc itself and its split-off parts.
LIBC_LIBRARIES = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                  "libresolv.so.2", "libutil.so.1", "libanl.so.1", "libc.so",
                  "ld-linux-x86-64.so.2", "ld-linux.so.2", "ld-linux-aarch64.so.1"}
# What a kernel of each machine executes natively.
NATIVE = {"x86_64": {"x86_64", "i386"}, "aarch64": {"aarch64"}}


@dataclass(frozen=True)
class Prediction:
    kind: str  # one of PREDICTION_KINDS
    reason: str  # one line
    missing_facts: tuple[str, ...] = ()  # what an unknown prediction lacked
    signal: str | None = None  # a predicted crash's signal
    fault_address: str | None = None  # and its address
    missing: str | None = None  # the interpreter, library or version predicted missing
    label: str = "prediction"  # what it is, wherever it is shown

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing_facts"] = list(self.missing_facts)
        return out


def _an(word: object) -> str:
    """``word`` with its article: every machine name here starts with a vowel sound but arm64's
    rivals (ppc64, riscv64, s390x, sparc...)."""
    text = str(word)
    return f"{'an' if text[:1].lower() in 'aeiox' else 'a'} {text}"


def _unknown(reason: str, *facts: str) -> Prediction:
    return Prediction("unknown", one_line(reason, 300), missing_facts=facts)


def _get(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def environment_facts(doc: dict[str, Any]) -> dict[str, Any]:
    """The few facts of a result document a prediction reads, None where absent."""
    env = _get(doc, "environment") or {}
    kernel_machine = _get(env, "kernel", "machine")
    abi = _get(env, "abi") or (kernel_machine if _get(env, "kernel") else None)
    build = _get(env, "build")
    libc = _get(env, "libc") or {}
    userland_glibc = None
    if libc.get("name") == "glibc" and libc.get("linkage") == "dynamic" and build in (
            None, "dynamic"):
        userland_glibc = libc.get("version") if isinstance(libc.get("version"), str) else None
    interpreters = _get(env, "interpreters")
    if isinstance(interpreters, dict):
        interpreters = [path for path, present in interpreters.items() if present is True]
    ia32 = _get(env, "ia32")
    return {
        "kernel_machine": kernel_machine if isinstance(kernel_machine, str) else None,
        "abi": abi if isinstance(abi, str) else None,
        "build": build,
        "userland_glibc": userland_glibc,
        "ldso_path": libc.get("ldso_path") if isinstance(libc.get("ldso_path"), str) else None,
        "interpreters": ([p for p in interpreters if isinstance(p, str)]
                         if isinstance(interpreters, list) else None),
        "ia32_runs": ia32.get("runs") if isinstance(ia32, dict) else None,
        "vsyscall_mode": _get(doc, "vsyscall", "mode"),
    }


def predict(program: dict[str, Any], environment_doc: dict[str, Any]) -> Prediction:
    """The predicted verdict of ``program`` (facts of ``analyse_program``) in the environment
    whose result document is ``environment_doc``."""
    env = environment_facts(environment_doc)
    if program.get("kind") == "not-executable":
        return Prediction("cannot-execute", f"not a program: {program.get('reason')} "
                          "(execve: ENOEXEC)")
    if program.get("kind") == "script":
        return _script(program, env)
    for check in (_architecture, _interpreter, _libraries, _glibc_version, _vsyscall):
        found = check(program, env)
        if found is not None:
            return found
    return Prediction("passed", _passing_reason(program, env))


def _script(program: dict[str, Any], env: dict[str, Any]) -> Prediction:
    interpreter = program.get("interpreter")
    if not interpreter:
        return Prediction("cannot-execute", "a #! line without an interpreter (ENOEXEC)")
    if env["interpreters"] is None:
        return _unknown(f"a script for {interpreter}: whether {interpreter} exists there is "
                        "not recorded", "environment.interpreters")
    if interpreter not in env["interpreters"]:
        return Prediction("cannot-execute", f"missing interpreter {interpreter} (ENOENT)",
                          missing=interpreter)
    return Prediction("passed", f"a script for {interpreter}, which is there")


def _architecture(program: dict[str, Any], env: dict[str, Any]) -> Prediction | None:
    arch, machine = program.get("arch"), env["kernel_machine"]
    if arch is None:
        return Prediction("cannot-execute", "an ELF file whose header cannot be read (ENOEXEC)")
    if machine is None:
        return _unknown("the environment's kernel machine is not recorded",
                        "environment.kernel.machine")
    name = program.get("machine") if arch == "other" else arch
    if arch not in NATIVE.get(machine, {machine}):
        return Prediction("cannot-execute", f"{_an(name)} program on {_an(machine)} kernel "
                          "(ENOEXEC; a binfmt_misc emulator would run it, and is not probed)")
    if arch == "i386" and machine == "x86_64" and env["abi"] != "i386":
        if env["ia32_runs"] is False:
            return Prediction("cannot-execute", "an i386 program where the kernel runs no "
                              "32-bit code (IA32 emulation off: ENOEXEC)")
        if env["ia32_runs"] is None:
            return _unknown("an i386 program: whether this kernel runs 32-bit code is not "
                            "recorded", "environment.ia32")
    return None


def _interpreter(program: dict[str, Any], env: dict[str, Any]) -> Prediction | None:
    if program.get("linkage") != "dynamic":
        return None
    wanted = program.get("interpreter") or ""
    if env["interpreters"] is not None:
        if wanted in env["interpreters"]:
            return None
        return Prediction("cannot-execute", f"missing interpreter {wanted} (ENOENT)",
                          missing=wanted)
    glibc_loader = GLIBC_INTERPRETERS.get(env["abi"] or "")
    if env["userland_glibc"] and glibc_loader is not None:
        if wanted == glibc_loader:
            return None
        if program.get("libc") == "glibc":  # another ABI's glibc loader
            return Prediction("cannot-execute", f"missing interpreter {wanted}: a glibc "
                              f"userland of ABI {env['abi']} has {glibc_loader} (ENOENT)",
                              missing=wanted)
    libc = "musl " if program.get("musl") else ""
    return _unknown(f"a dynamic program for the {libc}loader {wanted}: whether it exists there "
                    "is not recorded", "environment.interpreters")


def _libraries(program: dict[str, Any], env: dict[str, Any]) -> Prediction | None:
    if program.get("linkage") != "dynamic":
        return None
    others = [name for name in program.get("needed") or [] if name not in LIBC_LIBRARIES]
    if others:
        shown = ", ".join(others[:4]) + (" …" if len(others) > 4 else "")
        return _unknown(f"needs libraries beyond libc ({shown}): which are installed there is "
                        "not probed", "installed libraries")
    if program.get("needed_capped"):
        return _unknown("more DT_NEEDED entries than were read", "program.needed")
    return None


def _version_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def _glibc_version(program: dict[str, Any], env: dict[str, Any]) -> Prediction | None:
    if program.get("linkage") != "dynamic" or program.get("musl"):
        return None
    newest = program.get("newest_versions") or {}
    if {"GLIBCXX", "CXXABI"} & set(newest):
        return _unknown(f"needs libstdc++ (GLIBCXX_{newest.get('GLIBCXX', '?')}): its version "
                        "there is not probed", "libstdc++ version")
    needed = newest.get("GLIBC")
    if needed is None:
        return None
    have = env["userland_glibc"]
    if have is None:
        why = f"this document describes a {env['build']} probe" if env["build"] else "absent"
        return _unknown(f"needs GLIBC_{needed}; the userland's glibc version is not known "
                        f"({why})", "environment.libc.version of a dynamic build")
    if _version_key(needed) > _version_key(have):
        return Prediction("loader-error", f"needs symbol version GLIBC_{needed}; the userland "
                          f"has glibc {have}", missing=f"GLIBC_{needed}")
    return None


def _vsyscall(program: dict[str, Any], env: dict[str, Any]) -> Prediction | None:
    sites = program.get("vsyscall_sites") or []
    if not sites or program.get("arch") != "x86_64":
        return None
    first = sites[0]
    mode = env["vsyscall_mode"]
    if mode is None:
        return _unknown(f"calls the vsyscall page ({first['entry']} at {first['address']}):"
                            " the environment's vsyscall mode is not recorded", "vsyscall.mode")
    if mode == "none":
        return Prediction("crashed", f"SIGSEGV at {first['target']}: calls the vsyscall page "
                          f"({first['entry']}, {program.get('vsyscall_sites_total', 1)} site(s)) "
                          "under vsyscall=none", signal="SIGSEGV",
                          fault_address=first["target"])
    return None


def _passing_reason(program: dict[str, Any], env: dict[str, Any]) -> str:
    parts = [f"{_an(program.get('arch'))} {program.get('linkage')} program on "
             f"{_an(env['kernel_machine'])} kernel"]
    if program.get("linkage") == "dynamic":
        glibc = program.get("newest_versions", {}).get("GLIBC")
        parts.append(f"loader {program.get('interpreter')}")
        if glibc:
            parts.append(f"GLIBC_{glibc} <= {env['userland_glibc']}")
    if program.get("vsyscall_sites"):
        parts.append(f"vsyscall calls under vsyscall={env['vsyscall_mode']}")
    return one_line("; ".join(parts), 300)


def _detail_differs(prediction: Prediction, verdict: Verdict) -> str | None:
    if prediction.kind == "crashed":
        if prediction.signal and verdict.signal and prediction.signal != verdict.signal:
            return f"signal {verdict.signal}, not {prediction.signal}"
        address = _address(verdict.fault_address)
        if prediction.fault_address and address is not None:
            predicted = _address(prediction.fault_address)
            in_page = address in VSYSCALL_PAGE and predicted in VSYSCALL_PAGE
            if not in_page:
                return f"fault at {verdict.fault_address}, not {prediction.fault_address}"
    elif prediction.missing and verdict.missing and prediction.missing != verdict.missing:
        if os.path.basename(prediction.missing) != os.path.basename(verdict.missing):
            return f"missing {verdict.missing}, not {prediction.missing}"
    return None


def _address(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def disagreement(prediction: Prediction, verdict: Verdict) -> str | None:
    """How the observed verdict disagrees with the prediction, in one line; None when it agrees
    or when the prediction made no claim (unknown)."""
    if prediction.kind == "unknown":
        return None
    if prediction.kind != verdict.kind:
        if prediction.kind == "passed":
            return one_line(f"predicted to run, but {verdict.kind}: {verdict.cause}", 300)
        observed = "it ran and passed" if verdict.kind == "passed" else (
            f"{verdict.kind}: {verdict.cause}")
        return one_line(f"predicted {prediction.kind} ({prediction.reason}), but {observed}",
                        300)
    detail = _detail_differs(prediction, verdict)
    if detail:
        return one_line(f"predicted {prediction.kind} ({prediction.reason}), and it was "
                        f"{verdict.kind}, but with {detail}", 300)
    return None

