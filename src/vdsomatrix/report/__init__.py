"""The report: a pure function of result documents.

    cells.py         reading a document defensively, the missing-value mark, medians, the
                     "entered the kernel" threshold, and the escaping of everything an
                     environment said (Markdown, HTML)
    model.py         the report as data (Value, Table, Section, Report) and build_report()
    measurements.py  the measured tables (identity, vDSO, vsyscall, system-call cost, speed-ups,
                     latency)
    binary.py        the binary-analysis tables (symbols, census, vDSO use, entry points) and
                     the syscall() listings
    runtimes.py      the language runtimes (Java, Python, Go, Node.js, Rust) of the runtime
                     environments: the answer sentence, at a glance, one table per clock
    page.py          the report assembled: order, names, at a glance, glossary, method,
                     problems, metadata
    exports.py       the formats: Markdown (page, per-table snippets, disassembly), CSV, JSON
    html.py          the HTML page (rendered from the same model)
"""

from vdsomatrix.report.model import Report, build_report


def render_report(docs: list[dict], *, order: list[str] | None = None,
                  load_problems: list[str] | None = None) -> str:
    """REPORT.md of result documents (the Markdown page of :func:`build_report`)."""
    from vdsomatrix.report.exports import render_markdown

    return render_markdown(build_report(docs, order=order, load_problems=load_problems))


__all__ = ["Report", "build_report", "render_report"]
