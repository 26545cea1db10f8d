"""A terminal map of an SAE's features: 2-D points drawn with Braille characters.

Each character cell holds 2 x 4 dots (Unicode Braille, U+2800 + a bit per dot), so a
60 x 20 cell map has 120 x 80 dot positions. A cell takes the colour of the cluster with
most points in it; when a cluster is selected its cells are bright and the rest dim; the
current feature is drawn as a solid marker. Pure Rich (no Textual): `render_map` returns Text.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rich.text import Text

# dot (column, row) inside a cell -> its bit in the Braille pattern
_DOT_BITS = np.array([[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]], dtype=np.int64)
BRAILLE_BASE = 0x2800
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta",
           "bright_green", "bright_blue", "bright_red", "white")
SELECTED_STYLE = "bold bright_yellow"
CURRENT_MARK = "◉"
CURRENT_STYLE = "bold reverse bright_red"


def braille_char(dots: Sequence[tuple[int, int]]) -> str:
    """The Braille character with these (column 0-1, row 0-3) dots raised."""
    bits = 0
    for col, row in dots:
        bits |= int(_DOT_BITS[col, row])
    return chr(BRAILLE_BASE + bits)


def _scaled(values: np.ndarray, size: int) -> np.ndarray:
    """Values to integer positions 0..size-1 (1st-99th percentile spread; outliers clipped)."""
    if values.size == 0:
        return values.astype(np.int64)
    lo, hi = np.percentile(values, [1, 99]) if values.size >= 50 else (values.min(), values.max())
    if not hi > lo:
        return np.full(values.shape, size // 2, np.int64)
    pos = (values - lo) / (hi - lo) * (size - 1)
    return np.clip(np.rint(pos), 0, size - 1).astype(np.int64)


def render_map(
    xy: np.ndarray,
    clusters: np.ndarray | None = None,
    width: int = 60,
    height: int = 20,
    selected: int | None = None,
    current: int | None = None,
) -> Text:
    """Draw points `xy` (n, 2) in `width` x `height` cells. `clusters`: a cluster id per
    point (colours); `selected`: a cluster id to stand out; `current`: the index of one point
    to mark. Lines end with newlines except the last."""
    width, height = max(1, int(width)), max(1, int(height))
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    cl = np.zeros(n, np.int64) if clusters is None else np.asarray(clusters, dtype=np.int64)
    dx = _scaled(xy[:, 0], 2 * width)
    dy = (4 * height - 1) - _scaled(xy[:, 1], 4 * height)  # up is up
    cx, cy = dx // 2, dy // 4
    bits = np.zeros((height, width), np.int64)
    np.bitwise_or.at(bits, (cy, cx), _DOT_BITS[dx % 2, dy % 4])
    # the most frequent cluster per cell (ties: the smaller id); the selected one wins its cells
    cell = cy * width + cx
    owner = np.full(height * width, -1, np.int64)
    has_selected = np.zeros(height * width, bool)
    if n:
        order = np.lexsort((cl, cell))
        keys = np.stack([cell[order], cl[order]], 1)
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        best = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
        seen = set()
        for i in best:
            c = int(uniq[i, 0])
            if c not in seen:
                seen.add(c)
                owner[c] = uniq[i, 1]
        if selected is not None:
            has_selected[cell[cl == selected]] = True
    mark = None
    if current is not None and 0 <= current < n:
        mark = (int(cy[current]), int(cx[current]))
    out = Text(no_wrap=True, overflow="crop")
    for row in range(height):
        for col in range(width):
            if mark == (row, col):
                out.append(CURRENT_MARK, CURRENT_STYLE)
                continue
            b = int(bits[row, col])
            if b == 0:
                out.append(" ")
                continue
            i = row * width + col
            if has_selected[i]:
                style = SELECTED_STYLE
            else:
                style = PALETTE[int(owner[i]) % len(PALETTE)]
                if selected is not None:
                    style += " dim"
            out.append(chr(BRAILLE_BASE + b), style)
        if row < height - 1:
            out.append("\n")
    return out


def family_line(cluster, siblings: Sequence[int], names: dict[int, str] | None = None) -> Text:
    """For the feature page: "cluster 3 · label · 12 members, cohesion 0.21 · siblings: 40 name,
    41, ...". `cluster`, `siblings`: from `saetui.engine.clusters.feature_family`. Names and
    labels are untrusted and shown literally."""
    from .safe_text import literal

    names = names or {}
    out = Text(no_wrap=True, overflow="ellipsis")
    if cluster is None:
        out.append("No cluster: the feature is dead on the indexed tokens", style="dim")
        return out
    out.append(f"cluster {cluster.id}", style="bold")
    out.append(" · ")
    out.append_text(literal(cluster.label))
    coh = "" if cluster.cohesion is None else f", cohesion {cluster.cohesion:.2f}"
    out.append(f" · {cluster.size} members{coh}", style="dim")
    if siblings:
        out.append(" · siblings: ")
        for i, f in enumerate(siblings):
            if i:
                out.append(", ")
            out.append(str(f), style="bold")
            if names.get(f):
                out.append(" ")
                out.append_text(literal(names[f], style="italic"))
    return out
