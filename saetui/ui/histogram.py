"""A text histogram in plain Rich: vertical bars in eighth-blocks, a count axis, and labelled bin edges.

`render_histogram` is a pure function: `saetui eval` prints it, and the `Histogram`
widget (saetui/widgets/histogram.py) draws it at its own width. Bins that do not fit
the width are merged (summed) in runs, so any number of bins draws in any width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"


def format_edge(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.3g}"


def _fmt_count(n: float) -> str:
    n = float(n)
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}"


def merge_bins(counts: Sequence[float], edges: Sequence[float], max_bins: int) -> tuple[list[float], list[float]]:
    """Sum adjacent bins so that at most `max_bins` remain; edges follow."""
    counts, edges = list(counts), list(edges)
    n = len(counts)
    if n <= max_bins or max_bins <= 0:
        return counts, edges
    group = math.ceil(n / max_bins)
    out_counts = [sum(counts[i : i + group]) for i in range(0, n, group)]
    out_edges = [edges[i] for i in range(0, n, group)] + [edges[-1]]
    return out_counts, out_edges


def render_histogram(
    counts: Sequence[float],
    edges: Sequence[float],
    width: int = 40,
    height: int = 5,
    title: str = "",
    x_label: str = "",
    markers: dict[float, str] | None = None,
    fmt_edge: Callable[[float], str] = format_edge,
    bar_style: str = "cyan",
) -> Text:
    """Bars for `counts` (one per bin between consecutive `edges`) in `width` columns.

    `markers` maps an x value to a one-character label shown under the axis (e.g. k).
    """
    out = Text(no_wrap=True, overflow="crop")
    if title:
        out.append(title + "\n", style="bold")
    counts = [max(0.0, float(c)) for c in counts]
    edges = [float(e) for e in edges]
    if not counts or len(edges) != len(counts) + 1:
        out.append("(no data)", style="dim")
        return out
    peak = max(counts)
    label_w = max(len(_fmt_count(peak)), 1)
    # The axis takes label_w + 1 columns, and the edge labels may reach one past the bars.
    room = max(4, width - label_w - 2)
    counts, edges = merge_bins(counts, edges, room)
    col_w = max(1, room // len(counts))
    plot_w = col_w * len(counts)
    height = max(1, height)
    eighths = height * 8
    levels = [0 if c <= 0 or peak <= 0 else max(1, round(c / peak * eighths)) for c in counts]
    for row in range(height):
        floor = (height - 1 - row) * 8
        label = _fmt_count(peak) if row == 0 else ""
        out.append(label.rjust(label_w) + "│", style="dim")
        line = "".join(BLOCKS[min(8, max(0, lvl - floor))] * col_w for lvl in levels)
        out.append(line + "\n", style=bar_style)
    out.append("0".rjust(label_w) + "└" + "─" * plot_w + "\n", style="dim")
    # Edge labels at the left, the middle and the right of the axis.
    axis = [" "] * (plot_w + 1)

    def put(col: int, text: str) -> None:
        col = max(0, min(col, plot_w + 1 - len(text)))
        if all(c == " " for c in axis[max(0, col - 1) : col + len(text) + 1]):
            axis[col : col + len(text)] = list(text)

    put(0, fmt_edge(edges[0]))
    put(plot_w + 1, fmt_edge(edges[-1]))
    mid = len(counts) // 2
    if 0 < mid < len(counts):
        put(mid * col_w - len(fmt_edge(edges[mid])) // 2, fmt_edge(edges[mid]))
    out.append(" " * (label_w + 1) + "".join(axis).rstrip() + "\n", style="dim")
    if markers:
        marks = [" "] * (plot_w + 1)
        span = edges[-1] - edges[0]
        for value, char in markers.items():
            if span <= 0 or not edges[0] <= value <= edges[-1]:
                continue
            col = min(plot_w - 1, int((value - edges[0]) / span * plot_w))
            marks[col] = char[:1]
        out.append(" " * (label_w + 1) + "".join(marks).rstrip() + "\n", style="bold yellow")
    if x_label:
        out.append(" " * (label_w + 1) + x_label + "\n", style="dim")
    out.rstrip()
    return out
