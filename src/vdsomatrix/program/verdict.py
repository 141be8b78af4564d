"""What happened when a user's program ran in one environment, judged from what was seen.

The runner reports a :class:`RunOutcome` (exit status or terminating signal, the faulting
address when a tracer or launcher saw it, whether the deadline or the OOM killer ended it, the
errno of a failed execve, the tail of stderr); :func:`judge` turns it into one
:class:`Verdict` with a one-line cause. stderr is the program's (and its loader's) output:
hostile, so it is bounded and made inert before anything reads it, and a loader message only
counts when the process also exited with a failure status, never when it was signalled.
"""

from __future__ import annotations

import errno
import re
import signal
from dataclasses import asdict, dataclass, field
from typing import Any

from vdsomatrix.text import one_line, plain

VERDICT_KINDS = ("passed", "failed", "crashed", "cannot-execute", "loader-error", "timed-out",
                 "killed-for-memory")
MAX_STDERR_BYTES = 16 << 10  # of the tail: a loader's message is under 300 bytes
MAX_STDERR_LINES = 20
MAX_LINE = 300
VSYSCALL_PAGE = range(0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000)
VSYSCALL_NAMES = {0x000: "gettimeofday", 0x400: "time", 0x800: "getcpu"}
NULL_PAGE = range(0, 0x1000)
# The dynamic loaders' own words. glibc (elf/dl-load.c, dl-version.c, dl-lookup.c):
GLIBC_MISSING_LIBRARY = re.compile(
    r"error while loading shared libraries: (?P<library>[^:]{1,255}): "
    r"cannot open shared object file")
GLIBC_MISSING_VERSION = re.compile(
    r"(?:(?P<library>[^\s:]{1,255}): )?version `(?P<version>[^']{1,128})' not found "
    r"\(required by (?P<by>[^)]{1,255})\)")
GLIBC_MISSING_SYMBOL = re.compile(
    r"symbol lookup error: (?P<by>[^:]{1,255}): undefined symbol: (?P<symbol>\S{1,255})")
GLIBC_OTHER = re.compile(r"error while loading shared libraries: (?P<detail>.{1,255})")
# musl (ldso/dynlink.c):
MUSL_MISSING_LIBRARY = re.compile(
    r"Error loading shared library (?P<library>\S{1,255}): (?P<detail>.{1,200}?) "
    r"\(needed by (?P<by>[^)]{1,255})\)")
MUSL_MISSING_SYMBOL = re.compile(
    r"Error relocating (?P<by>[^:]{1,255}): (?P<symbol>[^:]{1,255}): symbol not found")
# A container runtime's or a shell's report of a failed execve, for a runner without its own
# launcher. Seen on Docker 20.10 (runc) and in dash: "exec ./prog: exec format error",
# "exec ./prog: no such file or directory", "sh: 1: ./prog: not found",
# "sh: 1: ./prog: Exec format error".
EXEC_FAILURE = (
    (re.compile(r"^exec \S.*: exec format error$"), "ENOEXEC"),
    (re.compile(r"^exec \S.*: no such file or directory$"), "ENOENT"),
    (re.compile(r"^exec \S.*: permission denied$"), "EACCES"),
    (re.compile(r"^\S+: \d+: \S.*: Exec format error$"), "ENOEXEC"),
    (re.compile(r"^\S+: \d+: \S.*: not found$"), "ENOENT"),
    (re.compile(r"^\S+: \d+: \S.*: Permission denied$"), "EACCES"),
)


@dataclass(frozen=True)
class RunOutcome:
    """What the runner saw of one run. ``signal`` is the terminating signal (number or name),
    never guessed from an exit status of 128+n; ``fault_address`` is the fatal signal's
    si_addr; ``exec_errno`` the errno of a failed execve (number or name)."""

    exit_status: int | None = None
    signal: int | str | None = None
    fault_address: int | None = None
    fault_ip: int | None = None  # the instruction pointer at the fault: a call faults at itself
    timed_out: bool = False
    oom_killed: bool = False
    exec_errno: int | str | None = None
    stderr: bytes | str = b""
    expected_exit: int = 0
    seconds: float | None = None


@dataclass(frozen=True)
class Verdict:
    kind: str  # one of VERDICT_KINDS
    cause: str  # one line, inert
    exit_status: int | None = None
    signal: str | None = None  # "SIGSEGV"
    fault_address: str | None = None  # "0xffffffffff600400"
    missing: str | None = None  # the library, symbol version, symbol or interpreter missing
    exec_errno: str | None = None  # "ENOENT"
    stderr_tail: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stderr_tail"] = list(self.stderr_tail)
        return out


def stderr_tail(stderr: bytes | str) -> tuple[str, ...]:
    """The last lines of stderr, bounded in bytes, lines and line length, control characters
    made inert."""
    raw = stderr if isinstance(stderr, bytes) else str(stderr).encode("utf-8", "replace")
    text = raw[-MAX_STDERR_BYTES:].decode("utf-8", "replace")
    lines = [plain(line, "?") for line in text.splitlines() if line.strip()]
    return tuple(one_line(line, MAX_LINE) for line in lines[-MAX_STDERR_LINES:])


def signal_name(value: int | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = one_line(value, 16).upper()
        if text.isdigit():
            return signal_name(int(text))
        return text if text.startswith("SIG") else f"SIG{text}"
    try:
        return signal.Signals(abs(int(value))).name
    except ValueError:
        return f"signal {abs(int(value))}"


def errno_name(value: int | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return one_line(value, 16).upper()
    return errno.errorcode.get(int(value), f"errno {int(value)}")


def _loader_messages() -> tuple[tuple[re.Pattern[str], Any], ...]:
    """(pattern, match -> (missing, cause)), the first cause first: musl goes on after a missing
    library and also reports every symbol it would have found there."""
    return (
        (GLIBC_MISSING_LIBRARY, lambda m: (
            m["library"], f"missing library {m['library']} (cannot open shared object)")),
        (MUSL_MISSING_LIBRARY, lambda m: (
            m["library"], f"missing library {m['library']}: {m['detail']} (musl's loader, "
                          f"needed by {m['by']})")),
        (GLIBC_MISSING_VERSION, lambda m: (
            m["version"], f"symbol version {m['version']} not found"
                          f"{' in ' + m['library'] if m['library'] else ''} "
                          f"(required by {m['by']})")),
        (GLIBC_MISSING_SYMBOL, lambda m: (
            m["symbol"], f"undefined symbol {m['symbol']} (in {m['by']})")),
        (MUSL_MISSING_SYMBOL, lambda m: (
            m["symbol"], f"symbol {m['symbol']} not found (musl's loader, in {m['by']})")),
        (GLIBC_OTHER, lambda m: (None, f"loader: {m['detail']}")),
    )


def loader_error(lines: tuple[str, ...]) -> tuple[str | None, str] | None:
    """(missing thing, cause) from a dynamic loader's message among ``lines``, or None."""
    for pattern, explain in _loader_messages():
        for line in lines:
            if m := pattern.search(line):
                return explain(m)
    return None


def _exec_failure_in(lines: tuple[str, ...]) -> str | None:
    """The errno name a runtime's or shell's exec-failure message stands for, or None."""
    for line in lines[-3:]:
        for pattern, name in EXEC_FAILURE:
            if pattern.search(line):
                return name
    return None


def _kernel_machine(environment: dict[str, Any] | None) -> str | None:
    env = (environment or {}).get("environment")
    kernel = env.get("kernel") if isinstance(env, dict) else None
    machine = kernel.get("machine") if isinstance(kernel, dict) else None
    return machine if isinstance(machine, str) else None


def vsyscall_mode(environment: dict[str, Any] | None) -> str | None:
    vsyscall = (environment or {}).get("vsyscall")
    mode = vsyscall.get("mode") if isinstance(vsyscall, dict) else None
    return mode if isinstance(mode, str) else None


def _cannot_execute(name: str, program: dict[str, Any] | None,
                    environment: dict[str, Any] | None, source: str) -> Verdict:
    program = program or {}
    arch, machine = program.get("arch"), _kernel_machine(environment)
    missing = None
    if name == "ENOEXEC":
        cause = "the kernel refused the file format (ENOEXEC)"
        made_for = program.get("machine") if arch == "other" else arch
        if arch and machine and arch != machine:
            cause += f": the program is for {made_for}, the kernel is {machine}"
        elif program.get("kind") == "not-executable":
            cause += ": neither an ELF file nor a #! script"
    elif name == "ENOENT" and program.get("interpreter"):
        missing = program["interpreter"]
        cause = f"missing interpreter {missing} (ENOENT)"
    elif name == "ENOENT":
        cause = "the program or its interpreter does not exist there (ENOENT)"
    elif name == "EACCES":
        cause = "permission denied (EACCES): not executable, or on a noexec mount"
    else:
        cause = f"execve failed with {name}"
    return Verdict("cannot-execute", one_line(cause + source, MAX_LINE), missing=missing,
                   exec_errno=name)


def describe_fault(sig: str, address: int | None, environment: dict[str, Any] | None,
                   ip: int | None = None) -> str:
    """"SIGSEGV at 0x…: why", as far as the address, the instruction pointer and the
    environment's facts say. A call into the page faults with the instruction pointer at the
    address itself; a read faults elsewhere."""
    if address is None:
        return f"killed by {sig} (faulting address not known)"
    where = f"{sig} at {address:#x}"
    if address in VSYSCALL_PAGE:
        return f"{where}: {_vsyscall_fault(address, ip, vsyscall_mode(environment))}"
    if address in NULL_PAGE:
        return f"{where}: a null pointer dereference"
    return where


def _vsyscall_fault(address: int, ip: int | None, mode: str | None) -> str:
    entry = VSYSCALL_NAMES.get(address - VSYSCALL_PAGE.start)
    read = ip is not None and ip != address
    if read:
        what = "a read of the vsyscall page"
    else:
        what = f"a vsyscall call ({entry})" if entry else "a call into the vsyscall page"
    if mode is None:
        return f"{what}; this environment's vsyscall mode is unknown"
    if mode == "xonly" and read:
        return f"{what} under vsyscall=xonly (execute-only: calls work, reads fault)"
    if mode == "xonly" and not entry:
        return f"{what} under vsyscall=xonly (only the three entries are emulated)"
    return f"{what} under vsyscall={mode}"


def judge(outcome: RunOutcome, environment: dict[str, Any] | None = None,
          program: dict[str, Any] | None = None) -> Verdict:
    """The verdict of one run. ``environment`` is the environment's probed result document
    (for the vsyscall mode and the kernel's machine), ``program`` the facts of
    :func:`vdsomatrix.program.elf.analyse_program` (for the interpreter and architecture)."""
    tail = stderr_tail(outcome.stderr)
    status = outcome.exit_status
    if outcome.oom_killed:
        return Verdict("killed-for-memory", "killed by the OOM killer (out of memory)",
                       exit_status=status, signal=signal_name(outcome.signal), stderr_tail=tail)
    if outcome.timed_out:
        took = f" after {outcome.seconds:.0f} s" if outcome.seconds is not None else ""
        return Verdict("timed-out", f"did not finish before the deadline{took}; killed",
                       stderr_tail=tail)
    if outcome.exec_errno is not None:
        verdict = _cannot_execute(errno_name(outcome.exec_errno) or "?", program, environment, "")
        return _with_tail(verdict, tail)
    if outcome.signal is not None:
        return _crashed(outcome, environment, tail)
    return _exited(outcome, program, environment, tail)


def _with_tail(verdict: Verdict, tail: tuple[str, ...]) -> Verdict:
    return Verdict(**{**asdict(verdict), "stderr_tail": tail})


def _crashed(outcome: RunOutcome, environment: dict[str, Any] | None,
             tail: tuple[str, ...]) -> Verdict:
    sig = signal_name(outcome.signal) or "a signal"
    address = outcome.fault_address if isinstance(outcome.fault_address, int) else None
    ip = outcome.fault_ip if isinstance(outcome.fault_ip, int) else None
    cause = describe_fault(sig, address, environment, ip)
    return Verdict("crashed", one_line(cause, MAX_LINE),
                   signal=sig, fault_address=f"{address:#x}" if address is not None else None,
                   stderr_tail=tail)


def _exited(outcome: RunOutcome, program: dict[str, Any] | None,
            environment: dict[str, Any] | None, tail: tuple[str, ...]) -> Verdict:
    status = outcome.exit_status
    if status is None:
        return Verdict("failed", "neither an exit status nor a signal was reported",
                       stderr_tail=tail)
    if status != 0 and (found := loader_error(tail)) is not None:
        missing, cause = found
        return Verdict("loader-error", one_line(cause, MAX_LINE), exit_status=status,
                       missing=missing, stderr_tail=tail)
    if status in (1, 126, 127) and (name := _exec_failure_in(tail)) is not None:
        verdict = _cannot_execute(name, program, environment,
                                  " (from the runtime's message)")
        return _with_tail(Verdict(**{**asdict(verdict), "exit_status": status}), tail)
    if status == outcome.expected_exit:
        return Verdict("passed", f"exited with status {status}", exit_status=status,
                       stderr_tail=tail)
    last = f": {tail[-1]}" if tail else ""
    cause = f"exited with status {status} (expected {outcome.expected_exit}){last}"
    return Verdict("failed", one_line(cause, MAX_LINE), exit_status=status, stderr_tail=tail)


def _address(value: Any) -> int | None:
    """An address as a number or as hex text ("0xffffffffff600400", as a tracer prints it)."""
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        return None
    return value


def outcome_from_dict(doc: Any) -> RunOutcome:
    """A RunOutcome from the runner's JSON, every field type-checked (a wrong type is unknown)."""
    doc = doc if isinstance(doc, dict) else {}

    def number(key: str) -> int | None:
        value = doc.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def name_or_number(key: str) -> int | str | None:
        value = doc.get(key)
        return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None

    stderr = doc.get("stderr")
    seconds = doc.get("seconds")
    address, ip = _address(doc.get("fault_address")), _address(doc.get("fault_ip"))
    return RunOutcome(
        exit_status=number("exit_status"), signal=name_or_number("signal"),
        fault_address=address, fault_ip=ip, timed_out=doc.get("timed_out") is True,
        oom_killed=doc.get("oom_killed") is True, exec_errno=name_or_number("exec_errno"),
        stderr=stderr if isinstance(stderr, (str, bytes)) else b"",
        expected_exit=number("expected_exit") or 0,
        seconds=float(seconds) if isinstance(seconds, (int, float))
        and not isinstance(seconds, bool) else None)
