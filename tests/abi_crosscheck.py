"""A second, independent checker of the error paths of issue 16, for the cross-check test.

It shares nothing with the probe (probes/): Python ctypes instead of C, libc's own syscall()
for the system call, and the vDSO found by reading AT_SYSINFO_EHDR from /proc/self/auxv and its
dynamic symbols with pyelftools. Each call with bad input runs in a forked child, so that a crash
is an answer. It prints one JSON object on stdout:
- "error_paths": [{"call", "input", "path", "status": "returned"|"crashed"|"not_offered", "ret",
  "errno", "signal"}, ...], errno as a name (for the vDSO, the name of its negative return value);
- "clocks": {clock name: verdict} for every clock id: "not_offered" when the system call rejects
  it, else "pass" or "fail" from readings system call, vDSO, system call, ... of that clock (a
  monotonic one never earlier than the reading before; a settable one never earlier than the
  system call before it by more than its resolution).

Run: python3 tests/abi_crosscheck.py   (x86_64 or aarch64 Linux, glibc)
"""

from __future__ import annotations

import ctypes
import errno
import io
import json
import os
import platform
import signal
import struct
import sys

from elftools.elf.elffile import ELFFile

AT_SYSINFO_EHDR = 33
PROT_READ, PROT_WRITE = 1, 2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
PAGE = os.sysconf("SC_PAGE_SIZE")
# The kernel's system call numbers (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h); aarch64 has no time system call.
NUMBERS = {
    "x86_64": {"clock_gettime": 228, "clock_getres": 229, "gettimeofday": 96, "time": 201,
               "getcpu": 309},
    "aarch64": {"clock_gettime": 113, "clock_getres": 114, "gettimeofday": 169, "time": None,
                "getcpu": 168},
}
VDSO_NAMES = {
    "x86_64": {"clock_gettime": "__vdso_clock_gettime", "clock_getres": "__vdso_clock_getres",
               "gettimeofday": "__vdso_gettimeofday", "time": "__vdso_time",
               "getcpu": "__vdso_getcpu"},
    "aarch64": {"clock_gettime": "__kernel_clock_gettime",
                "clock_getres": "__kernel_clock_getres",
                "gettimeofday": "__kernel_gettimeofday"},
}
CASES = {
    "clock_gettime": ["invalid clock id", "clock id 16 (CLOCK_AUX)", "NULL result pointer",
                      "unmapped result pointer", "read-only result pointer",
                      "another process's CPU-time clock"],
    "gettimeofday": ["NULL result pointer", "unmapped result pointer", "read-only result pointer"],
    "time": ["unmapped result pointer", "read-only result pointer"],
    "getcpu": ["NULL result pointer", "unmapped result pointer", "read-only result pointer"],
}
CASES["clock_getres"] = CASES["clock_gettime"]
CLOCK_MONOTONIC = 1
VALID = ctypes.create_string_buffer(64)  # a result buffer that stays alive

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def vdso_functions() -> dict[str, int]:
    """Name -> address of every function the vDSO exports (empty without a vDSO)."""
    raw = open("/proc/self/auxv", "rb").read()
    base = 0
    word = struct.calcsize("P")
    for off in range(0, len(raw) - 2 * word + 1, 2 * word):
        key, value = struct.unpack_from("QQ" if word == 8 else "II", raw, off)
        if key == AT_SYSINFO_EHDR:
            base = value
    if not base:
        return {}
    size = next(int(end, 16) - int(start, 16) for line in open("/proc/self/maps")
                if line.rstrip().endswith("[vdso]")
                for start, end in [line.split()[0].split("-")])
    elf = ELFFile(io.BytesIO(ctypes.string_at(base, size)))
    first_load = min(s["p_vaddr"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
    return {sym.name: base + sym["st_value"] - first_load
            for sym in elf.get_section_by_name(".dynsym").iter_symbols()
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] != "SHN_UNDEF"}


def pointer(bad: str) -> int | None:
    if bad == "NULL result pointer":
        return None
    if bad == "unmapped result pointer":
        addr = libc.mmap(None, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        libc.munmap(addr, PAGE)
        return addr
    if bad == "read-only result pointer":
        return libc.mmap(None, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    return ctypes.addressof(VALID)


def clock_id(bad: str) -> int:
    if bad == "invalid clock id":
        return 100
    if bad == "clock id 16 (CLOCK_AUX)":
        return 16
    if bad == "another process's CPU-time clock":  # (~pid << 3) | CPUCLOCK_SCHED, as an int
        return ctypes.c_int(((~os.getppid()) << 3) | 2).value
    return CLOCK_MONOTONIC


def call(name: str, path: str, bad: str, vdso: dict[str, int]) -> int:
    p, clk = ctypes.c_void_p(pointer(bad)), clock_id(bad)
    c_int, c_long, vp = ctypes.c_int, ctypes.c_long, ctypes.c_void_p
    if path == "syscall":
        nr = NUMBERS[platform.machine()][name]
        args = {"clock_gettime": (clk, p), "clock_getres": (clk, p), "gettimeofday": (p, None),
                "time": (p,), "getcpu": (p, None, None)}[name]
        return libc.syscall(c_long(nr), *[a if isinstance(a, vp) or a is None else c_long(a)
                                          for a in args])
    if path == "vdso":
        addr = vdso[VDSO_NAMES[platform.machine()][name]]
        if name in ("clock_gettime", "clock_getres"):
            return ctypes.CFUNCTYPE(c_int, c_int, vp)(addr)(clk, p)
        if name == "gettimeofday":
            return ctypes.CFUNCTYPE(c_int, vp, vp)(addr)(p, None)
        if name == "time":
            return ctypes.CFUNCTYPE(c_long, vp)(addr)(p)
        return ctypes.CFUNCTYPE(c_long, vp, vp, vp)(addr)(p, None, None)
    fn = getattr(libc, "getcpu" if name == "getcpu" else name)
    if name in ("clock_gettime", "clock_getres"):
        fn.argtypes, fn.restype = [c_int, vp], c_int
        return fn(clk, p)
    fn.restype = c_long if name == "time" else c_int
    return fn(p, None) if name in ("gettimeofday", "getcpu") else fn(p)


def run_case(name: str, bad: str, path: str, vdso: dict[str, int]) -> dict:
    row = {"call": name, "input": bad, "path": path}
    machine = platform.machine()
    if (path == "vdso" and VDSO_NAMES.get(machine, {}).get(name) not in vdso) or (
            path == "syscall" and NUMBERS.get(machine, {}).get(name) is None) or (
            path == "libc" and name == "getcpu" and not hasattr(libc, "getcpu")):
        return {**row, "status": "not_offered"}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one call, its answer down the pipe
        os.close(read_end)
        signal.alarm(5)
        ctypes.set_errno(0)
        ret = call(name, path, bad, vdso)
        os.write(write_end, json.dumps([ret, ctypes.get_errno()]).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        answer = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {**row, "status": "crashed", "signal": signal.Signals(os.WTERMSIG(status)).name}
    ret, err = json.loads(answer)
    code = (-ret if -4096 < ret < 0 else 0) if path == "vdso" else (err if ret == -1 else 0)
    return {**row, "status": "returned", "ret": ret,
            "errno": errno.errorcode.get(code, f"E{code}") if code else None}


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


# id, name, monotonic (never set)
CLOCKS = [(0, "CLOCK_REALTIME", False), (1, "CLOCK_MONOTONIC", True),
          (2, "CLOCK_PROCESS_CPUTIME_ID", True), (3, "CLOCK_THREAD_CPUTIME_ID", True),
          (4, "CLOCK_MONOTONIC_RAW", True), (5, "CLOCK_REALTIME_COARSE", False),
          (6, "CLOCK_MONOTONIC_COARSE", True), (7, "CLOCK_BOOTTIME", True),
          (8, "CLOCK_REALTIME_ALARM", False), (9, "CLOCK_BOOTTIME_ALARM", True),
          (11, "CLOCK_TAI", False)]
READINGS = 2000


def clock_verdict(clk: int, monotonic: bool, vdso: dict[str, int]) -> str:
    numbers = NUMBERS[platform.machine()]
    ts = Timespec()

    def syscall_ns(nr: int) -> int | None:
        if libc.syscall(ctypes.c_long(nr), ctypes.c_long(clk), ctypes.byref(ts)) != 0:
            return None
        return ts.sec * 10**9 + ts.nsec

    if syscall_ns(numbers["clock_gettime"]) is None:
        return "not_offered"
    res = syscall_ns(numbers["clock_getres"]) or 0
    name = VDSO_NAMES[platform.machine()]["clock_gettime"]
    if name not in vdso:
        return "pass"
    fast = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)(vdso[name])
    slack = 0 if monotonic else res
    before = syscall_ns(numbers["clock_gettime"])
    for _ in range(READINGS):
        if fast(clk, ctypes.byref(ts)) != 0:
            return "fail"
        now = ts.sec * 10**9 + ts.nsec
        after = syscall_ns(numbers["clock_gettime"])
        if after is None or now < before - slack or after < now - slack:
            return "fail"
        before = after
    return "pass"


def main() -> int:
    vdso = vdso_functions()
    rows = [run_case(name, bad, path, vdso) for name, inputs in CASES.items() for bad in inputs
            for path in ("syscall", "vdso", "libc")]
    clocks = {name: clock_verdict(clk, mono, vdso) for clk, name, mono in CLOCKS}
    json.dump({"error_paths": rows, "clocks": clocks}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
