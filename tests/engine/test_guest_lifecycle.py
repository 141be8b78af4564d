"""engine/guest.py's Guest with a stand-in for QEMU (a script that writes a console line and
hangs): whatever ends the run or the ``with`` block, QEMU is dead and the work folder gone."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from vdsomatrix import processes
from vdsomatrix.engine import guest as engine_guest
from vdsomatrix.engine import workdirs
from vdsomatrix.engine.guest import WORK_PREFIX, Guest, remove_leftovers

HANGING_QEMU = """#!{python}
import os, sys, time
argv = sys.argv[1:]
console = argv[argv.index("-serial") + 1][len("file:"):]
with open(os.environ["FAKE_QEMU_PIDFILE"], "w") as fh:
    fh.write(str(os.getpid()))
with open(console, "ab") as out:
    out.write(b"Linux version 6.1.0 (fake)\\r\\n")
time.sleep(600)
"""


@pytest.fixture
def hanging_qemu(tmp_path, monkeypatch):
    path = tmp_path / "qemu"
    path.write_text(HANGING_QEMU.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(tmp_path / "pid"))
    return path


@pytest.fixture
def interrupt():
    yield processes.stopping
    processes.stopping.clear()


def argv(qemu: Path, vm: Guest) -> list[str]:
    return [str(qemu), "-serial", f"file:{vm.console}", "-serial", f"file:{vm.result}"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def qemu_pid(tmp_path: Path) -> int:
    return int((tmp_path / "pid").read_text())


def test_a_deadline_kills_qemu_and_the_block_removes_the_work_folder(hanging_qemu, tmp_path):
    with Guest("deadline", folder=tmp_path) as vm:
        work = vm.work
        assert work.name.startswith(f"{WORK_PREFIX}deadline-{workdirs.owner_tag()}.")
        run = vm.run(argv(hanging_qemu, vm), 1.0)
        assert run.timed_out and run.frame.status == "missing"
        assert b"Linux version" in run.console and run.returncode == -15
        assert not alive(qemu_pid(tmp_path))
    assert not work.exists()


def test_until_stops_the_guest_as_soon_as_it_holds(hanging_qemu, tmp_path):
    with Guest("until", folder=tmp_path) as vm:
        run = vm.run(argv(hanging_qemu, vm), 30,
                     until=lambda g: b"Linux version" in g.console_head())
    assert run.ended == "until" and run.seconds < 10
    assert not alive(qemu_pid(tmp_path))


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_any_exception_while_qemu_runs_kills_it_and_removes_the_folder(hanging_qemu, tmp_path,
                                                                       error):
    def boom(vm: Guest) -> bool:
        if (tmp_path / "pid").exists():
            raise error()
        return False

    with pytest.raises(error), Guest("boom", folder=tmp_path) as vm:
        work = vm.work
        vm.run(argv(hanging_qemu, vm), 30, until=boom)
    assert not alive(qemu_pid(tmp_path)) and not work.exists()


def test_an_interrupt_kills_qemu_and_removes_the_folder(hanging_qemu, tmp_path, interrupt):
    pidfile = tmp_path / "pid"
    threading.Thread(target=lambda: (_wait_for(pidfile), interrupt.set()), daemon=True).start()
    with pytest.raises(processes.Interrupted), Guest("interrupted", folder=tmp_path) as vm:
        work = vm.work
        vm.run(argv(hanging_qemu, vm), 60)
    assert not alive(qemu_pid(tmp_path)) and not work.exists()


def test_an_interrupted_run_starts_no_qemu(hanging_qemu, tmp_path, interrupt):
    interrupt.set()
    with pytest.raises(processes.Interrupted), Guest("never", folder=tmp_path) as vm:
        vm.run(argv(hanging_qemu, vm), 60)
    assert not (tmp_path / "pid").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(WORK_PREFIX)]


def test_a_flooded_console_stops_the_guest(tmp_path, monkeypatch):
    flood = tmp_path / "qemu"
    flood.write_text(f"#!{sys.executable}\nimport sys, time\n"
                     "console = sys.argv[sys.argv.index('-serial') + 1][5:]\n"
                     "open(console, 'wb').write(b'x' * (3 << 20))\ntime.sleep(600)\n")
    flood.chmod(0o755)
    monkeypatch.setattr(engine_guest, "CONSOLE_LIMIT", 1 << 20)
    with Guest("flood", folder=tmp_path) as vm:
        run = vm.run(argv(flood, vm), 30)
    assert run.ended == "flooded" and run.flooded == "1 MiB to its console"
    assert len(run.console) == engine_guest.CONSOLE_KEEP  # only the end of it is kept


def test_the_files_exist_only_inside_the_block(tmp_path):
    vm = Guest("outside", folder=tmp_path)
    with pytest.raises(RuntimeError, match="with"):
        _ = vm.console


def test_leftovers_of_dead_runs_go_and_a_live_runs_stay(tmp_path):
    dead = tmp_path / f"{WORK_PREFIX}x-{_dead_pid()}.12345.abcdefgh"
    dead.mkdir()
    with Guest("live", folder=tmp_path) as vm:
        assert remove_leftovers(lambda line: None, folder=tmp_path) == 1
        assert vm.work.exists() and not dead.exists()


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _wait_for(path: Path, seconds: float = 10.0) -> None:
    import time

    end = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.05)
