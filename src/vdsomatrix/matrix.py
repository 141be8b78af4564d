"""The matrix: environments as data, read from images/matrix.toml and validated.

Every malformed entry is reported with its place in the file and what to write instead.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from vdsomatrix.errors import BadInput


class BackendName(StrEnum):
    """The kinds of environment, in the order a run measures them and a report shows them."""

    HOST = "host"
    DOCKER = "docker"
    QEMU = "qemu"


class Build(StrEnum):
    """What runs in the environment: the C helper against dynamic glibc, static glibc or static
    musl, or (``runtimes``) the language runtimes the suite ships, timed and counted in place of
    the C rows, in an image with a layer of their own."""

    DYNAMIC = "dynamic"
    STATIC = "static"
    MUSL = "musl"
    RUNTIMES = "runtimes"


BACKENDS = tuple(BackendName)
BUILDS = tuple(Build)
# The userland architectures a suite may have: Debian's names (what debootstrap --arch takes).
# i386 userlands run on the host's 64-bit kernel through its IA32 emulation; arm64 ones only in
# arm64 guests under full-system emulation (see GUEST_ONLY).
ARCHES = ("amd64", "i386", "arm64")
DEFAULT_ARCH = "amd64"
# Userland architectures no container may run: an arm64 container on this x86 host runs under
# qemu-user, whose "kernel" is QEMU's own emulation (its own vDSO, its own system calls), so
# every row measured there would be wrong, not just slow. Their suites boot in QEMU guests only.
GUEST_ONLY = {
    "arm64": "an arm64 container would run under qemu-user, where the kernel and the vDSO are "
             "QEMU's own emulation, not Linux's: arm64 suites run in qemu guests only (booted "
             "with an arm64 kernel); leave it out of docker environments",
}
BUILD_SUFFIX = {Build.DYNAMIC: "", Build.STATIC: "-static", Build.MUSL: "-musl",
                Build.RUNTIMES: "-runtimes"}
# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")
_SUITE = re.compile(r"[a-z][a-z0-9-]{1,30}\Z")
# Kernel command-line words a matrix may add: plain key=value or flags, nothing that a shell or
# the guest's init could read as more than one argument.
_CMDLINE_WORD = re.compile(r"[A-Za-z0-9_.,:=/-]+\Z")


def default_matrix_path() -> Path:
    from vdsomatrix.paths import images_dir

    return images_dir() / "matrix.toml"


@dataclass(frozen=True)
class Suite:
    """A Debian suite's userland recipe: its name, the debootstrap script that makes it, the
    architecture of its userland and the Debian codename (release) it is made of.

    ``name`` is the matrix's name for it ("bookworm-i386"), ``release`` the codename debootstrap
    and apt are given ("bookworm"; the name when not set).
    """

    name: str
    script: str  # debootstrap script name
    arch: str = DEFAULT_ARCH  # Debian architecture of the userland: amd64, i386 or arm64
    release: str | None = None  # Debian codename; None: the same as name

    def __post_init__(self) -> None:
        if self.release is None:
            object.__setattr__(self, "release", self.name)


# The kernel metapackage a guest boots when the matrix names a suite of this architecture:
# Debian's amd64 kernel, and for i386 the 686-pae flavour (PAE and NX: what any CPU QEMU
# emulates has; Debian ships it, and the plain 686 one, in bullseye and bookworm only), and
# for arm64 Debian's one arm64 flavour (booted under qemu-system-aarch64).
KERNEL_PACKAGES = {"amd64": "linux-image-amd64", "i386": "linux-image-686-pae",
                   "arm64": "linux-image-arm64"}


@dataclass(frozen=True)
class KernelSpec:
    """Which kernel a guest boots: the package a suite's metapackage points at.

    ``suite`` is the matrix's name of the suite ("bookworm", "bookworm-i386"), ``release`` the
    Debian codename apt reads the index of (the name when not set), ``arch`` the Debian
    architecture whose ``binary-<arch>`` index is read, and ``package`` the metapackage
    (:data:`KERNEL_PACKAGES` of the arch when not set).
    """

    suite: str
    package: str | None = None
    arch: str = DEFAULT_ARCH
    release: str | None = None

    def __post_init__(self) -> None:
        if self.package is None:
            object.__setattr__(self, "package", KERNEL_PACKAGES.get(self.arch, ""))
        if self.release is None:
            object.__setattr__(self, "release", self.suite)


@dataclass(frozen=True)
class Environment:
    """One column of the report: a userland (suite + probe build) on a kernel, via a backend.

    Fully resolved: a backend finds everything it needs here and never reads the matrix.
    """

    name: str
    backend: BackendName
    userland: Suite | None = None  # docker, qemu: the suite whose image the probe runs in
    build: Build = Build.DYNAMIC
    kernel: KernelSpec | None = None  # qemu only
    cmdline: str = ""  # qemu: words appended to the kernel command line
    description: str = ""
    # docker, qemu: the probe runs its helper in a new time namespace (clocks offset)
    time_namespace: bool = False
    # docker: the container's seccomp profile, "probe" (Docker's default plus what the probe
    # needs, see engine/seccomp.py) or "allow-all" (a measurement of the filter's cost)
    seccomp: str = "probe"
    # qemu: the guest's vCPUs (all on the one host CPU the guest is given); 1 but for the
    # variant that runs the correctness checks' CLOCK_MONOTONIC-across-CPUs check
    cpus: int = 1

    @property
    def suite(self) -> str | None:
        return self.userland.name if self.userland else None

    @property
    def arch(self) -> str:
        """The userland's architecture (Debian's name): the suite's, "amd64" for the host."""
        return self.userland.arch if self.userland else DEFAULT_ARCH

    @property
    def runtimes(self) -> bool:
        """Whether this environment measures language runtimes instead of the C helper."""
        return self.build == Build.RUNTIMES

    @property
    def tags(self) -> list[str]:
        """The nox tags of its probe session: its backend, ``runtimes`` for runtime rows, and
        its userland's architecture when that is not amd64 (``nox -t arm64``)."""
        return [str(self.backend), *(["runtimes"] if self.runtimes else []),
                *([self.arch] if self.arch != DEFAULT_ARCH else [])]


@dataclass(frozen=True)
class Matrix:
    path: Path
    suites: dict[str, Suite]
    environments: dict[str, Environment]

    def get(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(self.environments)
            raise BadInput(
                f"unknown environment {name!r}: run `vdsomatrix list` to see them ({known})"
            ) from None


def _fail(path: Path, where: str, message: str) -> BadInput:
    return BadInput(f"{path}: {where}: {message}")


def _names(kind) -> str:
    return ", ".join(str(k) for k in kind)


def load_matrix(path: Path | None = None) -> Matrix:
    path = Path(path) if path else default_matrix_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"matrix file {path} not found: pass --matrix PATH") from None
    except IsADirectoryError:
        raise BadInput(f"matrix file {path} is a folder: pass --matrix FILE.toml") from None
    except PermissionError:
        raise BadInput(f"matrix file {path} is not readable: check its permissions") from None
    except OSError as exc:
        raise BadInput(f"matrix file {path} cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML ({exc}); fix the file and retry") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text; fix the file and retry") from None
    return parse_matrix(raw, path)


def parse_matrix(raw: dict, path: Path = Path("matrix.toml")) -> Matrix:
    unknown = set(raw) - {"suites", "environment", "docker_grid"}
    if unknown:
        raise _fail(path, "top level", f"unknown table(s) {sorted(unknown)}; expected suites, "
                    "environment, docker_grid")
    suites = _parse_suites(raw.get("suites", {}), path)
    envs: dict[str, Environment] = {}

    def add(env: Environment, where: str) -> None:
        if env.name in envs:
            raise _fail(path, where, f"environment {env.name!r} is defined twice")
        envs[env.name] = env

    for env, where in _parse_grids(raw.get("docker_grid", []), suites, path):
        add(env, where)
    for env, where in _parse_entries(raw.get("environment", []), suites, path):
        add(env, where)
    if not envs:
        raise _fail(path, "top level", "no environments defined")
    # Host first, then containers, then guests; file order within each.
    ordered = sorted(envs.values(), key=lambda e: BACKENDS.index(e.backend))
    return Matrix(path=path, suites=suites, environments={e.name: e for e in ordered})


_SUITE_KEYS = {"script", "release", "arch"}


def _parse_suites(raw_suites, path: Path) -> dict[str, Suite]:
    if not isinstance(raw_suites, dict):
        raise _fail(path, "suites", "must be a table of [suites.<name>] entries")
    suites: dict[str, Suite] = {}
    for name, body in raw_suites.items():
        where = f"[suites.{name}]"
        if not _SUITE.match(name):
            raise _fail(path, where, "suite names are lower-case Debian codenames")
        if not isinstance(body, dict):
            raise _fail(path, where, "must be a table")
        extra = set(body) - _SUITE_KEYS
        if extra:
            raise _fail(path, where, f"unknown key(s) {sorted(extra)}; allowed: "
                        f"{', '.join(sorted(_SUITE_KEYS))}")
        release = body.get("release", name)
        if not isinstance(release, str) or not _SUITE.match(release):
            raise _fail(path, where, "`release` must be a Debian codename such as 'bookworm'")
        script = body.get("script", release)
        if not isinstance(script, str) or not _SUITE.match(script):
            raise _fail(path, where, "`script` must be a debootstrap script name such as 'sid'")
        arch = body.get("arch", DEFAULT_ARCH)
        if arch not in ARCHES:
            raise _fail(path, where, f"`arch` must be one of: {', '.join(ARCHES)} "
                        f"(got {arch!r})")
        suites[name] = Suite(name=name, script=script, arch=arch, release=release)
    return suites


def _string_list(value, path: Path, where: str, key: str, allowed) -> list[str]:
    """A non-empty list of strings, each one of ``allowed``."""
    if not isinstance(value, list) or not value:
        raise _fail(path, where, f"`{key}` must be a non-empty list of: {_names(allowed)}")
    for item in value:
        if not isinstance(item, str) or item not in allowed:
            raise _fail(path, where, f"`{key}` entry {item!r} is not one of: {_names(allowed)}")
    return value


def _parse_grids(grids, suites: dict[str, Suite], path: Path):
    if not isinstance(grids, list):
        raise _fail(path, "docker_grid", "write it as [[docker_grid]] (an array of tables)")
    for i, grid in enumerate(grids):
        where = f"[[docker_grid]] #{i + 1}"
        if not isinstance(grid, dict):
            raise _fail(path, where, "must be a table")
        extra = set(grid) - {"suites", "builds"}
        if extra:
            raise _fail(path, where, f"unknown key(s) {sorted(extra)}; expected suites, builds")
        g_suites = _string_list(grid.get("suites"), path, where, "suites", suites)
        g_builds = _string_list(grid.get("builds", ["dynamic"]), path, where, "builds",
                                [str(b) for b in BUILDS])
        for suite in g_suites:
            _check_container(suites[suite], path, where)
            for build in map(Build, g_builds):
                _check_build(suites[suite], build, path, where)
                yield Environment(name=f"{suite}{BUILD_SUFFIX[build]}",
                                  backend=BackendName.DOCKER, userland=suites[suite],
                                  build=build), where


def _check_container(suite: Suite, path: Path, where: str) -> None:
    """Containers only of userlands the host's kernel runs natively (see GUEST_ONLY)."""
    if suite.arch in GUEST_ONLY:
        raise _fail(path, where, f"suite {suite.name!r} is {suite.arch}: "
                    f"{GUEST_ONLY[suite.arch]}")


def _check_build(suite: Suite, build: Build, path: Path, where: str) -> None:
    """The runtimes build exists for amd64 userlands only (for now)."""
    if build == Build.RUNTIMES and suite.arch != DEFAULT_ARCH:
        raise _fail(path, where, f"the runtimes build is for amd64 suites only, and "
                    f"{suite.name!r} is {suite.arch}: leave it out of this entry")


_ENTRY_KEYS = {"name", "backend", "suite", "build", "kernel", "cmdline", "description",
               "time_namespace", "seccomp", "cpus"}
MAX_GUEST_CPUS = 4
# The container seccomp profiles a matrix may choose ("probe" is the default).
SECCOMP_PROFILES = ("probe", "allow-all")


def _parse_entries(entries, suites: dict[str, Suite], path: Path):
    if not isinstance(entries, list):
        raise _fail(path, "environment", "write it as [[environment]] (an array of tables)")
    for i, body in enumerate(entries):
        where = f"[[environment]] #{i + 1}"
        if not isinstance(body, dict):
            raise _fail(path, where, "must be a table")
        yield _parse_entry(body, suites, path, where), where


def _parse_entry(body: dict, suites: dict[str, Suite], path: Path, where: str) -> Environment:
    name = body.get("name")
    if isinstance(name, str):
        where = f"[[environment]] {name!r}"
    _check_keys(body, path, where)
    backend, build = body.get("backend"), body.get("build", "dynamic")
    suite, kernel, cmdline = body.get("suite"), body.get("kernel"), body.get("cmdline", "")
    _check_placement(body, suites, path, where)
    _check_options(body, path, where)
    if suite:
        _check_build(suites[suite], Build(build), path, where)
    return Environment(
        name=name,
        backend=BackendName(backend),
        userland=suites.get(suite) if suite else None,
        build=Build(build),
        kernel=(KernelSpec(kernel, arch=suites[kernel].arch, release=suites[kernel].release)
                if backend == BackendName.QEMU else None),
        cmdline=" ".join(cmdline.split()),
        description=body.get("description", ""),
        time_namespace=body.get("time_namespace", False),
        seccomp=body.get("seccomp", "probe"),
        cpus=body.get("cpus", 1),
    )


def _check_keys(body: dict, path: Path, where: str) -> None:
    """Known keys only, a valid name, and strings where strings belong."""
    extra = set(body) - _ENTRY_KEYS
    if extra:
        raise _fail(path, where, f"unknown key(s) {sorted(extra)}; allowed: {sorted(_ENTRY_KEYS)}")
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(path, where, "`name` must be 1-63 characters of a-z, 0-9, '.', '_' or '-'")
    for key in ("backend", "suite", "build", "kernel", "cmdline", "description"):
        if key in body and not isinstance(body[key], str):
            raise _fail(path, where, f"`{key}` must be a string")


def _check_placement(body: dict, suites: dict[str, Suite], path: Path, where: str) -> None:
    """Backend, build, suite, kernel and command line: each where its backend takes it."""
    backend, build = body.get("backend"), body.get("build", "dynamic")
    suite, kernel, cmdline = body.get("suite"), body.get("kernel"), body.get("cmdline", "")
    if backend not in [str(b) for b in BACKENDS]:
        raise _fail(path, where, f"`backend` must be one of: {_names(BACKENDS)}")
    if build not in [str(b) for b in BUILDS]:
        raise _fail(path, where, f"`build` must be one of: {_names(BUILDS)}")
    if backend == BackendName.HOST:
        if suite or kernel or cmdline:
            raise _fail(path, where, "the host backend takes no suite, kernel or cmdline")
    elif suite not in suites:
        raise _fail(path, where, f"`suite` must name a [suites.<name>] table, got {suite!r}")
    elif backend == BackendName.DOCKER:
        _check_container(suites[suite], path, where)
    if backend == BackendName.QEMU:
        _check_guest(suites, kernel, suite, cmdline, path, where)
    elif kernel or cmdline:
        raise _fail(path, where, "`kernel` and `cmdline` are for the qemu backend only")


def _check_guest(suites: dict[str, Suite], kernel, suite: str, cmdline: str, path: Path,
                 where: str) -> None:
    if kernel not in suites:
        raise _fail(path, where,
                    f"`kernel` must name a suite whose kernel boots, got {kernel!r}")
    # The kernel's suite decides the guest's architecture (an i386 suite: its 686-pae
    # kernel under qemu-system-i386), and the userland must be of the same one.
    k_arch, u_arch = suites[kernel].arch, suites[suite].arch
    if k_arch != u_arch:
        raise _fail(path, where, f"the kernel of {kernel!r} is {k_arch} but the userland "
                    f"{suite!r} is {u_arch}: a guest boots a kernel and a userland of one "
                    f"architecture; name an {u_arch} suite as `kernel`")
    for word in cmdline.split():
        if not _CMDLINE_WORD.match(word):
            raise _fail(path, where, f"`cmdline` word {word!r} has characters not allowed")


def _check_options(body: dict, path: Path, where: str) -> None:
    """time_namespace, seccomp and cpus: their types, ranges and backends."""
    backend, build = body.get("backend"), body.get("build", "dynamic")
    time_namespace, seccomp = body.get("time_namespace", False), body.get("seccomp", "probe")
    # bool only: TOML's 1 or "yes" would read as true to Python but is not what the key means.
    if not isinstance(time_namespace, bool):
        raise _fail(path, where, "`time_namespace` must be true or false (no quotes)")
    if time_namespace and backend == BackendName.HOST:
        raise _fail(path, where, "`time_namespace` is for the docker and qemu backends only "
                    "(the host run does not change the machine's namespaces)")
    if time_namespace and backend == BackendName.DOCKER and build == Build.RUNTIMES:
        # contract.runtimes_argv has no --time-namespace: the flag would be dropped silently.
        raise _fail(path, where, "`time_namespace` is not offered for the runtimes build in "
                    "docker yet: leave it out of this entry")
    if "seccomp" in body and backend != BackendName.DOCKER:
        raise _fail(path, where, "`seccomp` is for the docker backend only")
    if seccomp not in SECCOMP_PROFILES:
        raise _fail(path, where, f"`seccomp` must be one of: {', '.join(SECCOMP_PROFILES)} "
                    f"(got {seccomp!r}; leave it out for the probe's own profile)")
    cpus = body.get("cpus", 1)
    if "cpus" in body and backend != BackendName.QEMU:
        raise _fail(path, where, "`cpus` is for the qemu backend only")
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= MAX_GUEST_CPUS:
        raise _fail(path, where, f"`cpus` must be a whole number from 1 to {MAX_GUEST_CPUS}")
