"""How to read the tables: the glossary, with the terms the results call for (32-bit code,
several machines, language runtimes)."""

from __future__ import annotations

from vdsomatrix.report import i386
from vdsomatrix.report.guard import Guard
from vdsomatrix.report.model import Term
from vdsomatrix.report.result_set import ResultSet

ID = "glossary"
TITLE = "How to read the tables"
REPORT_FIELD = "glossary"  # a part of the page the Report holds itself, not a Section

GLOSSARY = [
    Term("vDSO", "a small shared library the kernel maps into every process (AT_SYSINFO_EHDR); "
                 "its clock functions answer in user space when the clock source allows it."),
    Term("vsyscall", "the older fixed page at 0xffffffffff600000 with gettimeofday, time and "
                     "getcpu. Modes: xonly (execute only: a call traps and the kernel emulates "
                     "it; the page cannot be read), emulate (readable, calls emulated), none "
                     "(no page: a legacy call is killed by SIGSEGV)."),
    Term("user", "the call made no system call and no trap: the vDSO or libc answered in user "
             "space."),
    Term("trap", "no system call, but one page-fault trap per call (how vsyscall emulation "
             "enters the kernel)."),
    Term("syscall", "one system call per call, as ptrace counts them (the way strace does); "
                    "\"N syscalls\" when there were several."),
    Term("no syscall", "no system call, but traps could not be counted (Docker's default "
                       "seccomp profile forbids perf_event_open)."),
    Term("?", "the environment allowed no counting at all."),
    Term("ns", "median nanoseconds per call; (a–b) after it: the min and p90 over the same "
               "batches."),
    Term("†", "a guest under TCG software emulation: its nanoseconds are emulated time, "
              "compare ratios only."),
    Term("—", "no value: the result lacks it (the notes or Problems say why where known)."),
    Term("MONOTONIC, REALTIME, …", "clock_gettime(CLOCK_MONOTONIC), clock_gettime("
                                   "CLOCK_REALTIME), … in column headers."),
]
MACHINE_TERM = Term("env @ machine", "an environment as measured on one machine (the report "
                                     "merges results of several).")


def included(results: ResultSet) -> bool:
    return True


def build(results: ResultSet, guard: Guard) -> list[Term]:
    glossary = GLOSSARY + (i386.TERMS if results.i386_envs else []) + (
        [MACHINE_TERM] if results.several else [])
    if results.runtime_envs:  # the runtimes' rows count system calls only
        glossary = [Term(t.term, t.definition.removesuffix(".") + "; the language runtimes' "
                         "traps are not counted at all.") if t.term == "no syscall" else t
                    for t in glossary]
    return glossary
