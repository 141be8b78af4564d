"""report.json's metadata: what a reader needs to reproduce the report (versions, commits,
machines, engines, QEMU versions, each environment's description)."""

from __future__ import annotations

from typing import Any

from vdsomatrix import __version__
from vdsomatrix.report.cells import Result, number, part, plain_line, text
from vdsomatrix.report.result_set import UNKNOWN_MACHINE


def _machine(doc: dict) -> dict[str, Any]:
    """``run.machine`` as JSON for report.json (older results name a host only: the other
    fields are then empty)."""
    machine = part(doc, "run", "machine")
    if not isinstance(machine, dict):
        machine = {"id": machine}
    mitigations = machine.get("mitigations")
    return {
        "id": plain_line(machine.get("id"), 200) or UNKNOWN_MACHINE,
        "label": plain_line(machine.get("label"), 200) or None,
        "cpu": plain_line(machine.get("cpu"), 200) or None,
        "kernel": plain_line(machine.get("kernel"), 200) or None,
        "hypervisor": machine.get("hypervisor") if isinstance(machine.get("hypervisor"), bool)
        else None,
        # older results have a string here; keep it as the one text it is
        "mitigations": ({plain_line(k, 100): plain_line(v, 300)
                         for k, v in mitigations.items() if text(v) is not None}
                        if isinstance(mitigations, dict)
                        else ({"all": plain_line(mitigations, 300)}
                              if text(mitigations) is not None else {})),
        "mitigations_param": plain_line(machine.get("mitigations_param"), 200) or None,
    }


def meta(results: list[Result], machines: list[str]) -> dict[str, Any]:
    """What a reader needs to reproduce the report: versions, machines, environments."""
    def distinct(*keys: str) -> list[str]:
        return sorted({v for r in results if (v := plain_line(r.get(*keys), 200))})

    machine_docs: dict[str, dict] = {}
    for r in results:
        if r.machine:
            machine_docs.setdefault(r.machine, _machine(r.doc))
    return {
        "report_vdsomatrix": __version__,
        "vdsomatrix": distinct("run", "vdsomatrix"),
        "commits": distinct("run", "commit"),
        "docker_engines": distinct("environment", "engine", "version"),
        "qemu": distinct("environment", "qemu", "version"),
        "machines": [{"name": name, **machine_docs.get(name, {})} for name in machines],
        "environments": [{
            "environment": r.subject.environment,
            "machine": r.machine,
            "label": r.label,
            "backend": r.subject.backend,
            "group": r.subject.group,
            "emulated": r.emulated,
            "status": plain_line(r.run_status, 40),
            "build": plain_line(r.get("environment", "build"), 40) or None,
            "abi": r.abi,
            "arch": r.arch,
            "description": plain_line(r.get("environment", "description"), 300) or None,
            "started": plain_line(r.get("run", "started"), 40) or None,
            "seconds": number(r.get("run", "seconds")),
            "vdsomatrix": plain_line(r.get("run", "vdsomatrix"), 40) or None,
            "commit": plain_line(r.get("run", "commit"), 60) or None,
            "docker_engine": plain_line(r.get("environment", "engine", "version"), 100) or None,
            "qemu": plain_line(r.get("environment", "qemu", "version"), 100) or None,
            "kernel_package": plain_line(r.get("environment", "kernel_package"), 200) or None,
            "image": plain_line(r.get("environment", "image", "id"), 200) or None,
            "fingerprint": plain_line(r.get("run", "fingerprint"), 300) or None,
        } for r in results],
    }
