"""The real programs the program-analysis tests read and run, as fixtures, built once per
session whichever test module asks first.

Not a conftest.py: the suite's own tests import ``require`` from tests/conftest.py as
``conftest``, and a second conftest module in this folder would take that name from them. Test
modules here take these fixtures with ``from program_fixtures import *``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from program_builds import (
    CXX_C,
    ENDLESS_WRITER_C,
    EXIT_C,
    FAULT_LAUNCHER_C,
    FORK_BOMB_C,
    HELLO_C,
    LIBBAR_C,
    LIBFOO_C,
    NULL_DEREF_C,
    SLEEPER_C,
    USES_FOO_C,
    VSYSCALL_CALL_C,
    VSYSCALL_POINTER_C,
    VSYSCALL_READ_C,
    compile_c,
    go_static,
    shared_library,
)

_BUILT: dict[str, object] = {}  # what this session built, by fixture name


def built_once(make: Callable[[Path], object]):
    """A session fixture of ``make(builds)``, built once for every test module importing it
    (each module that imports a fixture gets a copy of its own, with its own cache)."""

    @pytest.fixture(scope="session", name=make.__name__)
    def fixture(builds: Path) -> object:
        if make.__name__ not in _BUILT:
            _BUILT[make.__name__] = make(builds)
        return _BUILT[make.__name__]

    return functools.update_wrapper(fixture, make, assigned=("__doc__", "__module__"))


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> Path:
    if "builds" not in _BUILT:
        _BUILT["builds"] = tmp_path_factory.mktemp("programs")
    return _BUILT["builds"]


@built_once
def vsyscall_static(builds: Path) -> Path:
    return compile_c(builds, "vsyscall-time", VSYSCALL_CALL_C, "gcc", "-O2", "-static")


@built_once
def vsyscall_pointer(builds: Path) -> Path:
    return compile_c(builds, "vsyscall-pointer", VSYSCALL_POINTER_C, "gcc", "-O2", "-static")


@built_once
def vsyscall_read(builds: Path) -> Path:
    return compile_c(builds, "vsyscall-read", VSYSCALL_READ_C, "gcc", "-O2", "-static")


@built_once
def glibc_dynamic(builds: Path) -> Path:
    """Built against this host's glibc (2.36): needs GLIBC_2.34 for __libc_start_main."""
    return compile_c(builds, "hello-glibc", HELLO_C, "gcc", "-O2")


@built_once
def exits_3(builds: Path) -> Path:
    return compile_c(builds, "exits-3", EXIT_C, "gcc", "-O2")


@built_once
def cxx_dynamic(builds: Path) -> Path:
    return compile_c(builds, "hello-cxx", CXX_C, "g++", "-O2", suffix=".cc")


@built_once
def static_pie(builds: Path) -> Path:
    return compile_c(builds, "hello-static-pie", HELLO_C, "gcc", "-O2", "-static-pie")


@built_once
def musl_static(builds: Path) -> Path:
    return compile_c(builds, "hello-musl", HELLO_C, "musl-gcc", "-O2", "-static")


@built_once
def musl_dynamic(builds: Path) -> Path:
    return compile_c(builds, "hello-musl-dynamic", HELLO_C, "musl-gcc", "-O2")


@built_once
def musl_missing_loader(builds: Path) -> Path:
    """A musl-dynamic program whose loader is nowhere on this host: a real ENOENT."""
    return compile_c(builds, "hello-musl-noloader", HELLO_C, "musl-gcc", "-O2",
                     "-Wl,--dynamic-linker=/lib/ld-musl-vdsomatrix-absent.so.1")


@built_once
def arm64_static(builds: Path) -> Path:
    return compile_c(builds, "hello-arm64", HELLO_C, "aarch64-linux-gnu-gcc", "-O2", "-static")


@built_once
def go_binary(builds: Path) -> Path:
    return go_static(builds)


@built_once
def fault_launcher(builds: Path) -> Path:
    return compile_c(builds, "fault-launcher", FAULT_LAUNCHER_C, "gcc", "-O2")


@built_once
def null_deref(builds: Path) -> Path:
    return compile_c(builds, "null-deref", NULL_DEREF_C, "gcc", "-O0")


@built_once
def fork_bomb(builds: Path) -> Path:
    return compile_c(builds, "fork-bomb", FORK_BOMB_C, "gcc", "-O2")


@built_once
def endless_writer(builds: Path) -> Path:
    return compile_c(builds, "endless-writer", ENDLESS_WRITER_C, "gcc", "-O2")


@built_once
def sleeper(builds: Path) -> Path:
    return compile_c(builds, "sleeper", SLEEPER_C, "gcc", "-O2")


@built_once
def libfoo_programs(builds: Path) -> dict[str, Path]:
    """For glibc and musl: a program that needs libfoo.so.1's foo, the library in good/, and
    one without foo (under the same soname) in bad/."""
    out = {}
    for libc, compiler in (("glibc", "gcc"), ("musl", "musl-gcc")):
        folder = builds / f"libfoo-{libc}"
        for sub in ("good", "bad"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        library = shared_library(folder / "good", "libfoo.so.1", LIBFOO_C, compiler)
        shared_library(folder / "bad", "libfoo.so.1", LIBBAR_C, compiler)
        out[libc] = compile_c(folder, "uses-foo", USES_FOO_C, compiler, "-O2",
                              libs=(f"-L{library.parent}", "-l:libfoo.so.1"))
    return out


__all__ = ["builds", "vsyscall_static", "vsyscall_pointer", "vsyscall_read", "glibc_dynamic",
           "exits_3", "cxx_dynamic", "static_pie", "musl_static", "musl_dynamic",
           "musl_missing_loader", "arm64_static", "go_binary", "fault_launcher",
           "libfoo_programs", "null_deref", "fork_bomb", "endless_writer", "sleeper"]
