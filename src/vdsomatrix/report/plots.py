"""The report's figures: matplotlib drawings of the report's own numbers, as inline SVG.

Every figure is drawn from :class:`~vdsomatrix.report.model.Value` cells (a median with its min
and p90, the counted mechanism, the probe's status) and the :class:`Subject` of each row, so a
figure cannot disagree with the table beside it. Environments are rows (horizontal), in the
report's order, so that 27 names stay readable; emulated (TCG) guests sit on a shaded band and
are drawn hollow, because their nanoseconds are emulated time.

The SVG is inserted into the page unescaped, so it is not trusted as matplotlib wrote it:
:func:`checked_svg` parses it, keeps only the elements and attributes a chart needs, gives every
id a per-figure prefix (several figures share one page), and serialises it again, which escapes
every label afresh. Labels reach matplotlib already plain (no control characters) and with
math text parsing off, so no environment name can be read as markup or as TeX.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display, ever: the report is rendered on servers and in CI

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from vdsomatrix.report.cells import fmt_ns  # noqa: E402
from vdsomatrix.report.model import Subject, Value  # noqa: E402
from vdsomatrix.text import plain  # noqa: E402

# Settings for every figure (applied per drawing, never to matplotlib's globals): text stays text
# (small, searchable, selectable), ids and output are the same for the same numbers, and a "$"
# in an environment name is a dollar sign, not TeX.
RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "vdsomatrix",
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # one name: it is written into every label
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "x",
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
}
SVG_METADATA = {"Date": None}  # no timestamp: the same results draw the same bytes

# How a call entered the kernel, as counted: colour and marker shape together, so the key
# survives grey-scale printing and colour blindness (Okabe-Ito colours).
MECHANISM_STYLES: dict[str, tuple[str, str, str]] = {
    # kind: (colour, marker, legend text)
    "user": ("#009E73", "o", "user space only (counted: no syscall, no trap)"),
    "no syscall": ("#0072B2", "D", "no syscall (traps not countable here)"),
    "trap": ("#E69F00", "^", "trap into the kernel (fault)"),
    "syscall": ("#D55E00", "s", "system call"),
    "?": ("#777777", "X", "not counted"),
}
EMULATED_BAND = "#efe7f5"
EMULATED_TEXT = "#5b2a86"
BAR_COLOUR = "#bbbbbb"
LABEL_LIMIT = 36  # characters of an environment name on an axis; the tables show it whole
ROW_INCHES = 0.25
WIDE_RANGE = 8.0  # a panel whose values span more than this factor gets a log axis
FLOOR_NS = 0.1  # a log axis cannot show zero: medians below this are drawn at it
CEILING = 1e12  # a number beyond this is no measurement anyone can draw next to the others


@dataclass(frozen=True)
class Cell:
    """One environment's value in one panel."""

    subject: Subject
    value: Value


@dataclass(frozen=True)
class Panel:
    """One column of small multiples: a title and a cell per environment (the same
    environments, in the same order, in every panel of a figure)."""

    title: str
    cells: list[Cell]


@dataclass(frozen=True)
class Plot:
    """A drawn figure: ``svg`` is checked markup (see :func:`checked_svg`)."""

    id: str
    title: str
    caption: str
    svg: str


class UnsafeSvg(ValueError):
    """The drawing contained something a chart does not need (it is not inserted)."""


# ----------------------------------------------------------------------- shared pieces --------

def mechanism_kind(mechanism: str | None) -> str:
    """The legend entry of a mechanism ("2 syscalls" is a kind of "syscall")."""
    if mechanism in MECHANISM_STYLES:
        return mechanism
    if mechanism and mechanism.endswith("syscalls"):
        return "syscall"
    return "?"


def axis_label(subject: Subject) -> str:
    label = plain(subject.label or subject.environment or "?", "?").replace("\n", " ")
    return label if len(label) <= LABEL_LIMIT else label[: LABEL_LIMIT - 1] + "…"


def measured(value: Value) -> bool:
    return (value.number is not None and math.isfinite(value.number)
            and abs(value.number) <= CEILING and value.status in (None, "ok"))


def why_missing(value: Value) -> str:
    """The short word drawn where a panel has no number for an environment."""
    if value.status and value.status != "ok":
        return plain(value.status, "?")[:20]
    if value.number is not None:
        return "off scale"
    return "—"


def _bounded(number: float | None, fallback: float) -> float:
    """A whisker's end that a plot can draw (the table shows the number as it is)."""
    if number is None or not math.isfinite(number):
        return fallback
    return min(max(number, FLOOR_NS), CEILING)


def _figure(rows: int, panels: int, panel_inches: float) -> Figure:
    height = ROW_INCHES * max(rows, 2) + 1.7
    return Figure(figsize=(1.9 + panel_inches * panels, height), layout="constrained")


def _environment_axis(ax, subjects: Sequence[Subject], *, labels: bool) -> None:
    """Rows top to bottom in report order, emulated rows shaded, groups separated."""
    n = len(subjects)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(range(n))
    if labels:
        ax.set_yticklabels([axis_label(s) for s in subjects])
        for tick, subject in zip(ax.get_yticklabels(), subjects, strict=True):
            if subject.emulated:
                tick.set_color(EMULATED_TEXT)
    else:
        ax.tick_params(axis="y", labelleft=False)
    ax.tick_params(axis="y", length=0)
    for i, subject in enumerate(subjects):
        if subject.emulated:
            ax.axhspan(i - 0.5, i + 0.5, color=EMULATED_BAND, zorder=0, linewidth=0)
    for i in range(1, n):
        if subjects[i].group != subjects[i - 1].group:
            ax.axhline(i - 0.5, color="#888888", linewidth=0.8, zorder=1)


def _legend(fig: Figure, kinds: set[str], *, emulated: bool, extra: Sequence = (),
            columns: int = 4) -> None:
    handles = [Line2D([], [], linestyle="", marker=MECHANISM_STYLES[k][1],
                      color=MECHANISM_STYLES[k][0], markersize=6, label=MECHANISM_STYLES[k][2])
               for k in MECHANISM_STYLES if k in kinds]
    handles += list(extra)
    if emulated:
        handles.append(Patch(facecolor=EMULATED_BAND, edgecolor=EMULATED_TEXT, linewidth=0.6,
                             label="emulated guest (TCG, †): hollow marks, emulated ns"))
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=min(columns, len(handles)),
                   frameon=False, fontsize=8, handletextpad=0.4, columnspacing=1.4)


def _log_axis(ax) -> None:
    """A log x axis labelled 1, 2, 5, 10, 20, ... in plain numbers (matplotlib's own labels
    are TeX, and math text is off)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _axis_scale(ax, lows: list[float], highs: list[float], *, pad_right: float) -> bool:
    """A log axis where values span more than ``WIDE_RANGE``; room on the right for labels.
    Returns whether the axis is logarithmic."""
    if not lows:
        ax.set_xlim(0, 1)
        return False
    low, high = max(min(lows), FLOOR_NS), max(max(highs), FLOOR_NS)
    if high / low > WIDE_RANGE:
        _log_axis(ax)
        ax.set_xlim(low / 1.6, high * pad_right ** 2)
        return True
    span = high - min(0.0, low)
    ax.set_xlim(0, high + span * (pad_right - 1))
    return False


def _checked(fig: Figure, plot_id: str) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buffer, format="svg", metadata=SVG_METADATA)
    return checked_svg(buffer.getvalue(), plot_id)


def _plot(plot_id: str, title: str, caption: str, draw) -> Plot:
    """The figure ``draw()`` makes under the report's settings (text properties are fixed at
    creation), as checked SVG."""
    with matplotlib.rc_context(RC):
        fig = draw()
    return Plot(plot_id, title, caption, _checked(fig, plot_id))


def _subjects(panels: Sequence[Panel]) -> list[Subject]:
    """The environments of a figure, top to bottom (every panel has the same)."""
    return [c.subject for c in panels[0].cells] if panels else []


def _small_multiples(panels: Sequence[Panel], subjects: list[Subject],
                     panel_inches: float) -> tuple[Figure, list[tuple]]:
    """A figure of one axes per panel, side by side on the environments' axis (labelled on
    the first), each titled; returns it and the ``(axes, panel)`` pairs."""
    fig = _figure(len(subjects), len(panels), panel_inches)
    axes = fig.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
    for n, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        _environment_axis(ax, subjects, labels=n == 0)
        ax.set_title(plain(panel.title, "?"), loc="left")
    return fig, list(zip(axes, panels, strict=False))


def _no_number(ax, y: int, value: Value) -> None:
    """Why a panel has no mark for an environment, in small text at the start of its row."""
    ax.text(0.01, y, why_missing(value), transform=ax.get_yaxis_transform(),
            va="center", ha="left", fontsize=7, color="#777777")


# ----------------------------------------------------------------------- the figures ----------

def latency_plot(plot_id: str, title: str, caption: str, panels: Sequence[Panel]) -> Plot:
    """Median latency per environment with a min–p90 bar, one panel per call, coloured and
    shaped by the counted mechanism; a panel whose values span a wide range is logarithmic."""

    def draw() -> Figure:
        subjects = _subjects(panels)
        fig, drawn = _small_multiples(panels, subjects, 2.7)
        kinds: set[str] = set()
        for ax, panel in drawn:
            lows, highs = [], []
            for y, cell in enumerate(panel.cells):
                value = cell.value
                if not measured(value):
                    _no_number(ax, y, value)
                    continue
                median = max(value.number, FLOOR_NS)
                low = min(_bounded(value.low, median), median)
                high = max(_bounded(value.high, median), median)
                kind = mechanism_kind(value.mechanism)
                kinds.add(kind)
                colour, marker, _ = MECHANISM_STYLES[kind]
                ax.errorbar([median], [y], xerr=[[median - low], [high - median]], fmt=marker,
                            color=colour, ecolor=colour, elinewidth=1.2, capsize=2,
                            markersize=5, markeredgewidth=1.1,
                            markerfacecolor="white" if cell.subject.emulated else colour,
                            zorder=3)
                ax.annotate(fmt_ns(value.number), (high, y), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=6.5,
                            color="#333333", annotation_clip=False)
                lows.append(low)
                highs.append(high)
            log = _axis_scale(ax, lows, highs, pad_right=1.3)
            ax.set_xlabel("ns per call" + (" (log scale)" if log else ""))
        _legend(fig, kinds, emulated=any(s.emulated for s in subjects),
                extra=[Line2D([], [], color="#444444", marker="|", markersize=8,
                              label="bar: min to p90 of the batches")])
        return fig

    return _plot(plot_id, title, caption, draw)


def speedup_plot(plot_id: str, title: str, caption: str, panels: Sequence[Panel]) -> Plot:
    """How many times faster the vDSO is than the system call: a bar from 1× (no gain) to the
    quotient, on a log axis so that 0.5× and 2× are as far from 1×; the mark at its end is
    coloured by how the vDSO call entered the kernel (a vDSO that falls back to a syscall
    gains nothing)."""

    def draw() -> Figure:
        subjects = _subjects(panels)
        fig, drawn = _small_multiples(panels, subjects, 2.4)
        kinds: set[str] = set()
        for ax, panel in drawn:
            _log_axis(ax)
            ratios = []
            for y, cell in enumerate(panel.cells):
                value = cell.value
                if not measured(value) or value.number <= 0:
                    _no_number(ax, y, value)
                    continue
                ratio = value.number
                ratios.append(ratio)
                kind = mechanism_kind(value.mechanism)
                kinds.add(kind)
                colour, marker, _ = MECHANISM_STYLES[kind]
                ax.barh([y], [ratio - 1], left=1, height=0.55, color=BAR_COLOUR, zorder=2,
                        hatch="////" if cell.subject.emulated else None, edgecolor="white",
                        linewidth=0)
                lower_bound = value.bound == "lower"
                ax.plot([ratio], [y], linestyle="", marker=">" if lower_bound else marker,
                        color=colour, markersize=5,
                        markerfacecolor="white" if cell.subject.emulated else colour, zorder=3)
                shown = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.1f}"
                slower = ratio < 1  # the label goes on the side away from the 1× line
                ax.annotate(("> " if lower_bound else "") + shown + "×", (ratio, y),
                            xytext=(-5 if slower else 5, 0), textcoords="offset points",
                            va="center", ha="right" if slower else "left", fontsize=6.5,
                            color="#333333", annotation_clip=False)
            ax.axvline(1, color="#444444", linewidth=0.9, zorder=2)
            low = min([*ratios, 1.0]) / (3.0 if min([*ratios, 1.0]) < 1 else 1.5)
            high = max([*ratios, 1.0]) * 3.0
            ax.set_xlim(low, high)
            ax.set_xlabel("syscall ÷ vDSO (log scale; 1 = no gain)")
        _legend(fig, kinds, emulated=any(s.emulated for s in subjects))
        return fig

    return _plot(plot_id, title, caption, draw)


def mechanism_plot(plot_id: str, title: str, caption: str, columns: Sequence[Panel]) -> Plot:
    """A grid: environments down, calls across, one mark per measured call showing how it
    entered the kernel; a call that crashed or is unsupported says so in small text."""

    def draw() -> Figure:
        subjects = _subjects(columns)
        fig = _figure(len(subjects), 1, 0.62 * max(len(columns), 1))
        ax = fig.subplots()
        _environment_axis(ax, subjects, labels=True)
        ax.grid(False)
        ax.set_xlim(-0.5, len(columns) - 0.5)
        ax.set_xticks(range(len(columns)))
        # Above the grid, slanted up and to the right from their column.
        ax.set_xticklabels([plain(c.title, "?") for c in columns], rotation=35, ha="left",
                           rotation_mode="anchor")
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", length=0)
        for x in range(1, len(columns)):
            ax.axvline(x - 0.5, color="#eeeeee", linewidth=0.6, zorder=1)
        kinds: set[str] = set()
        for x, column in enumerate(columns):
            for y, cell in enumerate(column.cells):
                value = cell.value
                if value.status == "ok" or (value.status is None and value.mechanism):
                    kind = mechanism_kind(value.mechanism)
                    kinds.add(kind)
                    colour, marker, _ = MECHANISM_STYLES[kind]
                    ax.plot([x], [y], linestyle="", marker=marker, color=colour, markersize=6,
                            markerfacecolor="white" if cell.subject.emulated else colour,
                            zorder=3)
                elif value.status:
                    ax.text(x, y, why_missing(value), ha="center", va="center", fontsize=5.5,
                            color="#B00020" if value.status == "crashed" else "#777777")
        for spine in ax.spines.values():
            spine.set_visible(False)
        # A grid of few columns is narrow: its legend takes more lines.
        _legend(fig, kinds, emulated=any(s.emulated for s in subjects),
                columns=2 if len(columns) < 14 else 4)
        return fig

    return _plot(plot_id, title, caption, draw)


# ----------------------------------------------------------------------- checking -------------

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)
# What matplotlib's SVG backend writes for lines, markers, bars, hatches and text.
ALLOWED_ELEMENTS = {"svg", "g", "defs", "path", "use", "clipPath", "rect", "text", "pattern",
                    "title", "desc"}
DROPPED_ELEMENTS = {"metadata", "style"}  # RDF about matplotlib; a stylesheet the page has
ALLOWED_ATTRIBUTES = {
    "id", "d", "style", "transform", "x", "y", "width", "height", "viewBox", "version",
    "clip-path", "href", "patternUnits", "fill", "stroke", "class", "font-size", "text-anchor",
    "dominant-baseline", "opacity",
}
TEXT_ELEMENTS = {"text", "title", "desc"}
_URL = re.compile(r"url\(\s*([^)]*)\)")
_IDENT = re.compile(r"^[A-Za-z_][\w.-]*$")


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def checked_svg(svg: str, prefix: str) -> str:
    """The SVG as markup safe to insert into a page: only chart elements, no event handlers,
    links only to its own ids (all prefixed with ``prefix``), no outside resources, and every
    text escaped by the serialiser. Raises :class:`UnsafeSvg` for anything else."""
    if not _IDENT.match(prefix):
        raise UnsafeSvg(f"bad id prefix {prefix!r}")
    root = _svg_root(svg)
    _drop_elements(root)
    referenced = _referenced_ids(root)
    for element in root.iter():
        name = _checked_element(element)
        for attribute in list(element.attrib):
            _check_attribute(element, name, attribute, prefix, referenced)
    _unwrap_bare_groups(root)
    root.set("class", "chart")
    return ET.tostring(root, encoding="unicode")


def _svg_root(svg: str) -> ET.Element:
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as exc:
        raise UnsafeSvg(f"not well-formed: {exc}") from None
    if root.tag != f"{{{SVG_NS}}}svg":
        raise UnsafeSvg(f"root element {root.tag!r}")
    return root


def _drop_elements(root: ET.Element) -> None:
    """Removes the elements a chart does without (``DROPPED_ELEMENTS``), before any check."""
    dropped = {f"{{{SVG_NS}}}{d}" for d in DROPPED_ELEMENTS}
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in dropped:
                parent.remove(child)


def _referenced_ids(root: ET.Element) -> set[str]:
    """The ids something points at: only these are kept (the others, one per group matplotlib
    writes, are half of a figure's bytes)."""
    referenced = set()
    for element in root.iter():
        for attribute, value in element.attrib.items():
            if _local(attribute) == "href" and value.startswith("#"):
                referenced.add(value[1:])
            referenced.update(m.group(1).strip().removeprefix("#") for m in _URL.finditer(value))
    return referenced


def _own_reference(value: str, prefix: str) -> str:
    target = value.strip()
    if not target.startswith("#") or not _IDENT.match(target[1:]):
        raise UnsafeSvg(f"reference outside the figure: {value[:60]!r}")
    return f"#{prefix}-{target[1:]}"


def _checked_element(element: ET.Element) -> str:
    """An allowed SVG element's local name; its text kept only where it is a chart's text, its
    tail (indentation) dropped."""
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(f"{{{SVG_NS}}}"):
        raise UnsafeSvg(f"element {tag!r}")
    name = _local(tag)
    if name not in ALLOWED_ELEMENTS:
        raise UnsafeSvg(f"element {name!r}")
    if name not in TEXT_ELEMENTS and (element.text or "").strip():
        raise UnsafeSvg(f"text inside {name!r}")
    if (element.tail or "").strip():
        raise UnsafeSvg(f"text after {name!r}")
    element.tail = None  # indentation
    if name not in TEXT_ELEMENTS:
        element.text = None
    return name


def _check_attribute(element: ET.Element, name: str, attribute: str, prefix: str,
                     referenced: set[str]) -> None:
    """An allowed attribute, its ids and references made the figure's own (``prefix``); an
    id nothing points at is removed."""
    local = _local(attribute)
    value = element.attrib[attribute]
    if local not in ALLOWED_ATTRIBUTES:
        raise UnsafeSvg(f"attribute {local!r} on {name!r}")
    if local == "id":
        if not _IDENT.match(value):
            raise UnsafeSvg(f"id {value[:60]!r}")
        if value not in referenced:
            del element.attrib[attribute]
            return
        element.set(attribute, f"{prefix}-{value}")
    elif local == "href":
        element.set(attribute, _own_reference(value, prefix))
    elif "url(" in value:
        element.set(attribute, _URL.sub(
            lambda m: f"url({_own_reference(m.group(1), prefix)})", value))
    if re.search(r"javascript:|expression\(|@import|<", element.get(attribute, ""), re.I):
        raise UnsafeSvg(f"active content in {local!r}")


def _unwrap_bare_groups(parent: ET.Element) -> None:
    """A <g> without attributes groups nothing a browser needs: its children take its place."""
    children = []
    for child in parent:
        _unwrap_bare_groups(child)
        if child.tag == f"{{{SVG_NS}}}g" and not child.attrib:
            children.extend(child)
        else:
            children.append(child)
    parent[:] = children
