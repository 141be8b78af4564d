"""The one small interface every backend implements.

A backend knows how to get the shared probe running inside one kind of environment and how to
bring its JSON document back. It knows nothing about analysis or reports.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vdsomatrix.matrix import Environment  # noqa: F401


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain_tail(output: bytes | str, lines: int, *, replacement: str = "?") -> list[str]:
    """The last ``lines`` lines of what an environment printed, as inert printable text.

    Invalid UTF-8 becomes U+FFFD and control characters (terminal escapes among them) become
    ``replacement``: nothing an environment prints can drive the terminal of whoever reads it.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return [_CONTROL.sub(replacement, line) for line in text.splitlines()[-lines:]]


@dataclass(frozen=True)
class Availability:
    """Whether an environment can run here; ``reason`` says why not and what to do."""

    ok: bool
    reason: str = ""


@dataclass
class ProbeOutcome:
    """What came back from one environment.

    ``document`` is the probe's parsed JSON, or None when nothing usable came back. ``status`` is
    "ok", "crashed" (the probe or guest died), "timeout" (deadline passed) or "failed" (the
    backend could not start it). ``errors`` are one-line messages; ``log_tail`` is the last lines
    the environment printed (console, stderr), kept as plain text, never interpreted.
    """

    document: dict[str, Any] | None
    status: str = "ok"
    errors: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Backend(abc.ABC):
    """Starts environments of one kind. Instances are cheap; methods may be called from threads."""

    name: str = ""
    # True when measurements inside this backend compete for the host's CPUs with other runs of
    # the same backend; the runner then serialises their measurement phase.
    shares_host_cpu: bool = True

    def can_start(self) -> Availability:
        """Whether this backend can work here at all (engine reachable, tool installed).

        Cheap and environment-independent: the runner uses it to skip a whole backend with one
        clear reason before building anything.
        """
        return Availability(True)

    @abc.abstractmethod
    def availability(self, env: Environment) -> Availability:
        """Fast check (no building): can ``env`` run on this machine right now, as prepared?"""

    def prepare(self, env: Environment, *, rebuild: bool = False, log=print) -> None:  # noqa: B027
        """Build or fetch what ``env`` needs (images, kernels). Idempotent and cached.

        Deliberately not abstract: a backend with nothing to prepare (host) need not say so.
        """

    @abc.abstractmethod
    def run_probe(self, env: Environment, *, deadline: float, log=print) -> ProbeOutcome:
        """Run the probe in ``env`` and return what came back within ``deadline`` seconds."""
