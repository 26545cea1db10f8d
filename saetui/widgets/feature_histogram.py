"""A feature's activation histogram: the shared `Histogram` over its occupied log-spaced bins."""

from __future__ import annotations

import numpy as np

from .histogram import Histogram


def occupied_bins(counts: np.ndarray, edges: np.ndarray, max_activation: float) -> tuple[list[float], list[float]]:
    """The bins from the first to the last non-empty one; the last edge is the max activation."""
    counts = np.asarray(counts)
    occupied = np.flatnonzero(counts)
    if occupied.size == 0:
        return [], []
    lo, hi = int(occupied[0]), int(occupied[-1])
    shown_edges = [float(e) for e in edges[lo : hi + 2]]
    if max_activation > 0:
        shown_edges[-1] = float(max_activation)
    return [float(c) for c in counts[lo : hi + 1]], shown_edges


class FeatureHistogram(Histogram):
    """Tokens per activation bin (bins are log-spaced, so the axis is logarithmic).

    Two rows of bars (eighth-blocks give 16 levels): compact enough to sit below the contexts.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(title="", bar_height=2, **kwargs)

    def show(self, counts: np.ndarray | None, edges: np.ndarray | None, max_activation: float = 0.0) -> None:
        if counts is None or edges is None:
            self.plot([], [], x_label="")
            return
        shown_counts, shown_edges = occupied_bins(counts, edges, max_activation)
        self.plot(shown_counts, shown_edges, x_label="activation (log-spaced bins); tokens per bin", fmt_edge=lambda v: f"{v:.3g}")
