"""The runner's promises, with recording backends: the schedule that keeps latencies honest, and
that no environment can take the matrix down or cost a finished result."""

from __future__ import annotations

import errno
import json
import threading

import pytest
from fakes import Timeline, docker_env, host_env, install, probe_document, qemu_env

from vdsomatrix import processes, runner
from vdsomatrix.backends.base import ProbeOutcome
from vdsomatrix.matrix import BackendName
from vdsomatrix.results import RunStatus, write_result


def quiet_progress(n: int) -> runner.Progress:
    class Sink:
        def write(self, text):
            pass

        def flush(self):
            pass

        def isatty(self):
            return False

    return runner.Progress(n, stream=Sink())


def run(envs, out, **kwargs):
    kwargs.setdefault("jobs", 2)
    return runner.run_environments(envs, out, progress=quiet_progress(len(envs)), **kwargs)


def stored(out, name) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_cpu_sharing_probes_never_overlap_and_guests_respect_jobs(monkeypatch, tmp_path):
    timeline = Timeline()
    install(monkeypatch, timeline, host={"seconds": 0.05}, docker={"seconds": 0.05},
            qemu={"seconds": 0.15})
    shared = [host_env(), docker_env("bookworm"), docker_env("bookworm-static")]
    guests = [qemu_env(f"k{i}") for i in range(5)]
    records = run(shared + guests, tmp_path, jobs=2)
    assert [r.status for r in records] == ["ok"] * 8
    names = [e.name for e in shared + guests]
    for a in [e.name for e in shared]:
        for b in names:
            if a != b:
                assert not timeline.overlapping(a, b), f"{a} overlapped {b}"
    assert timeline.most_at_once([g.name for g in guests]) == 2


def test_pinned_containers_run_side_by_side_but_never_beside_another_kind(monkeypatch,
                                                                         tmp_path):
    """Containers pinned to a CPU each run up to `jobs` at a time, apart from the host, from
    runtime containers (measured alone on every CPU) and from the guests."""
    from vdsomatrix.matrix import Build

    timeline = Timeline()
    fakes = install(monkeypatch, timeline, host={"seconds": 0.05}, docker={"seconds": 0.1},
                    qemu={"seconds": 0.1})
    docker = fakes[BackendName.DOCKER]
    monkeypatch.setattr(docker, "pinned", lambda env: env.build != Build.RUNTIMES, raising=False)
    alone = [host_env(), docker_env("bookworm-runtimes", Build.RUNTIMES)]
    containers = [docker_env(n) for n in ("bullseye", "bookworm", "trixie", "sid")]
    guests = [qemu_env(f"k{i}") for i in range(3)]
    records = run(alone + containers + guests, tmp_path, jobs=2)
    assert all(r.status == "ok" for r in records)
    everyone = [e.name for e in alone + containers + guests]
    for a in [e.name for e in alone]:
        assert not any(timeline.overlapping(a, b) for b in everyone if b != a), a
    for c in [e.name for e in containers]:
        assert not any(timeline.overlapping(c, g.name) for g in guests), c
    assert timeline.most_at_once([c.name for c in containers]) == 2
    notes = {stored(tmp_path, e.name)["run"]["concurrency"] for e in containers}
    assert notes == {"containers ran up to 2 at a time, each pinned to its own host CPU; no "
                     "other kind of environment and no build ran meanwhile"}


def test_preparing_starts_one_environment_of_each_suite_before_the_second_of_any():
    from vdsomatrix.matrix import Build, Environment, KernelSpec, Suite

    bullseye, bookworm = Suite("bullseye", "bullseye"), Suite("bookworm", "bookworm")

    def container(name, suite, build=Build.DYNAMIC):
        return Environment(name=name, backend=BackendName.DOCKER, userland=suite, build=build)

    envs = [host_env(), container("bullseye", bullseye),
            container("bullseye-static", bullseye, Build.STATIC), container("bookworm", bookworm),
            Environment(name="k6.1", backend=BackendName.QEMU, userland=bookworm,
                        kernel=KernelSpec("bookworm")),
            container("bookworm-musl", bookworm, Build.MUSL)]
    order = [e.name for e in runner.prepare_order(envs)]
    assert order == ["host", "bullseye", "bookworm", "bullseye-static", "k6.1", "bookworm-musl"]


def test_one_job_runs_guests_one_at_a_time(monkeypatch, tmp_path):
    timeline = Timeline()
    install(monkeypatch, timeline, qemu={"seconds": 0.05})
    guests = [qemu_env(f"k{i}") for i in range(3)]
    run(guests, tmp_path, jobs=1)
    assert timeline.most_at_once([g.name for g in guests]) == 1


def test_the_host_names_the_result_not_the_probe(monkeypatch, tmp_path):
    claimed = probe_document("pretending", environment={"name": "evil", "backend": "x",
                                                        "suite": "jessie"})
    install(monkeypatch, docker={"outcomes": {"bookworm": ProbeOutcome(
        claimed, identity={"image": {"tag": "t", "id": "sha256:1"}})}})
    run([docker_env("bookworm")], tmp_path)
    env = stored(tmp_path, "bookworm")["environment"]
    assert env["name"] == "bookworm" and env["probe_name"] == "evil"
    assert env["backend"] == "docker" and env["suite"] == "bookworm"
    assert env["image"]["id"] == "sha256:1"


def test_the_run_and_analysis_fields_are_the_hosts(monkeypatch, tmp_path):
    claimed = probe_document("host", run=[1], analysis="trust me")
    install(monkeypatch, host={"outcomes": {"host": ProbeOutcome(claimed)}})
    records = run([host_env()], tmp_path)
    assert records[0].status == "ok"
    doc = stored(tmp_path, "host")
    assert doc["run"]["status"] == "ok" and isinstance(doc["analysis"], dict)


@pytest.mark.parametrize("field,value", [
    ("environment", [1]), ("calls", {"a": 1}), ("vdso", None),
    ("method", {"batches": ["<script>"]}), ("errors", "x"), ("calls", [{"call": "x"}]),
])
def test_a_malformed_document_is_one_crashed_result_and_the_matrix_goes_on(
        monkeypatch, tmp_path, field, value):
    bad = probe_document("bookworm")
    bad[field] = value
    fakes = install(monkeypatch, docker={"outcomes": {"bookworm": ProbeOutcome(bad)}})
    records = run([docker_env("bookworm"), docker_env("sid"), qemu_env("k1")], tmp_path)
    assert [r.status for r in records] == ["crashed", "ok", "ok"]
    assert fakes["qemu"].probed == ["k1"]
    doc = stored(tmp_path, "bookworm")
    assert doc["run"]["status"] == "crashed"
    assert any("probe output unusable" in e for e in doc["errors"])


def test_an_analysis_exception_is_recorded_not_raised(monkeypatch, tmp_path):
    install(monkeypatch)

    def broken(doc):
        raise MemoryError("analysis blew up")

    monkeypatch.setattr("vdsomatrix.analysis.analyse_bounded", broken)
    records = run([host_env()], tmp_path)
    assert records[0].status == "ok"
    doc = stored(tmp_path, "host")
    assert doc["calls"] and any("analysis blew up" in e for e in doc["errors"])


def test_a_backend_that_raises_is_a_failed_result(monkeypatch, tmp_path):
    def explode(env):
        raise RuntimeError("engine on fire")

    install(monkeypatch, docker={"outcomes": {"bookworm": explode}})
    records = run([docker_env("bookworm"), docker_env("sid")], tmp_path)
    assert [r.status for r in records] == ["failed", "ok"]
    assert "engine on fire" in stored(tmp_path, "bookworm")["errors"][0]


def test_an_interrupted_environment_never_overwrites_a_result(monkeypatch, tmp_path):
    good = probe_document("k1")
    good["run"] = {"status": "ok"}
    write_result(good, tmp_path)
    before = (tmp_path / "k1.json").read_bytes()

    def interrupted(env):
        processes.stopping.set()  # as Ctrl-C does, while the guest is still booting
        return ProbeOutcome(None, "crashed", ["qemu died"])

    install(monkeypatch, qemu={"outcomes": {"k1": interrupted}})
    with pytest.raises(KeyboardInterrupt):
        run([qemu_env("k1")], tmp_path)
    assert (tmp_path / "k1.json").read_bytes() == before
    processes.stopping.clear()


def test_interrupt_in_a_shared_probe_keeps_earlier_results(monkeypatch, tmp_path):
    def ctrl_c(env):
        raise KeyboardInterrupt

    fakes = install(monkeypatch, docker={"outcomes": {"sid": ctrl_c}})
    with pytest.raises(KeyboardInterrupt):
        run([host_env(), docker_env("sid"), qemu_env("k1")], tmp_path)
    assert stored(tmp_path, "host")["run"]["status"] == "ok"
    assert not (tmp_path / "sid.json").exists()
    assert fakes["qemu"].probed == []
    assert processes.stopping.is_set()
    processes.stopping.clear()


def test_a_full_disk_fails_one_environment_and_keeps_its_old_file(monkeypatch, tmp_path):
    old = probe_document("bookworm")
    old["run"] = {"status": "ok"}
    write_result(old, tmp_path)
    before = (tmp_path / "bookworm.json").read_bytes()
    install(monkeypatch)
    real_write = runner.write_result

    def full_disk(doc, out_dir):
        if doc["environment"]["name"] == "bookworm":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(doc, out_dir)

    monkeypatch.setattr(runner, "write_result", full_disk)
    records = run([docker_env("bookworm"), docker_env("sid")], tmp_path)
    assert [r.status for r in records] == ["failed", "ok"]
    assert "No space left" in records[0].message and "unchanged" in records[0].message
    assert (tmp_path / "bookworm.json").read_bytes() == before


def test_unavailable_environments_are_skipped_not_failed(monkeypatch, tmp_path):
    install(monkeypatch, qemu={"unavailable": {"k1"}})
    records = run([host_env(), qemu_env("k1"), qemu_env("k2")], tmp_path)
    assert {r.env.name: r.status for r in records} == {
        "host": "ok", "k1": RunStatus.UNAVAILABLE, "k2": "ok"}
    assert not (tmp_path / "k1.json").exists()


def test_every_run_sweeps_leftovers_first(monkeypatch, tmp_path):
    fakes = install(monkeypatch)
    run([host_env(), qemu_env("k1")], tmp_path)
    assert fakes["host"].cleaned == 1 and fakes["qemu"].cleaned == 1
    assert fakes["docker"].cleaned == 0  # no environment of it in this run


def test_resume_reuses_complete_results_made_by_the_same_probe(monkeypatch, tmp_path):
    prints = {"host": "h1", "k1": "q1", "k2": "q2"}
    envs = [host_env(), qemu_env("k1"), qemu_env("k2")]
    install(monkeypatch, host={"fingerprints": prints}, qemu={"fingerprints": prints})
    run(envs, tmp_path)
    prints["k2"] = "a new kernel"
    fakes = install(monkeypatch, host={"fingerprints": prints}, qemu={"fingerprints": prints})
    records = run(envs, tmp_path, resume=True)
    assert [r.reused for r in records] == [True, True, False]
    assert fakes["qemu"].probed == ["k2"] and fakes["host"].probed == []
    assert stored(tmp_path, "k1")["run"]["reused"]


def test_resume_runs_again_what_failed(monkeypatch, tmp_path):
    prints = {"k1": "q1"}
    install(monkeypatch, qemu={"fingerprints": prints,
                               "outcomes": {"k1": ProbeOutcome(None, "timeout", ["slow"])}})
    run([qemu_env("k1")], tmp_path)
    fakes = install(monkeypatch, qemu={"fingerprints": prints})
    records = run([qemu_env("k1")], tmp_path, resume=True)
    assert not records[0].reused and fakes["qemu"].probed == ["k1"]


def test_results_are_written_as_each_environment_finishes(monkeypatch, tmp_path):
    seen: list[bool] = []

    def look(env):
        seen.append((tmp_path / "host.json").exists())
        return ProbeOutcome(probe_document(env.name))

    install(monkeypatch, qemu={"outcomes": {"k1": look}})
    run([host_env(), qemu_env("k1")], tmp_path)
    assert seen == [True]


def test_progress_lines_are_thread_safe(monkeypatch, tmp_path):
    install(monkeypatch, qemu={"seconds": 0.01})
    lines: list[str] = []
    lock = threading.Lock()

    class Sink:
        def write(self, text):
            with lock:
                lines.append(text)

        def flush(self):
            pass

        def isatty(self):
            return False

    guests = [qemu_env(f"k{i}") for i in range(6)]
    runner.run_environments(guests, tmp_path, jobs=2, progress=runner.Progress(6, Sink()))
    finished = [line for line in lines if "] k" in line]
    assert len(finished) == 6 and all(line.endswith("\n") for line in finished)
