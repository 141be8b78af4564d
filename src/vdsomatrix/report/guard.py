"""Building a report part by part: a part that a bug breaks becomes a problem line and a note
where it would be, not a lost report (the report is the product; the other parts still stand)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from vdsomatrix.report.model import Problem, Section

Piece = TypeVar("Piece")


class Guard:
    """Runs the builders of a report's parts and keeps a Problem for each that broke."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def section(self, section_id: str, title: str, build: Callable[[], Section]) -> Section:
        """A section; if its builder breaks, a section that says so."""
        try:
            return build()
        except Exception as exc:  # one broken section: the others still stand
            self.problems.append(Problem(None, f"the section {section_id} could not be built: "
                                               f"{type(exc).__name__}"))
            return Section(section_id, title, [f"(this section could not be built: "
                                               f"{type(exc).__name__})"])

    def pieces(self, what: str, build: Callable[[], list[Piece]]) -> list[Piece]:
        """A list of lines or findings (``what`` names it in the problem); empty if it breaks."""
        try:
            return build()
        except Exception as exc:  # as above: one broken part, the rest still stands
            self.problems.append(Problem(None, f"the {what} could not be built: "
                                               f"{type(exc).__name__}"))
            return []
