"""Result documents of i386 environments (32-bit userlands in containers), for the report tests.

Shaped by the shared contract of issue 12: ``environment.arch``/``abi`` "i386", call rows whose
path may be ``kernel_vsyscall``, ``clock_gettime64(CLOCK_MONOTONIC)`` by vdso and int80, the
vsyscall rows unsupported, ``vdso.kernel_vsyscall_address``, the vDSO analysis's
``kernel_vsyscall`` and a libc census that counts ``call gs:[0x10]``. Built on the committed
bookworm-musl fixture (an x86_64 container of the same machine "vm").
"""

from __future__ import annotations

import copy

from fakes import report_fixtures

MACHINE = "vm"
CLOCKS = ("CLOCK_MONOTONIC", "CLOCK_REALTIME", "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME",
          "CLOCK_PROCESS_CPUTIME_ID")
NO_PERF = "perf_event_open: Operation not permitted"
# __kernel_vsyscall as the kernel patches it on Intel (sysenter) and AMD (syscall)
LIVE = {
    "sysenter": ["push ecx", "push edx", "push ebp", "mov ebp, esp", "sysenter", "int 0x80",
                 "pop ebp", "pop edx", "pop ecx", "ret"],
    "syscall": ["push ecx", "push edx", "push ebp", "mov ebp, esp", "syscall", "int 0x80",
                "pop ebp", "pop edx", "pop ecx", "ret"],
}
HOSTILE = ("<script>alert(1)</script> | [x](http://evil.example) # head *em* `c` "
           "\x1b[31m\u202e")


def row(call: str, path: str, median: float, syscalls: float = 1.0) -> dict:
    return {"call": call, "path": path, "status": "ok", "detail": f"{call} by {path}",
            "ns": {"min": median * 0.97, "median": median, "p90": median * 1.05},
            "batches": 31, "batch_calls": 4096, "faults_per_call": None,
            "faults_reason": NO_PERF, "syscalls_per_call": syscalls, "counted_calls": 64}


def calls(int80: float = 4812.0, sysenter: float = 4650.0, vdso: float = 31.0,
          libc_enters: str = "kernel_vsyscall") -> list[dict]:
    """The rows of a 32-bit probe: ``libc_enters`` is how its libc goes (glibc:
    kernel_vsyscall; a musl that uses int $0x80: int80)."""
    libc = sysenter if libc_enters == "kernel_vsyscall" else int80
    out = [row("getppid", "libc", libc + 3), row("getppid", "int80", int80),
           row("getppid", "kernel_vsyscall", sysenter)]
    for clock in CLOCKS:
        call = f"clock_gettime({clock})"
        out += [row(call, "libc", vdso + 4, 0.0), row(call, "vdso", vdso, 0.0),
                row(call, "int80", int80 + 60), row(call, "kernel_vsyscall", sysenter + 60)]
    out += [row("clock_gettime64(CLOCK_MONOTONIC)", "vdso", vdso - 1, 0.0),
            row("clock_gettime64(CLOCK_MONOTONIC)", "int80", int80 + 55)]
    for call in ("gettimeofday", "time", "clock_getres(CLOCK_MONOTONIC)"):
        out += [row(call, "libc", 25.0, 0.0), row(call, "vdso", 22.0, 0.0),
                row(call, "int80", int80 + 20)]
    out += [{"call": call, "path": "vsyscall", "status": "unsupported",
             "reason": "no vsyscall page for 32-bit processes"}
            for call in ("gettimeofday", "time", "getcpu")]
    return out


def i386_doc(name: str = "bookworm-i386", build: str = "dynamic", *,
             enters: str | None = "sysenter", libc: tuple[str, str, str] = (
                 "glibc", "2.36", "dynamic"), census: dict | None = None,
             machine: str = MACHINE, **speeds: float) -> dict:
    """An i386 environment's result, from the x86_64 bookworm-musl fixture's frame."""
    doc = copy.deepcopy(report_fixtures()[0])
    env = doc["environment"]
    env.update(name=name, build=build, arch="i386", abi="i386", suite=name.split("-")[0])
    env["libc"] = {"name": libc[0], "version": libc[1], "linkage": libc[2]}
    env["description"] = f"{name}: an i386 userland"
    doc["run"]["machine"] = machine
    doc["vdso"]["kernel_vsyscall_address"] = "0xf7f8e560"
    doc["vsyscall"] = {"mode": "none", "readable": False, "callable": False, "maps": None}
    doc["calls"] = calls(libc_enters="int80" if libc[0] == "musl" else "kernel_vsyscall",
                         **speeds)
    vdso = doc["analysis"]["vdso"]
    vdso.update(machine="EM_386", elf_class=32, build_id="3b2a1f00" + "0" * 32,
                sha256="ab" * 32)
    vdso["symbols"] = [
        {"name": n, "version": "LINUX_2.6", "version_hidden": False, "type": "FUNC",
         "section": ".text", "binding": "GLOBAL"}
        for n in ("__kernel_vsyscall", "__kernel_sigreturn", "__kernel_rt_sigreturn",
                  "__vdso_clock_gettime", "__vdso_clock_gettime64", "__vdso_gettimeofday",
                  "__vdso_time", "__vdso_clock_getres")]
    vdso["kernel_vsyscall"] = {"instructions": list(LIVE.get(enters or "", ["int 0x80", "ret"])),
                               "enters_with": enters}
    lib = doc["analysis"]["libc"]
    lib["census"] = census if census is not None else (
        {"int80": 2, "sysenter": 0, "syscall": 0, "kernel_vsyscall": 812, "functions": 640}
        if libc[0] == "glibc" else {"int80": 97, "sysenter": 0, "syscall": 0, "functions": 88})
    lib["sha256"] = (name * 8)[:64]
    lib.pop("entry_points", None)  # the analysis classifies x86_64 code only (this slice)
    return doc


def i386_docs() -> list[dict]:
    """The three builds of one suite on machine "vm"."""
    return [
        i386_doc("bookworm-i386", "dynamic"),
        i386_doc("bookworm-i386-static", "static", libc=("glibc", "2.36", "static"),
                 int80=4790.0),
        i386_doc("bookworm-i386-musl", "musl", libc=("musl", "1.2.3", "static"), int80=4830.0),
    ]


def hostile_doc() -> dict:
    """An i386 result whose analysis and probe said hostile things."""
    doc = i386_doc("bookworm-i386-hostile", enters=None)
    doc["vdso"]["kernel_vsyscall_address"] = HOSTILE
    doc["analysis"]["vdso"]["kernel_vsyscall"] = {
        "instructions": [HOSTILE, {"mnemonic": "<b>call</b>", "op_str": "[evil](javascript:x)"},
                         {"text": "# not a heading"}, 7, None, ["a"]],
        "enters_with": HOSTILE}
    doc["analysis"]["libc"]["census"] = {"int80": "<i>9</i>", "kernel_vsyscall": True,
                                         "sysenter": 10 ** 400}
    doc["calls"].append(row(HOSTILE, "kernel_vsyscall", 99.0))
    doc["calls"].append({**row("getppid", "int80", 1.0), "path": HOSTILE})
    return doc
