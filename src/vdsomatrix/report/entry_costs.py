"""Why a system call costs what it costs: the machine's facts beside the measured entry costs.

Every x86 environment's result carries (see the result schema):

- ``entry_costs``: rows timed and counted like the call rows: ``cpuid`` (path "instruction"; an
  exit to the hypervisor wherever hardware virtualisation intercepts it, which KVM always does),
  and a signal round trip to an empty handler entered two ways: by ``tgkill`` (path "syscall")
  and by ``int3`` (path "int3": an exception through the IDT, returning with IRET, as
  ``int $0x80`` does);
- ``environment.cpu_security``: the kernel's CPU vulnerability files, its ``mitigations=`` and
  the CPU's hypervisor flag (a container's are its host kernel's: it runs on it);
- ``environment.seccomp`` (containers): the seccomp profile the container ran with.

From these, computed and never assumed: a table (the section "syscall-cost"), the lines of "at a
glance" (what ``int $0x80`` costs against ``syscall`` and what that matches, what
``mitigations=off`` changes, what Docker's seccomp filter adds) and the method's explanation of
``int $0x80`` with its source. Plain text: the renderers escape it.
"""

from __future__ import annotations

import dataclasses

from vdsomatrix.report.cells import (
    Result,
    call_row,
    fmt_ns,
    in_time_namespace,
    median,
    part,
    plain_line,
    plain_twin,
    text,
)
from vdsomatrix.report.measurements import environment_table, plain, yes_no
from vdsomatrix.report.model import MISSING_VALUE, Finding, Table, Value

CPUID = ("cpuid", "instruction")
SIGNAL_BY_SYSCALL = ("signal round trip", "syscall")
SIGNAL_BY_INT3 = ("signal round trip", "int3")
# The source of the explanation, cited in the method (facts, not code, from the kernel's history).
INT80_SOURCE = (
    "Linux commit 55617fb991df (\"x86/entry: Do not allow external 0x80 interrupts\", Thomas "
    "Gleixner, December 2023; in 6.7, and in the stable kernels from 6.1 on): int80_emulation() "
    "(arch/x86/entry/common.c; syscall_32.c since 6.9) reads the local APIC's in-service "
    "register bit of vector 0x80 (int80_is_external()) to refuse an interrupt injected on that "
    "vector. The `syscall` instruction's entry reads no APIC register")


def entry_median(result: Result, which: tuple[str, str]) -> float | None:
    return median(call_row(result, *which, rows="entry_costs"))


def int80_extra(result: Result) -> float | None:
    """What ``int $0x80`` costs beyond ``syscall`` (getppid, medians)."""
    slow, fast = median(call_row(result, "getppid", "int80")), median(
        call_row(result, "getppid", "syscall"))
    return None if slow is None or fast is None else slow - fast


def idt_extra(result: Result) -> float | None:
    """What entering by an exception (int3, through the IDT, back with IRET) costs beyond
    entering by a system call, both delivering the same signal to the same empty handler."""
    by_int3, by_syscall = entry_median(result, SIGNAL_BY_INT3), entry_median(
        result, SIGNAL_BY_SYSCALL)
    return None if by_int3 is None or by_syscall is None else by_int3 - by_syscall


def _ns(value: float | None) -> Value:
    if value is None:
        return MISSING_VALUE
    return Value(f"{fmt_ns(value)}", number=value, unit="ns")


def hypervisor(result: Result) -> bool | None:
    flag = part(result.environment, "cpu_security", "hypervisor")
    return flag if isinstance(flag, bool) else None


def mitigations_param(result: Result) -> str:
    """The kernel's ``mitigations=`` as its command line says, "(default)" without one."""
    security = part(result.environment, "cpu_security")
    if not isinstance(security, dict):
        return ""
    return plain_line(security.get("mitigations_cmdline"), 80) or "(default)"


def vulnerabilities(result: Result) -> dict[str, str]:
    found = part(result.environment, "cpu_security", "vulnerabilities")
    if not isinstance(found, dict):
        return {}
    return {plain_line(k, 60): plain_line(v, 200) for k, v in list(found.items())[:64]
            if text(v) is not None and plain_line(k, 60)}


def entry_cost_table(results: list[Result]) -> Table:
    columns = [
        ("VM", lambda r: yes_no(hypervisor(r))),
        ("mitigations=", lambda r: plain(mitigations_param(r), 40)),
        ("syscall (ns)", lambda r: _ns(median(call_row(r, "getppid", "syscall")))),
        ("int $0x80 (ns)", lambda r: _ns(median(call_row(r, "getppid", "int80")))),
        ("cpuid (ns)", lambda r: _ns(entry_median(r, CPUID))),
        ("int3 extra (ns)", lambda r: _ns(idt_extra(r))),
    ]
    return environment_table(
        "entry-cost", "syscall-cost", "What a system call costs, and what the machine adds",
        "Medians in ns. syscall, int $0x80: getppid entered each way (with min–p90 and the "
        "other ways in the table syscall-cost linked below). VM: the CPU's hypervisor flag (the "
        "vulnerability files: table cpu-security). cpuid: one cpuid instruction, which a "
        "hypervisor intercepts (one exit to it). int3 extra: a signal raised by int3 (an "
        "exception, through the IDT and back with IRET, as int $0x80 goes) less the same "
        "signal sent by tgkill.", columns, results,
        leaves_out=tuple(r.name for r in results if _repeats_a_kernel(r, results)),
        leaves_out_noun="builds and boot-option variants that repeat a kernel")


def _repeats_a_kernel(result: Result, results: list[Result]) -> bool:
    """Whether the page may leave this row out of the table "Why": a static or musl container
    (its dynamic twin measures the same kernel), or a guest booted with an option that does not
    change how the kernel is entered (anything but mitigations=), beside its plain guest."""
    build = result.text("environment", "build")
    if result.backend == "docker":
        return build in ("static", "musl")
    if result.backend != "qemu":
        return False
    cmdline = (result.text("environment", "matrix_cmdline") or "").split()
    if any(word.startswith("mitigations=") for word in cmdline):
        return False
    is_plain = not cmdline and not in_time_namespace(result)
    return not is_plain and plain_twin(result, results) is not None


def cpu_security_table(results: list[Result]) -> Table:
    names = sorted({name for r in results for name in vulnerabilities(r)})
    columns = [("VM", lambda r: yes_no(hypervisor(r))),
               ("mitigations=", lambda r: plain(mitigations_param(r), 80))] + [
        (name, lambda r, name=name: plain(vulnerabilities(r).get(name), 200)) for name in names]
    return dataclasses.replace(environment_table(
        "cpu-security", "syscall-cost", "CPU vulnerabilities and their mitigations",
        "/sys/devices/system/cpu/vulnerabilities/* as each environment's kernel reports them (a "
        "container's are its host kernel's), the kernel's mitigations= and the CPU's hypervisor "
        "flag.", columns, results), on_page=False)


def tables(results: list[Result]) -> list[Table]:
    """Always both (a result from before these facts gives a row of marks): the site includes
    the table "Why" by its id."""
    return [entry_cost_table(results), cpu_security_table(results)]


# ------------------------------------------------------------------------- findings ----------

def _range(values: list[float], unit: str = " ns") -> str:
    low, high = min(values), max(values)
    same = fmt_ns(low) == fmt_ns(high)
    return f"{fmt_ns(low)}{unit}" if same else f"{fmt_ns(low)}–{fmt_ns(high)}{unit}"


def _signed_range(values: list[float], unit: str = " ns") -> str:
    """A range that may cross zero, said in words: "between −100 and +61 ns"."""
    def signed(v: float) -> str:
        return ("+" if v > 0 else "−" if v < 0 else "") + fmt_ns(abs(v))
    low, high = min(values), max(values)
    if fmt_ns(low) == fmt_ns(high):
        return f"{signed(low)}{unit}"
    return f"between {signed(low)} and {signed(high)}{unit}"


def _ratio_range(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}×" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}×"


def int80_finding(native: list[Result], emulated: list[Result]) -> Finding | None:
    """What int $0x80 costs against syscall natively, and the measurements that say why."""
    rows = [(r, extra, median(call_row(r, "getppid", "syscall")))
            for r in native if (extra := int80_extra(r)) is not None]
    rows = [(r, extra, fast) for r, extra, fast in rows if fast]
    if not rows:
        return None
    ratios = [(extra + fast) / fast for _, extra, fast in rows]
    extras = [extra for _, extra, _ in rows]
    sentence = (f"from 64-bit code costs {_ratio_range(ratios)} a syscall on this machine's "
                f"kernel (getppid: {_range(extras)} more, in {len(rows)} environments)")
    cpuids = [c for r, _, _ in rows if (c := entry_median(r, CPUID)) is not None]
    idt = [i for r, _, _ in rows if (i := idt_extra(r)) is not None]
    vm = [r for r, _, _ in rows if hypervisor(r) is True]
    if cpuids and idt:
        sentence += (f". That is about one exit to the hypervisor"
                     f"{' (the CPU says it is a virtual machine)' if vm else ''}: a cpuid costs "
                     f"{_range(cpuids)}, while entering by an exception costs no more than by a "
                     f"system call (a signal raised by int3 against one sent by tgkill: "
                     f"{_signed_range(idt)}); the method says which kernel code exits")
    slow = [(extra + fast) / fast for r in emulated
            if (extra := int80_extra(r)) is not None
            and (fast := median(call_row(r, "getppid", "syscall")))]
    if slow:
        sentence += f". Under QEMU (no hypervisor exits) it costs {_ratio_range(slow)}"
    return Finding("int $0x80", sentence + ".")


def mitigations_off_finding(guests: list[Result]) -> Finding | None:
    """A guest booted with mitigations=off against the same kernel's plain guest."""
    for r in guests:
        if "mitigations=off" not in (r.text("environment", "matrix_cmdline") or "").split():
            continue
        plain_guest = plain_twin(r, guests)
        if plain_guest is None:
            continue
        off, on = (median(call_row(r, "getppid", "syscall")),
                   median(call_row(plain_guest, "getppid", "syscall")))
        if off is None or on is None or not off:
            continue
        changed = sorted(name for name, v in vulnerabilities(r).items()
                         if vulnerabilities(plain_guest).get(name) not in (None, v))
        said = (f"; the vulnerability files change for {', '.join(changed)}" if changed else
                "; the guest's vulnerability files read the same either way")
        return Finding("mitigations=off", f"in {r.label}: a system call (getppid) takes "
                       f"{fmt_ns(off)} ns against {fmt_ns(on)} ns in {plain_guest.label} "
                       f"({on / off:.2f}× as long with the mitigations; emulated time, compare "
                       f"the ratio only){said}.")
    return None


def seccomp_profile(result: Result) -> str:
    return plain_line(part(result.environment, "seccomp", "profile"), 120)


def seccomp_finding(containers: list[Result]) -> Finding | None:
    """Docker's default filter against a minimal allow-all one, same image, same kernel."""
    for r in containers:
        if not seccomp_profile(r).startswith("allow-all"):
            continue
        other = plain_twin(r, containers)
        if other is None or not seccomp_profile(other).startswith("docker-default"):
            continue
        filtered, bare = (median(call_row(other, "getppid", "syscall")),
                          median(call_row(r, "getppid", "syscall")))
        if filtered is None or bare is None or not bare:
            continue
        return Finding("Docker's seccomp filter",
                       f"adds {fmt_ns(filtered - bare)} ns to a system call: getppid takes "
                       f"{fmt_ns(filtered)} ns in {other.label} (Docker's default profile plus "
                       f"perf_event_open) and {fmt_ns(bare)} ns in {r.label} (an allow-all "
                       f"filter, for this measurement only).")
    return None


def findings(native: list[Result], emulated: list[Result]) -> list[Finding]:
    containers = [r for r in native if r.backend == "docker"]
    return [f for f in (int80_finding(native, emulated), mitigations_off_finding(emulated),
                        seccomp_finding(containers)) if f is not None]


def method_lines(native: list[Result]) -> list[str]:
    lines = []
    rows = [(r, e) for r in native if (e := int80_extra(r)) is not None]
    cpuids = [c for r, _ in rows if (c := entry_median(r, CPUID)) is not None]
    if rows and cpuids:
        lines.append(
            f"Why int $0x80 costs more than syscall on this machine: {INT80_SOURCE}. In a "
            "virtual machine whose local APIC the hypervisor emulates, that read exits to the "
            "hypervisor.")
        lines.append(
            "Measured beside it in every environment (the table \"Why\"): "
            f"int $0x80 costs {_range([e for _, e in rows])} more than syscall, one cpuid "
            f"(always intercepted) {_range(cpuids)}, and the IDT entry and IRET themselves "
            "(int3 against tgkill) almost nothing; a 32-bit process's __kernel_vsyscall, which "
            "runs the same 32-bit system call code without int80_emulation(), costs no more "
            "than a 64-bit syscall (section \"32-bit code\").")
    return lines
