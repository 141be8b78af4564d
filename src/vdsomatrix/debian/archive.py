"""Which Debian mirror to use, and the keyring that verifies what comes from it.

vdsomatrix names no host of its own: it takes the first archive this machine's apt is set up
with that serves a whole suite (not a -security, -updates or -backports pocket), preferring one
whose Release file, as apt last fetched it, says it is Debian's. apt itself reads its sources
(``apt-get indextargets``), so every form apt accepts is understood the way apt understands it:
deb822 ``.sources`` files and one-line entries with options in brackets
(``deb [arch=amd64 signed-by=/k.gpg] URL suite main``); python-debian parses the first kind but
not the second. The environment variable VDSOMATRIX_MIRROR overrides the choice.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vdsomatrix.errors import BadInput
from vdsomatrix.processes import run_bounded
from vdsomatrix.text import one_line

APT_DIR = Path("/etc/apt")
# Debian's archive keys (the debian-archive-keyring package): whatever is downloaded from the
# mirror is checked against these, never against keys the mirror could supply itself.
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
NO_MIRROR = "set VDSOMATRIX_MIRROR to the URL of a Debian mirror"


@dataclass(frozen=True)
class AptSource:
    kind: str  # deb or deb-src
    uri: str
    suite: str
    label: str  # the Release file's Label ("Debian" for the main archive); "" if not fetched


def archive_keyring() -> Path:
    """The Debian archive keyring, or BadInput saying how to install it."""
    if not ARCHIVE_KEYRING.is_file():
        raise BadInput(f"{ARCHIVE_KEYRING} is missing: apt-get install debian-archive-keyring")
    return ARCHIVE_KEYRING


def apt_sources(apt_dir: Path = APT_DIR, *, release_info: bool = False) -> list[AptSource]:
    """Every source apt reads from ``apt_dir``, in apt's order.

    With ``release_info``, only those whose Release file apt has fetched (``apt-get update``),
    with its Label; without, all of them, unlabelled.
    """
    if shutil.which("apt-get") is None:
        raise BadInput(f"apt-get is not installed, so apt's sources cannot be read: {NO_MIRROR}")
    fields = "$(TARGET_OF) $(REPO_URI) $(RELEASE)"
    argv = ["apt-get", "-o", f"Dir::Etc={apt_dir}", "indextargets"]
    # Without release information apt leaves $(LABEL) as it is: ask for it only with.
    argv += ["--format", f"{fields} $(LABEL)"] if release_info else ["--format", fields,
                                                                      "--no-release-info"]
    result = run_bounded(argv, timeout=60, stdout_cap=16 << 20, env={**os.environ, "LC_ALL": "C"})
    if result.timed_out:
        raise BadInput(f"`apt-get indextargets` did not answer within 60 s: {NO_MIRROR}")
    if result.returncode != 0 or result.overflow:
        stderr = result.stderr.decode("utf-8", "replace")
        raise BadInput(f"apt cannot read its sources in {apt_dir} "
                       f"({one_line(stderr or result.returncode)}): {NO_MIRROR}")
    sources: list[AptSource] = []
    for line in result.stdout.decode("utf-8", "replace").splitlines():  # one per index file
        words = line.split(maxsplit=3)
        if len(words) >= 3:
            source = AptSource(*words[:3], label=words[3] if len(words) == 4 else "")
            if source not in sources:
                sources.append(source)
    return sources


def _serves_whole_suites(source: AptSource) -> bool:
    # Not the security archive, not an -updates or -backports pocket.
    return (source.kind == "deb" and source.uri.startswith(("http://", "https://"))
            and "-" not in source.suite and "security" not in source.uri)


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The base URL of a Debian archive (the folder holding dists/ and pool/)."""
    override = os.environ.get("VDSOMATRIX_MIRROR")
    if override:
        return override.rstrip("/")
    # Best: a source whose Release file says it is Debian's main archive. Before the first
    # `apt-get update` nothing says so, and the first source serving whole suites is taken
    # (apt is asked for all its sources only then).
    for source in apt_sources(apt_dir, release_info=True):
        if source.label == "Debian" and _serves_whole_suites(source):
            return source.uri.rstrip("/")
    for source in apt_sources(apt_dir):
        if _serves_whole_suites(source):
            return source.uri.rstrip("/")
    raise BadInput(f"no Debian mirror found in apt's sources ({apt_dir}): {NO_MIRROR}")
