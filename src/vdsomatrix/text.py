"""Untrusted text made inert: the one place that decides which characters an environment may
not put in front of a reader (a terminal, a log, a report).

Everything an environment prints is untrusted: control characters (terminal escapes among them)
become a harmless mark, invalid UTF-8 becomes U+FFFD, and lines are bounded. The report's
Markdown and HTML escaping (report/cells.py) builds on this.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, the C1 controls (U+0080-U+009F: CSI among them), and the
# invisible characters that reorder or hide text (bidirectional overrides and isolates,
# zero-width characters, line and paragraph separators).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                     r"\u2060-\u2069\ufeff]")


# A terminal's colour and cursor sequences (ESC [ parameters intermediates final), such as the
# red the Docker engine wraps a build step's stderr in.
ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def plain(text: str, replacement: str = "?") -> str:
    """``text`` with every control character (but tab and newline) replaced."""
    return CONTROL.sub(replacement, text)


def without_escapes(text: str) -> str:
    """``text`` without terminal escape sequences, for output known to carry them (build logs)
    that is shown to a reader; still to be made :func:`plain`."""
    return ESCAPE_SEQUENCE.sub("", text)


def plain_tail(output: bytes | str, lines: int, *, replacement: str = "?") -> list[str]:
    """The last ``lines`` lines of what an environment printed, as inert printable text."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return [plain(line, replacement) for line in text.splitlines()[-lines:]]


def one_line(value: object, limit: int = 200) -> str:
    """Anything (an exception, a message) as a single bounded line of plain text."""
    text = " ".join(plain(str(value), " ").split()) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
