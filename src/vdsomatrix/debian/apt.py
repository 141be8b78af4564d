"""apt with a private configuration: the one client vdsomatrix talks to the Debian archive with.

:class:`PrivateApt` is apt-get over one suite (a Debian codename) and one architecture of one
mirror, verified with one keyring: its sources list names only that (``signed-by`` the keyring,
so the InRelease signature is checked against it and no other key), and its lists, status and
caches are its own, in ``<cache>/apt/<suite>-<arch>/``. The machine's apt.conf.d is still read
before ours (``-c``), so a proxy set up for apt works here too; its update hooks, index targets
and architectures are cleared. We use the ordinary client rather than reading Release files
ourselves because apt already does every step we would otherwise re-implement and could get
wrong: it verifies the signature, checks the Packages index against the Release hashes and each
.deb against the index, retries, and honours the machine's proxy and authentication settings.
Valid-Until is not checked (neither does debootstrap): a mirror that is a snapshot keeps working.

Every apt-get runs to a deadline in a session of its own (:mod:`vdsomatrix.processes`: killed
with vdsomatrix, on the deadline, or on an interrupt), and one state folder is used by one apt at
a time (a lock across threads and processes, held for one call), since apt itself would fail on
its own lock rather than wait. A failure is :class:`AptFailed`, one line saying what to check.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from vdsomatrix import processes
from vdsomatrix.debian.archive import archive_keyring, debian_mirror
from vdsomatrix.debian.debs import apt_quote, deb_file_name
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.paths import cache_dir, file_lock
from vdsomatrix.text import one_line

APT_TIMEOUT = 900.0  # seconds any one apt-get may take (a kernel's packages are ~100 MB)
CHECK = ("check the mirror (VDSOMATRIX_MIRROR or /etc/apt sources), the network, and that "
         "debian-archive-keyring is up to date")
# What `apt-get -s install` prints for each package it would unpack:
# "Inst name [old] (version suite [arch])".
_INST = re.compile(r"^Inst (\S+) (?:\[[^]]*\] )?\((\S+) .*\[([^]]+)\]\)", re.MULTILINE)


class AptFailed(EnvironmentUnavailable):
    """An apt-get of the private client failed or ran out of time; the message says what to
    check."""


def state_dir(suite: str, arch: str) -> Path:
    """Where the private apt of ``suite`` (a codename) and ``arch`` keeps its state."""
    return cache_dir() / "apt" / f"{suite}-{arch}"


def apt_conf(root: Path, arch: str = "amd64") -> str:
    """apt.conf read with ``-c`` (after the machine's own config): private state, no hooks."""
    lines = [
        # The machine's update hooks would act on the machine's apt state, not ours.
        "#clear APT::Update::Pre-Invoke;",
        "#clear APT::Update::Post-Invoke;",
        "#clear APT::Update::Post-Invoke-Success;",
        "#clear APT::Default-Release;",
        # Only the Packages index: no Translations, Contents or DEP-11 metadata.
        "#clear Acquire::IndexTargets;",
        "Acquire::IndexTargets::deb::Packages {",
        '  MetaKey "$(COMPONENT)/binary-$(ARCHITECTURE)/Packages";',
        '  ShortDescription "Packages";',
        '  Description "$(RELEASE)/$(COMPONENT) $(ARCHITECTURE) Packages";',
        '  flatMetaKey "Packages";',
        '  flatDescription "$(RELEASE) Packages";',
        "};",
        'Acquire::Languages "none";',
        # The index is read as bytes (debian.packages): kept as it came, not recompressed (the
        # machine may ask for that, as Debian's container images do).
        'Acquire::GzipIndexes "false";',
        # Signatures are checked (signed-by); Valid-Until is not, as debootstrap does not check
        # it either: a mirror that is a snapshot must keep working.
        'Acquire::Check-Valid-Until "false";',
        # The index read (binary-<arch>) and the packages downloaded are of this one.
        f'APT::Architecture "{arch}";',
        "#clear APT::Architectures;",
        f'APT::Architectures {{ "{arch}"; }};',
        'APT::Install-Recommends "false";',
        'APT::Install-Suggests "false";',
        f'Dir::Etc::sourcelist "{root}/sources.list";',
        f'Dir::Etc::sourceparts "{root}/sources.list.d";',
        f'Dir::Etc::preferences "{root}/preferences";',
        f'Dir::Etc::preferencesparts "{root}/preferences.d";',
        f'Dir::State "{root}/state";',
        f'Dir::State::lists "{root}/lists";',
        f'Dir::State::status "{root}/status";',
        f'Dir::Cache "{root}/cache";',
        f'Dir::Log "{root}/log";',
    ]
    if os.geteuid() == 0:
        # The state and the .deb cache live in the cache folder, under a home apt's _apt user
        # may not enter: download as root (apt still checks every signature and hash).
        lines.append('APT::Sandbox::User "root";')
    return "\n".join([*lines, ""])


class PrivateApt:
    """apt-get over ``suite`` (a Debian codename) and ``arch`` of ``mirror`` (default: the
    machine's, :func:`~vdsomatrix.debian.archive.debian_mirror`), verified with ``keyring``
    (default: Debian's archive keyring), with all state in ``root`` (default:
    :func:`state_dir`)."""

    def __init__(self, suite: str, arch: str = "amd64", *, mirror: str | None = None,
                 keyring: Path | None = None, root: Path | None = None,
                 timeout: float = APT_TIMEOUT):
        self.suite, self.arch, self.timeout = suite, arch, timeout
        self.mirror = (mirror or debian_mirror()).rstrip("/")
        self.keyring = keyring or archive_keyring()
        self.root = root or state_dir(suite, arch)

    def __repr__(self) -> str:
        return f"PrivateApt({self.suite} {self.arch} from {self.mirror})"

    # --- the four things asked of apt ----------------------------------------------------

    def update(self) -> None:
        """Fetch the suite's signed InRelease and its binary-<arch> Packages index."""
        with self._locked():
            self._run(["update"], "update")

    def packages_index(self) -> Path:
        """The Packages index the last :meth:`update` fetched (uncompressed)."""
        found = sorted((self.root / "lists").glob(
            f"*_dists_{self.suite}_main_binary-{self.arch}_Packages"))
        if not found:
            raise AptFailed(f"apt fetched no {self.arch} Packages index of {self.suite} from "
                            f"{self.mirror}: {CHECK}")
        return found[-1]

    def download_install(self, names: Iterable[str], status: Path, into: Path) -> list[str]:
        """Download into ``into`` what installing ``names`` on a system whose dpkg status file
        is ``status`` would unpack, dependencies included; the .deb file names, in apt's
        order (empty, and nothing downloaded, when nothing is missing)."""
        names = list(names)
        into.mkdir(parents=True, exist_ok=True)
        (into / "partial").mkdir(exist_ok=True)
        options = ["-o", f"Dir::State::status={status}", "-o", f"Dir::Cache::archives={into}"]
        with self._locked():
            simulated = self._run([*options, "-s", "install", *names], "install --simulate")
            debs = [deb_file_name(*found) for found in _INST.findall(simulated)]
            if debs:
                self._run([*options, "-y", "-d", "install", *names], "install --download-only")
        missing = [deb for deb in debs if not (into / deb).is_file()]
        if missing:
            raise AptFailed(f"apt did not download {', '.join(missing[:3])} of {self.suite} "
                            f"into {into}: {CHECK}")
        return debs

    def download(self, packages: Iterable[tuple[str, str]], into: Path) -> list[Path]:
        """Download exactly ``packages`` ((name, version) each, no dependencies) into
        ``into``; their files, in the order asked."""
        packages = list(packages)
        into.mkdir(parents=True, exist_ok=True)
        refs = [f"{name}={version}" for name, version in packages]
        with self._locked():
            self._run(["download", *refs], "download", cwd=into)
        files = []
        for name, version in packages:
            prefix = f"{apt_quote(name, '_:')}_{apt_quote(version, '_:')}_"
            found = sorted(into.glob(f"{glob.escape(prefix)}*.deb"))
            if not found:
                raise AptFailed(f"apt-get download of {name}={version} ({self.suite} "
                                f"{self.arch}) left no {prefix}*.deb in {into}: {CHECK}")
            files.append(found[0])
        return files

    # --- running apt-get -----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One apt at a time in this state, with the configuration of today written."""
        with file_lock(self.root.with_name(f".{self.root.name}.lock")):
            self._write_config()
            yield

    def _write_config(self) -> None:
        root = self.root
        for sub in ("sources.list.d", "preferences.d", "state", "lists/partial",
                    "cache/archives/partial", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        if not (root / "status").exists():
            (root / "status").write_text("")
        (root / "preferences").write_text("")
        (root / "sources.list").write_text(
            f"deb [signed-by={self.keyring}] {self.mirror} {self.suite} main\n")
        (root / "apt.conf").write_text(apt_conf(root, self.arch))

    def _run(self, args: list[str], what: str, cwd: Path | None = None) -> str:
        """apt-get ``args`` to its end; its stdout, or AptFailed naming ``what`` failed."""
        argv = ["apt-get", "-q", "-c", str(self.root / "apt.conf"), *args]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        env.pop("APT_CONFIG", None)  # read instead of /etc/apt/apt.conf: not ours to inherit
        out_path, err_path = self.root / "apt.out", self.root / "apt.err"
        # Output goes to files, not pipes: nothing here reads while apt runs.
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = processes.spawn(argv, cwd=cwd or self.root, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            except FileNotFoundError:
                raise AptFailed("apt-get not found: run this on Debian (apt)") from None
            code = processes.wait(proc, self.timeout)
        where = f"{self.suite} {self.arch} from {self.mirror}"
        if code is None:
            raise AptFailed(f"apt-get {what} of {where} took longer than {self.timeout:.0f} s: "
                            f"{CHECK}")
        stderr = err_path.read_text("utf-8", "replace")
        problems = [ln for ln in stderr.splitlines() if ln.startswith(("E:", "W:", "Err"))]
        if code != 0 or any(p.startswith(("E:", "Err")) for p in problems):
            detail = " | ".join(problems[-3:]) or stderr.strip()[-300:] or f"exit {code}"
            raise AptFailed(f"apt-get {what} of {where} failed ({one_line(detail, 600)}); "
                            f"{CHECK}")
        return out_path.read_text("utf-8", "replace")
