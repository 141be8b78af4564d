"""Runtime images: a suite's probe image plus ONE layer holding the language runtimes it ships.

``vdsomatrix-runtimes:<suite>-<hash12>`` is the probe image (images.py) with the Java runtimes,
Node.js and the programs of probes/runtimes/ built with the suite's own Go, Rust and JDK; the
C images stay as they are. ``<hash12>`` covers the probe image's hash, the runtime sources
(probes/runtimes/), this module's recipe (its version and the in-container script) and the names
of the packages selected from the suite's package index.

Which packages: read from the suite's own index, never a list of versions written here. Every
``openjdk-N-jre-headless`` the suite has is a candidate; the default (the one
``default-jre-headless`` depends on), the oldest and the newest are measured, so that the oldest
and the newest JDK meet on one kernel; the others are named in the manifest's
``java_not_measured`` (each JRE costs ~200 MB and a JVM start per measured call). ``nodejs`` runs
timing.js; ``golang-go``, ``rustc`` and ``default-jdk-headless`` are installed only to build
and are purged in the same container, so they never reach the layer.

No network in the build: the .debs are resolved and downloaded on the host by the archive's
one client, :class:`vdsomatrix.debian.apt.PrivateApt` (apt with a private configuration over
the suite on the machine's mirror, verified with the Debian archive keyring, amd64 only), with
the probe image's own dpkg status as apt's status file so that only what the image lacks is
fetched, into ``<cache>/debs/<suite>/runtimes/`` (a folder of its own: debootstrap prunes
``debs/<suite>/`` to what a base image uses; see :mod:`vdsomatrix.debian.debs`). A build
container (root, network none, the .debs bind-mounted
read-only, a deadline, labelled with its owner so ``vdsomatrix clean`` finds it if it is left
behind) installs them, builds the programs, writes the manifest, purges the build tools, and is
committed as the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vdsomatrix import paths, processes
from vdsomatrix.debian import debs as debian_debs
from vdsomatrix.debian import packages
from vdsomatrix.debian.apt import AptFailed, PrivateApt
from vdsomatrix.engine.client import LABEL, Log, engine, find_image
from vdsomatrix.engine.container import PROBE, Confinement, Container
from vdsomatrix.engine.leftovers import EXPIRES, owner_labels
from vdsomatrix.errors import BadInput
from vdsomatrix.images import probe_image as images
from vdsomatrix.images.rootfs import ImageBuildError
from vdsomatrix.matrix import Suite
from vdsomatrix.paths import cache_dir, project_root
from vdsomatrix.results import write_atomic
from vdsomatrix.text import one_line, plain, without_escapes

RUNTIMES_REPO = "vdsomatrix-runtimes"
RECIPE_VERSION = 1  # bump when what the layer holds changes without the script below changing
RUNTIMES_DIR = "/opt/vdsomatrix/runtimes"  # in the image
SOURCES_DIR = "probes/runtimes"  # in the checkout; /opt/vdsomatrix/probes/runtimes in the image
JRE = re.compile(r"openjdk-(\d+)-jre-headless")
BUILD_ONLY = ("golang-go", "rustc", "default-jdk-headless")
# One JVM per JRE runs in ca-certificates-java's postinst (and javac in the build): 2 GiB.
BUILD_MEMORY = "2g"
BUILD_PIDS = 4096
BUILD_TIMEOUT = 900.0  # seconds for install + build + purge; a suite takes about a minute
APT_TIMEOUT = 600.0
# In the build container: folders every Debian image has (base-files), so that no mount point
# is created in, and committed with, the layer.
DEBS_MOUNT = "/mnt"
WORK_MOUNT = "/srv"
BUILD_TMPFS = "rw,nosuid,nodev,size=1g,mode=1777"
PHASE = "@@vdsomatrix-phase "

# ---------------------------------------------------------------------------------------------
# Which packages: a pure function of the suite's Packages index.


@dataclass(frozen=True)
class Selection:
    """What the runtime layer of one suite installs, and what it leaves out and why."""

    suite: str
    java_shipped: tuple[int, ...] = ()  # every openjdk-N-jre-headless major, ascending
    java_default: int | None = None  # the one default-jre-headless depends on
    java_measured: tuple[int, ...] = ()  # default, oldest, newest (ascending)
    jdk: str | None = None  # default-jdk-headless, when the suite has it (javac)
    node: str | None = None
    go: str | None = None
    rust: str | None = None
    not_shipped: dict[str, str] = field(default_factory=dict)  # runtime -> one line

    @property
    def java_not_measured(self) -> list[str]:
        return [jre_package(m) for m in self.java_shipped if m not in self.java_measured]

    @property
    def java_not_measured_why(self) -> str | None:
        if not self.java_not_measured:
            return None
        return ("shipped but not measured: only the default, the oldest and the newest JRE "
                "are installed, to keep the layer small and the run short")

    def install(self) -> list[str]:
        """The packages to install (the build tools among them)."""
        wanted = [jre_package(m) for m in self.java_measured]
        wanted += [p for p in (self.jdk, self.node, self.go, self.rust) if p]
        return wanted

    def keep(self) -> list[str]:
        """The installed packages that stay in the layer."""
        return [jre_package(m) for m in self.java_measured] + ([self.node] if self.node else [])

    def build_only(self) -> list[str]:
        return [p for p in (self.jdk, self.go, self.rust) if p]

    def to_json(self) -> dict:
        data = asdict(self)
        data["java_not_measured"] = self.java_not_measured
        return data

    @classmethod
    def from_json(cls, data: dict) -> Selection:
        return cls(
            suite=data["suite"], java_shipped=tuple(data["java_shipped"]),
            java_default=data["java_default"], java_measured=tuple(data["java_measured"]),
            jdk=data["jdk"], node=data["node"], go=data["go"], rust=data["rust"],
            not_shipped=dict(data["not_shipped"]),
        )


def jre_package(major: int) -> str:
    return f"openjdk-{major}-jre-headless"


# The stanzas select_packages reads: a whole sid index is 65 MB and 77,000 stanzas.
RUNTIME_PACKAGES = packages.names_matching(
    r"openjdk-\d+-jre-headless", "default-jre-headless", "default-jdk-headless", "nodejs",
    "golang-go", "rustc")


def select_packages(suite: str, paragraphs: Iterable[Mapping[str, str]]) -> Selection:
    """The runtime layer's packages for ``suite`` from its Packages index (amd64 and all)."""
    newest = packages.newest(paragraphs, ("amd64", "all"))
    shipped = tuple(sorted(int(m[1]) for name in newest if (m := JRE.fullmatch(name))))
    not_shipped: dict[str, str] = {}
    default = None
    if "default-jre-headless" in newest:
        for dep in packages.depends_names(newest["default-jre-headless"]):
            if (m := JRE.fullmatch(dep)) and int(m[1]) in shipped:
                default = int(m[1])
                break
    jdk = "default-jdk-headless" if "default-jdk-headless" in newest else None
    if not shipped:
        not_shipped["java"] = f"not shipped by {suite} (no openjdk-N-jre-headless)"
        measured: tuple[int, ...] = ()
        jdk = None
    elif jdk is None:
        not_shipped["java"] = f"{suite} has no default-jdk-headless to compile Timing.java with"
        measured = ()
    else:
        measured = tuple(sorted({m for m in (default, shipped[0], shipped[-1]) if m}))
    node = "nodejs" if "nodejs" in newest else None
    go = "golang-go" if "golang-go" in newest else None
    rust = "rustc" if "rustc" in newest else None
    for runtime, package in (("node", node), ("go", go), ("rust", rust)):
        if package is None:
            not_shipped[runtime] = f"not shipped by {suite}"
    return Selection(suite=suite, java_shipped=shipped, java_default=default,
                     java_measured=measured, jdk=jdk, node=node, go=go, rust=rust,
                     not_shipped=not_shipped)


# ---------------------------------------------------------------------------------------------
# The suite's index and .debs, through apt on the host with a private configuration.


def _apt_root(suite: Suite) -> Path:
    """The suite's runtimes folder: its selection, and the build's work folders (it held the
    suite's apt state too before debian.apt kept that in one place)."""
    return cache_dir() / "runtimes" / suite.name


def debs_dir(suite: Suite) -> Path:
    return debian_debs.debs_dir(suite.name, "runtimes")


def _selection_file(suite: Suite) -> Path:
    return _apt_root(suite) / "selection.json"


@contextlib.contextmanager
def _apt_errors(suite: Suite) -> Iterator[None]:
    """The archive client's failures as this module's: ImageBuildErrors."""
    try:
        yield
    except (BadInput, AptFailed) as exc:
        raise ImageBuildError(f"cannot fetch the {suite.name} runtime packages: {exc}") from None


def _private_apt(suite: Suite) -> PrivateApt:
    # The runtime layer is amd64 only; a suite's name is its codename.
    return PrivateApt(suite.name, "amd64", timeout=APT_TIMEOUT)


# What the private apt of each suite kept here before it moved to <cache>/apt/.
_OLD_APT_STATE = ("etc", "state", "cache", "log", "apt.conf", "status")


def _remove_old_apt_state(suite: Suite) -> None:
    """Remove the apt state an earlier vdsomatrix kept in the runtimes folder (its lists are as
    big as the index), under the lock that version used, so no run of it loses its state."""
    root = _apt_root(suite)
    if not any((root / name).exists() for name in _OLD_APT_STATE):
        return
    with paths.lock_if_free(cache_dir() / "locks" / f"{suite.name}-apt.lock") as free:
        for name in _OLD_APT_STATE if free else ():
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def refresh_index(suite: Suite) -> Selection:
    """``apt-get update`` of the suite's private lists, then the selection made from them."""
    with _apt_errors(suite):
        apt = _private_apt(suite)
        apt.update()
        index = apt.packages_index()
    selection = select_packages(suite.name, packages.read_index(index, RUNTIME_PACKAGES))
    write_atomic(_selection_file(suite),
                 json.dumps(selection.to_json(), indent=1, sort_keys=True) + "\n")
    _remove_old_apt_state(suite)
    return selection


def cached_selection(suite: Suite) -> Selection | None:
    try:
        return Selection.from_json(json.loads(_selection_file(suite).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_and_download(suite: Suite, status: Path, selection: Selection) -> list[str]:
    """Download what the image (its dpkg ``status``) lacks for ``selection``; the .deb file
    names (in :func:`debs_dir`), in apt's order. Older .debs there are removed."""
    wanted = selection.install()
    with _apt_errors(suite):
        debs = _private_apt(suite).download_install(wanted, status, debs_dir(suite))
    if not debs:
        raise ImageBuildError(f"apt found nothing to install for the {suite.name} runtimes "
                              f"({', '.join(wanted)})")
    debian_debs.keep_only(debs_dir(suite), debs)
    return debs


# ---------------------------------------------------------------------------------------------
# Names and hashes.


def runtime_sources(root: Path | None = None) -> list[tuple[str, bytes, int]]:
    """(path, content, mode) of the runtime programs' sources (probes/runtimes/)."""
    return [f for f in paths.probe_sources(root) if f[0].startswith(SOURCES_DIR + "/")]


def runtime_hash(suite: Suite, selection: Selection, *, root: Path | None = None) -> str:
    h = hashlib.sha256()
    h.update(f"vdsomatrix-runtime-image/{RECIPE_VERSION}\0{suite.name}\0".encode())
    h.update(images.probe_hash(suite, root=root).encode() + b"\0")
    h.update(BUILD_SCRIPT.encode() + b"\0" + MANIFEST_SCRIPT.encode() + b"\0")
    h.update(json.dumps(sorted(selection.install())).encode() + b"\0")
    for name, data, mode in runtime_sources(root):
        h.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def tag_for(suite: Suite, selection: Selection, root: Path | None) -> str:
    return f"{RUNTIMES_REPO}:{suite.name}-{runtime_hash(suite, selection, root=root)[:12]}"


def runtime_image_tag(suite: Suite, root: Path | None = None) -> str:
    """The tag the runtime image of ``suite`` has (or would have once built); builds nothing.

    From the package selection of the suite's index as last fetched; the first time, the index
    is fetched (a few seconds, through the mirror)."""
    selection = cached_selection(suite) or refresh_index(suite)
    return tag_for(suite, selection, root or project_root())


def runtime_image_status(suite: Suite, *, client=None,
                         root: Path | None = None) -> tuple[bool, str]:
    """(built, reason): whether the runtime image of ``suite`` exists, without building
    anything (nor fetching an index)."""
    selection = cached_selection(suite)
    try:
        probe_tag = images.probe_image_tag(suite, root=root)
        tag = tag_for(suite, selection, root or project_root()) if selection else None
    except BadInput as exc:
        return False, str(exc)
    return images.built_status(tag, client=client, under=(probe_tag, "probe image"),
                               missing=f"{tag} missing" if tag
                               else f"the {suite.name} runtime layer")


# ---------------------------------------------------------------------------------------------
# The build container.

# Runs as root in the build container (the probe image's /bin/sh: dash or bash). Every step
# prints a phase line the host turns into progress and timings. $1: the work folder.
BUILD_SCRIPT = r"""set -eu
umask 022
work=$1; debs=$2; out=/opt/vdsomatrix/runtimes
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/tmp/home
export GOCACHE=/tmp/go-cache GOPATH=/tmp/go GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
export CARGO_HOME=/tmp/cargo
mkdir -p $HOME
phase() { echo "@@vdsomatrix-phase $1 $(date +%s.%N)"; }
list() { tr '\n' ' ' < "$work/$1"; }

phase install
set --
for deb in $(list debs.txt); do set -- "$@" "$debs/$deb"; done
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-unsafe-io \
    -o Dpkg::Use-Pty=0 "$@"
# `java` on the PATH is the suite's default JRE (alternatives would pick the newest).
major=$(cat "$work/default-java.txt")
if [ -n "$major" ]; then
    update-alternatives --set java \
        "$(update-alternatives --list java | grep "/java-$major-openjdk" | head -1)"
fi

phase build
mkdir -p "$out"
sh /opt/vdsomatrix/probes/runtimes/build.sh "$out"
python3 "$work/manifest.py" "$work/selection.json" "$out/manifest.json"

phase purge
# Everything the layer installed is auto, the runtimes manual: --autoremove then takes the build
# tools and what only they needed.
apt-mark auto $(list installed.txt) >/dev/null
keep=$(list keep.txt)
if [ -n "$keep" ]; then apt-mark manual $keep >/dev/null; fi
build_only=$(list build-only.txt)
if [ -n "$build_only" ]; then
    apt-get purge -y -q --autoremove -o Dpkg::Options::=--force-unsafe-io \
        -o Dpkg::Use-Pty=0 $build_only
fi
for p in $keep; do
    dpkg-query -W -f '${Status}\n' "$p" | grep -q ' installed$' || {
        echo "$p was removed with the build tools" >&2; exit 1; }
done
for tool in go rustc javac; do
    if command -v $tool >/dev/null; then echo "$tool is still installed" >&2; exit 1; fi
done
rm -rf /var/cache/apt/* /var/lib/apt/lists/* /var/cache/debconf/*-old \
    /var/lib/dpkg/*-old /root/.cache /root/go
chmod -R a+rX "$out"
unreadable=$(find /usr /etc/java* /etc/ssl/certs "$out" -xdev ! -type l ! -perm -o+r \
    -newer "$work/debs.txt" 2>/dev/null | head -5)
if [ -n "$unreadable" ]; then echo "not readable by all: $unreadable" >&2; exit 1; fi
phase done
"""

# Python 3.9+ (bullseye's): the manifest, from the selection and what is installed now.
MANIFEST_SCRIPT = r'''import json, os, re, subprocess, sys

sel = json.load(open(sys.argv[1]))
built = json.load(open(os.path.join(os.path.dirname(sys.argv[2]), "build.json")))
# A toolchain the suite ships that failed to build its program: written down, not fatal.
shipped = {"java": bool(sel["java_measured"]), "node": bool(sel["node"]),
           "go-static": bool(sel["go"]), "go-dynamic": bool(sel["go"]),
           "rust": bool(sel["rust"]), "python": True}
for key, reason in sorted(built.get("missing", {}).items()):
    if shipped.get(key):
        sel["not_shipped"][key] = "shipped by %s, but its program did not build: %s" % (
            sel["suite"], reason)
        print("warning: %s: %s" % (key, sel["not_shipped"][key][:300]))
def version(package):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                         capture_output=True, text=True)
    return out.stdout.strip() or None
def files(package):
    out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()
def upstream(argv, pattern):
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    m = re.search(pattern, out)
    return m.group(1) if m else None

java = []
for major in sel["java_measured"]:
    package = "openjdk-%d-jre-headless" % major
    binaries = [f for f in files(package)
                if f.endswith("/bin/java") and os.path.isfile(f) and "/jvm/" in f]
    if not binaries:
        sys.exit("no bin/java in " + package)
    home = os.path.dirname(os.path.dirname(sorted(binaries, key=len)[0]))
    java.append({"major": str(major), "package": package, "home": home,
                 "version": version(package), "default": major == sel["java_default"]})
manifest = {
    "suite": sel["suite"],
    "java": java,
    "python": {"package": "python3", "path": "/usr/bin/python3", "version": version("python3")},
    "node": ({"package": sel["node"], "path": "/usr/bin/node", "version": version(sel["node"])}
             if sel["node"] else None),
    "go": ({"package": sel["go"], "version": upstream(["go", "version"], r"go(\d[\w.]*)")}
           if sel["go"] else None),
    "rust": ({"package": sel["rust"],
              "version": upstream(["rustc", "--version"], r"rustc (\d[\w.]*)")}
             if sel["rust"] else None),
    "not_shipped": sel["not_shipped"],
    "java_not_measured": sel["java_not_measured"],
    "java_not_measured_why": sel["java_not_measured_why"],
}
with open(sys.argv[2], "w") as fh:
    json.dump(manifest, fh, indent=1, sort_keys=True)
    fh.write("\n")
'''


STATUS_LIMIT = 64 << 20  # bytes of /var/lib/dpkg/status copied out at most (some 1-2 MB)


def _image_status_file(client, probe_tag: str, into: Path, suite: Suite) -> Path:
    """The probe image's /var/lib/dpkg/status, copied out of a created (never started)
    container."""
    with Container(client, probe_tag, ["true"], name=f"{suite.name}-runtimes-status",
                   lifetime=60, confinement=PROBE) as box:
        data = box.get_archive("/var/lib/dpkg/status", STATUS_LIMIT)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("status")
        if member is None:
            raise ImageBuildError(f"{probe_tag} has no /var/lib/dpkg/status")
        into.write_bytes(member.read())
    return into


def _write_work(work: Path, selection: Selection, debs: list[str]) -> None:
    names = [deb.split("_", 1)[0] for deb in debs]
    default_java = (str(selection.java_default)
                    if selection.java_default in selection.java_measured else "")
    files = {
        "debs.txt": "\n".join(debs),
        "installed.txt": "\n".join(names),
        "keep.txt": "\n".join(selection.keep()),
        "build-only.txt": "\n".join(selection.build_only()),
        "default-java.txt": default_java,
        "selection.json": json.dumps({**selection.to_json(),
                                      "java_not_measured_why": selection.java_not_measured_why}),
        "build-layer.sh": BUILD_SCRIPT,
        "manifest.py": MANIFEST_SCRIPT,
    }
    for name, text in files.items():
        (work / name).write_text(text + ("\n" if text and not text.endswith("\n") else ""))
    work.chmod(0o755)


class _Progress:
    """Reads the build container's output as it arrives (Container.run's ``watch``): phase
    lines are logged with the time the previous phase took; the last lines are kept for an
    error message."""

    def __init__(self, suite: Suite, log: Log):
        self.suite, self.log = suite, log
        self.tail: list[str] = []
        self.phases: dict[str, float] = {}
        self._current: tuple[str, float] | None = None
        self._pending = b""

    def _line(self, line: str) -> None:
        if line.startswith(PHASE):
            name = line[len(PHASE):].split()[0]
            now = time.monotonic()
            if self._current:
                done, since = self._current
                self.phases[done] = now - since
                self.log(f"[{self.suite.name}] runtimes: {done} {now - since:.0f} s")
            self._current = (name, now)
            return
        line = plain(without_escapes(line)).rstrip()
        if line.startswith("warning: "):
            self.log(f"[{self.suite.name}] runtimes: {one_line(line, 400)}")
        if line:
            self.tail = [*self.tail[-39:], line]

    def feed(self, out: bytes | None, err: bytes | None) -> None:
        self._pending += (out or b"") + (err or b"")
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._line(line.decode("utf-8", "replace"))

    def finish(self) -> None:
        """The last line, when the output did not end with a newline."""
        if self._pending:
            self._line(self._pending.decode("utf-8", "replace"))
            self._pending = b""


def _build_confinement(suite: Suite, work: Path) -> Confinement:
    """The layer build's: root (apt and dpkg install packages) and a writable root file system
    (the layer is what it writes), the .debs and the work folder mounted read-only; still no
    network, no new privileges, and its own memory and process limits."""
    return Confinement(user="0:0", read_only=False, drop_capabilities=False,
                       mem_limit=BUILD_MEMORY, pids_limit=BUILD_PIDS, tmpfs_tmp=BUILD_TMPFS,
                       volumes=((str(debs_dir(suite)), DEBS_MOUNT, "ro"),
                                (str(work), WORK_MOUNT, "ro")),
                       environment=())


def _image_labels(suite: Suite, selection: Selection, probe_tag: str, root: Path) -> dict:
    labels = {
        f"{LABEL}.kind": "runtimes",
        f"{LABEL}.suite": suite.name,
        f"{LABEL}.script": suite.script,
        f"{LABEL}.hash": runtime_hash(suite, selection, root=root),
        f"{LABEL}.base": probe_tag,
        f"{LABEL}.base-hash": images.probe_hash(suite, root=root),
        f"{LABEL}.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        f"{LABEL}.runtimes.java": ",".join(map(str, selection.java_measured)),
        f"{LABEL}.runtimes.packages": ",".join(selection.keep()),
    }
    # The build container's own labels are merged into the committed image's: blank those that
    # name the build run, so that no container made from the image looks owned by it.
    for key in (*owner_labels(), EXPIRES, f"{LABEL}.env"):
        labels.setdefault(key, "")
    return labels


def _run_build(client, suite: Suite, selection: Selection, probe_tag: str, tag: str,
               work: Path, root: Path, log: Log, timings: dict[str, float]) -> None:
    """Run the build container and commit it as ``tag``; the container is always removed."""
    progress = _Progress(suite, log)
    with Container(client, probe_tag,
                   ["sh", f"{WORK_MOUNT}/build-layer.sh", WORK_MOUNT, DEBS_MOUNT],
                   name=f"{suite.name}-runtimes-build", lifetime=BUILD_TIMEOUT,
                   confinement=_build_confinement(suite, work), log=log) as box:
        run = box.run(BUILD_TIMEOUT, stdout_cap=None, watch=progress.feed)
        progress.finish()
        timings.update(progress.phases)
        if run.timed_out:
            raise ImageBuildError(
                f"building the {suite.name} runtime layer took longer than "
                f"{BUILD_TIMEOUT:.0f} s: run it again, or look at `docker stats` while it runs")
        if run.engine_error is not None:
            raise run.engine_error
        if run.exit_code != 0:
            tail = " | ".join(progress.tail[-6:])
            raise ImageBuildError(
                f"building the {suite.name} runtime layer failed (exit {run.exit_code}"
                + (f", out of memory at {BUILD_MEMORY}" if run.oom_killed else "") + "): "
                + one_line(tail[-800:] or "no output", 800)
                + f"; run again with rebuild, or delete {debs_dir(suite)} if a .deb is broken")
        started = time.monotonic()
        repo, _, name = tag.partition(":")
        box.commit(repo, name, conf={
            "Labels": _image_labels(suite, selection, probe_tag, root), "Cmd": ["sh"],
            "User": "", "WorkingDir": "/"})
        timings["commit"] = time.monotonic() - started
        log(f"[{suite.name}] runtimes: commit {timings['commit']:.0f} s")


def _build(client, suite: Suite, selection: Selection, probe_tag: str, tag: str, root: Path,
           log: Log) -> str:
    started = time.monotonic()
    timings: dict[str, float] = {}
    log(f"[{suite.name}] building {tag} on {probe_tag}: "
        f"{', '.join(selection.install())}")
    work = Path(tempfile.mkdtemp(prefix=f"runtimes-{suite.name}.",
                                 dir=_apt_root(suite)))
    try:
        t0 = time.monotonic()
        status = _image_status_file(client, probe_tag, work / "status", suite)
        debs = resolve_and_download(suite, status, selection)
        size = sum((debs_dir(suite) / d).stat().st_size for d in debs)
        timings["download"] = time.monotonic() - t0
        log(f"[{suite.name}] runtimes: download {timings['download']:.0f} s "
            f"({len(debs)} packages, {size / 1e6:.0f} MB)")
        processes.check_stopping()
        _write_work(work, selection, debs)
        _run_build(client, suite, selection, probe_tag, tag, work, root, log, timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if find_image(client, tag) is None:
        raise ImageBuildError(f"the {suite.name} runtime build ended without an image {tag}")
    took = time.monotonic() - started
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    log(f"[{suite.name}] runtime image {tag} ready ({took:.0f} s: {phases})")
    return tag


def ensure_runtime_image(suite: Suite, *, rebuild: bool = False, log: Log = print,
                         client=None, root: Path | None = None) -> str:
    """Build (if needed) and return the tag of the runtime image of ``suite``.

    Builds the probe image first when it is missing. Nothing is rebuilt when the tag exists;
    ``rebuild=True`` fetches the index again and rebuilds (the probe image too, as
    images.ensure_probe_image does for its base), once per process and suite.
    """
    asked_at = time.monotonic()
    root = root or project_root()
    with engine(client) as client, images._engine_errors(suite):
        probe_tag = images.ensure_probe_image(suite, rebuild=rebuild, log=log, client=client,
                                              root=root)
        selection = cached_selection(suite)
        if not rebuild and selection is not None:
            tag = tag_for(suite, selection, root)
            if find_image(client, tag) is not None:
                log(f"[{suite.name}] {tag} is up to date")
                return tag
        with images._suite_lock(suite, log):
            # A build needs the index of the day (the .debs of an old one may be gone).
            selection = refresh_index(suite)
            tag = tag_for(suite, selection, root)
            if not images._needs_build(client, tag, rebuild, asked_at):
                log(f"[{suite.name}] {tag} is up to date")
                return tag
            superseded: list[tuple[str, str]] = []
            images._replace(client, tag,
                            lambda: _build(client, suite, selection, probe_tag, tag, root, log),
                            superseded)
            images._remove_superseded(client, superseded, log)
    return tag


# The names the docker backend uses for either kind of image (images.py has the same three).
image_tag = runtime_image_tag
image_status = runtime_image_status
ensure_image = ensure_runtime_image
