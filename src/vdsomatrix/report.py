"""The report: Markdown tables answering the seed's questions, one column per environment.

A pure function of result documents: ``render_report(docs)`` reads nothing else, so a report can
be re-rendered without re-probing and results from several machines can be merged. Every value
that came from an environment goes through ``markdown.cell`` before it reaches the page.
"""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from vdsomatrix.markdown import cell

BACKEND_ORDER = {"host": 0, "docker": 1, "qemu": 2}
GROUPS = (
    ("Userlands on this machine's kernel (host and containers)", ("host", "docker")),
    ("Kernels under QEMU", ("qemu",)),
)
CLOCKS = ("CLOCK_MONOTONIC", "CLOCK_REALTIME", "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME",
          "CLOCK_PROCESS_CPUTIME_ID")
VDSO_CALLS = [f"clock_gettime({c})" for c in CLOCKS] + ["gettimeofday", "time", "getcpu"]
ROW_ORDER = [("getppid", p) for p in ("libc", "syscall", "int80")] + [
    (call, p)
    for call in VDSO_CALLS
    for p in ("libc", "vdso", "syscall", "vsyscall")
    if p != "vsyscall" or not call.startswith("clock_gettime")
]
MISSING = "—"
RESOLUTION_NS = 1.0  # below this, a median is within the noise of the subtracted loop overhead


# ------------------------------------------------------------------ reading a document -------

def env_name(doc: dict) -> str:
    return doc["environment"]["name"]


def is_emulated(doc: dict) -> bool:
    return (doc["environment"].get("accel") or "") == "tcg"


def header(doc: dict) -> str:
    return cell(env_name(doc)) + (" †" if is_emulated(doc) else "")


def run_status(doc: dict) -> str:
    return (doc.get("run") or {}).get("status", "ok")


def call_row(doc: dict, call: str, path: str) -> dict | None:
    for row in doc.get("calls") or []:
        if isinstance(row, dict) and row.get("call") == call and row.get("path") == path:
            return row
    return None


def fmt_ns(value) -> str:
    if not isinstance(value, int | float):
        return MISSING
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def mechanism(row: dict) -> str:
    """How one call entered the kernel, from what was counted (ptrace, perf), never from speed."""
    spc = row.get("syscalls_per_call")
    faults = row.get("faults_per_call")
    if not isinstance(spc, int | float):
        return "?"
    if spc >= 0.5:
        return "syscall" if round(spc) == 1 else f"{spc:g} syscalls"
    if not isinstance(faults, int | float):
        return "no syscall"  # traps could not be counted here (no perf counter allowed)
    if faults >= 0.5:
        return "trap"
    return "user"


def outcome(row: dict | None, *, with_mechanism: bool = True) -> str:
    """One latency cell: median ns and how the call got there, or why there is no number."""
    if row is None:
        return MISSING
    status = row.get("status")
    if status == "ok":
        text = f"{fmt_ns((row.get('ns') or {}).get('median'))} ns"
        return f"{text} · {mechanism(row)}" if with_mechanism else text
    if status == "crashed":
        return f"crashed ({cell(row.get('signal') or 'signal')})"
    if status == "unsupported":
        return "unsupported"
    return cell(status or "?")


def ratio(slow: dict | None, fast: dict | None) -> str:
    def median(row):
        if row and row.get("status") == "ok":
            value = (row.get("ns") or {}).get("median")
            return value if isinstance(value, int | float) else None
        return None

    s, f = median(slow), median(fast)
    if s is None or f is None:
        return MISSING
    if f < RESOLUTION_NS:
        # Below a nanosecond the fast path is lost in the loop overhead that was subtracted:
        # a quotient would be noise, a bound is not.
        return f"> {s / RESOLUTION_NS:.0f}× (< {RESOLUTION_NS:g} vs {fmt_ns(s)} ns)"
    return f"{s / f:.1f}× ({fmt_ns(f)} vs {fmt_ns(s)} ns)"


# ------------------------------------------------------------------ tables -------------------

def ordered(docs: Iterable[dict], order: list[str] | None = None) -> list[dict]:
    position = {name: i for i, name in enumerate(order or [])}
    return sorted(
        docs,
        key=lambda d: (
            position.get(env_name(d), len(position)),
            BACKEND_ORDER.get(d["environment"].get("backend"), 9),
            env_name(d),
        ),
    )


def transposed(title: str, rows: list[tuple[str, list[str]]], docs: list[dict]) -> str:
    """A table with a row per fact and a column per environment."""
    body = [[label, *values] for label, values in rows]
    table = tabulate(body, headers=[title, *(header(d) for d in docs)], tablefmt="github",
                     disable_numparse=True)
    return table


def grouped(docs: list[dict], build) -> str:
    """Render ``build(docs_of_group) -> str`` once per backend group that has results."""
    parts = []
    for title, backends in GROUPS:
        members = [d for d in docs if d["environment"].get("backend") in backends]
        if members:
            parts.append(f"**{title}**\n\n{build(members)}")
    return "\n\n".join(parts)


def identity_table(docs: list[dict]) -> str:
    def libc(d):
        lc = d["environment"].get("libc") or {}
        return cell(" ".join(str(x) for x in (lc.get("name"), lc.get("version")) if x)) or MISSING

    def userland(d):
        u = d["environment"].get("userland") or {}
        return cell(u.get("pretty_name") or u.get("codename") or d["environment"].get("suite"))

    def kernel(d):
        return cell((d["environment"].get("kernel") or {}).get("release")) or MISSING

    def cmdline(d):
        env = d["environment"]
        if env.get("backend") == "qemu":
            return cell(env.get("matrix_cmdline") or "(default)")
        return "(host's)"

    rows = [
        ("status", [cell(run_status(d)) for d in docs]),
        ("userland", [userland(d) for d in docs]),
        ("libc", [libc(d) for d in docs]),
        ("linkage", [cell((d["environment"].get("libc") or {}).get("linkage")) or MISSING
                     for d in docs]),
        ("kernel", [kernel(d) for d in docs]),
        ("added to kernel command line", [cmdline(d) for d in docs]),
        ("clocksource", [cell((d["environment"].get("kernel") or {}).get("clocksource"))
                         or MISSING for d in docs]),
        ("CPU", [cell((d["environment"].get("cpu") or {}).get("model"), 40) or MISSING
                 for d in docs]),
        ("accelerator", [cell(d["environment"].get("accel") or "none (native)") for d in docs]),
        ("probed", [cell(((d.get("run") or {}).get("started") or "")[:16]) for d in docs]),
    ]
    return transposed("environment", rows, docs)


def vdso_table(docs: list[dict]) -> str:
    def present(d):
        v = d.get("vdso") or {}
        if "present" not in v:
            return MISSING
        return "yes" if v["present"] else "**no**"

    def symbols(d):
        analysis = (d.get("analysis") or {}).get("vdso") or {}
        syms = [s for s in analysis.get("symbols") or [] if s.get("type") == "FUNC"]
        if not syms:
            return MISSING
        names = sorted({s.get("name", "") for s in syms if not s.get("name", "").startswith("__")})
        return cell(", ".join(names), 200)

    rows = [
        ("vDSO mapped (AT_SYSINFO_EHDR)", [present(d) for d in docs]),
        ("size (bytes)", [cell((d.get("vdso") or {}).get("size")) or MISSING for d in docs]),
        ("functions exported", [symbols(d) for d in docs]),
        ("libc clock_gettime(CLOCK_MONOTONIC)",
         [outcome(call_row(d, "clock_gettime(CLOCK_MONOTONIC)", "libc")) for d in docs]),
    ]
    return transposed("vDSO", rows, docs)


def vsyscall_table(docs: list[dict]) -> str:
    def yes_no(value):
        return MISSING if value is None else ("yes" if value else "**no**")

    def legacy_runs(d):
        rows = [call_row(d, c, "vsyscall") for c in ("gettimeofday", "time", "getcpu")]
        rows = [r for r in rows if r]
        if not rows:
            return MISSING
        if all(r.get("status") == "ok" for r in rows):
            return "yes"
        crashed = [r for r in rows if r.get("status") == "crashed"]
        if crashed:
            return f"**no**: {cell(crashed[0].get('signal') or 'crash')}"
        return "**no**"

    rows = [
        ("mode (from /proc/self/maps)",
         [cell((d.get("vsyscall") or {}).get("mode")) or MISSING for d in docs]),
        ("page readable", [yes_no((d.get("vsyscall") or {}).get("readable")) for d in docs]),
        ("a legacy static binary calling it runs", [legacy_runs(d) for d in docs]),
    ]
    for call in ("gettimeofday", "time", "getcpu"):
        rows.append((f"{call} via vsyscall", [outcome(call_row(d, call, "vsyscall"))
                                              for d in docs]))
    return transposed("vsyscall", rows, docs)


def syscall_cost_table(docs: list[dict]) -> str:
    def spread(row):
        if not row or row.get("status") != "ok":
            return outcome(row)
        ns = row.get("ns") or {}
        return f"{fmt_ns(ns.get('median'))} ns ({fmt_ns(ns.get('min'))}–{fmt_ns(ns.get('p90'))})"

    rows = [
        ("getppid, raw `syscall`", [spread(call_row(d, "getppid", "syscall")) for d in docs]),
        ("getppid, libc", [spread(call_row(d, "getppid", "libc")) for d in docs]),
        ("getppid, `int $0x80`", [spread(call_row(d, "getppid", "int80")) for d in docs]),
        ("clock_gettime(MONOTONIC), raw `syscall`",
         [spread(call_row(d, "clock_gettime(CLOCK_MONOTONIC)", "syscall")) for d in docs]),
        ("system calls counted per getppid",
         [cell((call_row(d, "getppid", "syscall") or {}).get("syscalls_per_call"))
          or MISSING for d in docs]),
    ]
    return transposed("system call: median (min–p90)", rows, docs)


def speedup_table(docs: list[dict]) -> str:
    rows = []
    for call in VDSO_CALLS:
        rows.append((f"{call}: vDSO vs syscall",
                     [ratio(call_row(d, call, "syscall"), call_row(d, call, "vdso"))
                      for d in docs]))
    for call in VDSO_CALLS:
        rows.append((f"{call}: libc takes",
                     [mechanism(r) if (r := call_row(d, call, "libc")) and r.get("status") == "ok"
                      else outcome(r) for d in docs]))
    return transposed("speed-up (syscall ÷ vDSO)", rows, docs)


def latency_table(docs: list[dict]) -> str:
    rows = [(f"{call} · {path}", [outcome(call_row(d, call, path)) for d in docs])
            for call, path in ROW_ORDER]
    return transposed("call · path", rows, docs)


def problems_section(docs: list[dict], load_problems: list[str]) -> str:
    lines = []
    for d in docs:
        for err in d.get("errors") or []:
            lines.append(f"- **{cell(env_name(d))}**: {cell(err, 300)}")
        tail = d.get("log_tail") or []
        if tail and run_status(d) != "ok":
            lines.append(f"- **{cell(env_name(d))}** last lines: "
                         + " ⏎ ".join(cell(t, 160) for t in tail[-5:]))
    lines += [f"- result file skipped: {cell(p, 300)}" for p in load_problems]
    return "\n".join(lines) if lines else "None."


def method_section(docs: list[dict]) -> str:
    methods = [d.get("method") or {} for d in docs if d.get("method")]
    batches = sorted({m.get("batches") for m in methods if m.get("batches")})
    notes = sorted({(d.get("run") or {}).get("concurrency") for d in docs} - {None})
    lines = [
        "- Each latency is the median of "
        f"{', '.join(map(str, batches)) or '?'} batches, one batch lasting at least 1 ms, on a "
        "single pinned CPU, with the measured empty-loop overhead subtracted; min and p90 are "
        "over the same batches. Every call runs in a child process, so a crash is a result.",
        "- The mechanism after each number was counted, not inferred from speed: `syscall` = "
        "the system calls ptrace saw per call (as strace counts them), `trap` = no system call "
        "but a page-fault trap per call (the kernel's software page-fault counter; this is how "
        "vsyscall emulation enters the kernel), `user` = neither (the vDSO or libc answered in "
        "user space), `no syscall` = no system call, but traps could not be counted (Docker's "
        "default seccomp profile forbids perf_event_open), `?` = the environment allowed no "
        "counting at all.",
        "- Speed-ups below 1 ns on the fast side are shown as bounds: such a median is within "
        "the noise of the subtracted loop overhead.",
        "- Containers enter the kernel through Docker's default seccomp filter, which every "
        "system call pays for; the host column has no filter.",
        "- † marks guests under TCG software emulation: their absolute nanoseconds are "
        "emulated; compare ratios only.",
    ]
    lines += [f"- Concurrency: {cell(n, 300)}." for n in notes]
    return "\n".join(lines)


def _names(docs: list[dict]) -> str:
    return ", ".join(cell(env_name(d)) for d in docs) or "none"


def _median(row: dict | None) -> float | None:
    if row and row.get("status") == "ok":
        value = (row.get("ns") or {}).get("median")
        return value if isinstance(value, int | float) else None
    return None


def summary_section(docs: list[dict]) -> str:
    """The answers in a few lines, each computed from the tables below (no expectations)."""
    probed = [d for d in docs if d.get("calls")]
    lines = []
    with_vdso = [d for d in probed if (d.get("vdso") or {}).get("present")]
    without = [d for d in probed if d not in with_vdso]
    lines.append(f"- **vDSO**: mapped in {len(with_vdso)} of {len(probed)} environments; "
                 f"absent in: {_names(without)}.")
    runs = [d for d in probed if all(
        (r := call_row(d, c, "vsyscall")) and r.get("status") == "ok"
        for c in ("gettimeofday", "time", "getcpu"))]
    dies = [d for d in probed if any(
        (r := call_row(d, c, "vsyscall")) and r.get("status") == "crashed"
        for c in ("gettimeofday", "time", "getcpu"))]
    lines.append(f"- **Legacy vsyscall calls** work in {len(runs)} environments and kill the "
                 f"caller in {len(dies)}: {_names(dies)}.")
    for group, backends in (("natively", ("host", "docker")), ("under QEMU", ("qemu",))):
        members = [d for d in probed if d["environment"].get("backend") in backends]
        costs = [c for d in members
                 if (c := _median(call_row(d, "getppid", "syscall"))) is not None]
        if costs:
            lines.append(f"- **A system call** (getppid, raw `syscall`) costs "
                         f"{fmt_ns(min(costs))}–{fmt_ns(max(costs))} ns {group} "
                         f"({len(costs)} environments, medians)"
                         + (", emulated time" if group == "under QEMU" else "") + ".")
    call = "clock_gettime(CLOCK_MONOTONIC)"
    speedups, fallbacks = [], []
    for d in probed:
        vdso_row = call_row(d, call, "vdso")
        fast, slow = _median(vdso_row), _median(call_row(d, call, "syscall"))
        if fast is None or slow is None:
            continue
        if vdso_row.get("syscalls_per_call") and vdso_row["syscalls_per_call"] >= 0.5:
            fallbacks.append(d)
        elif fast >= RESOLUTION_NS:
            speedups.append(slow / fast)
    if speedups:
        lines.append(f"- **The vDSO's {call}** is {min(speedups):.1f}–{max(speedups):.1f}× "
                     f"faster than the system call where it stays in user space; it makes the "
                     f"system call itself in: {_names(fallbacks)}.")
    libc_kernel = [d for d in probed
                   if (r := call_row(d, call, "libc")) and r.get("status") == "ok"
                   and isinstance(r.get("syscalls_per_call"), int | float)
                   and r["syscalls_per_call"] >= 0.5]
    lines.append(f"- **libc's {call}** enters the kernel on every call in: "
                 f"{_names(libc_kernel)}.")
    return "\n".join(lines)


def render_report(docs: list[dict], *, order: list[str] | None = None,
                  load_problems: list[str] | None = None) -> str:
    docs = ordered(docs, order)
    parts = [
        "# vdsomatrix report",
        "",
        f"{len(docs)} environments. Generated by `vdsomatrix report` from result files alone; "
        "every number below was measured in the environment of its column.",
        "",
        "## At a glance",
        summary_section(docs),
        "## Environments",
        grouped(docs, identity_table),
        "## 1. Is there a vDSO, and what does it export?",
        grouped(docs, vdso_table),
        "## 2. The vsyscall page: which mode, and does a legacy vsyscall call work?",
        grouped(docs, vsyscall_table),
        "## 3. What does a system call cost?",
        grouped(docs, syscall_cost_table),
        "## 4. How much faster is each vDSO path than its system call?",
        grouped(docs, speedup_table),
        "## 5. Every way into the kernel: median latency and mechanism",
        grouped(docs, latency_table),
    ]
    try:
        from vdsomatrix.analysis.report import render_analysis
    except ImportError:
        render_analysis = None
    if render_analysis is not None:
        parts += ["## 6. Binary analysis", render_analysis(docs)]
    parts += [
        "## Method",
        method_section(docs),
        "## Problems",
        problems_section(docs, load_problems or []),
        "",
    ]
    return "\n\n".join(p for p in parts if p is not None).replace("\n\n\n", "\n\n")
