"""The feature map widget: `saetui.ui.feature_map.render_map` sized to the widget."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.widgets import Static

from ..ui.feature_map import render_map


class FeatureMap(Static):
    """Points (one per live feature) coloured by cluster; a selected cluster and the
    current feature stand out. Redrawn on resize."""

    DEFAULT_CSS = """
    FeatureMap { height: 1fr; min-height: 6; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.xy = np.zeros((0, 2), np.float32)
        self.point_clusters = np.zeros(0, np.int64)
        self.features = np.zeros(0, np.int64)
        self.selected: int | None = None
        self.current: int | None = None  # a feature id

    def set_points(self, xy: np.ndarray, point_clusters: np.ndarray, features: np.ndarray) -> None:
        self.xy, self.point_clusters, self.features = xy, point_clusters, np.asarray(features)
        self.redraw()

    def highlight(self, selected: int | None = None, current: int | None = None) -> None:
        self.selected, self.current = selected, current
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        if width <= 0 or height <= 0 or len(self.xy) == 0:
            self.update(Text("(no map yet)", style="dim") if len(self.xy) == 0 else "")
            return
        index = None
        if self.current is not None:
            where = np.flatnonzero(self.features == int(self.current))
            index = int(where[0]) if where.size else None
        self.update(render_map(self.xy, self.point_clusters, width, height, self.selected, index))
