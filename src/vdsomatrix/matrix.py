"""The matrix: environments as data, read from images/matrix.toml and validated.

Every malformed entry is reported with its place in the file and what to write instead.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vdsomatrix.errors import BadInput

BACKENDS = ("host", "docker", "qemu")
BUILDS = ("dynamic", "static", "musl")
BUILD_SUFFIX = {"dynamic": "", "static": "-static", "musl": "-musl"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
# Kernel command-line words a matrix may add: plain key=value or flags, nothing that a shell or
# the guest's init could read as more than one argument.
_CMDLINE_WORD = re.compile(r"^[A-Za-z0-9_.,:=/-]+$")


def default_matrix_path() -> Path:
    from vdsomatrix.paths import images_dir

    return images_dir() / "matrix.toml"


@dataclass(frozen=True)
class Suite:
    name: str
    script: str  # debootstrap script name


@dataclass(frozen=True)
class Environment:
    """One column of the report: a userland (suite + probe build) on a kernel, via a backend."""

    name: str
    backend: str
    suite: str | None = None  # userland suite (docker, qemu)
    build: str = "dynamic"  # which build of the C helper: dynamic | static | musl
    kernel: str | None = None  # qemu: suite whose linux-image-amd64 boots
    cmdline: str = ""  # qemu: words appended to the kernel command line
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


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


def load_matrix(path: Path | None = None) -> Matrix:
    path = Path(path) if path else default_matrix_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"matrix file {path} not found: pass --matrix PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML ({exc}); fix the file and retry") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text; fix the file and retry") from None
    return parse_matrix(raw, path)


def parse_matrix(raw: dict, path: Path = Path("matrix.toml")) -> Matrix:
    unknown = set(raw) - {"suites", "environment", "docker_grid"}
    if unknown:
        raise _fail(
            path,
            "top level",
            f"unknown table(s) {sorted(unknown)}; expected suites, environment, docker_grid",
        )
    suites: dict[str, Suite] = {}
    raw_suites = raw.get("suites", {})
    if not isinstance(raw_suites, dict):
        raise _fail(path, "suites", "must be a table of [suites.<name>] entries")
    for name, body in raw_suites.items():
        where = f"[suites.{name}]"
        if not _SUITE.match(name):
            raise _fail(path, where, "suite names are lower-case Debian codenames")
        if not isinstance(body, dict):
            raise _fail(path, where, "must be a table")
        extra = set(body) - {"script"}
        if extra:
            raise _fail(path, where, f"unknown key(s) {sorted(extra)}; only `script` is allowed")
        script = body.get("script", name)
        if not isinstance(script, str) or not _SUITE.match(script):
            raise _fail(path, where, "`script` must be a debootstrap script name such as 'sid'")
        suites[name] = Suite(name=name, script=script)

    envs: dict[str, Environment] = {}

    def add(env: Environment, where: str) -> None:
        if env.name in envs:
            raise _fail(path, where, f"environment {env.name!r} is defined twice")
        envs[env.name] = env

    grids = raw.get("docker_grid", [])
    if not isinstance(grids, list):
        raise _fail(path, "docker_grid", "write it as [[docker_grid]] (an array of tables)")
    for i, grid in enumerate(grids):
        where = f"[[docker_grid]] #{i + 1}"
        if not isinstance(grid, dict):
            raise _fail(path, where, "must be a table")
        extra = set(grid) - {"suites", "builds"}
        if extra:
            raise _fail(path, where, f"unknown key(s) {sorted(extra)}; expected suites, builds")
        g_suites = grid.get("suites")
        g_builds = grid.get("builds", ["dynamic"])
        if not isinstance(g_suites, list) or not g_suites:
            raise _fail(path, where, "`suites` must be a non-empty list of suite names")
        if not isinstance(g_builds, list) or not g_builds:
            raise _fail(path, where, f"`builds` must be a non-empty list of {list(BUILDS)}")
        for suite in g_suites:
            if suite not in suites:
                raise _fail(path, where, f"suite {suite!r} has no [suites.{suite}] table")
            for build in g_builds:
                if build not in BUILDS:
                    raise _fail(path, where, f"build {build!r} is not one of {list(BUILDS)}")
                add(
                    Environment(
                        name=f"{suite}{BUILD_SUFFIX[build]}",
                        backend="docker",
                        suite=suite,
                        build=build,
                    ),
                    where,
                )

    entries = raw.get("environment", [])
    if not isinstance(entries, list):
        raise _fail(path, "environment", "write it as [[environment]] (an array of tables)")
    allowed = {"name", "backend", "suite", "build", "kernel", "cmdline", "description"}
    for i, body in enumerate(entries):
        where = f"[[environment]] #{i + 1}"
        if not isinstance(body, dict):
            raise _fail(path, where, "must be a table")
        name = body.get("name")
        if isinstance(name, str):
            where = f"[[environment]] {name!r}"
        extra = set(body) - allowed
        if extra:
            raise _fail(path, where, f"unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(
                path, where, "`name` must be 1-63 characters of a-z, 0-9, '.', '_' or '-'"
            )
        backend = body.get("backend")
        if backend not in BACKENDS:
            raise _fail(path, where, f"`backend` must be one of {list(BACKENDS)}")
        for key in ("suite", "build", "kernel", "cmdline", "description"):
            if key in body and not isinstance(body[key], str):
                raise _fail(path, where, f"`{key}` must be a string")
        suite = body.get("suite")
        build = body.get("build", "dynamic")
        kernel = body.get("kernel")
        cmdline = body.get("cmdline", "")
        if build not in BUILDS:
            raise _fail(path, where, f"`build` must be one of {list(BUILDS)}")
        if backend == "host":
            if suite or kernel or cmdline:
                raise _fail(path, where, "the host backend takes no suite, kernel or cmdline")
        else:
            if suite not in suites:
                raise _fail(
                    path, where, f"`suite` must name a [suites.<name>] table, got {suite!r}"
                )
        if backend == "qemu":
            if kernel not in suites:
                raise _fail(
                    path, where, f"`kernel` must name a suite whose kernel boots, got {kernel!r}"
                )
            for word in cmdline.split():
                if not _CMDLINE_WORD.match(word):
                    raise _fail(path, where, f"`cmdline` word {word!r} has characters not allowed")
        elif kernel or cmdline:
            raise _fail(path, where, "`kernel` and `cmdline` are for the qemu backend only")
        add(
            Environment(
                name=name,
                backend=backend,
                suite=suite,
                build=build,
                kernel=kernel,
                cmdline=" ".join(cmdline.split()),
                description=body.get("description", ""),
            ),
            where,
        )
    if not envs:
        raise _fail(path, "top level", "no environments defined")
    # Host first, then containers, then guests; file order within each.
    ordered = sorted(envs.values(), key=lambda e: BACKENDS.index(e.backend))
    return Matrix(path=path, suites=suites, environments={e.name: e for e in ordered})
