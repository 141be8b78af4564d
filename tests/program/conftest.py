"""The real programs the program-analysis tests read and run, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from program_builds import (
    CXX_C,
    EXIT_C,
    FAULT_LAUNCHER_C,
    HELLO_C,
    LIBBAR_C,
    LIBFOO_C,
    USES_FOO_C,
    VSYSCALL_CALL_C,
    VSYSCALL_POINTER_C,
    VSYSCALL_READ_C,
    compile_c,
    go_static,
    shared_library,
)


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("programs")


@pytest.fixture(scope="session")
def vsyscall_static(builds) -> Path:
    return compile_c(builds, "vsyscall-time", VSYSCALL_CALL_C, "gcc", "-O2", "-static")


@pytest.fixture(scope="session")
def vsyscall_pointer(builds) -> Path:
    return compile_c(builds, "vsyscall-pointer", VSYSCALL_POINTER_C, "gcc", "-O2", "-static")


@pytest.fixture(scope="session")
def vsyscall_read(builds) -> Path:
    return compile_c(builds, "vsyscall-read", VSYSCALL_READ_C, "gcc", "-O2", "-static")


@pytest.fixture(scope="session")
def glibc_dynamic(builds) -> Path:
    """Built against this host's glibc (2.36): needs GLIBC_2.34 for __libc_start_main."""
    return compile_c(builds, "hello-glibc", HELLO_C, "gcc", "-O2")


@pytest.fixture(scope="session")
def exits_3(builds) -> Path:
    return compile_c(builds, "exits-3", EXIT_C, "gcc", "-O2")


@pytest.fixture(scope="session")
def cxx_dynamic(builds) -> Path:
    return compile_c(builds, "hello-cxx", CXX_C, "g++", "-O2", suffix=".cc")


@pytest.fixture(scope="session")
def static_pie(builds) -> Path:
    return compile_c(builds, "hello-static-pie", HELLO_C, "gcc", "-O2", "-static-pie")


@pytest.fixture(scope="session")
def musl_static(builds) -> Path:
    return compile_c(builds, "hello-musl", HELLO_C, "musl-gcc", "-O2", "-static")


@pytest.fixture(scope="session")
def musl_dynamic(builds) -> Path:
    return compile_c(builds, "hello-musl-dynamic", HELLO_C, "musl-gcc", "-O2")


@pytest.fixture(scope="session")
def musl_missing_loader(builds) -> Path:
    """A musl-dynamic program whose loader is nowhere on this host: a real ENOENT."""
    return compile_c(builds, "hello-musl-noloader", HELLO_C, "musl-gcc", "-O2",
                     "-Wl,--dynamic-linker=/lib/ld-musl-vdsomatrix-absent.so.1")


@pytest.fixture(scope="session")
def arm64_static(builds) -> Path:
    return compile_c(builds, "hello-arm64", HELLO_C, "aarch64-linux-gnu-gcc", "-O2", "-static")


@pytest.fixture(scope="session")
def go_binary(builds) -> Path:
    return go_static(builds)


@pytest.fixture(scope="session")
def fault_launcher(builds) -> Path:
    return compile_c(builds, "fault-launcher", FAULT_LAUNCHER_C, "gcc", "-O2")


@pytest.fixture(scope="session")
def libfoo_programs(builds) -> dict[str, Path]:
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
