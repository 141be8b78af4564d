"""The contract between the two halves: how the probe is started, how its output is read, and the
identity the host stamps on what came back.

Every backend starts the probe with :func:`probe_argv` (the QEMU guest's /init is generated from
it), reads what it printed with :func:`parse_output`, and the runner names the result with
:func:`stamp_identity`. Nothing else in the host side knows the probe's command line.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vdsomatrix.errors import BadInput
from vdsomatrix.results import decode_json

if TYPE_CHECKING:
    from vdsomatrix.matrix import Environment

# Where the probe image (and so every container and guest) keeps the probe and its helpers.
PROBE_IN_IMAGE = "/opt/vdsomatrix/probes/probe.py"
HELPER_IN_IMAGE = "/opt/vdsomatrix/bin/vdsoprobe-{build}"
# Runtime environments: the runtime layer's programs and manifest, and the system-call counter.
RUNTIMES_IN_IMAGE = "/opt/vdsomatrix/runtimes"
SYSCOUNT_IN_IMAGE = "/opt/vdsomatrix/bin/syscount"
# A user's program (`vdsomatrix test`): the launcher, and the read-only folder the program and
# its files are mounted at.
LAUNCH_IN_IMAGE = "/opt/vdsomatrix/bin/launch"
PROGRAM_FOLDER = "/vdsomatrix/program"
# The launcher's document names a few dozen system-call numbers: a few KiB.
MAX_LAUNCH_DOCUMENT = 1 << 20
# A probe prints about 1.4 MB (the compressed libc and loader are most of it); more than this is
# not a probe's document, and is refused before any memory is spent decoding it.
MAX_OUTPUT = 8 << 20
# An artefact shipped by digest names its file by a plain absolute path (no glob or shell
# character, no ..) of at most this many characters, and is no larger than the analysis reads.
_ARTEFACT_FILE = re.compile(r"/[A-Za-z0-9._+@-][A-Za-z0-9._+@/-]{0,1022}")
MAX_ARTEFACT_BYTES = 8 << 20  # analysis/artefacts.py reads no more
_MAX_ARTEFACTS = 8


def helper_budget(deadline: float, startup: float) -> int:
    """Seconds the C helper may run: the environment's deadline less what starting it costs.

    A hung helper is then stopped by the probe itself, which still prints a (partial) document,
    instead of the whole environment being killed at its deadline with nothing to show.
    """
    return max(1, int(deadline - startup))


def launch_argv(program: str, arguments: list[str], *, timeout: float, output_cap: int
                ) -> list[str]:
    """The command that runs ``program`` (a file name in :data:`PROGRAM_FOLDER`) under the
    launcher, from that folder. The launcher's document goes to the command's stdout (its fd 3)
    and the program's stdout and stderr both to the command's stderr, so that nothing the
    program prints is read as the document; the launcher closes fd 3 on the program's side.
    (A tmpfs file would be lost: a stopped container's tmpfs is gone before it can be copied.)
    """
    return ["sh", "-c", 'exec "$0" "$@" 3>&1 1>&2', LAUNCH_IN_IMAGE,
            "--timeout", f"{timeout:g}", "--output-cap", str(output_cap), "--result-fd", "3",
            "--cwd", PROGRAM_FOLDER, "--", f"{PROGRAM_FOLDER}/{program}", *arguments]


def probe_argv(*, python: str, probe: str, helper: str, name: str, backend: str,
               budget: int | str, time_namespace: bool = False,
               artefacts_by_digest: bool = False) -> list[str]:
    """The probe's command line, the same in every backend (``budget``: see helper_budget;
    ``time_namespace``: the helper runs in a new time namespace, see probes/probe.py;
    ``artefacts_by_digest``: the backend holds the environment's files and fills the artefacts
    in itself, see resolve_artefacts)."""
    argv = [python, probe, "--helper", helper, "--name", name, "--backend", backend,
            "--helper-timeout", str(budget)]
    if time_namespace:
        argv.append("--time-namespace")
    if artefacts_by_digest:
        argv.append("--artefacts-by-digest")
    return argv


def runtimes_argv(*, python: str, probe: str, runtimes: str, syscount: str, name: str,
                  backend: str, budget: int | str, artefacts_by_digest: bool = False
                  ) -> list[str]:
    """The probe's command line in a runtime environment: the language runtimes found in
    ``runtimes`` (timed, and counted with ``syscount``) take the place of the C helper."""
    argv = [python, probe, "--runtimes", runtimes, "--syscount", syscount, "--name", name,
            "--backend", backend, "--helper-timeout", str(budget)]
    if artefacts_by_digest:
        argv.append("--artefacts-by-digest")
    return argv


@dataclass
class ParsedOutput:
    document: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)


def parse_output(data: bytes, origin: str = "the probe") -> ParsedOutput:
    """What a probe printed, as a document, or the one-line reason it is not one. Never raises.

    Bounded before anything is decoded: size (:data:`MAX_OUTPUT`), then nesting and the number of
    containers (see results.decode_json), so a hostile environment cannot make the host spend
    more than a small multiple of the cap in memory.
    """
    if len(data) > MAX_OUTPUT:
        return ParsedOutput(None, [f"{origin} printed {len(data)} bytes, more than the "
                                   f"{MAX_OUTPUT >> 20} MiB a result may have"])
    if not data.strip():
        return ParsedOutput(None, [f"{origin} printed nothing"])
    try:
        doc = decode_json(data, origin)
    except BadInput as exc:
        return ParsedOutput(None, [str(exc)])
    if not isinstance(doc, dict):
        return ParsedOutput(None, [f"{origin} printed JSON that is not an object"])
    if not isinstance(doc.get("environment", {}), dict):
        return ParsedOutput(None, [f"{origin} printed a document whose `environment` is not "
                                   "an object"])
    return ParsedOutput(doc)


def stamp_identity(doc: dict[str, Any], env: Environment, facts: dict[str, Any]) -> None:
    """Name the result by what the host ran, not by what the environment claims.

    ``facts`` are what the backend knows and the probe cannot (the image, the accelerator, the
    kernel package). A different name the probe printed is kept aside as ``probe_name``.
    """
    identity = doc.get("environment")
    if not isinstance(identity, dict):
        identity = doc["environment"] = {}
    claimed = identity.get("name")
    if claimed is not None and claimed != env.name:
        identity["probe_name"] = claimed
    identity.update(facts)
    # arch: the userland's architecture from the matrix ("amd64" for the host), whatever the
    # probe says of its own ABI (environment.abi).
    identity.update(name=env.name, backend=str(env.backend), suite=env.suite,
                    build=str(env.build), arch=env.arch, description=env.description or None)
    if env.kernel is not None:
        identity.update(kernel_suite=env.kernel.suite, matrix_cmdline=env.cmdline)


def resolve_artefacts(doc: dict[str, Any], read_file: Callable[[str, int], bytes | None],
                      copy: str) -> list[str]:
    """Fill in every artefact the probe shipped by digest (``--artefacts-by-digest``) with the
    backend's own copy of that file, read by ``read_file(path, limit)``; ``copy`` names that copy
    in messages ("the guest's initramfs"). Returns one-line errors.

    The copy is used only when its size and SHA-256 equal what the probe measured on the file it
    loaded: then it is the same bytes, and the analysis reads exactly what the environment ran.
    Anything else leaves the artefact with an error that says so (the analysis then reports it
    as missing), and the path the probe gave is never used until it is a plain absolute path.
    """
    arts = doc.get("artefacts")
    if not isinstance(arts, dict):
        return []
    errors = []
    for key, art in list(arts.items())[:_MAX_ARTEFACTS]:
        if not isinstance(art, dict) or art.get("by_digest") is not True:
            continue
        art.pop("zlib_base64", None)  # only the host's copy fills it in
        file, digest, size = art.get("file"), art.get("sha256"), art.get("size")
        data, problem = None, None
        if not (isinstance(file, str) and _ARTEFACT_FILE.fullmatch(file)
                and ".." not in file.split("/")):
            problem = "its file is not named by a plain absolute path"
        elif not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)
                  and isinstance(size, int) and not isinstance(size, bool)
                  and 0 < size <= MAX_ARTEFACT_BYTES):
            problem = "it came without a usable sha256 and size"
        else:
            data = read_file(file, size)
            if data is None:
                problem = f"{copy} has no file {file}"
            elif len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                problem = (f"{copy}'s {file} is not the file the probe loaded (its size or "
                           "SHA-256 differs)")
        if problem is not None:
            art["error"] = f"shipped by digest, but {problem}"
            errors.append(f"artefact {key}: {art['error']}")
            continue
        assert data is not None
        art["zlib_base64"] = base64.b64encode(zlib.compress(data, 6)).decode("ascii")
        art["source"] = f"{copy}, the same size and SHA-256 as the file the probe loaded"
    return errors
