"""Tokens shaded by activation: the one renderer the feature and probe screens share.

Each token's background is the accent colour mixed into the background in proportion
to its activation / the scale; token boundaries stay visible (alternating underline
and a thin separator), the maximum token can be marked, and token text goes through
`visible()`, so data never becomes markup or raw control codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from rich.color import Color
from rich.style import Style
from rich.text import Text

from .safe_text import visible

if TYPE_CHECKING:
    import numpy as np

BASE = (30, 30, 30)
HOT = (255, 140, 0)
# Characters per step of the legend.
LEGEND_STEPS = 8


def shade_color(fraction: float) -> Color:
    f = max(0.0, min(1.0, float(fraction)))
    rgb = tuple(int(round(b + (h - b) * f)) for b, h in zip(BASE, HOT))
    return Color.from_rgb(*rgb)


def text_color(fraction: float) -> Color:
    return Color.from_rgb(0, 0, 0) if fraction > 0.6 else Color.from_rgb(230, 230, 230)


def shaded_tokens(
    tokens: Sequence[str],
    activations: Sequence[float] | np.ndarray,
    scale: float | None = None,
    mark: int | None = None,
    cursor: int | None = None,
    separator: str = "",
) -> Text:
    """A Text of `tokens` with backgrounds by `activations` / `scale`.

    `mark` (e.g. the max token) is bold and underlined; `cursor` is reversed.
    Inactive tokens alternate two greys so their boundaries stay visible.
    """
    if scale is None:
        scale = max((float(a) for a in activations), default=0.0)
    out = Text(no_wrap=False)
    for i, (tok, act) in enumerate(zip(tokens, activations)):
        frac = float(act) / scale if scale and scale > 0 else 0.0
        if act > 0:
            style = Style(bgcolor=shade_color(max(frac, 0.08)), color=text_color(frac))
        else:
            style = Style(bgcolor=Color.from_rgb(*((40, 40, 40) if i % 2 else (52, 52, 52))), color=Color.from_rgb(200, 200, 200))
        if i == mark:
            style += Style(bold=True, underline=True)
        if i == cursor:
            style += Style(reverse=True)
        shown = visible(tok) or "∅"
        out.append(shown, style)
        if separator:
            out.append(separator)
    return out


def legend(scale: float, label: str = "activation") -> Text:
    """`0 ▇▇▇▇▇▇▇▇ max` with the colours `shaded_tokens` uses."""
    out = Text(f"{label}: 0 ")
    for step in range(LEGEND_STEPS):
        out.append("  ", Style(bgcolor=shade_color((step + 1) / LEGEND_STEPS)))
    out.append(f" {scale:.3g}   ")
    out.append("max", Style(bold=True, underline=True))
    out.append(" = strongest token")
    return out
