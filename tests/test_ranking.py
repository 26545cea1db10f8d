"""The distinctive ranking: a constructed case, and the demo's planted concepts."""

from __future__ import annotations

import numpy as np
import pytest

from explain_support import synthetic_index

from saetui.engine.probe import FeatureHit
from saetui.engine.ranking import RANK_ACTIVATION, RANK_DISTINCTIVE, distinctive_score, rank_text, tail_fraction


class FakeResult:
    """The parts of a ProbeResult the ranking reads."""

    def __init__(self, hits, tokens):
        self.top_features = hits
        self.tokens = tokens


def _dense_and_rare():
    rng = np.random.default_rng(0)
    n, length, vocab = 256, 33, 200
    contexts = rng.integers(10, vocab, size=(n, length))
    contexts[:, 0] = 1
    body = contexts[:, 1:]
    feats = np.zeros((n, length - 1, 2), np.float32)
    # Feature 0: dense, on half of all tokens, activation 2-4 (high raw values).
    dense = rng.random(body.shape) < 0.5
    feats[..., 0] = np.where(dense, rng.uniform(2.0, 4.0, body.shape), 0)
    # Feature 1: rare, only on a class of five rare tokens (planted), activation 0.5-1.5.
    rare_tokens = np.array([3, 4, 5, 6, 7])
    plant = rng.random(body.shape) < 0.004
    body[plant] = rng.choice(rare_tokens, size=int(plant.sum()))
    feats[..., 1] = np.where(np.isin(body, rare_tokens), rng.uniform(0.5, 1.5, body.shape), 0)
    return synthetic_index(contexts, feats), feats


def test_rare_strong_feature_beats_dense_high_raw_one():
    index, feats = _dense_and_rare()
    assert index.feature(0).density > 0.4 and index.feature(1).density < 0.01
    hits = [FeatureHit(0, 3.6, 5, 0), FeatureHit(1, 1.3, 1, 1)]
    tokens = ["x", "y"]
    raw = rank_text(index, FakeResult(hits, tokens), RANK_ACTIVATION)
    assert [r.feature_id for r in raw] == [0, 1]  # the guide's order: by activation
    ranked = rank_text(index, FakeResult(hits, tokens), RANK_DISTINCTIVE)
    assert [r.feature_id for r in ranked] == [1, 0]
    assert ranked[0].peak_token == "y" and ranked[1].peak_token == "x"
    # The surprise is -log10 P(act >= a), against the empirical distribution of the raw features.
    for f, a in ((0, 3.6), (1, 1.3)):
        values = feats[..., f][feats[..., f] > 0]
        p = (values >= a).sum() / feats[..., f].size
        row = next(r for r in ranked if r.feature_id == f)
        assert row.surprise == pytest.approx(-np.log10(p), abs=0.15)


def test_tail_fraction_matches_the_empirical_tail():
    index, feats = _dense_and_rare()
    stats = index.feature(0)
    values = feats[..., 0][feats[..., 0] > 0]
    for a in (2.2, 3.0, 3.9):
        assert tail_fraction(stats, a) == pytest.approx((values >= a).mean(), abs=0.05)  # 8 bins per decade
    assert tail_fraction(stats, 100.0) < 1e-3  # beyond everything seen: half a pseudo-count
    score, _, _ = distinctive_score(stats, 3.0)
    assert np.isfinite(score)


def test_unknown_rank_is_a_user_error():
    from saetui.engine.errors import UserError

    with pytest.raises(UserError):
        rank_text(None, FakeResult([], []), "loudest")
