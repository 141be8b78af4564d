"""The docker backend.

Unit tests drive it with a fake Docker client through every error path. The tests marked
``engine`` use the real engine: they build the bookworm probe image (all three builds) and show,
from inside a container created exactly as the backend creates them, that the confinement is
real: no network but lo, a read-only root, no capabilities, no new privileges; and that the
measurement still works under it.
"""

from __future__ import annotations

import json
import threading
import time

import docker.errors
import pytest
import requests

from vdsomatrix import images
from vdsomatrix.backends import docker as dockerbackend
from vdsomatrix.backends.docker import DockerBackend, _container_kwargs, run_container
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.matrix import Environment, Suite, load_matrix

BOOKWORM = Suite("bookworm", "bookworm")
ENV = Environment(name="bookworm-musl", backend="docker", suite="bookworm", build="musl")
SUITES = {"bookworm": BOOKWORM}
CONTAINER_ID = "c0ffee" * 10 + "abcd"
GOOD_DOC = {"schema": "vdsomatrix/1", "environment": {"name": "bookworm-musl"}, "calls": []}


# ------------------------------------------------------------------------------- fakes -------


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
            if isinstance(self.client.wait_error, requests.exceptions.ConnectionError):
                time.sleep(timeout)  # like the engine: no answer before the request times out
            raise self.client.wait_error
        return {"StatusCode": self.client.exit_code, "Error": None}

    def reload(self):
        pass


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

    def remove_container(self, ref, force=False, v=False):
        assert force
        self.client.removed.append(ref)


class FakeClient:
    """Just enough of docker.DockerClient for the backend."""

    def __init__(self, *, tags=(), stdout=b"", stderr=b"", exit_code=0, chunks=None,
                 wait_error=None, start_error=None, create_error=None, oom=False):
        self.images = FakeImages(tags)
        self.containers = FakeContainers(self)
        self.api = FakeAPI(self)
        self.chunks = chunks if chunks is not None else [(stdout or None, None),
                                                         (None, stderr or None)]
        self.exit_code, self.wait_error, self.oom = exit_code, wait_error, oom
        self.start_error, self.create_error = start_error, create_error
        self.created, self.removed, self.events = [], [], []

    def ping(self):
        return True


def backend_with(client) -> DockerBackend:
    return DockerBackend(SUITES, client_factory=lambda timeout=None: client)


def built(**kwargs) -> FakeClient:
    return FakeClient(tags=[images.probe_image_tag(BOOKWORM)], **kwargs)


# ------------------------------------------------------------------------------- units -------


def test_no_engine_is_unavailable_with_what_to_do():
    def no_engine(timeout=None):
        raise EnvironmentUnavailable(images.NO_ENGINE.format(detail="connection refused"))

    backend = DockerBackend(SUITES, client_factory=no_engine)
    for verdict in (backend.can_start(), backend.availability(ENV)):
        assert not verdict.ok
        assert "no Docker engine reachable" in verdict.reason
        assert ".ci/setup-machine" in verdict.reason and "DOCKER_HOST" in verdict.reason
    outcome = backend.run_probe(ENV, deadline=10)
    assert outcome.status == "failed" and outcome.document is None
    assert "no Docker engine reachable" in outcome.errors[0]


def test_unreachable_docker_host_gives_the_one_line_message(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(EnvironmentUnavailable) as info:
        images.docker_client(timeout=2)
    message = str(info.value)
    assert message.startswith("no Docker engine reachable (") and "\n" not in message
    assert "`dockerd &`" in message
    assert DockerBackend(SUITES).can_start().ok is False


def test_missing_image_says_how_to_build_it():
    client = FakeClient(tags=[])
    backend = backend_with(client)
    verdict = backend.availability(ENV)
    assert not verdict.ok and "image not built: run `nox -s images`" in verdict.reason
    outcome = backend.run_probe(ENV, deadline=10)
    assert outcome.status == "failed" and "nox -s images" in outcome.errors[0]
    assert client.created == []  # nothing started, nothing pulled


def test_ok_run_records_backend_and_image_and_uses_the_hardened_settings():
    client = built(stdout=json.dumps(GOOD_DOC).encode(), stderr=b"note: fine\n")
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "ok", outcome.errors
    env = outcome.document["environment"]
    assert env["backend"] == "docker"
    assert env["image"] == {"tag": images.probe_image_tag(BOOKWORM), "id": FakeImage("").id}
    assert outcome.log_tail == ["note: fine"]
    (kwargs,) = client.created
    assert kwargs["image"] == FakeImage("").id
    assert kwargs["command"][:2] == ["python3", "/opt/vdsomatrix/probes/probe.py"]
    assert "/opt/vdsomatrix/bin/vdsoprobe-musl" in kwargs["command"]
    assert kwargs["network_mode"] == "none" and kwargs["read_only"] is True
    assert kwargs["cap_drop"] == ["ALL"] and "cap_add" not in kwargs
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["auto_remove"] is False and "privileged" not in kwargs
    assert client.removed == [CONTAINER_ID]


def test_timeout_kills_and_removes():
    client = built(wait_error=requests.exceptions.ConnectionError("Read timed out."))
    started = time.monotonic()
    outcome = backend_with(client).run_probe(ENV, deadline=1.0)
    assert outcome.status == "timeout" and outcome.document is None
    assert "did not finish within 1 s" in outcome.errors[0]
    assert time.monotonic() - started < 5
    assert any(e[0] == "kill" for e in client.events if isinstance(e, tuple))
    assert len(client.removed) == 1


def test_engine_error_during_wait_is_a_failure_not_a_timeout():
    client = built(wait_error=docker.errors.APIError("500 Server Error: boom"))
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "failed" and "Docker engine error" in outcome.errors[0]
    assert len(client.removed) == 1


@pytest.mark.parametrize(
    "stdout, fragment",
    [
        (b"", "not valid JSON"),
        (b'{"schema": "vdsomatrix/1", "calls": [', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (b'{"environment": 3}', "`environment` that is not an object"),
    ],
)
def test_bad_output_is_a_crash_with_a_clear_error(stdout, fragment):
    client = built(stdout=stdout, stderr=b"Traceback (most recent call last):\n  boom\n")
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "crashed" and outcome.document is None
    assert fragment in outcome.errors[0]
    assert outcome.log_tail[-1] == "  boom"
    assert len(client.removed) == 1


def test_nonzero_exit_is_a_crash_with_the_stderr_tail_as_plain_text():
    stderr = b"".join(b"line %d\n" % i for i in range(100)) + b"\x1b[31mred\x1b[0m \xff\n"
    client = built(stdout=json.dumps(GOOD_DOC).encode(), stderr=stderr, exit_code=139)
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "crashed" and outcome.document is None
    assert "killed by SIGSEGV" in outcome.errors[0]
    assert len(outcome.log_tail) == dockerbackend.LOG_TAIL_LINES
    assert outcome.log_tail[-1] == "?[31mred?[0m \ufffd"  # no terminal escapes survive
    assert len(client.removed) == 1


def test_out_of_memory_is_named():
    client = built(exit_code=137, oom=True)
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "crashed"
    assert "SIGKILL" in outcome.errors[0] and "out of memory" in outcome.errors[0]


def test_stdout_over_the_cap_is_killed_and_reported():
    client = built(chunks=[(b"x" * 600, None), (b"y" * 600, None)])
    kwargs = _container_kwargs("t", "img", ["true"])
    run = run_container(client, kwargs, timeout=30, stdout_cap=1000)
    assert run.overflow and len(run.stdout) == 600
    assert any(e[0] == "kill" for e in client.events if isinstance(e, tuple))
    assert len(client.removed) == 1


def test_removed_when_start_fails():
    client = built(start_error=docker.errors.APIError("cannot start"))
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "failed" and "cannot start" in outcome.errors[0]
    assert len(client.removed) == 1


def test_removed_on_keyboard_interrupt():
    client = built(wait_error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        backend_with(client).run_probe(ENV, deadline=60)
    assert len(client.removed) == 1


def test_removed_by_name_when_interrupted_inside_create():
    client = built(create_error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        backend_with(client).run_probe(ENV, deadline=60)
    (kwargs,) = client.created
    assert client.removed == [kwargs["name"]]


def test_container_names_are_unique_and_safe():
    a = _container_kwargs("k6.1 weird/name", "img", ["true"])["name"]
    b = _container_kwargs("k6.1 weird/name", "img", ["true"])["name"]
    assert a != b and a.startswith("vdsomatrix-k6.1_weird_name-")


def test_default_backend_reads_suites_from_the_matrix():
    backend = DockerBackend(client_factory=lambda timeout=None: FakeClient())
    forky = Environment(name="forky", backend="docker", suite="forky")
    assert backend._suite(forky) == load_matrix().suites["forky"]


# ------------------------------------------------------------------------------- engine ------

# Runs inside a probe container and reports what the confinement looks like from within.
INSIDE = r"""
import ctypes, errno, json, os, signal, subprocess, sys
out = {}
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    out[key] = status[key].strip()
out["uid"] = os.getuid()
out["sys_class_net"] = sorted(os.listdir("/sys/class/net"))
out["proc_net_dev"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev")
                             if ":" in l)
try:
    open("/vdsomatrix-write-test", "w")
    out["root_write"] = "ok"
except OSError as exc:
    out["root_write"] = errno.errorcode[exc.errno]
with open("/tmp/x.sh", "w") as fh:
    fh.write("#!/bin/sh\nexit 0\n")
os.chmod("/tmp/x.sh", 0o755)
try:
    subprocess.run(["/tmp/x.sh"], check=True)
    out["tmp_exec"] = "ok"
except OSError as exc:
    out["tmp_exec"] = errno.errorcode[exc.errno]
# What the helper needs: pin itself to one CPU, trace its own child that asked for it.
cpu = sorted(os.sched_getaffinity(0))[0]
os.sched_setaffinity(0, {cpu})
out["pinned"] = sorted(os.sched_getaffinity(0)) == [cpu]
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
pid = os.fork()
if pid == 0:
    if libc.ptrace(0, 0, None, None) != 0:  # PTRACE_TRACEME
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSTOP)
    os.getppid()
    os._exit(0)
os.waitpid(pid, 0)
stops = 0
while True:
    if libc.ptrace(24, pid, None, None) != 0:  # PTRACE_SYSCALL
        out["ptrace_error"] = errno.errorcode[ctypes.get_errno()]
        break
    _, st = os.waitpid(pid, 0)
    if os.WIFEXITED(st):
        out["traced_exit"] = os.WEXITSTATUS(st)
        break
    stops += 1
out["syscall_stops"] = stops
print(json.dumps(out))
"""

ELF_CHECK = r"""
import json, struct
def interp(path):
    data = open(path, "rb").read()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phsize)[0] == 3 for i in range(phnum))
print(json.dumps({b: interp("/opt/vdsomatrix/bin/vdsoprobe-" + b)
                  for b in ("dynamic", "static", "musl")}))
"""


@pytest.fixture(scope="module")
def bookworm_image(engine):
    suite = load_matrix().suites["bookworm"]
    return images.ensure_probe_image(suite, client=engine)


def run_inside(engine, image, command, timeout=120):
    kwargs = _container_kwargs("test-hardening", image, command)
    run = run_container(engine, kwargs, timeout=timeout)
    assert run.exit_code == 0, (run.errors, run.stderr.decode(errors="replace")[-2000:])
    return json.loads(run.stdout), kwargs


@pytest.mark.engine
@pytest.mark.slow
def test_bookworm_image_has_all_three_builds(engine, bookworm_image):
    linked, _ = run_inside(engine, bookworm_image, ["python3", "-c", ELF_CHECK])
    assert linked == {"dynamic": True, "static": False, "musl": False}
    image = engine.images.get(bookworm_image)
    assert image.labels[f"{images.LABEL}.kind"] == "probe"
    assert image.labels[f"{images.LABEL}.suite"] == "bookworm"


@pytest.mark.engine
@pytest.mark.slow
def test_confinement_is_real_inside_a_probe_container(engine, bookworm_image):
    inside, kwargs = run_inside(engine, bookworm_image, ["python3", "-c", INSIDE])
    assert inside["sys_class_net"] == ["lo"] and inside["proc_net_dev"] == ["lo"]
    assert inside["root_write"] == "EROFS"
    assert inside["tmp_exec"] == "EACCES"  # /tmp is noexec
    expected = 0
    for name in dockerbackend.CAPABILITIES:  # none today
        expected |= 1 << CAP_NUMBERS[name]
    for key in ("CapEff", "CapBnd", "CapPrm"):
        assert int(inside[key], 16) == expected, (key, inside[key])
    assert inside["NoNewPrivs"] == "1"
    assert inside["Seccomp"] == "2"  # the engine's default filter is in force
    assert inside["uid"] == 0
    # ...and still enough for the measurement:
    assert inside["pinned"] is True
    assert "ptrace_error" not in inside and inside["traced_exit"] == 0
    assert inside["syscall_stops"] >= 2
    # the container is gone afterwards
    assert engine.containers.list(all=True, filters={"name": kwargs["name"]}) == []


CAP_NUMBERS = {"SYS_PTRACE": 19, "SYS_NICE": 23, "SYS_ADMIN": 21, "PERFMON": 38}


@pytest.mark.engine
def test_real_timeout_kills_and_removes(engine, bookworm_image):
    kwargs = _container_kwargs("test-timeout", bookworm_image, ["sleep", "60"])
    started = time.monotonic()
    run = run_container(engine, kwargs, timeout=3)
    assert run.timed_out and run.exit_code is None
    assert time.monotonic() - started < 20
    assert engine.containers.list(all=True, filters={"name": kwargs["name"]}) == []


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize(
    "name,libc,linkage",
    [("bookworm", "glibc", "dynamic"), ("bookworm-static", "glibc", "static"),
     ("bookworm-musl", "musl", "static")],
)
def test_real_probe_run_in_bookworm(engine, bookworm_image, name, libc, linkage):
    backend = DockerBackend()
    env = load_matrix().environments[name]
    assert backend.availability(env).ok
    outcome = backend.run_probe(env, deadline=300)
    assert outcome.status == "ok", (outcome.errors, outcome.log_tail)
    doc = outcome.document
    assert doc["environment"]["backend"] == "docker"
    assert doc["environment"]["image"]["tag"] == bookworm_image
    assert doc["environment"]["userland"]["codename"] == "bookworm"
    # What the helper found out about itself (AT_BASE, its own libc), not what we built.
    assert doc["environment"]["libc"]["name"] == libc
    assert doc["environment"]["libc"]["linkage"] == linkage
    assert doc["environment"]["libc"]["version"]
    rows = [row for row in doc["calls"] if row.get("status") == "ok"]
    assert rows, doc["calls"]
    # ptrace works under the confinement: every raw system call counts exactly one.
    for row in rows:
        if row["path"] == "syscall":
            assert row["syscalls_per_call"] == 1, row


@pytest.mark.engine
def test_runs_are_independent_in_threads(engine, bookworm_image):
    results = []

    def one(i):
        kwargs = _container_kwargs(f"test-thread-{i}", bookworm_image,
                                   ["python3", "-c", f"print({i})"])
        results.append(run_container(engine, kwargs, timeout=60))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(r.stdout) for r in results) == [0, 1, 2]
