"""The docker backend.

Unit tests drive it with a fake Docker client through every error path. The tests marked
``engine`` use the real engine: they build the bookworm probe image (all three builds) and show,
from inside a container created exactly as the backend creates them, that the confinement is
real: no network but lo, a read-only root, no capabilities, no new privileges; and that the
measurement still works under it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time

import docker.errors
import pytest
import requests
from fakes import CONTAINER_ID, FakeClient, FakeImage

from vdsomatrix import processes
from vdsomatrix.backends.docker import DockerBackend
from vdsomatrix.engine import container, leftovers, seccomp
from vdsomatrix.engine.client import LABEL, NO_ENGINE, NOT_BUILT, docker_client
from vdsomatrix.engine.container import Container, container_kwargs, run_container
from vdsomatrix.errors import EnvironmentUnavailable
from vdsomatrix.images import probe_image as images
from vdsomatrix.matrix import BackendName, Build, Environment, Suite, load_matrix

BOOKWORM = Suite("bookworm", "bookworm")
ENV = Environment(name="bookworm-musl", backend=BackendName.DOCKER, userland=BOOKWORM,
                  build=Build.MUSL)
GOOD_DOC = {"schema": "vdsomatrix/1", "environment": {"name": "bookworm-musl"}, "calls": []}


@pytest.fixture(autouse=True)
def not_stopping():
    """processes.stopping is process-wide: no test may leave it set for the next."""
    processes.stopping.clear()
    yield
    processes.stopping.clear()


def backend_with(client) -> DockerBackend:
    return DockerBackend(client_factory=lambda timeout=None: client)


def built(**kwargs) -> FakeClient:
    return FakeClient(tags=[images.probe_image_tag(BOOKWORM)], **kwargs)


def kwargs_for(command, name="t", image="img", lifetime=60):
    """What Container creates (for tests that create one by hand, as a killed run leaves it)."""
    return container_kwargs(name, image, command, lifetime=lifetime)


def spec(command, name="t", image="img", lifetime=60):
    """The arguments of Container and run_container for ``command``."""
    return {"image": image, "command": command, "name": name, "lifetime": lifetime}


# ------------------------------------------------------------------------------- units -------


def test_no_engine_is_unavailable_with_what_to_do():
    def no_engine(timeout=None):
        raise EnvironmentUnavailable(NO_ENGINE.format(detail="connection refused"))

    backend = DockerBackend(client_factory=no_engine)
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
        docker_client(timeout=2)
    message = str(info.value)
    assert message.startswith("no Docker engine reachable (") and "\n" not in message
    assert "`dockerd &`" in message
    assert DockerBackend().can_start().ok is False


def test_a_userland_is_required():
    no_suite = Environment(name="odd", backend=BackendName.DOCKER)
    backend = backend_with(built())
    assert "needs a `suite`" in backend.availability(no_suite).reason
    assert backend.run_probe(no_suite, deadline=10).status == "failed"


def test_missing_image_says_how_to_build_it():
    client = FakeClient(tags=[])
    backend = backend_with(client)
    verdict = backend.availability(ENV)
    assert not verdict.ok and NOT_BUILT in verdict.reason
    outcome = backend.run_probe(ENV, deadline=10)
    assert outcome.status == "failed" and "vdsomatrix images" in outcome.errors[0]
    assert client.created == []  # nothing started, nothing pulled


def test_ok_run_records_the_image_and_uses_the_hardened_settings():
    client = built(stdout=json.dumps(GOOD_DOC).encode(), stderr=b"note: fine\n")
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "ok", outcome.errors
    assert outcome.document["environment"]["name"] == "bookworm-musl"
    assert outcome.identity["image"] == {"tag": images.probe_image_tag(BOOKWORM),
                                         "id": FakeImage("").id}
    assert "version" in outcome.identity["engine"]  # None: the fake engine has no version
    assert outcome.log_tail == ["note: fine"]
    (kwargs,) = client.created
    assert kwargs["image"] == FakeImage("").id
    # It kills itself a little after the run's deadline, even with nobody left to kill it.
    shell, flag, script, lifetime, *probe = kwargs["command"]
    assert [shell, flag] == ["sh", "-c"] and script.startswith('timeout -s KILL "$0" "$@"')
    assert 60 < int(lifetime.rstrip("s")) <= 60 + 20
    assert probe[:2] == ["python3", "/opt/vdsomatrix/probes/probe.py"]
    assert "/opt/vdsomatrix/bin/vdsoprobe-musl" in kwargs["command"]
    assert kwargs["user"] == "65534:65534"
    assert kwargs["network_mode"] == "none" and kwargs["read_only"] is True
    assert kwargs["cap_drop"] == ["ALL"] and "cap_add" not in kwargs
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["auto_remove"] is False and "privileged" not in kwargs
    labels = kwargs["labels"]
    assert labels[f"{LABEL}.kind"] == "probe-run"
    assert labels[leftovers.OWNER_PID] == str(os.getpid())
    assert labels[leftovers.OWNER_HOST] == socket.gethostname()
    assert leftovers.owner_is_alive(labels) is True
    assert client.removed == [CONTAINER_ID]


@pytest.mark.parametrize("env_fields,profile,flag", [
    ({}, "docker-default+perf_event_open", False),
    ({"time_namespace": True}, "docker-default+perf_event_open+unshare(NEWUSER|NEWTIME)", True),
    ({"seccomp": "allow-all"}, "allow-all (measurement only)", False),
])
def test_the_seccomp_profile_and_time_namespace_reach_the_container(
        tmp_path, monkeypatch, env_fields, profile, flag):
    base = tmp_path / "default.json"
    base.write_text(json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}))
    monkeypatch.setattr(seccomp, "BASE_PATH", base)
    monkeypatch.setattr(seccomp, "installed_versions", lambda: {
        seccomp.BASE_PACKAGE: {"version": "20.10.24+dfsg1-1", "source_version": ""}})
    client = built(stdout=json.dumps(GOOD_DOC).encode())
    client.version = lambda: {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}
    env = Environment(name="bookworm-musl", backend=BackendName.DOCKER, userland=BOOKWORM,
                      build=Build.MUSL, **env_fields)
    outcome = backend_with(client).run_probe(env, deadline=60)
    assert outcome.status == "ok", outcome.errors
    (kwargs,) = client.created
    identity = outcome.identity["seccomp"]
    assert identity["profile"] == profile and identity["reason"] is None
    assert outcome.identity["engine"] == {"version": "20.10.24+dfsg1", "api": "1.41"}
    no_new_privileges, inline = kwargs["security_opt"]
    assert no_new_privileges == "no-new-privileges" and inline.startswith("seccomp={")
    text = inline.removeprefix("seccomp=")
    assert identity["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert ("--time-namespace" in kwargs["command"]) is flag
    assert "cap_add" not in kwargs and "privileged" not in kwargs


def test_without_a_usable_base_containers_get_the_engines_profile_and_list_says_so(
        tmp_path, monkeypatch):
    monkeypatch.setattr(seccomp, "BASE_PATH", tmp_path / "default.json")
    monkeypatch.setattr(seccomp, "installed_versions", lambda: {})
    client = built(stdout=json.dumps(GOOD_DOC).encode())
    client.version = lambda: {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}
    backend = backend_with(client)
    outcome = backend.run_probe(ENV, deadline=60)
    assert outcome.status == "ok", outcome.errors
    assert client.created[0]["security_opt"] == ["no-new-privileges"]
    reason = outcome.identity["seccomp"]["reason"]
    assert outcome.identity["seccomp"]["profile"] == "engine default"
    assert "golang-github-docker-docker-dev" in reason and "not installed" in reason
    gate = backend.can_start()
    assert gate.ok and gate.note == reason


def test_timeout_kills_and_removes():
    client = built(hang=True)
    started = time.monotonic()
    outcome = backend_with(client).run_probe(ENV, deadline=1.0)
    assert outcome.status == "timeout" and outcome.document is None
    assert "did not finish within 1 s" in outcome.errors[0]
    assert time.monotonic() - started < 5
    assert ("kill", CONTAINER_ID) in client.events
    assert len(client.removed) == 1


def test_an_interrupt_stops_the_wait_kills_and_removes():
    client = built(hang=True)
    threading.Timer(0.3, processes.stopping.set).start()
    started = time.monotonic()
    with pytest.raises(processes.Interrupted):
        run_container(client, **spec(["sleep", "600"]), timeout=600, stdout_cap=1000)
    assert time.monotonic() - started < 1.5
    assert ("kill", CONTAINER_ID) in client.events
    assert client.removed == [CONTAINER_ID]


def test_engine_error_during_wait_is_a_failure_not_a_timeout():
    client = built(wait_error=docker.errors.APIError("500 Server Error: boom"))
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "failed" and "Docker engine error" in outcome.errors[0]
    assert len(client.removed) == 1


@pytest.mark.parametrize("fault", [
    # the engine's socket closed mid-run (dockerd killed or restarted)
    requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote "
                                        "end closed connection without response'))"),
    # the disk under the engine is full
    docker.errors.APIError("500 Server Error", explanation="write /var/lib/docker/x: no space "
                           "left on device\ncontainer state unknown"),
])
def test_an_engine_that_stops_answering_mid_run_is_a_clear_one_line_failure(fault):
    client = built(wait_error=fault)
    started = time.monotonic()
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert time.monotonic() - started < 5  # not held until the deadline
    assert outcome.status == "failed" and outcome.document is None
    (message,) = outcome.errors
    assert message.startswith("Docker engine error: ") and "\n" not in message
    if isinstance(fault, requests.exceptions.ConnectionError):
        assert "the engine stopped answering (" in message and "`docker info`" in message
    else:
        assert "no space left on device container state unknown" in message
    assert len(client.removed) == 1


def test_no_space_when_creating_is_a_clear_failure():
    client = built(create_error=docker.errors.APIError(
        "500", explanation="mkdir /var/lib/docker/overlay2/x: no space left on device"))
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "failed"
    assert outcome.errors == ["Docker engine error: mkdir /var/lib/docker/overlay2/x: no space "
                              "left on device"]


@pytest.mark.parametrize(
    "stdout, fragment",
    [
        (b"", "printed nothing"),
        (b'{"schema": "vdsomatrix/1", "calls": [', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"environment": 3}', "`environment` is not an object"),
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
    assert len(outcome.log_tail) == container.LOG_TAIL_LINES
    assert outcome.log_tail[-1] == "?[31mred?[0m \ufffd"  # no terminal escapes survive
    assert len(client.removed) == 1


def test_out_of_memory_is_named():
    client = built(exit_code=137, oom=True)
    outcome = backend_with(client).run_probe(ENV, deadline=60)
    assert outcome.status == "crashed"
    assert "SIGKILL" in outcome.errors[0] and "out of memory" in outcome.errors[0]


def test_stdout_over_the_cap_is_killed_and_reported():
    client = built(chunks=[(b"x" * 600, None), (b"y" * 600, None)], hang=True)
    run = run_container(client, **spec(["true"]), timeout=30, stdout_cap=1000)
    assert run.overflow and len(run.stdout) == 600
    assert ("kill", CONTAINER_ID) in client.events
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
    a = kwargs_for(["true"], name="k6.1 weird/name")["name"]
    b = kwargs_for(["true"], name="k6.1 weird/name")["name"]
    assert a != b and a.startswith("vdsomatrix-k6.1_weird_name-")


# ------------------------------------------------------------------------- leftovers ---------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _summary(cid: str, labels: dict, created: float | None = None) -> dict:
    return {"Id": cid, "Names": [f"/vdsomatrix-{cid}"], "Labels": labels,
            "Created": int(created if created is not None else time.time()),
            "State": "running"}


def test_owner_is_alive_tells_live_dead_reused_and_unknown():
    mine = leftovers.owner_labels()
    assert leftovers.owner_is_alive(mine) is True
    assert leftovers.owner_is_alive({**mine, leftovers.OWNER_PID: str(_dead_pid())}) is False
    # the same pid, but a different process (a pid reused after the owner died)
    assert leftovers.owner_is_alive({**mine, leftovers.OWNER_STARTED: "1"}) is False
    # another machine sharing the engine: cannot be told from here
    assert leftovers.owner_is_alive({**mine, leftovers.OWNER_HOST: "elsewhere"}) is None
    assert leftovers.owner_is_alive({**mine, leftovers.OWNER_BOOT: "another-boot"}) is None
    assert leftovers.owner_is_alive({}) is None


def test_clean_removes_only_containers_no_live_run_owns():
    now = time.time()
    mine = {**leftovers.PROBE_RUN, **leftovers.owner_labels(),
            leftovers.EXPIRES: str(int(now) + 300)}
    elsewhere = {**mine, leftovers.OWNER_HOST: "elsewhere"}
    listed = [
        _summary("live", mine),
        _summary("dead", {**mine, leftovers.OWNER_PID: str(_dead_pid())}),
        _summary("foreign-running", elsewhere),
        _summary("foreign-expired", {**elsewhere, leftovers.EXPIRES: str(int(now) - 120)}),
        _summary("export-young", dict(leftovers.QEMU_EXPORT), created=now - 60),
        _summary("export-old", dict(leftovers.QEMU_EXPORT), created=now - 7200),
        _summary("legacy-old", dict(leftovers.PROBE_RUN), created=now - 7200),
    ]
    client = FakeClient(listed=listed)
    messages = []
    backend_with(client).clean(log=messages.append)
    assert sorted(client.removed) == ["dead", "export-old", "foreign-expired", "legacy-old"]
    assert client.removed_images == []  # images only when asked
    assert any("vdsomatrix-dead" in m and "is gone" in m for m in messages)


def _image(iid: str, tags, suite: Suite | None = BOOKWORM, kind="probe", age=0.0) -> dict:
    labels = {f"{LABEL}.kind": kind}
    if suite is not None:
        labels |= {f"{LABEL}.suite": suite.name, f"{LABEL}.script": suite.script}
    return {"Id": iid, "RepoTags": list(tags) or None, "Labels": labels,
            "Created": int(time.time() - age)}


def test_clean_images_removes_old_tags_and_keeps_current_ones():
    probe, base = images.probe_image_tag(BOOKWORM), images.base_image_tag(BOOKWORM)
    old_probe = "vdsomatrix-probe:bookworm-000000000000"
    old_base = "vdsomatrix-base:bookworm-000000000000"
    image_list = [
        _image("sha256:b1", [old_base], kind="base"),
        _image("sha256:b2", [base], kind="base"),
        _image("sha256:p1", [probe, "mine/probe:copy"]),
        _image("sha256:p2", [old_probe]),
        _image("sha256:p3", ["vdsomatrix-probe:bookworm-111111111111"]),
        _image("sha256:dangling-old", [], age=7200),
        _image("sha256:dangling-young", ["<none>:<none>"], age=60),
    ]
    client = FakeClient(image_list=image_list, in_use={"vdsomatrix-probe:bookworm-111111111111"})
    messages = []
    backend_with(client).clean(images=True, log=messages.append)
    assert client.removed_images == [old_probe, old_base, "sha256:dangling-old"]
    assert any("kept vdsomatrix-probe:bookworm-111111111111" in m and "in use" in m
               for m in messages)


@pytest.mark.parametrize("known", [True, False])
def test_clean_images_removes_old_runtime_layers_only_when_their_current_tag_is_known(
        monkeypatch, known):
    from vdsomatrix.images import runtimes

    selection = runtimes.Selection(suite="bookworm", java_shipped=(17,), java_default=17,
                                   java_measured=(17,), node="nodejs", go="golang-go")
    monkeypatch.setattr(runtimes, "cached_selection", lambda suite: selection if known else None)
    current = runtimes.tag_for(BOOKWORM, selection, None)
    old = "vdsomatrix-runtimes:bookworm-000000000000"
    probe = images.probe_image_tag(BOOKWORM)
    image_list = [_image("sha256:r1", [current], kind="runtimes"),
                  _image("sha256:r2", [old], kind="runtimes"),
                  _image("sha256:p1", [probe])]
    client = FakeClient(image_list=image_list)
    backend_with(client).clean(images=True, log=lambda m: None)
    # Without the record of what the suite's index offered, no runtime tag can be called old.
    assert client.removed_images == ([old] if known else [])


# ------------------------------------------------------------------------------- engine ------

# Runs inside a probe container and reports what the confinement looks like from within.
INSIDE = r"""
import ctypes, errno, json, os, signal, subprocess, sys
out = {}
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    out[key] = status[key].strip()
out["uid"], out["gid"] = os.getuid(), os.getgid()
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
# ...and the probe's own reads: the vDSO image through /proc/self/mem, the vsyscall page (in a
# child: in xonly mode reading it is a SIGSEGV, which is a result, not a failure).
maps = [l.split() for l in open("/proc/self/maps")]
vdso = [l for l in maps if l[-1] == "[vdso]"]
start, end = (int(x, 16) for x in vdso[0][0].split("-"))
with open("/proc/self/mem", "rb", buffering=0) as mem:
    mem.seek(start)
    out["vdso_magic"] = mem.read(4).hex()
vsyscall = [l for l in maps if l[-1] == "[vsyscall]"]
out["vsyscall_perms"] = vsyscall[0][1] if vsyscall else None
pid = os.fork()
if pid == 0:
    ctypes.string_at(0xffffffffff600000, 1)
    os._exit(0)
_, st = os.waitpid(pid, 0)
out["vsyscall_read"] = "ok" if os.WIFEXITED(st) else signal.Signals(os.WTERMSIG(st)).name
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
CAP_NUMBERS = {"SYS_PTRACE": 19, "SYS_NICE": 23, "SYS_ADMIN": 21, "PERFMON": 38}


@pytest.fixture(scope="module")
def bookworm_image(engine):
    suite = load_matrix().suites["bookworm"]
    return images.ensure_probe_image(suite, client=engine)


def run_inside(engine, image, command, timeout=120):
    run = run_container(engine, **spec(command, name="test-hardening", image=image,
                                       lifetime=timeout + 10), timeout=timeout,
                        stdout_cap=1 << 20)
    assert run.exit_code == 0, (run.errors, run.stderr.decode(errors="replace")[-2000:])
    return json.loads(run.stdout), run


def gone(engine, name: str) -> bool:
    return engine.containers.list(all=True, sparse=True, filters={"name": name}) == []


@pytest.mark.engine
@pytest.mark.slow
def test_bookworm_image_has_all_three_builds(engine, bookworm_image):
    linked, _ = run_inside(engine, bookworm_image, ["python3", "-c", ELF_CHECK])
    assert linked == {"dynamic": True, "static": False, "musl": False}
    image = engine.images.get(bookworm_image)
    assert image.labels[f"{LABEL}.kind"] == "probe"
    assert image.labels[f"{LABEL}.suite"] == "bookworm"


@pytest.mark.engine
@pytest.mark.slow
def test_confinement_is_real_inside_a_probe_container(engine, bookworm_image):
    inside, run = run_inside(engine, bookworm_image, ["python3", "-c", INSIDE])
    assert inside["sys_class_net"] == ["lo"] and inside["proc_net_dev"] == ["lo"]
    assert inside["root_write"] == "EROFS"
    assert inside["tmp_exec"] == "EACCES"  # /tmp is noexec
    expected = 0
    for name in container.CAPABILITIES:  # none today
        expected |= 1 << CAP_NUMBERS[name]
    for key in ("CapEff", "CapBnd", "CapPrm"):
        assert int(inside[key], 16) == expected, (key, inside[key])
    assert inside["NoNewPrivs"] == "1"
    assert inside["Seccomp"] == "2"  # the engine's default filter is in force
    assert (inside["uid"], inside["gid"]) == (65534, 65534)  # nobody, not root
    # ...and still enough for the measurement:
    assert inside["pinned"] is True
    assert "ptrace_error" not in inside and inside["traced_exit"] == 0
    assert inside["syscall_stops"] >= 2
    assert inside["vdso_magic"] == "7f454c46"  # the vDSO's ELF header, read as nobody
    # The vsyscall page reads as the kernel's mode says (xonly, none: a fault), whoever asks.
    expected_read = "ok" if inside["vsyscall_perms"] == "r-xp" else "SIGSEGV"
    assert inside["vsyscall_read"] == expected_read, inside["vsyscall_perms"]
    assert gone(engine, run.name)


@pytest.mark.engine
def test_real_timeout_kills_and_removes(engine, bookworm_image):
    started = time.monotonic()
    run = run_container(engine, **spec(["sleep", "60"], name="test-timeout",
                                       image=bookworm_image), timeout=3, stdout_cap=1000)
    assert run.timed_out and run.exit_code is None
    assert time.monotonic() - started < 20
    assert gone(engine, run.name)


@pytest.mark.engine
def test_real_flood_is_cut_at_the_cap_at_once(engine, bookworm_image):
    """A kill waits for the container's output to be read: the reader must keep draining."""
    flood = ("import os, sys\nblock = os.urandom(1 << 20)\n"
             "while True: sys.stdout.buffer.write(block)")
    started = time.monotonic()
    run = run_container(engine, **spec(["python3", "-c", flood], name="test-flood",
                                       image=bookworm_image), timeout=60, stdout_cap=4 << 20)
    assert run.overflow and len(run.stdout) <= 4 << 20 and not run.timed_out
    assert run.exit_code == 128 + 9
    assert time.monotonic() - started < 10
    assert gone(engine, run.name)


@pytest.mark.engine
def test_real_interrupt_stops_the_container_at_once(engine, bookworm_image):
    box = Container(engine, **spec(["sleep", "60"], name="test-interrupt", image=bookworm_image))
    threading.Timer(1.5, processes.stopping.set).start()
    started = time.monotonic()
    with pytest.raises(processes.Interrupted), box:
        box.run(60, stdout_cap=1000)
    assert time.monotonic() - started < 10
    assert gone(engine, box.name)


@pytest.mark.engine
def test_a_container_nobody_waits_for_stops_by_itself(engine, bookworm_image):
    """What a SIGKILLed vdsomatrix leaves behind: a started probe container, never killed."""
    kwargs = kwargs_for(["sleep", "600"], name="test-orphan", image=bookworm_image, lifetime=2)
    orphan = engine.containers.create(**kwargs)
    try:
        orphan.start()
        status = orphan.wait(timeout=30)  # far less than the 600 s it asked for
        assert status["StatusCode"] == 128 + 9
    finally:
        orphan.remove(force=True)


def _built_suites(engine) -> list[str]:
    from vdsomatrix.matrix import load_matrix

    suites = load_matrix().suites.values()
    return [s.name for s in suites if images.image_status(s, client=engine)[0]]


@pytest.mark.engine
def test_the_lifetime_wrapper_passes_status_through_in_every_built_suite(engine):
    """GNU timeout 9.10 (forky, sid) refuses to run as PID 1: the wrapper must work in every
    userland of the matrix, not only the one the other tests use."""
    suites = _built_suites(engine)
    if not suites:
        pytest.skip("no probe image built")
    from vdsomatrix.matrix import load_matrix

    for name in suites:
        tag = images.probe_image_tag(load_matrix().suites[name])
        for command, expected in ((["python3", "-c", "print(1)"], 0),
                                  (["sh", "-c", "exit 3"], 3),
                                  (["sh", "-c", "kill -SEGV $$"], 128 + 11)):
            run = run_container(engine, **spec(command, name=f"test-{name}", image=tag),
                                timeout=60, stdout_cap=1000)
            assert run.exit_code == expected, (name, command, run.stderr[-300:])


@pytest.mark.engine
def test_clean_removes_what_a_dead_run_left_and_keeps_a_live_runs(engine, bookworm_image):
    dead = kwargs_for(["sleep", "60"], name="test-dead-owner", image=bookworm_image)
    dead["labels"][leftovers.OWNER_PID] = str(_dead_pid())
    live = kwargs_for(["sleep", "60"], name="test-live-owner", image=bookworm_image)
    created = [engine.containers.create(**kw) for kw in (dead, live)]
    try:
        for c in created:
            c.start()
        messages = []
        DockerBackend().clean(log=messages.append)
        assert gone(engine, dead["name"])
        assert not gone(engine, live["name"])
        assert any(dead["name"] in m for m in messages)
    finally:
        for c in created:
            c.remove(force=True) if not gone(engine, c.name) else None


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize(
    "name,libc,linkage",
    [("bookworm", "glibc", "dynamic"), ("bookworm-static", "glibc", "static"),
     ("bookworm-musl", "musl", "static")],
)
def test_real_probe_run_in_bookworm(engine, bookworm_image, name, libc, linkage, monkeypatch):
    created = []

    def spy(*args, **kwargs):
        created.append(container_kwargs(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr("vdsomatrix.engine.container.container_kwargs", spy)
    backend = DockerBackend()
    env = load_matrix().environments[name]
    assert backend.availability(env).ok
    outcome = backend.run_probe(env, deadline=300)
    assert outcome.status == "ok", (outcome.errors, outcome.log_tail)
    assert created[0]["user"] == "65534:65534"  # it ran as nobody
    assert outcome.identity["image"]["tag"] == bookworm_image
    doc = outcome.document
    assert doc["environment"]["userland"]["codename"] == "bookworm"
    # What the helper found out about itself (AT_BASE, its own libc), not what we built.
    assert doc["environment"]["libc"]["name"] == libc
    assert doc["environment"]["libc"]["linkage"] == linkage
    assert doc["environment"]["libc"]["version"]
    assert doc["errors"] == []
    # The reads that might need privileges: the vDSO image, the vsyscall page.
    assert doc["vdso"]["present"] and doc["vdso"]["image"]
    assert isinstance(doc["vsyscall"]["readable"], bool)
    rows = [row for row in doc["calls"] if row.get("status") == "ok"]
    assert rows, doc["calls"]
    # ptrace works under the confinement: every raw system call counts exactly one.
    raw = [row for row in rows if row["path"] == "syscall"]
    assert raw
    for row in raw:
        assert row["syscalls_per_call"] == 1, row


@pytest.mark.engine
def test_runs_are_independent_in_threads(engine, bookworm_image):
    results = []

    def one(i):
        args = spec(["python3", "-c", f"print({i})"], name=f"test-thread-{i}",
                    image=bookworm_image)
        results.append(run_container(engine, **args, timeout=60, stdout_cap=1000))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(r.stdout) for r in results) == [0, 1, 2]
