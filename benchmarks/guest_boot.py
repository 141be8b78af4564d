#!/usr/bin/env python3
"""Where a QEMU guest's seconds go: firmware, kernel boot, initramfs unpacking, /init, the probe.

Boots one or more QEMU environments of the matrix (default ``k6.1``) through the project's own
QemuBackend, the way the runner does (``prepare``, then ``run_probe`` with the backend's own
deadline), ``--boots`` times each, and breaks every boot down into phases. Two clocks are used:

- the host's: when QEMU was started and ended (around ``QemuBackend._boot``), and when each
  console line arrived in the console file (the file is polled every few milliseconds; the
  serial port is a file, so a line is there as soon as the guest wrote it);
- the guest kernel's printk timestamps (``[   1.234567]``; Debian's kernels are built with
  CONFIG_PRINTK_TIME=y, so no ``printk.time=1`` is needed), which say when the kernel printed a
  line, counted from its own start.

The kernel's start on the host clock is the smallest ``arrival - printk time`` over its lines
(lines replayed when the console registers arrive late; live ones arrive at once). Phases:

    firmware    QEMU start, SeaBIOS, the kernel and initramfs loaded, until the kernel's time 0
    kernel      kernel time 0 until "Run /init as init process" (printk time); of that:
      unpack      "Trying to unpack rootfs image as initramfs" until "Freeing initrd memory"
                  (printk times; the kernel unpacks while it goes on booting, and waits for the
                  unpacking before it starts /init)
    init        "Run /init" until /init says "running the probe" (mounts, reading the cmdline)
    probe       "running the probe" until "probe exited with status" (python3 start-up, the
                facts, the C helper's measurement: host arrival times; the probe records no
                duration of its own)
    rest        the result written to the result port, power-off and QEMU's exit
    backend     run_probe around the boot: the cached kernel and initramfs looked up, the
                accelerator decided, the work folder made and removed

    python benchmarks/guest_boot.py [ENV ...] [--boots 3] [--json FILE] [--arm64-cpu CPU]
    nox -s bench -- guest-boot [ENV ...] [--boots 3]

Run it on an otherwise idle machine: every guest is a busy host CPU.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tabulate import tabulate

from vdsomatrix.backends import qemu as qemu_backend
from vdsomatrix.backends.qemu import QemuBackend
from vdsomatrix.matrix import BackendName, load_matrix

POLL = 0.005  # seconds between two looks at the console file
_PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
# (phase marker, pattern) on the console: printk lines of the kernel, echo lines of /init.
UNPACK_START = re.compile(r"Trying to unpack rootfs image as initramfs|Unpacking initramfs")
UNPACK_END = re.compile(r"Freeing initrd memory")
RUN_INIT = re.compile(r"Run /init as init process")
PROBE_START = re.compile(r"vdsomatrix-init: running the probe")
PROBE_END = re.compile(r"vdsomatrix-init: probe exited with status")
PHASES = ("firmware", "kernel", "unpack", "init", "probe", "rest", "backend", "total")


class ConsoleWatcher(threading.Thread):
    """Tails a console file from another thread, stamping each line with its arrival time."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self._partial = b""

    def run(self) -> None:
        fh = None
        try:
            while True:
                stopping = self._halt.is_set()
                if fh is None:
                    try:
                        fh = open(self.path, "rb", buffering=0)
                    except OSError:
                        fh = None
                if fh is not None:
                    self._read(fh)
                if stopping:
                    break
                time.sleep(POLL)
        finally:
            if fh is not None:
                fh.close()
            if self._partial:
                self.lines.append((time.monotonic(), self._text(self._partial)))

    def _read(self, fh) -> None:
        while True:
            chunk = fh.read(1 << 16)
            if not chunk:
                return
            now = time.monotonic()
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            self.lines += [(now, self._text(line)) for line in complete]

    @staticmethod
    def _text(raw: bytes) -> str:
        return raw.decode("utf-8", "replace").replace("\r", "")

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class Boot:
    env: str
    status: str
    seconds: dict[str, float | None] = field(default_factory=dict)
    initrd_unpacked_kb: int | None = None
    errors: list[str] = field(default_factory=list)


class TimedQemu(QemuBackend):
    """The project's QemuBackend, with the console watched and QEMU's start and end stamped."""

    def _boot(self, vm, argv, deadline):
        watcher = ConsoleWatcher(vm.console)
        watcher.start()
        self.spawned = time.monotonic()
        try:
            return super()._boot(vm, argv, deadline)
        finally:
            self.ended = time.monotonic()
            watcher.stop()
            self.lines = watcher.lines


def _first(lines, pattern):
    return next(((t, text) for t, text in lines if pattern.search(text)), (None, None))


def breakdown(backend: TimedQemu, run_seconds: float) -> tuple[dict[str, float | None], int | None]:
    """Phase seconds of the boot just done (None where a marker was not seen)."""
    lines = backend.lines
    printk = []
    for arrived, text in lines:
        match = _PRINTK.match(text)
        if match:
            printk.append((arrived, float(match[1]), match[2]))
    if not printk:
        return {"total": run_seconds}, None
    kernel_zero = min(arrived - stamp for arrived, stamp, _ in printk)

    def kernel_time(pattern):
        return next((stamp for _, stamp, text in printk if pattern.search(text)), None)

    run_init = kernel_time(RUN_INIT)
    unpack_start, unpack_end = kernel_time(UNPACK_START), kernel_time(UNPACK_END)
    probe_start, _ = _first(lines, PROBE_START)
    probe_end, _ = _first(lines, PROBE_END)
    init_at = kernel_zero + run_init if run_init is not None else None
    freed = next((text for _, _, text in printk if UNPACK_END.search(text)), "")
    kb = re.search(r"(\d+)K", freed)

    def span(a, b):
        return None if a is None or b is None else b - a

    seconds = {
        "firmware": kernel_zero - backend.spawned,
        "kernel": run_init,
        "unpack": span(unpack_start, unpack_end),
        "init": span(init_at, probe_start),
        "probe": span(probe_start, probe_end),
        "rest": span(probe_end, backend.ended),
        "backend": run_seconds - (backend.ended - backend.spawned),
        "total": run_seconds,
    }
    return seconds, int(kb[1]) if kb else None


def compression(path: Path) -> str:
    """The initramfs's compression, by its magic number (what the kernel looks at too)."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, name in ((b"070701", "none (newc cpio)"), (b"\x1f\x8b", "gzip"),
                        (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x02\x21\x4c\x18", "lz4 (legacy)"),
                        (b"\xfd7zXZ", "xz"), (b"BZh", "bzip2"), (b"\x89LZO", "lzo"),
                        (b"\x5d\x00\x00", "lzma")):
        if head.startswith(magic):
            return name
    return f"unknown ({head.hex()})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="*", default=["k6.1"], help="qemu environments (k6.1)")
    parser.add_argument("--boots", type=int, default=3, help="boots per environment (3)")
    parser.add_argument("--json", type=Path, help="also write every boot's phases here")
    parser.add_argument("--console", type=Path, help="also write every boot's console lines, "
                        "each with its arrival (seconds after QEMU's start), here")
    parser.add_argument("--arm64-cpu", help="the -cpu of arm64 guests instead of the backend's "
                        f"({qemu_backend.ARM64_CPU}), e.g. `max` to see what pauth-impdef=on saves")
    parser.add_argument("-v", "--verbose", action="store_true", help="the backend's log lines")
    args = parser.parse_args()
    if args.arm64_cpu:
        qemu_backend.ARM64_CPU = args.arm64_cpu
    matrix = load_matrix()
    log = print if args.verbose else (lambda message: None)
    backend = TimedQemu()
    boots: list[Boot] = []
    files = {}
    consoles = []
    for name in args.envs:
        env = matrix.get(name)
        if env.backend != BackendName.QEMU:
            print(f"{name} is not a qemu environment", file=sys.stderr)
            return 2
        started = time.monotonic()
        backend.prepare(env, log=log)
        gate = backend.availability(env)
        if not gate.ok:
            print(f"{name}: unavailable: {gate.reason}", file=sys.stderr)
            return 1
        initrd = backend.initramfs.cached(env.userland, runtimes=env.runtimes)
        files[name] = {"initramfs": initrd.name, "bytes": initrd.stat().st_size,
                       "compression": compression(initrd),
                       "prepare_seconds": round(time.monotonic() - started, 2)}
        for i in range(args.boots):
            outcome = backend.run_probe(env, deadline=backend.deadline(env), log=log)
            seconds, kb = breakdown(backend, outcome.seconds)
            boot = Boot(name, outcome.status, {k: seconds.get(k) for k in PHASES}, kb,
                        outcome.errors)
            boots.append(boot)
            consoles.append({"env": name, "boot": i + 1, "lines": [
                [round(t - backend.spawned, 3), text] for t, text in backend.lines]})
            shown = " ".join(f"{k}={v:.2f}" for k, v in boot.seconds.items() if v is not None)
            print(f"{name} boot {i + 1}/{args.boots}: {outcome.status} {shown}", flush=True)
            if outcome.status != "ok":
                print("  " + "\n  ".join(outcome.errors + outcome.log_tail[-10:]))

    print()
    for name, info in files.items():
        print(f"{name}: initramfs {info['initramfs']}: {info['bytes'] / 1e6:.1f} MB, "
              f"compression {info['compression']} (prepare {info['prepare_seconds']} s)")
    rows = []
    for name in args.envs:
        mine = [b for b in boots if b.env == name and b.status == "ok"]
        row = [name, len(mine)]
        for phase in PHASES:
            values = [b.seconds[phase] for b in mine if b.seconds.get(phase) is not None]
            row.append(f"{statistics.median(values):.2f}" if values else "-")
        kbs = [b.initrd_unpacked_kb for b in mine if b.initrd_unpacked_kb]
        row.append(f"{kbs[0] / 1024:.0f}" if kbs else "-")
        rows.append(row)
    print("\nmedian seconds per phase (unpack is a part of kernel):")
    print(tabulate(rows, headers=["env", "ok boots", *PHASES, "initrd MiB"],
                   disable_numparse=True))
    if args.json:
        args.json.write_text(json.dumps({"initramfs": files, "boots": [asdict(b) for b in boots]},
                                        indent=1) + "\n")
    if args.console:
        args.console.write_text(json.dumps(consoles, indent=0) + "\n")
    return 0 if all(b.status == "ok" for b in boots) else 1


if __name__ == "__main__":
    sys.exit(main())
