"""The report: a pure function of result documents.

    cells.py         reading a document defensively, the missing-value mark, medians, the
                     "entered the kernel" threshold, and the escaping of everything an
                     environment said (Markdown, HTML)
    model.py         the report as data (Value, Table, Section, Report): what the renderers read
    result_set.py    the result model the sections read: the results ordered, named, grouped
                     and split (x86_64, 32-bit, arm64, runtime environments)
    sections/        the registry: a module per section, in page order (ids, titles, when)
    build.py         build_report(): the ResultSet, then each registered section
    guard.py         a part that a bug breaks is a problem line, not a lost report
    meta.py          report.json's metadata (versions, machines, environments)
    measurements.py  the measured tables (identity, vDSO, vsyscall, system-call cost, speed-ups,
                     latency)
    entry_costs.py   what explains a system call's cost (entry instructions, mitigations)
    recent_vdso.py   getrandom and time namespaces
    correctness.py   the helper's correctness checks
    runtimes.py      the language runtimes (Java, Python, Go, Node.js, Rust) of the runtime
                     environments: the answer sentence, at a glance, one table per clock
    i386.py          32-bit code
    architectures.py x86_64, i386 and arm64 side by side
    binary.py        the binary-analysis tables (symbols, census, vDSO use, entry points) and
                     the syscall() listings
    exports.py       the formats: Markdown (page, per-table snippets, disassembly), CSV, JSON
    html.py          the HTML page (rendered from the same model)
    plots.py         the HTML page's figures (SVG)
"""

from vdsomatrix.report.build import build_report
from vdsomatrix.report.model import Report


def render_report(docs: list[dict], *, order: list[str] | None = None,
                  load_problems: list[str] | None = None) -> str:
    """REPORT.md of result documents (the Markdown page of :func:`build_report`)."""
    from vdsomatrix.report.exports import render_markdown

    return render_markdown(build_report(docs, order=order, load_problems=load_problems))


__all__ = ["Report", "build_report", "render_report"]
