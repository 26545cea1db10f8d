"""How the feature screen shows one context: a header line, then its tokens shaded.

Token strings go through `shaded_tokens`, which makes every control character visible
and never parses markup; the header holds only numbers.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from ..engine.features import ShownContext
from ..ui.shading import shaded_tokens


def context_prompt(label: str, shown: ShownContext, scale: float) -> Text:
    """`label  activation  ctx C pos P` over the window's shaded tokens (max marked)."""
    e = shown.example
    head = Text()
    head.append(label, Style(bold=True))
    head.append(f"  {e.activation:.4g}", Style(color="orange1", bold=True))
    head.append(f"  context {e.context_id} · position {e.position}", Style(dim=True))
    if e.quantile is not None:
        head.append(f" · ≈{e.quantile:.0%} of firing contexts are weaker", Style(dim=True))
    start = "… " if e.window_start > 1 else ""
    body = Text(start, style=Style(dim=True))
    body.append_text(shaded_tokens(shown.tokens, [float(a) for a in e.window_acts], scale=scale, mark=e.max_index))
    body.append(" …", Style(dim=True))
    return Text.assemble(head, "\n", body)
