"""Which features of a text are distinctive: ranked by how unusual each activation is.

The guide ranks a text's features by their raw maximum activation. On a real SAE (and
on the demo) that puts dense, generic features first: they fire on '.', 'the', 'when'
at a level they reach all the time. The distinctive ranking asks instead, from the
feature index, how *unusual* the activation is for that feature:

- surprise: -log10 P(the feature reaches this activation on a corpus token)
  = -log10(density x tail(a)), where density is the fraction of indexed tokens it fires
  on and tail(a) the fraction of its firing tokens at or above `a` (its histogram,
  log-interpolated inside a bin, with half a pseudo-count so the top is finite);
- level: sqrt(a / its mean activation when firing) (a weak brush of a feature that
  usually fires hard says less than a firing at its usual strength);
- breadth: log(1 + the effective number of distinct tokens among its top and sampled
  contexts' peaks), so a detector of one frequent token (' We', ' a', ' at') ranks
  below a feature that picks out a class of tokens (foods, cities, emotions).

score = surprise x level x breadth. Index data used (public accessors only):
`FeatureIndex.feature(f)` -> `FeatureStats.count`, `.tokens`, `.histogram`,
`.mean_activation`, `.top[*]` and `.samples[*]` (`window_tokens`, `max_index`), and
`histogram_edges()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .index import FeatureIndex, FeatureStats, histogram_edges

if TYPE_CHECKING:
    from .session import Session

RANK_DISTINCTIVE = "distinctive"
RANK_ACTIVATION = "activation"
RANK_MODES = (RANK_DISTINCTIVE, RANK_ACTIVATION)


@dataclass(frozen=True)
class RankedFeature:
    """One feature of a text, as ranked."""

    feature_id: int
    score: float  # the ranking's score (the activation itself when ranked by activation)
    max_activation: float
    n_firing: int  # tokens of the text it fires on
    peak_index: int  # index of its strongest token among the text's tokens (BOS excluded)
    peak_token: str  # that token's display string
    surprise: float | None = None  # -log10 P(activation >= max_activation) from the index
    breadth: float | None = None  # effective number of distinct peak tokens in the index


def tail_fraction(stats: FeatureStats, activation: float, edges: np.ndarray | None = None) -> float:
    """Fraction of the feature's firing tokens with activation >= `activation` (from its histogram).

    Inside a bin, mass is spread uniformly in log(activation); half a pseudo-count keeps
    an activation beyond everything indexed finite.
    """
    edges = histogram_edges() if edges is None else edges
    hist = np.asarray(stats.histogram, dtype=np.float64)
    a = float(activation)
    if stats.count <= 0 or a <= 0:
        return 1.0
    b = int(np.clip(np.searchsorted(edges, a, side="right") - 1, 0, hist.size - 1))
    above = float(hist[b + 1 :].sum())
    lo, hi = edges[b], edges[b + 1]
    if above == 0 and stats.max_activation > lo:
        hi = min(hi, stats.max_activation)  # the top bin's mass ends at the feature's max
    if a >= hi:
        inside = 0.0
    elif lo > 0 and np.isfinite(hi):
        inside = (np.log(hi) - np.log(a)) / (np.log(hi) - np.log(lo))
    else:
        inside = 0.5
    above += hist[b] * float(np.clip(inside, 0.0, 1.0))
    return (above + 0.5) / (stats.count + 1.0)


# The strongest contexts the breadth looks at (the guide's 20 examples): deeper ones are weaker
# firings that say less about what the feature is about.
BREADTH_CONTEXTS = 20


def breadth(stats: FeatureStats) -> float:
    """Effective number (exp entropy) of distinct tokens at the peaks of its strongest contexts."""
    kept = list(stats.top)[:BREADTH_CONTEXTS] + list(stats.samples)
    peaks = [int(e.window_tokens[e.max_index]) for e in kept if e.activation > 0]
    if not peaks:
        return 1.0
    _, counts = np.unique(peaks, return_counts=True)
    p = counts / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def distinctive_score(stats: FeatureStats, activation: float, edges: np.ndarray | None = None) -> tuple[float, float, float]:
    """(score, surprise, breadth) of one activation of one feature (see the module's doc)."""
    if stats.count <= 0 or stats.tokens <= 0 or activation <= 0:
        # Never seen firing in the index: as surprising as the index can tell, breadth unknown.
        surprise = float(np.log10(max(stats.tokens, 1) * 2.0))
        return surprise * np.log(2.0), surprise, 1.0
    density = stats.count / stats.tokens
    surprise = float(-np.log10(density * tail_fraction(stats, activation, edges)))
    level = float(np.sqrt(activation / stats.mean_activation)) if stats.mean_activation > 0 else 1.0
    width = breadth(stats)
    return surprise * level * float(np.log1p(width)), surprise, width


def rank_text(index: FeatureIndex | None, result: Any, mode: str = RANK_DISTINCTIVE, top_k: int | None = None) -> list[RankedFeature]:
    """The features of a probed text (`engine.probe.ProbeResult`), ranked.

    `mode` "activation": the guide's order (max activation, ties by feature id).
    "distinctive" needs the index (complete or partial). The result should hold every
    firing feature (probe with `text_top` >= d_sae), or the ranking only sees the
    strongest ones.
    """
    if mode not in RANK_MODES:
        from .errors import UserError

        raise UserError(f"--rank {mode!r} is not a ranking", f"Use one of: {', '.join(RANK_MODES)}")
    hits = list(result.top_features)
    tokens: Sequence[str] = result.tokens
    rows: list[RankedFeature] = []
    if mode == RANK_ACTIVATION or index is None:
        for h in hits:
            rows.append(RankedFeature(h.feature_id, h.max_activation, h.max_activation, h.n_firing, h.argmax, tokens[h.argmax]))
        rows.sort(key=lambda r: (-r.max_activation, r.feature_id))
    else:
        edges = histogram_edges()
        for h in hits:
            stats = index.feature(h.feature_id)
            score, surprise, width = distinctive_score(stats, h.max_activation, edges)
            rows.append(RankedFeature(h.feature_id, score, h.max_activation, h.n_firing, h.argmax, tokens[h.argmax], surprise, width))
        rows.sort(key=lambda r: (-r.score, -r.max_activation, r.feature_id))
    return rows if top_k is None else rows[: int(top_k)]


def top_features(session: "Session", index: FeatureIndex | None, text: str, top_k: int = 10, mode: str = RANK_DISTINCTIVE) -> tuple[Any, list[RankedFeature]]:
    """Probe `text` (every firing feature kept) and rank its features: (ProbeResult, rows)."""
    from .probe import probe_text

    result = probe_text(session, text, text_top=session.sae.d_sae)
    return result, rank_text(index, result, mode, top_k)
