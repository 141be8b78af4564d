"""The one small interface every backend implements.

A backend knows how to get the shared probe running inside one kind of environment and how to
bring its JSON document back. It knows nothing about analysis or reports.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vdsomatrix.matrix import BackendName, Environment  # noqa: F401


@dataclass(frozen=True)
class Availability:
    """Whether an environment can run here; ``reason`` says why not and what to do, ``note``
    what runs differently than it should here (it still runs), and how to fix that."""

    ok: bool
    reason: str = ""
    note: str = ""


@dataclass
class ProbeOutcome:
    """What came back from one environment.

    ``document`` is the probe's parsed JSON (see contract.parse_output), or None when nothing
    usable came back. ``status`` is a RunStatus: ok, crashed (the probe or guest died), timeout
    (deadline passed) or failed (the backend could not start it). ``errors`` are one-line
    messages; ``log_tail`` is the last lines the environment printed (console, stderr), kept as
    plain text, never interpreted. ``identity`` is what the backend knows of the environment and
    the probe cannot (image, accelerator, kernel package); the runner stamps it on the result.
    """

    document: dict[str, Any] | None
    status: str = "ok"
    errors: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0
    identity: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """Starts environments of one kind. Instances are cheap; methods may be called from threads."""

    name: BackendName
    # True when measurements inside this backend compete for the host's CPUs with other runs of
    # the same backend; the runner then serialises their measurement phase.
    shares_host_cpu: bool = True
    # Seconds an environment may take in all, and how many of them starting it may cost before
    # the probe runs (the probe's helper gets the rest: contract.helper_budget).
    default_deadline: float = 300.0
    startup_allowance: float = 5.0
    # Runtime environments start one JVM, node or Go process per timing and counting run (about
    # 40 in all): their own deadline, longer than the C helper's.
    runtimes_deadline: float = 600.0

    def pinned(self, env: Environment) -> bool:
        """Whether ``env``'s measurement runs pinned to a host CPU of its own (claimed with
        cpus.claim_host_cpu), so that the runner may measure several of this backend's
        environments side by side, one per CPU; False: measured alone."""
        return not self.shares_host_cpu

    def deadline(self, env: Environment) -> float:
        """Seconds ``env`` may take in all when the run sets no deadline of its own."""
        return self.runtimes_deadline if env.runtimes else self.default_deadline

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

    def fingerprint(self, env: Environment) -> str | None:
        """What decides a result of ``env`` besides the run itself (probe sources, image,
        kernel), as a short string, once prepared; None when it cannot be told (then
        ``run --resume`` always re-runs the environment)."""
        return None

    def clean(self, *, images: bool = False, log=print) -> None:  # noqa: B027
        """Remove what runs of this backend left behind that no live run owns (containers of a
        killed run, stale work folders); with ``images``, also images and caches that no
        environment of the current sources uses. Called at the start of every run."""
