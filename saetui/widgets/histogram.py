"""The histogram widget: `saetui.ui.histogram.render_histogram`, redrawn at the widget's width."""

from __future__ import annotations

from typing import Callable, Sequence

from rich.text import Text
from textual.widget import Widget

from ..ui.histogram import format_edge, render_histogram


class Histogram(Widget):
    """A histogram that fits its width; call `plot(...)` to (re)draw it."""

    DEFAULT_CSS = """
    Histogram { height: auto; min-height: 3; }
    """

    def __init__(self, title: str = "", bar_height: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heading = title
        self.bar_height = bar_height
        self._counts: list[float] = []
        self._edges: list[float] = []
        self._x_label = ""
        self._markers: dict[float, str] | None = None
        self._fmt_edge: Callable[[float], str] = format_edge

    def plot(
        self,
        counts: Sequence[float],
        edges: Sequence[float],
        x_label: str = "",
        markers: dict[float, str] | None = None,
        fmt_edge: Callable[[float], str] | None = None,
    ) -> None:
        self._counts, self._edges = list(counts), list(edges)
        self._x_label = x_label
        self._markers = markers
        if fmt_edge is not None:
            self._fmt_edge = fmt_edge
        self.refresh(layout=True)

    def render(self) -> Text:
        return self._text(self.content_size.width)

    def _text(self, width: int) -> Text:
        return render_histogram(
            self._counts,
            self._edges,
            width=max(10, width or 40),
            height=self.bar_height,
            title=self.heading,
            x_label=self._x_label,
            markers=self._markers,
            fmt_edge=self._fmt_edge,
        )

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._text(width).plain.splitlines()) or 1
