"""Result files: atomic writes, corrupt and hostile files reported one line each."""

import json
import os

import pytest

from vdsomatrix import SCHEMA
from vdsomatrix.errors import BadInput
from vdsomatrix.matrix import Environment
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
    bad["calls"] = [object()]  # not serialisable: json.dump raises midway
    with pytest.raises(TypeError):
        write_result(bad, tmp_path)
    assert json.loads((tmp_path / "e1.json").read_text())["calls"][0]["call"] == "getppid"
    assert os.listdir(tmp_path) == ["e1.json"]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(schema="other/9"), "schema"),
        (lambda d: d.pop("calls"), "calls"),
        (lambda d: d["calls"].append("x"), "not an object"),
        (lambda d: d["calls"][0].update(path="teleport"), "unknown path"),
        (lambda d: d["calls"][0].update(status="fine"), "unknown status"),
        (lambda d: d["calls"][0].update(ns={"median": "fast"}), "numeric"),
        (lambda d: d["calls"][0].update(syscalls_per_call="one"), "not a number"),
        (lambda d: d.update(environment=[]), "environment.name"),
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
    env = Environment(name="k6.1", backend="qemu", suite="bookworm", kernel="bookworm")
    doc = failure_document(env, "timeout", ["no answer in 60 s"], ["[ 1.0] Kernel panic"])
    assert check_document(doc) == []
    assert doc["run"]["status"] == "timeout"
