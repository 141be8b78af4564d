"""engine/container.py's Container against a fake engine: whatever happens inside its ``with``
block, the container is removed; copies out are bounded; every confinement keeps what every
container gets (no network, no new privileges, owner labels, a lifetime)."""

from __future__ import annotations

import io
import tarfile
import threading

import docker.errors
import pytest
from fakes import CONTAINER_ID, FakeClient

from vdsomatrix import processes
from vdsomatrix.engine import leftovers
from vdsomatrix.engine.client import LABEL
from vdsomatrix.engine.container import (
    PROBE,
    Confinement,
    Container,
    TooLarge,
    probe_confinement,
    run_container,
)


@pytest.fixture(autouse=True)
def not_stopping():
    """processes.stopping is process-wide: no test may leave it set for the next."""
    processes.stopping.clear()
    yield
    processes.stopping.clear()


def box(client, command=("true",), **kwargs) -> Container:
    return Container(client, "img", list(command), name="t", lifetime=30, **kwargs)


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyboardInterrupt(),
                                   processes.Interrupted("interrupted")])
def test_leaving_the_block_by_any_exception_removes_the_container(error):
    client = FakeClient()
    with pytest.raises(type(error)), box(client):
        raise error
    assert client.removed == [CONTAINER_ID]


def test_an_interrupt_during_the_run_kills_and_removes():
    client = FakeClient(hang=True)
    threading.Timer(0.3, processes.stopping.set).start()
    container = box(client, ["sleep", "600"])
    with pytest.raises(processes.Interrupted, match=container.name), container:
        container.run(600, stdout_cap=1000)
    assert ("kill", CONTAINER_ID) in client.events
    assert client.removed == [CONTAINER_ID]


def test_keyboard_interrupt_during_the_wait_removes():
    client = FakeClient(wait_error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), box(client) as container:
        container.run(60, stdout_cap=1000)
    assert client.removed == [CONTAINER_ID]


def test_interrupted_inside_create_is_removed_by_name():
    client = FakeClient(create_error=KeyboardInterrupt())
    container = box(client)
    with pytest.raises(KeyboardInterrupt), container:
        pass
    assert client.removed == [container.name]


def test_removed_once_even_when_removed_inside_the_block():
    client = FakeClient()
    with box(client) as container:
        container.remove()
    assert client.removed == [CONTAINER_ID]


def test_outside_its_block_a_container_cannot_be_used():
    container = box(FakeClient())
    with pytest.raises(RuntimeError, match="with"):
        container.run(1, stdout_cap=10)


def test_the_deadline_kills_and_the_run_says_so():
    client = FakeClient(hang=True)
    with box(client) as container:
        run = container.run(0.5, stdout_cap=1000)
    assert run.timed_out and run.exit_code is None and run.name == container.name
    assert ("kill", CONTAINER_ID) in client.events and client.removed == [CONTAINER_ID]


def test_an_engine_failure_is_an_error_of_the_run_and_kept_for_raising():
    fault = docker.errors.APIError("500 Server Error", explanation="no space left on device")
    client = FakeClient(wait_error=fault)
    with box(client) as container:
        run = container.run(60, stdout_cap=1000)
    assert run.exit_code is None and run.engine_error is fault
    assert run.errors == ["Docker engine error: no space left on device"]
    assert client.removed == [CONTAINER_ID]


def test_run_container_turns_a_refused_create_into_an_error_and_removes_by_name():
    client = FakeClient(create_error=docker.errors.APIError("500", explanation="no space"))
    run = run_container(client, "img", ["true"], name="t", lifetime=30, timeout=30,
                        stdout_cap=1000)
    assert run.errors == ["Docker engine error: no space"] and run.exit_code is None
    assert client.removed == [client.created[0]["name"]] == [run.name]


def test_without_a_cap_stdout_keeps_its_tail_and_the_watcher_sees_every_chunk():
    chunks = [(b"x" * 100_000, None), (b"y" * 100_000, b"warning\n")]
    client = FakeClient(chunks=chunks)
    seen = []
    with box(client) as container:
        run = container.run(30, stdout_cap=None, watch=lambda out, err: seen.append((out, err)))
    assert seen == chunks
    assert not run.overflow and run.stdout.endswith(b"y" * 1000) and run.stderr == b"warning\n"
    assert len(run.stdout) <= 2 * 64 * 1024


def _tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_files_go_in_and_come_out_bounded():
    client = FakeClient()
    archive = _tar("status", b"Package: libc6\n")
    client.archive_chunks = [archive[:100], archive[100:]]
    with box(client) as container:
        container.put_archive("/tmp", _tar("input", b"data"))
        assert container.get_archive("/var/lib/dpkg/status", 1 << 20) == archive
        with pytest.raises(TooLarge, match="larger than"):
            container.get_archive("/var/lib/dpkg/status", 50)
    assert ("put_archive", "/tmp", _tar("input", b"data")) in client.events
    assert client.removed == [CONTAINER_ID]


def test_an_export_is_bounded_and_stops_on_an_interrupt():
    client = FakeClient()
    client.archive_chunks = [b"a" * 10] * 5
    with box(client) as container:
        assert b"".join(container.export(50)) == b"a" * 50
        with pytest.raises(TooLarge):
            b"".join(container.export(49))
        processes.stopping.set()
        with pytest.raises(processes.Interrupted):
            next(container.export(50))
    assert client.removed == [CONTAINER_ID]


def test_every_confinement_keeps_what_every_container_gets():
    build = Confinement(user="0:0", read_only=False, drop_capabilities=False,
                        mem_limit="2g", pids_limit=4096, volumes=(("/host", "/mnt", "ro"),),
                        environment=())
    for confinement in (PROBE, probe_confinement(runtimes=True, cpu=1), build):
        kwargs = box(FakeClient(), confinement=confinement).kwargs
        assert kwargs["network_mode"] == "none"
        assert kwargs["security_opt"][0] == "no-new-privileges"
        assert kwargs["command"][:4] == ["sh", "-c", 'timeout -s KILL "$0" "$@"; exit $?',
                                         "30s"]
        labels = kwargs["labels"]
        assert labels[f"{LABEL}.kind"] == "probe-run" and labels[f"{LABEL}.env"] == "t"
        assert leftovers.owner_is_alive(labels) is True and leftovers.EXPIRES in labels
        assert kwargs["auto_remove"] is False
    assert kwargs["user"] == "0:0" and kwargs["read_only"] is False and "cap_drop" not in kwargs
    assert kwargs["volumes"] == {"/host": {"bind": "/mnt", "mode": "ro"}}
    assert "environment" not in kwargs and kwargs["mem_limit"] == "2g"
    probe = box(FakeClient(), confinement=probe_confinement(runtimes=True, cpu=1)).kwargs
    assert probe["user"] == "65534:65534" and probe["cap_drop"] == ["ALL"]
    assert probe["read_only"] is True and probe["cpuset_cpus"] == "1"
    assert probe["mem_limit"] == "1536m" and probe["pids_limit"] == 512


def test_an_export_container_has_the_export_kind():
    kwargs = box(FakeClient(), kind=leftovers.QEMU_EXPORT).kwargs
    assert kwargs["labels"][LABEL] == "qemu" and f"{LABEL}.kind" not in kwargs["labels"]
