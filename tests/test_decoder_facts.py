"""Decoder facts for all features at once equal features.py's one-at-a-time answers."""

from __future__ import annotations

import numpy as np
import pytest

from tolerance import abs_tol, rel

from saetui.engine import decoder_facts as facts_mod
from saetui.engine.features import logit_effects, nearest_features
from saetui.engine.worker import drive
from support import open_session


@pytest.fixture(scope="module")
def engine(tiny_setup):
    eng = open_session(sae=tiny_setup["sae"], model=tiny_setup["model"], dataset=tiny_setup["dataset"])
    yield eng
    eng.close()


@pytest.mark.parametrize("block", [facts_mod.BLOCK, 7])  # one block, and blocks that do not divide d_sae
def test_all_features_match_one_at_a_time(engine, block):
    facts = engine.job(facts_mod.compute, block=block)
    d = engine.session.d_sae
    assert facts.d_sae == d and facts.promoted_ids.shape == (d, facts_mod.LOGIT_TOKENS)
    for f in range(d):
        one = engine(logit_effects, f)
        assert facts.promoted_ids[f].tolist() == [e.token_id for e in one.promoted]
        assert facts.suppressed_ids[f].tolist() == [e.token_id for e in one.suppressed]
        np.testing.assert_allclose(facts.promoted_values[f], [e.value for e in one.promoted], rtol=rel(1e-5), atol=abs_tol(1e-6))
        np.testing.assert_allclose(facts.suppressed_values[f], [e.value for e in one.suppressed], rtol=rel(1e-5), atol=abs_tol(1e-6))
        near = engine(nearest_features, f)
        assert facts.neighbour_ids[f].tolist() == [n.feature_id for n in near]
        np.testing.assert_allclose(facts.neighbour_cosines[f], [n.cosine for n in near], rtol=rel(1e-5), atol=abs_tol(1e-6))


def test_row_candidates_find_the_extremes_in_long_rows():
    import mlx.core as mx

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 3001)).astype(np.float32)
    for largest in (True, False):
        values, ids = facts_mod._row_candidates(mx.array(scores), 10, largest)
        got_v, got_i = facts_mod._order(np.asarray(values), np.asarray(ids), 10, largest)
        order = np.argsort(-scores if largest else scores, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(got_i, order)
        np.testing.assert_array_equal(got_v, np.take_along_axis(scores, order, axis=1))


def test_facts_are_cached_and_damage_is_recomputed(engine):
    def run(notes):
        return drive(facts_mod.load_or_compute(engine.session, notes=notes))

    notes: list[str] = []
    first = engine.on_worker(run, notes)
    path = facts_mod.facts_path(engine.session)
    assert path.exists() and not notes
    again = engine.on_worker(run, notes)
    np.testing.assert_array_equal(again.neighbour_ids, first.neighbour_ids)
    path.write_bytes(path.read_bytes()[:100])
    redone = engine.on_worker(run, notes)
    assert notes and "damaged" in notes[0]
    np.testing.assert_array_equal(redone.promoted_ids, first.promoted_ids)
