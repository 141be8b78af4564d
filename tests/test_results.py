"""Result files: atomic writes, corrupt and hostile files reported one line each."""

import json
import os

import pytest

from vdsomatrix import SCHEMA
from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import BackendName, Environment, KernelSpec, Suite
from vdsomatrix.results import (
    check_document,
    failure_document,
    load_results,
    parse_document,
    write_result,
)


def minimal(name="e1"):
    return {"schema": SCHEMA, "environment": {"name": name}, "vdso": {}, "vsyscall": {},
            "calls": [{"call": "getppid", "path": "syscall", "status": "ok",
                       "ns": {"min": 1, "median": 2, "p90": 3}, "syscalls_per_call": 1}],
            "errors": []}


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    path = write_result(minimal(), tmp_path)
    assert json.loads(path.read_text())["environment"]["name"] == "e1"
    assert os.listdir(tmp_path) == ["e1.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    write_result(minimal(), tmp_path)
    bad = minimal()
    bad["calls"] = [object()]  # not serialisable: json.dumps raises
    with pytest.raises(TypeError):
        write_result(bad, tmp_path)
    assert json.loads((tmp_path / "e1.json").read_text())["calls"][0]["call"] == "getppid"
    assert os.listdir(tmp_path) == ["e1.json"]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(schema="other/9"), "schema"),
        (lambda d: d.pop("calls"), "calls"),
        (lambda d: d["calls"].append("x"), "calls/1: 'x' is not of type 'object'"),
        (lambda d: d["calls"][0].update(path="teleport"), "calls/0/path"),
        (lambda d: d["calls"][0].update(status="fine"), "calls/0/status"),
        (lambda d: d["calls"][0].update(ns={"median": "fast"}), "calls/0/ns"),
        (lambda d: d["calls"][0].update(syscalls_per_call="one"), "calls/0/syscalls_per_call"),
        (lambda d: d.update(environment=[]), "environment"),
        (lambda d: d["environment"].update(libc=[]), "environment/libc"),
        (lambda d: d["environment"].update(cpu="x"), "environment/cpu"),
        (lambda d: d.update(method={"batches": [1]}), "method/batches"),
        (lambda d: d.update(method=[]), "method"),
    ],
)
def test_shape_problems(mutate, message):
    doc = minimal()
    mutate(doc)
    assert any(message in p for p in check_document(doc))


def test_load_reports_corrupt_files_and_keeps_good_ones(tmp_path):
    write_result(minimal("good"), tmp_path)
    (tmp_path / "truncated.json").write_text(json.dumps(minimal("t"))[:50])
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    loaded = load_results([tmp_path, tmp_path / "nowhere"])
    assert [d["environment"]["name"] for d in loaded.documents] == ["good"]
    assert len(loaded.problems) == 4
    assert any("truncated.json: not valid JSON" in p for p in loaded.problems)
    assert any("no such file" in p for p in loaded.problems)


def test_parse_document_message_says_what_to_do():
    with pytest.raises(BadInput, match="re-run its probe"):
        parse_document("{", "x.json")


def test_failure_document_is_a_valid_result():
    env = Environment(name="k6.1", backend=BackendName.QEMU, userland=Suite("bookworm", "bookworm"),
                      kernel=KernelSpec("bookworm"))
    doc = failure_document(env, "timeout", ["no answer in 60 s"], ["[ 1.0] Kernel panic"])
    assert check_document(doc) == []
    assert doc["run"]["status"] == "timeout"


@pytest.mark.parametrize("text,message", [
    ('{"schema": 1e400}', "out of range"),
    ('{"schema": Infinity}', "not a JSON number"),
    ('{"schema": NaN}', "not a JSON number"),
    ("[" * 300_000 + "]" * 300_000, "objects and arrays"),
    ("[" + "1," * 600_000 + "1]", "values"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ("[" * 5000 + "]" * 5000, "nested deeper"),
    ('{"a":' * 70 + "1" + "}" * 70, "nested deeper"),
])
def test_hostile_json_is_refused_before_it_costs_anything(text, message):
    with pytest.raises(BadInput, match=message):
        parse_document(text, "x.json")


def test_oversized_file_is_refused_unread(tmp_path):
    from vdsomatrix.results import MAX_DOCUMENT

    (tmp_path / "big.json").write_bytes(b" " * (MAX_DOCUMENT + 10))
    loaded = load_results([tmp_path])
    assert loaded.documents == [] and "MiB" in loaded.problems[0]


def test_results_are_written_compactly(tmp_path):
    # 19 KB of nesting became 9 MB with indent=1: compact output stays near the input's size.
    doc = minimal()
    doc["errors"] = []
    doc["extra"] = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]] * 500
    path = write_result(doc, tmp_path)
    assert path.stat().st_size < 2 * len(json.dumps(doc, separators=(",", ":")))


def test_nan_is_never_written(tmp_path):
    doc = minimal()
    doc["calls"][0]["ns"]["median"] = float("nan")
    with pytest.raises(ValueError):
        write_result(doc, tmp_path)
    assert not (tmp_path / "e1.json").exists()


def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    write_result(minimal(), tmp_path)
    before = (tmp_path / "e1.json").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    changed = minimal()
    changed["errors"] = ["newer"]
    with pytest.raises(OSError, match="No space"):
        write_result(changed, tmp_path)
    assert (tmp_path / "e1.json").read_bytes() == before
    assert os.listdir(tmp_path) == ["e1.json"]


def test_the_schema_is_published_and_valid():
    import jsonschema

    from vdsomatrix.results import schema

    jsonschema.validators.validator_for(schema()).check_schema(schema())
    assert schema()["properties"]["schema"]["const"] == SCHEMA


def _on(machine, started, name="host"):
    doc = minimal(name)
    doc["run"] = {"status": "ok", "started": started, "machine": {"id": machine}}
    return doc


def test_results_of_two_machines_are_both_kept(tmp_path):
    write_result(_on("amd", "2026-11-27T10:00:00+00:00"), tmp_path / "a")
    write_result(_on("intel", "2026-11-27T09:00:00+00:00"), tmp_path / "b")
    loaded = load_results([tmp_path / "a", tmp_path / "b"])
    assert sorted(d["run"]["machine"]["id"] for d in loaded.documents) == ["amd", "intel"]
    assert loaded.problems == []


def test_the_newer_result_of_one_machine_wins_and_says_so(tmp_path):
    write_result(_on("amd", "2026-11-27T10:00:00+00:00"), tmp_path / "new")
    write_result(_on("amd", "2026-11-26T10:00:00+00:00"), tmp_path / "old")
    loaded = load_results([tmp_path / "new", tmp_path / "old"])
    (doc,) = loaded.documents
    assert doc["run"]["started"].startswith("2026-11-27")
    assert "newer result is used" in loaded.problems[0] and "old" in loaded.problems[0]


def test_old_results_name_their_machine_by_host_name():
    from vdsomatrix.results import machine_id

    doc = minimal()
    doc["run"] = {"status": "ok", "machine": "vm"}
    assert check_document(doc) == [] and machine_id(doc) == "vm"


def test_the_schema_and_the_enums_name_the_same_values():
    # The published schema and the code's enums are two spellings of one vocabulary.
    from vdsomatrix.results import (
        CallPath,
        CallStatus,
        RunStatus,
        Runtime,
        RuntimeStatus,
        schema,
    )

    call = schema()["$defs"]["call"]["properties"]
    assert call["path"]["enum"] == [str(p) for p in CallPath]
    assert call["status"]["enum"] == [str(s) for s in CallStatus]
    row = schema()["$defs"]["runtime_row"]["properties"]
    assert row["status"]["enum"] == [str(s) for s in RuntimeStatus]
    assert row["runtime"]["enum"] == [str(r) for r in Runtime]
    stored = schema()["properties"]["run"]["properties"]["status"]["enum"]
    never_stored = {RunStatus.UNAVAILABLE, RunStatus.INTERRUPTED}
    assert stored == [str(s) for s in RunStatus if s not in never_stored]
