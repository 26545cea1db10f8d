"""Automatic explanations: a planted token pattern, the detection score by hand, the cache, search."""

from __future__ import annotations

import numpy as np
import pytest

from explain_support import synthetic_index

from saetui.engine.worker import drive
from saetui.engine.explain import (
    Explanation,
    balanced_accuracy,
    explained_summary,
    iter_explanations,
    negative_windows,
    predicts,
    read_explanations,
    score_explanation,
    write_explanations,
)
from saetui.engine.search import features_on_token, search_features


class Vocab:
    """A tokenizer stand-in: token i decodes to ' w<i>' (words) or a fixed string."""

    def __init__(self, names):
        self.names = names

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.names.get(int(i), f" w{int(i)}") for i in ids)


PLANTED = [3, 4, 5]  # feature 0 fires on these tokens
EQUALS = 9  # feature 1 fires on the token after this one


def _planted_index():
    rng = np.random.default_rng(1)
    n, length = 200, 40
    contexts = rng.integers(20, 300, size=(n, length))
    contexts[:, 0] = 1
    body = contexts[:, 1:]
    plant = rng.random(body.shape) < 0.01
    body[plant] = rng.choice(PLANTED, size=int(plant.sum()))
    eq = rng.random(body.shape) < 0.01
    eq[:, -1] = False
    body[eq] = EQUALS
    feats = np.zeros((n, length - 1, 3), np.float32)
    feats[..., 0] = np.where(np.isin(body, PLANTED), rng.uniform(1, 3, body.shape), 0)
    after = np.zeros_like(eq)
    after[:, 1:] = eq[:, :-1]
    feats[..., 1] = np.where(after, rng.uniform(1, 2, body.shape), 0)
    feats[..., 2] = np.where(rng.random(body.shape) < 0.3, rng.uniform(0.1, 1, body.shape), 0)  # dense noise
    return synthetic_index(contexts, feats)


TOKENS = Vocab({3: " Paris", 4: " Tokyo", 5: " Berlin", EQUALS: " ="})


def test_explanations_recover_the_planted_patterns():
    index = _planted_index()
    ex = drive(iter_explanations(index, TOKENS))
    assert set(ex) == set(index.live_features().tolist())
    city = ex[0]
    assert city.view == "token" and set(city.words) <= {"Paris", "Tokyo", "Berlin"} and len(city.words) >= 2
    assert set(city.tokens) <= set(PLANTED)
    assert city.score is not None and city.score >= 0.9
    after = ex[1]
    assert after.view == "after" and after.tokens == [EQUALS] and after.label == "after ' ='"
    assert after.score is not None and after.score >= 0.9
    assert ex[2].score is None or ex[2].score < ex[0].score  # dense noise explains little
    summary = explained_summary(ex, len(ex))
    assert summary["explained"] == sum(1 for e in ex.values() if e.score is not None and e.score >= summary["bar"])


def test_detection_score_by_hand():
    index = _planted_index()
    e = Explanation(7, "Paris", ["Paris"], [3], "token", None)
    stats = index.feature(0)
    positives = stats.top[1::2] + stats.samples
    exclude = {x.context_id for x in stats.top + stats.samples}
    score_explanation(e, index, positives, exclude, seed=5)
    # By hand: 8-token windows ending just after each positive's peak; the same random windows.
    pos_hits = []
    for x in positives:
        start = int(np.clip(x.max_index - 6, 0, len(x.window_tokens) - 8))
        pos_hits.append(3 in x.window_tokens[start : start + 8].tolist())
    neg = negative_windows(index, 7, exclude, max(20, len(positives)), 8, seed=5)
    neg_hits = [3 in row.tolist() for row in neg]
    expected = 0.5 * (np.mean(pos_hits) + 1 - np.mean(neg_hits))
    assert e.score == pytest.approx(expected)
    assert e.positives == len(positives) and e.negatives == len(neg)
    # The balanced accuracy itself.
    assert balanced_accuracy(np.array([True, True, False, True]), np.array([False, True])) == pytest.approx(0.5 * (0.75 + 0.5))
    # "after" predictions need the next token inside the window.
    after = Explanation(1, "after ' ='", [" ="], [EQUALS], "after", None)
    assert predicts(after, np.array([[1, EQUALS, 2], [1, 2, EQUALS]])).tolist() == [True, False]


def test_explanations_cache_round_trip_and_key():
    index = _planted_index()
    ex = drive(iter_explanations(index, TOKENS))
    write_explanations(index, ex)
    back = read_explanations(index)
    assert back is not None and {f: e.as_dict() for f, e in back.items()} == {f: e.as_dict() for f, e in ex.items()}
    index.meta["key"] = "another index"
    assert read_explanations(index) is None


def test_search_by_explanation_name_and_token():
    index = _planted_index()
    ex = drive(iter_explanations(index, TOKENS))
    hits = search_features("tokyo", ex)
    assert hits and hits[0].feature_id == 0 and "explanation" in hits[0].matched
    named = search_features("capital cities", ex, names={2: "capital cities"})
    assert named[0].feature_id == 2 and named[0].matched == ["name"]
    desc = search_features("noise", ex, descriptions={2: "dense noise feature"})
    assert [h.feature_id for h in desc] == [2]
    assert search_features("nowhere", ex) == []
    fires = features_on_token(" paris", ex)
    assert fires and fires[0].feature_id == 0
    stats = index.feature(0)
    kept = [x for x in stats.top + stats.samples if int(x.window_tokens[x.max_index]) == 3]
    assert fires[0].contexts == len(kept)
