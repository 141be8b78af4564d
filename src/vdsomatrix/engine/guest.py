"""One QEMU guest: booted from the command line a backend builds, read bounded, always reaped.

:class:`Guest` is the only place where guests are started and stopped (QemuBackend's probe
boots, accel.py's KVM try). Entering it makes a work folder named after this process
(workdirs.py) for the guest's files: ``console.log`` (the first serial port), ``result.log``
(the result port, read as it grows through frame.py's :class:`ResultPort`) and ``qemu.err``.
:meth:`Guest.run` starts QEMU in a session of its own that dies with vdsomatrix
(processes.spawn: its parent-death signal takes QEMU down even when vdsomatrix is SIGKILLed),
and stops it when its deadline passes, when the result is in and the guest does not power off by
itself, when a caller's condition is met, when it floods its console or result port, or when the
run is interrupted (processes.stopping raises Interrupted). Leaving the ``with`` block, whatever
happened (an exception, KeyboardInterrupt), kills QEMU's whole process group, closes the port
and removes the work folder. Folders of runs that died before they could do so are removed by
:func:`remove_leftovers` (QemuBackend.clean), once their owner is gone.

What a run leaves is a :class:`GuestRun`: the frame, QEMU's status, why it was stopped, and
only the end of the console (:data:`CONSOLE_KEEP`) and of QEMU's stderr: what a backend judges.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vdsomatrix import processes
from vdsomatrix.engine import workdirs
from vdsomatrix.engine.frame import PORT_LIMIT, Frame, ResultPort

WORK_PREFIX = "vdsomatrix-qemu-"  # every work folder of a guest (see workdirs)
POWER_OFF_GRACE = 5.0  # seconds a guest gets to power off after its result is complete
POLL_SECONDS = 0.2
# A real boot prints some 50 KB on its console; a guest printing this much is not one.
CONSOLE_LIMIT = 64 << 20
CONSOLE_KEEP = 1 << 20  # bytes of the console's end a run keeps (a panic message is in there)
STDERR_LINES = 5


@dataclass
class GuestRun:
    """What one guest did. ``ended``: "exited" (QEMU stopped by itself), "result" (the result
    was in and the guest did not power off), "until" (the caller's condition), "timeout",
    "flooded" (``flooded`` says what); ``returncode`` is QEMU's (negative when it was killed)."""

    frame: Frame
    returncode: int | None
    ended: str
    flooded: str = ""
    console: bytes = b""  # the last CONSOLE_KEEP bytes
    stderr_lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def timed_out(self) -> bool:
        return self.ended == "timeout"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Guest:
    """One guest's lifetime, as a context manager::

        with Guest(env.name) as guest:
            run = guest.run(qemu_argv(..., console=guest.console, result=guest.result), 240)

    ``folder``: where the work folder goes (default: the temp folder, where
    :func:`remove_leftovers` looks).
    """

    def __init__(self, name: str, *, folder: Path | None = None):
        self.name = name
        self._folder = folder
        self.work: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._port: ResultPort | None = None

    # -- the work folder's files (the backend names them in QEMU's command line)

    @property
    def console(self) -> Path:
        return self._own("console.log")

    @property
    def result(self) -> Path:
        return self._own("result.log")

    @property
    def stderr(self) -> Path:
        return self._own("qemu.err")

    def _own(self, name: str) -> Path:
        if self.work is None:
            raise RuntimeError("a Guest's files exist only inside its `with` block")
        return self.work / name

    def console_head(self, limit: int = 64 << 10) -> bytes:
        """The first bytes of the console (the kernel's banner is its first line)."""
        try:
            with open(self.console, "rb") as fh:
                return fh.read(limit)
        except OSError:
            return b""

    # -- the lifecycle

    def __enter__(self) -> Guest:
        self.work = workdirs.make_owned(f"{WORK_PREFIX}{self.name}-", self._folder)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Kill QEMU's process group, close the result port, remove the work folder."""
        try:
            if self._proc is not None:
                processes.kill_group(self._proc)
        finally:
            if self._port is not None:
                self._port.close()
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)

    def run(self, argv: list[str], timeout: float, *,
            until: Callable[[Guest], bool] | None = None) -> GuestRun:
        """Boot ``argv`` and watch it for up to ``timeout`` seconds from QEMU's start (see the
        module docstring for what stops it; ``until(guest)`` is checked at every look).
        QEMU is stopped before this returns. Raises Interrupted when the run is interrupted."""
        processes.check_stopping()
        self._port = ResultPort(self.result)
        with open(self.stderr, "wb") as err:
            self._proc = processes.spawn(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        started = time.monotonic()
        try:
            ended, flooded = self._watch(started, timeout, until)
        finally:
            proc, self._proc = self._proc, None  # reaped here: close() has no group to kill
            processes.kill_group(proc)
        return GuestRun(frame=self._port.frame(), returncode=proc.returncode, ended=ended,
                        flooded=flooded, console=workdirs.read_tail(self.console, CONSOLE_KEEP),
                        stderr_lines=workdirs.last_lines(self.stderr, STDERR_LINES),
                        seconds=time.monotonic() - started)

    def _watch(self, started: float, timeout: float,
               until: Callable[[Guest], bool] | None) -> tuple[str, str]:
        """Look at the guest every POLL_SECONDS until it is to be stopped: (ended, flooded)."""
        complete_at = None
        while True:
            processes.check_stopping()
            exited = self._proc.poll() is not None
            if until is not None and until(self):
                return "until", ""
            if complete_at is None and self._port.poll():
                complete_at = time.monotonic()
            if exited:
                return "exited", ""
            if complete_at is not None:
                if time.monotonic() - complete_at > POWER_OFF_GRACE:
                    return "result", ""  # the result is in; the guest just did not power off
            elif _size(self.console) > CONSOLE_LIMIT:
                return "flooded", f"{CONSOLE_LIMIT >> 20} MiB to its console"
            elif _size(self.result) > PORT_LIMIT:
                return "flooded", f"{PORT_LIMIT >> 20} MiB to its result port"
            if time.monotonic() - started > timeout:
                return "timeout", ""
            time.sleep(POLL_SECONDS)


def remove_leftovers(log=print, folder: Path | None = None) -> int:
    """Remove the work folders of guests whose run died before it could (see workdirs), in
    ``folder`` (default: the temp folder, where guests' work folders go); how many."""
    return workdirs.remove_dead(folder or Path(tempfile.gettempdir()), WORK_PREFIX, log)
