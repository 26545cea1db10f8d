"""probe_text against an independent numpy computation on the tiny model and SAE."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from support import open_session

from saetui.engine.probe import probe_text


@pytest.fixture(scope="module")
def engine(tiny_setup):
    eng = open_session(sae=tiny_setup["sae"], model=tiny_setup["model"], dataset=tiny_setup["dataset"], context_len=16)
    yield eng
    eng.close()


def _numpy_features(engine, tiny_setup, ids):
    """Hook activations -> ReLU(x W_enc^T + b) -> keep each token's k largest, in numpy."""
    weights = {k: np.array(v) for k, v in mx.load(str(Path(tiny_setup["sae"]) / "weights.safetensors")).items()}
    k = json.loads((Path(tiny_setup["sae"]) / "config.json").read_text())["k"]
    bos = engine.session.tokenizer.bos_token_id
    context = mx.array([[bos] + list(ids)[: engine.session.context_len - 1]])
    x = engine.on_worker(lambda: np.array(engine.session.runner.activations(context, engine.session.hook).astype(mx.float32)))[0, 1:]
    pre = np.maximum(x @ weights["encoder.weight"].T + weights["encoder.bias"], 0.0)
    kth = np.sort(pre, axis=-1)[:, -k][:, None]
    return np.where(pre >= kth, pre, 0.0)


def _reference_ids(tiny_setup, text):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(tiny_setup["model"]) / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_probe_matches_numpy(engine, tiny_setup):
    text = "The cat sat on the mat."
    result = engine(probe_text, text)
    ids = _reference_ids(tiny_setup, text)
    assert result.token_ids == ids
    assert "".join(result.tokens) == text
    assert not result.truncated and result.notice is None
    feats = _numpy_features(engine, tiny_setup, ids)
    peak, firing = feats.max(axis=0), (feats > 0).sum(axis=0)
    live = np.nonzero(peak > 0)[0]
    expected = sorted(live.tolist(), key=lambda f: (-peak[f], f))[: len(result.top_features)]
    assert [h.feature_id for h in result.top_features] == expected
    for hit in result.top_features:
        assert hit.max_activation == pytest.approx(peak[hit.feature_id], rel=1e-4, abs=1e-5)
        assert hit.n_firing == firing[hit.feature_id]
        assert feats[hit.argmax, hit.feature_id] == pytest.approx(peak[hit.feature_id], rel=1e-4)
        np.testing.assert_allclose(result.activations_of(hit.feature_id), feats[:, hit.feature_id], rtol=1e-4, atol=1e-5)
    # Each token's list: its non-zero features (k = 8 = TOKEN_TOP), strongest first.
    for t, pairs in enumerate(result.token_top):
        nz = np.nonzero(feats[t])[0]
        want = sorted(nz.tolist(), key=lambda f: (-feats[t, f], f))
        assert [f for f, _ in pairs] == want
        np.testing.assert_allclose([v for _, v in pairs], feats[t, want], rtol=1e-4)


def test_probe_extra_feature_gets_a_column(engine, tiny_setup):
    text = "Paris is the capital of France."
    ids = _reference_ids(tiny_setup, text)
    feats = _numpy_features(engine, tiny_setup, ids)
    quiet = int(np.argmin(feats.max(axis=0)))  # a feature that fires least (likely never) here
    result = engine(probe_text, text, features=[quiet], text_top=3)
    assert len(result.top_features) == 3
    assert result.has_feature(quiet)
    np.testing.assert_allclose(result.activations_of(quiet), feats[:, quiet], rtol=1e-4, atol=1e-5)
    # An out-of-range id is ignored rather than crashing.
    assert not engine(probe_text, text, features=[10**9]).has_feature(10**9)


def test_probe_truncates_to_the_context(engine, tiny_setup):
    text = "The red fox and the blue bird. " * 10
    ids = _reference_ids(tiny_setup, text)
    result = engine(probe_text, text)
    limit = engine.session.context_len - 1  # BOS takes one position
    assert len(ids) > limit
    assert result.n_tokens == limit == result.context_limit
    assert result.token_ids == ids[:limit]
    assert result.truncated and result.n_tokens_total == len(ids)
    assert f"{len(ids):,} tokens" in result.notice and f"first {limit}" in result.notice


def test_probe_empty_and_odd_text(engine):
    empty = engine(probe_text, "")
    assert empty.n_tokens == 0 and empty.top_features == [] and not empty.truncated
    spaces = engine(probe_text, "   \n\t ")
    assert spaces.n_tokens > 0 and "".join(spaces.tokens) == "   \n\t "
    # Emoji and CJK are split across byte-level tokens: every token still has a string and
    # the whole characters come back once complete.
    odd = engine(probe_text, "é🙂猫\x1b[31m")
    assert not odd.truncated
    assert odd.n_tokens == len(odd.tokens) == len(odd.token_top)
    joined = "".join(odd.tokens)
    assert "🙂" in joined or "\\x" in joined
    assert "\x1b" in joined  # the control character survives as data; the screen escapes it
