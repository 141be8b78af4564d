"""Turning untrusted text into inert Markdown.

Everything an environment prints (symbol names, paths, os-release fields, console lines) reaches
the report only through these functions, so that no guest can inject markup, links or HTML.
"""

from __future__ import annotations

import html
import re

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def cell(value: object, limit: int = 120) -> str:
    """A table cell: one line, Markdown and HTML specials escaped, length bounded."""
    if value is None:
        return ""
    text = _CONTROL.sub("?", str(value)).replace("\n", " ").replace("\r", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    # HTML first (so "<" can open no tag), then the specials that matter inside a table cell
    # (emphasis, code, links, the cell separator) get a backslash.
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def code_block(lines: list[str], limit: int = 400) -> str:
    """A fenced block inside <details>: HTML-escaped (an HTML block renders no Markdown)."""
    body = "\n".join(_CONTROL.sub("?", line)[:limit] for line in lines)
    return "<pre>\n" + html.escape(body, quote=False) + "\n</pre>"
