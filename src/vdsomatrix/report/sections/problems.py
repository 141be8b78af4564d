"""Problems: what each environment reported as an error, the last log lines of a failed run,
and the result files that could not be read (a part a bug broke is added by the builder)."""

from __future__ import annotations

from vdsomatrix.report.cells import Result, entries, plain_line, text
from vdsomatrix.report.guard import Guard
from vdsomatrix.report.model import Problem
from vdsomatrix.report.result_set import ResultSet

ID = "problems"
TITLE = "Problems"
REPORT_FIELD = "problems"  # a part of the page the Report holds itself, not a Section


def included(results: ResultSet) -> bool:
    return True


def build(results: ResultSet, guard: Guard) -> list[Problem]:
    return guard.pieces("problems", lambda: problems(results.results, results.load_problems))


def problems(results: list[Result], load_problems: list[str]) -> list[Problem]:
    out = []
    for r in results:
        for error in entries(r.get("errors")):
            if (shown := plain_line(error, 300)):
                out.append(Problem(r.label, shown))
        tail = [plain_line(line, 160) for line in entries(r.get("log_tail"))
                if text(line) is not None]
        if tail and r.run_status != "ok":
            out.append(Problem(r.label, "last lines: " + " ⏎ ".join(tail[-5:])))
    out += [Problem(None, "result file skipped: " + plain_line(p, 300)) for p in load_problems]
    return out
