"""Environment result documents for the prediction tests: the committed probe results of
tests/data, with the few facts a test is about changed (and nothing else)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


@cache
def _load(name: str) -> dict:
    return json.loads((DATA / f"result-{name}.json").read_text("utf-8"))


def doc(name: str) -> dict:
    return copy.deepcopy(_load(name))


def bookworm_none() -> dict:
    """bookworm's own kernel under QEMU: glibc 2.36 (dynamic build), vsyscall=none."""
    return doc("k6.1-hpet")


def bookworm_xonly() -> dict:
    out = bookworm_none()
    out["vsyscall"].update(mode="xonly", callable=True, maps="--xp [vsyscall]")
    return out


def bullseye_dynamic(vsyscall: str = "xonly") -> dict:
    """A bullseye userland's dynamic build: glibc 2.31."""
    out = bookworm_xonly()
    env = out["environment"]
    env["name"] = "bullseye"
    env["userland"].update(version_id="11", codename="bullseye")
    env["libc"]["version"] = "2.31"
    out["vsyscall"]["mode"] = vsyscall
    return out


def musl_build() -> dict:
    """A static musl probe in a glibc userland: environment.libc is the probe's musl."""
    return doc("bookworm-musl")


def arm64() -> dict:
    return doc("k6.1-arm64")


def with_interpreters(out: dict, *paths: str) -> dict:
    out["environment"]["interpreters"] = list(paths)
    return out


def with_ia32(out: dict, runs: bool | None) -> dict:
    out["environment"]["ia32"] = None if runs is None else {
        "runs": runs, "error": None if runs else "ENOEXEC: Exec format error"}
    return out


def i386_userland() -> dict:
    out = bookworm_xonly()
    env = out["environment"]
    env["abi"] = "i386"
    env["libc"].update(path="/usr/lib/i386-linux-gnu/libc.so.6",
                       ldso_path="/usr/lib/i386-linux-gnu/ld-linux.so.2")
    env["ia32"] = None  # a 32-bit probe does not ask: it is one
    return out


def without(out: dict, *path: str) -> dict:
    holder = out
    for key in path[:-1]:
        holder = holder[key]
    holder.pop(path[-1], None)
    return out
