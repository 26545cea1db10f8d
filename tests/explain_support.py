"""Synthetic feature indexes (built through FeatureIndex.absorb) and the demo's labelled pass."""

from __future__ import annotations

import numpy as np

from saetui.engine.index import WINDOW_AFTER, WINDOW_BEFORE, FeatureIndex


def synthetic_index(contexts: np.ndarray, feats: np.ndarray, top_k: int = 20, samples: int = 12, batch: int = 16) -> FeatureIndex:
    """An index of `feats` (n_contexts, L - 1, d_sae) over `contexts` (n, L) whose position 0 is BOS."""
    n, length = contexts.shape
    meta = dict(format=1, key="synthetic", complete=False, contexts_done=0, n_contexts=n, budget=n * length, top_k=top_k,
                window=min(WINDOW_BEFORE + 1 + WINDOW_AFTER, length - 1), samples=samples, first_position=1)
    index = FeatureIndex.empty(meta, contexts, feats.shape[2])
    for s in range(0, n, batch):
        index.absorb(s, np.ascontiguousarray(feats[s : s + batch], dtype=np.float32))
    index.meta["complete"] = True
    return index
