"""The seccomp profile probe containers run with: Docker's own default, plus what the probe needs.

Docker's default profile refuses two system calls the probe uses, unless the container has
CAP_SYS_ADMIN:

- ``perf_event_open``: the helper counts its page faults with a software counter of its own
  process, user space only (PERF_COUNT_SW_PAGE_FAULTS, exclude_kernel), which is how a row proves
  that a vsyscall call traps. The kernel's own check (perf_event_paranoid) still applies, as it
  does to any unprivileged process on the host;
- ``unshare``: in a time-namespace environment the probe enters a new user and time namespace,
  ``unshare(CLONE_NEWUSER | CLONE_NEWTIME)``. Only that exact argument is allowed; every other
  namespace (mount, network, pid, ...) stays refused.

Granting CAP_SYS_ADMIN (or running unconfined) would have allowed both, and with them mounts,
namespaces of every kind, bpf and the rest; adding the two rules keeps everything else exactly as
the engine's default.

The base is Docker's default profile as the engine's version ships it: Debian builds
golang-github-docker-docker-dev (which installs profiles/seccomp/default.json) from the same
source package as docker.io, so the package's version names the engine's default. When that file
is missing, unreadable, or of another version than the running engine, containers run with the
engine's own default profile instead (the page-fault counts are then null, and time namespaces
refused), and the result's ``environment.seccomp.reason`` says why and what to install.

``allow-all`` (a matrix's ``seccomp = "allow-all"``) allows every system call of the x86 ABIs:
an environment that measures what the default filter costs per system call, never how containers
run otherwise. It is still a filter (never "unconfined"), so it measures the default profile's
rules, not the cost of having a filter at all.

The profile is computed for every run (a file read and a ``dpkg-query``): nothing is cached that
could go stale when the engine is upgraded.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdsomatrix import processes
from vdsomatrix.text import one_line

BASE_PACKAGE = "golang-github-docker-docker-dev"
ENGINE_PACKAGE = "docker.io"
BASE_PATH = Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json")
# Docker's default.json is 14 KB (20.10) to 20 KB (27.x); anything far larger is not it.
MAX_BASE_BYTES = 512 * 1024
DPKG_TIMEOUT = 10.0

CLONE_NEWTIME = 0x00000080
CLONE_NEWUSER = 0x10000000
PROBE, ALLOW_ALL = "probe", "allow-all"

# The rules added to the base, in the shape of default.json's own entries.
PERF_RULE: dict[str, Any] = {
    "names": ["perf_event_open"], "action": "SCMP_ACT_ALLOW", "args": [],
    "comment": "vdsomatrix: the helper counts its own page faults (user space only)",
    "includes": {}, "excludes": {},
}
UNSHARE_TIMENS_RULE: dict[str, Any] = {
    "names": ["unshare"], "action": "SCMP_ACT_ALLOW",
    "args": [{"index": 0, "value": CLONE_NEWUSER | CLONE_NEWTIME, "op": "SCMP_CMP_EQ"}],
    "comment": "vdsomatrix: a new user and time namespace, nothing else",
    "includes": {}, "excludes": {},
}
# The architectures are needed too: a filter lets through only the ABIs it names, and kills
# (SIGSYS) a call of any other, such as int $0x80 (the i386 ABI) from a 64-bit process.
ALLOW_ALL_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                 "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
}

PROFILE_PROBE = "docker-default+perf_event_open"
PROFILE_TIMENS = "docker-default+perf_event_open+unshare(NEWUSER|NEWTIME)"
PROFILE_ALLOW_ALL = "allow-all (measurement only)"
PROFILE_ENGINE = "engine default"


@dataclass(frozen=True)
class Profile:
    """What a container runs with: ``text`` (the profile's JSON, passed inline to the engine) or
    None (the engine's default profile), and ``identity`` (environment.seccomp in the result)."""

    text: str | None
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def security_opt(self) -> list[str]:
        """The ``security_opt`` entry naming it; none for the engine's default."""
        return [] if self.text is None else [f"seccomp={self.text}"]


class BaseUnusable(Exception):
    """default.json cannot serve as the base; the message says why and what to do."""


def upstream(version: str) -> str:
    """The upstream part of a Debian version: no epoch, no Debian revision
    ("20.10.24+dfsg1-1+deb12u1" -> "20.10.24+dfsg1"), which is what the engine reports."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def installed_versions() -> dict[str, dict[str, str]]:
    """{package: {"version", "source_version"}} of the base and engine packages dpkg has
    installed; empty where there is no dpkg (not a Debian machine) or it fails."""
    argv = ["dpkg-query", "-W",
            "-f=${Package}\\t${db:Status-Status}\\t${Version}\\t${source:Version}\\n",
            BASE_PACKAGE, ENGINE_PACKAGE]
    try:
        done = processes.run_bounded(argv, timeout=DPKG_TIMEOUT, stdout_cap=64 << 10)
    except OSError:
        return {}
    found: dict[str, dict[str, str]] = {}
    # dpkg-query exits 1 when one of them is unknown, and still prints the others.
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[1] == "installed":
            found[parts[0]] = {"version": parts[2], "source_version": parts[3] or parts[2]}
    return found


def _fix(engine_version: str, engine_pkg: dict[str, str] | None) -> str:
    """The one command that installs the base of this engine's version."""
    if engine_pkg and upstream(engine_pkg["source_version"]) == engine_version:
        return (f"`apt-get install {BASE_PACKAGE}={engine_pkg['source_version']}` "
                f"(the version of the installed {ENGINE_PACKAGE})")
    return (f"install {BASE_PACKAGE} of the engine's version ({engine_version}-*); an engine "
            f"that is not Debian's {ENGINE_PACKAGE} has none, and keeps its own default")


def load_base(path: Path) -> dict[str, Any]:
    """default.json, read bounded and checked to have the shape the rules are added to."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BASE_BYTES + 1)
    except FileNotFoundError:
        raise BaseUnusable(f"{path} is missing") from None
    except OSError as exc:
        raise BaseUnusable(f"{path} cannot be read ({exc.strerror})") from None
    if len(data) > MAX_BASE_BYTES:
        raise BaseUnusable(f"{path} is larger than {MAX_BASE_BYTES >> 10} KiB: not Docker's "
                           "default profile")
    try:
        base = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BaseUnusable(f"{path} is not JSON ({one_line(exc, 120)})") from None
    problem = _shape_problem(base)
    if problem:
        raise BaseUnusable(f"{path} is not a seccomp profile of the shape Docker's default has "
                           f"({problem})")
    return base


def _shape_problem(base: Any) -> str | None:
    """What is wrong with ``base`` as a Docker seccomp profile, or None."""
    if not isinstance(base, dict):
        return "not an object"
    if not isinstance(base.get("defaultAction"), str):
        return "no defaultAction"
    syscalls = base.get("syscalls")
    if not isinstance(syscalls, list) or not syscalls:
        return "no syscalls list"
    for i, rule in enumerate(syscalls):
        if not isinstance(rule, dict) or not isinstance(rule.get("action"), str):
            return f"syscalls[{i}] has no action"
        names = rule.get("names", [rule.get("name")])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return f"syscalls[{i}] has no list of names"
    return None


def build(kind: str, *, time_namespace: bool, engine_version: str | None,
          base_path: Path | None = None,
          versions: dict[str, dict[str, str]] | None = None) -> Profile:
    """The profile of an environment: ``kind`` is the matrix's ``seccomp`` ("probe" or
    "allow-all"), ``engine_version`` the engine's own (``client.version()["Version"]``),
    ``versions`` what :func:`installed_versions` returns and ``base_path`` default.json
    (both read from this machine when not given)."""
    identity: dict[str, Any] = {"profile": None, "base": None, "base_version": None,
                                "engine_version": engine_version, "added": [], "sha256": None,
                                "reason": None}
    if kind == ALLOW_ALL:
        return _profile(ALLOW_ALL_PROFILE, identity, PROFILE_ALLOW_ALL)
    if kind != PROBE:
        raise ValueError(f"unknown seccomp profile kind {kind!r}")
    versions = installed_versions() if versions is None else versions
    base_path = BASE_PATH if base_path is None else base_path
    base_pkg, engine_pkg = versions.get(BASE_PACKAGE), versions.get(ENGINE_PACKAGE)
    identity.update(base=str(base_path), base_version=base_pkg and base_pkg["version"])
    try:
        base = _checked_base(base_path, engine_version, base_pkg, engine_pkg)
    except BaseUnusable as exc:
        identity.update(profile=PROFILE_ENGINE, reason=(
            f"{exc}: containers run with the engine's default seccomp profile (no page-fault "
            "counts, no time namespace)"))
        return Profile(None, identity)
    added = [PERF_RULE, *([UNSHARE_TIMENS_RULE] if time_namespace else [])]
    profile = copy.deepcopy(base)
    profile["syscalls"].extend(copy.deepcopy(added))
    identity["added"] = copy.deepcopy(added)
    return _profile(profile, identity, PROFILE_TIMENS if time_namespace else PROFILE_PROBE)


def _checked_base(path: Path, engine_version: str | None, base_pkg: dict[str, str] | None,
                  engine_pkg: dict[str, str] | None) -> dict[str, Any]:
    """default.json when it is the default of this engine's version, else BaseUnusable."""
    if not engine_version:
        raise BaseUnusable("the engine did not say its version, so no default.json can be "
                           "matched to it")
    if base_pkg is None:
        raise BaseUnusable(f"{BASE_PACKAGE} (Docker's default.json) is not installed; install "
                           f"it: {_fix(engine_version, engine_pkg)}")
    if upstream(base_pkg["version"]) != engine_version:
        raise BaseUnusable(f"{BASE_PACKAGE} {base_pkg['version']} is not of the engine's "
                           f"version {engine_version}; {_fix(engine_version, engine_pkg)}")
    # A Debian revision may patch the profile as well: when the engine is the installed
    # docker.io, the base must come from exactly its source version.
    if (engine_pkg and upstream(engine_pkg["source_version"]) == engine_version
            and engine_pkg["source_version"] != base_pkg["version"]):
        raise BaseUnusable(f"{BASE_PACKAGE} {base_pkg['version']} is not of the same source as "
                           f"{ENGINE_PACKAGE} {engine_pkg['version']}; "
                           f"{_fix(engine_version, engine_pkg)}")
    try:
        return load_base(path)
    except BaseUnusable as exc:
        raise BaseUnusable(f"{exc}; reinstall it: {_fix(engine_version, engine_pkg)}") from None


def _profile(profile: dict[str, Any], identity: dict[str, Any], name: str) -> Profile:
    text = json.dumps(profile, separators=(",", ":"))
    identity.update(profile=name, sha256=hashlib.sha256(text.encode()).hexdigest())
    return Profile(text, identity)
