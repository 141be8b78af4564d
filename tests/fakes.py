"""Test doubles shared by the unit tests: a recording backend that stands in for a real one;
a fake Docker engine (FakeClient: just enough of the SDK for engine/container.py and the docker
backend);
and what the report's tests share: their fixture results, report.json's schema, reading a
Markdown table.

Unit tests only: the real Docker engine and real QEMU are exercised by the integration tests.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
import requests

from vdsomatrix import SCHEMA, backends
from vdsomatrix.backends.base import Availability, Backend, ProbeOutcome
from vdsomatrix.matrix import BackendName, Build, Environment, KernelSpec, Suite

BOOKWORM = Suite("bookworm", "bookworm")
DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
# Two real results of a full run: a static-musl container, and a guest on the hpet clock source
# under TCG (the report's tests render them).
REPORT_FIXTURES = ("result-bookworm-musl.json", "result-k6.1-hpet.json")
CONTAINER_ID = "c0ffee" * 10 + "abcd"


def host_env(name: str = "host") -> Environment:
    return Environment(name=name, backend=BackendName.HOST)


def docker_env(name: str, build: Build = Build.DYNAMIC) -> Environment:
    return Environment(name=name, backend=BackendName.DOCKER, userland=BOOKWORM, build=build)


def qemu_env(name: str, cmdline: str = "") -> Environment:
    return Environment(name=name, backend=BackendName.QEMU, userland=BOOKWORM,
                       kernel=KernelSpec("bookworm"), cmdline=cmdline)


def probe_document(name: str, **extra) -> dict:
    """The smallest document a probe could print that passes the schema."""
    return {
        "schema": SCHEMA,
        "environment": {"name": name, "backend": "whatever the probe says"},
        "vdso": {"present": False},
        "vsyscall": {"mode": "none"},
        "calls": [{"call": "getppid", "path": "syscall", "status": "ok",
                   "ns": {"min": 80.0, "median": 84.0, "p90": 90.0}, "syscalls_per_call": 1.0}],
        "errors": [],
        **extra,
    }


@dataclass
class Timeline:
    """When each environment's probe ran, across every fake backend of a test."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def overlapping(self, a: str, b: str) -> bool:
        (s1, e1), (s2, e2) = self.spans[a], self.spans[b]
        return s1 < e2 and s2 < e1

    def most_at_once(self, names) -> int:
        points = sorted([(self.spans[n][0], 1) for n in names]
                        + [(self.spans[n][1], -1) for n in names])
        now = peak = 0
        for _, step in points:
            now += step
            peak = max(peak, now)
        return peak


class RecordingBackend(Backend):
    """Runs nothing: sleeps ``seconds`` and returns ``outcomes[name]`` (or a valid document),
    recording when each probe ran."""

    def __init__(self, name: BackendName, timeline: Timeline, *, shares_host_cpu: bool,
                 seconds: float = 0.05, outcomes=None, unavailable=(), fingerprints=None):
        self.name = name
        self.shares_host_cpu = shares_host_cpu
        self.timeline = timeline
        self.seconds = seconds
        self.outcomes = outcomes or {}
        self.unavailable = set(unavailable)
        self.fingerprints = fingerprints or {}
        self.probed: list[str] = []
        self.cleaned = 0

    def availability(self, env) -> Availability:
        if env.name in self.unavailable:
            return Availability(False, f"{env.name} cannot run here (test)")
        return Availability(True)

    def fingerprint(self, env):
        return self.fingerprints.get(env.name)

    def clean(self, *, images=False, log=print):
        self.cleaned += 1

    def run_probe(self, env, *, deadline, log=print) -> ProbeOutcome:
        start = time.monotonic()
        self.probed.append(env.name)
        behaviour = self.outcomes.get(env.name)
        if callable(behaviour):
            outcome = behaviour(env)
        else:
            time.sleep(self.seconds)
            outcome = behaviour or ProbeOutcome(probe_document(env.name))
        with self.timeline.lock:
            self.timeline.spans[env.name] = (start, time.monotonic())
        return outcome


def install(monkeypatch, timeline: Timeline | None = None, **per_backend) -> dict:
    """Replace the real backends with recording ones; returns them by name."""
    timeline = timeline or Timeline()
    fakes = {
        BackendName.HOST: RecordingBackend(BackendName.HOST, timeline, shares_host_cpu=True,
                                           **per_backend.get("host", {})),
        BackendName.DOCKER: RecordingBackend(BackendName.DOCKER, timeline, shares_host_cpu=True,
                                             **per_backend.get("docker", {})),
        BackendName.QEMU: RecordingBackend(BackendName.QEMU, timeline, shares_host_cpu=False,
                                           **per_backend.get("qemu", {})),
    }
    monkeypatch.setattr(backends, "_instances", dict(fakes))
    # The analysis needs real artefacts; these documents carry none.
    monkeypatch.setattr("vdsomatrix.analysis.analyse_bounded",
                        lambda doc: {"vdso": None, "libc": None, "ldso": None, "errors": []})
    return fakes


def markdown_tables(markdown: str) -> list[list[str]]:
    """The Markdown tables of a page, each as the list of its lines."""
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def markdown_cells(line: str) -> list[str]:
    """A Markdown table line's cells, without padding (an escaped pipe is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


@functools.cache
def _report_fixtures() -> tuple[dict, ...]:
    return tuple(json.loads((DATA / name).read_text("utf-8")) for name in REPORT_FIXTURES)


def report_fixtures() -> list[dict]:
    """The documents of :data:`REPORT_FIXTURES`, a fresh copy each time (tests edit them)."""
    return copy.deepcopy(list(_report_fixtures()))


@functools.cache
def report_validator():
    """A validator of report.json against vdsomatrix/schema/report.schema.json."""
    import jsonschema

    schema = json.loads((ROOT / "src" / "vdsomatrix" / "schema" / "report.schema.json")
                        .read_text("utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.cache
def load_probe():
    """probes/probe.py as a module, and the runtime_rows module it imports.

    probe.py runs inside environments and is no module of the package: it is loaded by path,
    with its folder first on sys.path as when it runs as a script (it imports runtime_rows from
    there), once, so that every test shares one runtime_rows module.
    """
    from vdsomatrix.paths import probes_dir

    if str(probes_dir()) not in sys.path:
        sys.path.insert(0, str(probes_dir()))
    spec = importlib.util.spec_from_file_location("probe", probes_dir() / "probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, importlib.import_module("runtime_rows")


def copy_probe_context(root: Path) -> Path:
    """A copy at ``root`` of what the probe image is built from (images/ context files and
    probes/), for tests that edit it; ``root`` returned."""
    import shutil

    from vdsomatrix.images import probe_image as images
    from vdsomatrix.paths import project_root

    (root / "images").mkdir(parents=True)
    for name in images.CONTEXT_IMAGE_FILES:
        shutil.copy(project_root() / "images" / name, root / "images" / name)
    shutil.copytree(project_root() / "probes", root / "probes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


# --- a fake Docker engine -----------------------------------------------------------------


class FakeImage:
    def __init__(self, tag):
        self.id = "sha256:" + "ab" * 32
        self.short_id = self.id[:19]
        self.tags = [tag]
        self.attrs = {"Created": "2024-01-01T00:00:00.000Z"}


class FakeImages:
    def __init__(self, tags):
        self.tags = set(tags)

    def get(self, tag):
        if tag in self.tags:
            return FakeImage(tag)
        raise docker.errors.ImageNotFound(f"No such image: {tag}")


class FakeContainer:
    def __init__(self, client, kwargs):
        self.client, self.kwargs = client, kwargs
        self.id = CONTAINER_ID
        self.attrs = {"State": {"OOMKilled": client.oom}}

    def start(self):
        if self.client.start_error:
            raise self.client.start_error
        self.client.events.append("start")

    def wait(self, timeout=None):
        self.client.events.append(("wait", timeout))
        if self.client.wait_error is not None:
            raise self.client.wait_error
        if self.client.hang:  # like a probe that never ends: only a kill stops it
            if not self.client.killed.wait(timeout):
                raise requests.exceptions.ConnectionError("Read timed out.")
            return {"StatusCode": 137, "Error": None}
        return {"StatusCode": self.client.exit_code, "Error": None}

    def reload(self):
        pass

    def get_archive(self, path, chunk_size=None):
        self.client.events.append(("get_archive", path))
        return iter(self.client.archive_chunks), {"name": path.rsplit("/", 1)[-1]}

    def put_archive(self, path, data):
        self.client.events.append(("put_archive", path, bytes(data)))
        return True

    def export(self, chunk_size=None):
        self.client.events.append("export")
        return iter(self.client.archive_chunks)

    def commit(self, repository=None, tag=None, conf=None):
        self.client.events.append(("commit", f"{repository}:{tag}"))


class FakeContainers:
    def __init__(self, client):
        self.client = client

    def create(self, **kwargs):
        self.client.created.append(kwargs)
        if self.client.create_error:
            raise self.client.create_error
        return FakeContainer(self.client, kwargs)


class FakeAPI:
    def __init__(self, client):
        self.client = client

    def attach(self, container_id, **kwargs):
        assert kwargs["stream"] and kwargs["demux"] and not kwargs["logs"]
        return iter(self.client.chunks)

    def kill(self, ref):
        self.client.events.append(("kill", ref))
        self.client.killed.set()

    def remove_container(self, ref, force=False, v=False):
        assert force
        self.client.removed.append(ref)

    def containers(self, all=False, filters=None):
        assert all
        key, _, value = filters["label"].partition("=")
        return [c for c in self.client.listed
                if (c.get("Labels") or {}).get(key) == (value or None)]

    def images(self, filters=None):
        return self.client.image_list

    def remove_image(self, ref, noprune=False):
        if ref in self.client.in_use:
            raise docker.errors.APIError("409", explanation=f"conflict: {ref} is in use")
        self.client.removed_images.append(ref)


class FakeClient:
    """Just enough of docker.DockerClient for the backend."""

    def __init__(self, *, tags=(), stdout=b"", stderr=b"", exit_code=0, chunks=None,
                 wait_error=None, start_error=None, create_error=None, oom=False, hang=False,
                 listed=(), image_list=(), in_use=()):
        self.images = FakeImages(tags)
        self.containers = FakeContainers(self)
        self.api = FakeAPI(self)
        self.chunks = chunks if chunks is not None else [(stdout or None, None),
                                                         (None, stderr or None)]
        self.exit_code, self.wait_error, self.oom, self.hang = exit_code, wait_error, oom, hang
        self.start_error, self.create_error = start_error, create_error
        self.listed, self.image_list, self.in_use = list(listed), list(image_list), set(in_use)
        self.created, self.removed, self.removed_images, self.events = [], [], [], []
        self.archive_chunks: list[bytes] = []
        self.killed = threading.Event()

    def ping(self):
        return True
