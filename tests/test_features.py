"""Feature facts (logit effects, nearest features, pages) and the guide's API, against numpy."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from support import open_session, write_sae

from saetui.engine.errors import UserError
from saetui.engine.features import (
    check_feature_id,
    feature_page,
    get_top_activating_features,
    get_top_activating_texts,
    logit_effects,
    nearest_features,
)
from saetui.engine.index import build_index

DEAD = 7  # a feature whose encoder bias keeps it from ever firing


@pytest.fixture(scope="module")
def setup(tiny_setup, tmp_path_factory):
    rng = np.random.default_rng(3)
    d_model, d_sae = 64, 256
    weights = {
        "encoder.weight": rng.normal(0, 0.3, (d_sae, d_model)).astype(np.float32),
        "encoder.bias": np.zeros(d_sae, np.float32),
        "decoder.weight": rng.normal(0, 0.3, (d_model, d_sae)).astype(np.float32),
        "decoder.bias": np.zeros(d_model, np.float32),
        "input_mean": np.zeros(d_model, np.float32),
        "input_std": np.ones(d_model, np.float32),
    }
    weights["encoder.bias"][DEAD] = -1e4
    folder = tmp_path_factory.mktemp("features")
    sae = write_sae(folder / "dead.mlx", metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]}, weights=weights)
    return dict(tiny_setup, sae=str(sae), weights=weights)


@pytest.fixture(scope="module")
def engine(setup):
    opened = open_session(sae=setup["sae"], model=setup["model"], dataset=setup["dataset"], context_len=40, max_tokens=40 * 24)
    yield opened
    opened.close()


def model_weights(setup) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in mx.load(str(Path(setup["model"]) / "model.safetensors")).items()}


def test_logit_effects_match_numpy(engine, setup):
    weights = model_weights(setup)
    unembed = weights["model.embed_tokens.weight"]  # the tiny llama ties its embeddings
    gain = weights["model.norm.weight"]
    direction = setup["weights"]["decoder.weight"][:, 12]
    logits = unembed @ (direction * gain)
    vocab = len(json.loads((Path(setup["model"]) / "tokenizer.json").read_text())["model"]["vocab"])
    logits = logits[:vocab]
    effects = engine(logit_effects, 12)
    assert [e.token_id for e in effects.promoted] == list(np.argsort(-logits, kind="stable")[:10])
    assert [e.token_id for e in effects.suppressed] == list(np.argsort(logits, kind="stable")[:10])
    np.testing.assert_allclose([e.value for e in effects.promoted], np.sort(logits)[::-1][:10], rtol=1e-4)
    assert "unembedding" in effects.how and "norm" in effects.how
    tokenizer = engine.session.tokenizer
    assert effects.promoted[0].token == tokenizer.decode([effects.promoted[0].token_id])


def test_nearest_features_match_numpy(engine, setup):
    dec = setup["weights"]["decoder.weight"].T  # (d_sae, d_model)
    unit = dec / np.linalg.norm(dec, axis=1, keepdims=True)
    cos = unit @ unit[30]
    cos[30] = -np.inf
    got = engine(nearest_features, 30)
    assert [n.feature_id for n in got] == list(np.argsort(-cos, kind="stable")[:10])
    np.testing.assert_allclose([n.cosine for n in got], np.sort(cos)[::-1][:10], rtol=1e-4)
    assert all(n.feature_id != 30 for n in got)


@pytest.mark.parametrize(
    "value, message",
    [("abc", "not a feature id"), ("1.5", "not a feature id"), ("", "not a feature id"), ("-1", "out of range"), ("256", "out of range"), (10**9, "out of range")],
)
def test_bad_feature_ids(engine, value, message):
    with pytest.raises(UserError, match=message) as info:
        check_feature_id(engine.session.d_sae, value)
    assert "0 to 255" in str(info.value)


def test_good_feature_ids(engine):
    assert check_feature_id(engine.session.d_sae, " 12 ") == 12
    assert check_feature_id(engine.session.d_sae, 255) == 255


def test_dead_feature_page_still_has_decoder_facts(engine):
    engine.job(build_index)  # the page reads the session's index
    page = engine(feature_page, DEAD)
    assert page.stats is not None and page.stats.count == 0 and not page.stats.fires
    assert page.top == [] and page.samples == []
    assert len(page.logits.promoted) == 10 and len(page.neighbours) == 10
    assert page.decoder_norm > 0


def test_page_contexts_show_their_window_tokens(engine):
    index = engine.job(build_index)
    live = index.live_features()
    f = int(live[np.argmax(index.count[live])])
    page = engine(feature_page, f, n_top=5)
    assert len(page.top) == min(5, len(index.feature(f).top))
    tokenizer = engine.session.tokenizer
    for shown in page.top:
        e = shown.example
        assert len(shown.tokens) == len(e.window_tokens)
        assert "".join(shown.tokens) in shown.text
        assert shown.text == tokenizer.decode([int(i) for i in index.contexts[e.context_id, 1:]])
    # Without an index, the decoder facts alone.
    engine.session.index = None
    try:
        bare = engine(feature_page, f)
    finally:
        engine.session.index = index
    assert bare.stats is None and bare.logits.promoted


def _numpy_features(engine, setup, ids):
    w = setup["weights"]
    bos = engine.session.tokenizer.bos_token_id
    context = mx.array([[bos] + list(ids)])
    x = engine.on_worker(lambda: np.array(engine.session.runner.activations(context, engine.session.hook).astype(mx.float32)))[0, 1:]
    pre = np.maximum(x @ w["encoder.weight"].T + w["encoder.bias"], 0.0)
    kth = np.sort(pre, axis=-1)[:, -8][:, None]
    return np.where(pre >= kth, pre, 0.0)


def test_get_top_activating_features(engine, setup):
    from tokenizers import Tokenizer

    text = "Paris is the capital of France."
    ids = Tokenizer.from_file(str(Path(setup["model"]) / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    peak = _numpy_features(engine, setup, ids).max(axis=0)
    live = [f for f in range(peak.size) if peak[f] > 0]
    expected = sorted(live, key=lambda f: (-peak[f], f))[:5]
    got = engine(get_top_activating_features, text, top_k=5)
    assert [f for f, _ in got] == expected
    np.testing.assert_allclose([a for _, a in got], peak[expected], rtol=1e-4)
    with pytest.raises(UserError):
        engine(get_top_activating_features, text, top_k=0)


def test_get_top_activating_texts(engine):
    index = engine.job(build_index)
    live = index.live_features()
    f = int(live[0])
    got = engine(get_top_activating_texts, f, top_k=3)
    top = index.feature(f).top[:3]
    assert [(a, p) for _, a, p in got] == [(e.activation, e.position) for e in top]
    tokenizer = engine.session.tokenizer
    for (text, _, _), e in zip(got, top):
        assert text == tokenizer.decode([int(i) for i in index.contexts[e.context_id, 1:]])
    with pytest.raises(UserError, match="out of range"):
        engine(get_top_activating_texts, 256)
