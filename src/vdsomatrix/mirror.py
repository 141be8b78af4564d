"""Which Debian mirror to use: the one this machine's apt is already set up with.

vdsomatrix names no host of its own. It reads apt's sources (deb822 ``.sources`` files and
one-line ``.list`` files) and takes the first URI that serves Debian's main archive; the
environment variable VDSOMATRIX_MIRROR overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

from debian import deb822

from vdsomatrix.errors import BadInput

APT_DIR = Path("/etc/apt")


def _candidates(apt_dir: Path):
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        with path.open(encoding="utf-8", errors="replace") as fh:
            for para in deb822.Deb822.iter_paragraphs(fh):
                if "deb" not in para.get("Types", "").split():
                    continue
                suites = para.get("Suites", "").split()
                for uri in para.get("URIs", "").split():
                    yield uri, suites
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                rest = [w for w in words[1:] if not w.startswith("[")]
                if len(rest) >= 2:
                    yield rest[0], [rest[1]]


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The base URL of a Debian archive (the folder holding dists/ and pool/)."""
    override = os.environ.get("VDSOMATRIX_MIRROR")
    if override:
        return override.rstrip("/")
    for uri, suites in _candidates(apt_dir):
        # The security archive and -updates/-backports pockets are not full archives.
        if "security" in uri or not uri.startswith(("http://", "https://")):
            continue
        if any(s and "-" not in s for s in suites):
            return uri.rstrip("/")
    raise BadInput(
        "no Debian mirror found in /etc/apt sources: set VDSOMATRIX_MIRROR to the URL of one"
    )
