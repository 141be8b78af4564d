"""Backends by name. Each is imported only when used, so a missing SDK or tool only matters
to the environments that need it."""

from __future__ import annotations

import importlib

from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome
from vdsomatrix.matrix import BackendName

_CLASSES = {
    BackendName.HOST: ("vdsomatrix.backends.host", "HostBackend"),
    BackendName.DOCKER: ("vdsomatrix.backends.docker", "DockerBackend"),
    BackendName.QEMU: ("vdsomatrix.backends.qemu", "QemuBackend"),
}
_instances: dict[str, Backend] = {}


class MissingBackend(Backend):
    """Stands in for a backend whose module cannot be imported here, saying why."""

    shares_host_cpu = True

    def __init__(self, name: BackendName, reason: str):
        self.name = name
        self.reason = reason

    def can_start(self) -> Availability:
        return Availability(False, self.reason)

    def availability(self, env) -> Availability:
        return self.can_start()

    def run_probe(self, env, *, deadline, log=print) -> ProbeOutcome:
        return ProbeOutcome(None, "failed", [self.reason])


def get_backend(name: BackendName) -> Backend:
    name = BackendName(name)
    if name not in _instances:
        module, cls = _CLASSES[name]
        try:
            _instances[name] = getattr(importlib.import_module(module), cls)()
        except ImportError as exc:
            _instances[name] = MissingBackend(
                name, f"the {name} backend cannot load ({exc}): reinstall vdsomatrix with its "
                "dependencies (pip install -e .)"
            )
    return _instances[name]


__all__ = ["Availability", "Backend", "ProbeOutcome", "get_backend"]
