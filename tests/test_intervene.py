"""Interventions at the SAE's hook: parsing, identity on every architecture (with and without
the KV cache), a numpy splice, generation, and the demo's planted concepts."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from saetui.engine.errors import UserError
from saetui.engine.worker import drive
from saetui.engine.intervene import (
    InterventionHook,
    Intervention,
    intervened_logits,
    parse_intervention,
    parse_interventions,
    removal_effect,
    steer,
    text_effects,
)
from support import ARCHITECTURES, HIDDEN, make_model_dir, write_sae

TEXT = "The cat sat on the mat. Paris is the capital of France."


# -- parsing --------------------------------------------------------------------------


def test_parse_forms():
    assert parse_intervention("12:ablate") == Intervention(12, "ablate")
    assert parse_intervention("12:clamp:5", 100) == Intervention(12, "clamp", 5.0)
    assert parse_intervention(" 3:SCALE:-0.5 ") == Intervention(3, "scale", -0.5)
    assert parse_intervention("7:add:1e1") == Intervention(7, "add", 10.0)
    assert parse_intervention("7", default_mode="ablate") == Intervention(7, "ablate")
    assert Intervention(7, "add", 10.0).spec == "7:add:10"
    assert Intervention(7, "ablate").to_json() == {"feature_id": 7, "mode": "ablate", "value": None}


@pytest.mark.parametrize(
    "spec, words",
    [
        ("12", "names no mode"),
        ("x:ablate", "not a feature id"),
        ("12:boost:3", "Unknown intervention mode"),
        ("12:clamp", "needs a value"),
        ("12:clamp:abc", "not a number"),
        ("12:clamp:nan", "not finite"),
        ("12:scale:inf", "not finite"),
        ("12:ablate:3", "takes no value"),
        ("12:clamp:1:2", "Malformed"),
        ("", "Malformed"),
        ("100:ablate", "Unknown feature 100"),
        ("-1:ablate", "Unknown feature -1"),
    ],
)
def test_parse_errors_are_one_line(spec, words):
    with pytest.raises(UserError) as info:
        parse_intervention(spec, d_sae=100)
    line = info.value.one_line()
    assert words in line and "\n" not in line


def test_no_interventions_is_an_error():
    with pytest.raises(UserError):
        parse_interventions([])


# -- identity on every architecture ----------------------------------------------------


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch_session(request, tmp_path_factory):
    from saetui.engine.model import load_model

    base = tmp_path_factory.mktemp(f"arch-{request.param}")
    runner = load_model(str(make_model_dir(base / "model", request.param, layers=3)))
    sae = write_sae(base / "sae.mlx", d_model=HIDDEN, d_hidden=128, k=8, metadata={"layer": 1, "component": "mlp", "model_name": "tiny"})
    from saetui.engine.sae import load_sae

    hook = runner.check_hook(1, "mlp")
    return SimpleNamespace(sae=load_sae(sae), runner=runner, hook=hook, context_len=32, name=request.param)


def _ids(session, text=TEXT, n=12):
    tok = session.runner.tokenizer
    return [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)[: n - 1]


def _active(session, tokens, position):
    z = np.array(session.sae.encode(session.runner.activations(tokens, session.hook)))[0, position]
    return {int(f): float(z[f]) for f in np.nonzero(z > 0)[0]}


def test_identity_changes_no_logit_without_cache(arch_session):
    s = arch_session
    tokens = mx.array([_ids(s)])
    clean = np.array(s.runner.model(tokens).astype(mx.float32))
    scale_one = [Intervention(f, "scale", 1.0) for f in range(0, s.sae.d_sae, 7)]
    np.testing.assert_allclose(np.array(intervened_logits(s, tokens, scale_one).astype(mx.float32)), clean, atol=1e-5, rtol=1e-5)
    # Clamping every feature active at the one text position to its own value.
    two = tokens[:, :2]
    active = _active(s, two, 1)
    assert active
    clamps = [Intervention(f, "clamp", v) for f, v in active.items()]
    np.testing.assert_allclose(
        np.array(intervened_logits(s, two, clamps).astype(mx.float32)),
        np.array(s.runner.model(two).astype(mx.float32)),
        atol=1e-4, rtol=1e-4,
    )
    # A real change does change the logits, but never at the BOS.
    ablate = [Intervention(f, "ablate") for f in active]
    changed = np.array(intervened_logits(s, tokens, ablate).astype(mx.float32))
    assert np.abs(changed[0, 1:] - clean[0, 1:]).max() > 1e-3
    np.testing.assert_array_equal(changed[0, 0], clean[0, 0])


def test_identity_changes_no_logit_with_kv_cache(arch_session):
    from mlx_lm.models.cache import make_prompt_cache

    s = arch_session
    ids = _ids(s)
    clean = np.array(s.runner.model(mx.array([ids])).astype(mx.float32))[0]
    cache = make_prompt_cache(s.runner.model)
    hook_fn = InterventionHook(s.sae, [Intervention(f, "scale", 1.0) for f in range(0, s.sae.d_sae, 5)])
    steps = [ids[:4]] + [[t] for t in ids[4:]]  # a prefill chunk, then one token at a time
    out = []
    for chunk in steps:
        with s.runner.hooked(s.hook, hook_fn):
            out.append(np.array(s.runner.model(mx.array([chunk]), cache=cache).astype(mx.float32))[0])
    np.testing.assert_allclose(np.concatenate(out), clean, atol=1e-4, rtol=1e-4)
    assert hook_fn.offset == len(ids)
    # Clamp identity through the cache: BOS first, then the token whose features are clamped.
    active = _active(s, mx.array([ids[:2]]), 1)
    cache = make_prompt_cache(s.runner.model)
    hook_fn = InterventionHook(s.sae, [Intervention(f, "clamp", v) for f, v in active.items()])
    with s.runner.hooked(s.hook, hook_fn):
        s.runner.model(mx.array([ids[:1]]), cache=cache)
        second = np.array(s.runner.model(mx.array([ids[1:2]]), cache=cache).astype(mx.float32))[0, 0]
    np.testing.assert_allclose(second, clean[1], atol=1e-4, rtol=1e-4)


def test_identity_generation_equals_clean(arch_session):
    s = arch_session
    prompt = "The cat sat"
    identity = [Intervention(3, "scale", 1.0), Intervention(5, "scale", 1.0)]
    greedy = drive(steer(s, prompt, identity, max_new_tokens=10))
    assert greedy.clean_ids == greedy.steered_ids and greedy.clean == greedy.steered
    sampled = drive(steer(s, prompt, identity, max_new_tokens=8, temperature=1.0, seed=3, samples=2))
    assert sampled.clean_ids == sampled.steered_ids
    assert len(sampled.clean) == 2 and sampled.seeds == [3, 4]


# -- a hand-made splice on the tiny model ----------------------------------------------


@pytest.fixture(scope="module")
def normalised(tmp_path_factory, tiny_model_dir):
    """The tiny llama and a normalised SAE (input_mean/std not trivial) on its layer-1 MLP."""
    from saetui.engine.model import load_model
    from saetui.engine.sae import load_sae

    rng = np.random.default_rng(5)
    d, m = HIDDEN, 96
    weights = {
        "encoder.weight": rng.normal(0, 0.3, (m, d)).astype(np.float32),
        "encoder.bias": rng.normal(0, 0.05, m).astype(np.float32),
        "decoder.weight": rng.normal(0, 0.3, (d, m)).astype(np.float32),
        "decoder.bias": rng.normal(0, 0.05, d).astype(np.float32),
        "input_mean": rng.normal(0, 0.1, d).astype(np.float32),
        "input_std": rng.uniform(0.5, 2.0, d).astype(np.float32),
    }
    path = write_sae(tmp_path_factory.mktemp("norm") / "sae.mlx", d_model=d, d_hidden=m, k=6, normalize=True, weights=weights)
    runner = load_model(str(tiny_model_dir))
    session = SimpleNamespace(sae=load_sae(path), runner=runner, hook=runner.check_hook(1, "mlp"), context_len=32)
    return session, weights


def _numpy_features(weights, x, k):
    xn = (x - weights["input_mean"]) / (weights["input_std"] + 1e-8)
    pre = np.maximum(xn @ weights["encoder.weight"].T + weights["encoder.bias"], 0.0)
    kth = np.sort(pre, axis=-1)[..., -k][..., None]
    return np.where(pre >= kth, pre, 0.0)


def _log_softmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def test_ablation_equals_numpy_splice(normalised):
    session, w = normalised
    ids = _ids(session, n=14)
    tokens = mx.array([ids])
    x = np.array(session.runner.activations(tokens, session.hook).astype(mx.float32))[0]
    z = _numpy_features(w, x, 6)
    counts = (z[1:] > 0).sum(0)
    f, g = (int(i) for i in np.argsort(-counts, kind="stable")[:2])  # features that fire on several tokens
    assert counts[f] > 0 and counts[g] > 0
    # By hand: remove f's contribution, scale g by 3, add 2 of feature 0, except at the BOS.
    direction = lambda j: w["decoder.weight"][:, j] * w["input_std"]  # noqa: E731
    spliced = x - np.outer(z[:, f], direction(f)) + np.outer(2 * z[:, g], direction(g)) + 2.0 * direction(0)[None, :]
    spliced[0] = x[0]
    expected = np.array(session.runner.logits(tokens, session.hook, replace=lambda _: mx.array(spliced[None]).astype(mx.float32)))[0]
    clean = np.array(session.runner.model(tokens))[0]
    ivs = [Intervention(f, "ablate"), Intervention(g, "scale", 3.0), Intervention(0, "add", 2.0)]
    np.testing.assert_allclose(np.array(intervened_logits(session, tokens, ivs))[0], expected, atol=2e-4, rtol=2e-4)

    text = session.runner.tokenizer.decode(ids[1:])
    effects = text_effects(session, text, ivs)
    assert effects.token_ids == ids[1:]
    lp_clean, lp_exp = _log_softmax(clean), _log_softmax(expected)
    targets = np.array(ids[1:])
    rows = np.arange(len(targets))
    np.testing.assert_allclose(effects.clean_logprob, lp_clean[rows, targets], atol=1e-4)
    np.testing.assert_allclose(effects.intervened_logprob, lp_exp[rows, targets], atol=2e-4)
    kl = (np.exp(lp_clean[rows]) * (lp_clean[rows] - lp_exp[rows])).sum(-1)
    np.testing.assert_allclose(effects.kl, kl, atol=2e-4)
    assert effects.total_loss_change == pytest.approx(float((lp_clean[rows, targets] - lp_exp[rows, targets]).sum()), abs=2e-3)
    np.testing.assert_allclose(effects.feature_activations[:, effects.features.index(f)], z[1:, f], rtol=1e-4, atol=1e-5)
    # The next tokens after token j: the largest rises and falls of probability there.
    j = 3
    diff = np.exp(lp_exp[j + 1]) - np.exp(lp_clean[j + 1])
    assert effects.promoted[j][0].token_id == int(np.argmax(diff))
    assert effects.suppressed[j][0].token_id == int(np.argmin(diff))
    assert effects.promoted[j][0].change == pytest.approx(diff.max(), abs=1e-5)
    dependent = effects.most_dependent(3)
    change = effects.loss_change
    assert dependent and change[dependent[0]] == change.max()
    payload = effects.to_json()
    assert set(payload) == {"text", "tokens", "total_loss_change"}
    assert set(payload["tokens"][0]) == {"token", "clean_logprob", "intervened_logprob", "kl"}


def test_composition_on_one_feature_is_in_order(normalised):
    session, _ = normalised
    tokens = mx.array([_ids(session)])
    # scale 2 then add 1 on the same feature == z -> 2z + 1; written as separate features, add first gives 2(z+1).
    a = np.array(intervened_logits(session, tokens, [Intervention(4, "scale", 2.0), Intervention(4, "add", 1.0)]))
    b = np.array(intervened_logits(session, tokens, [Intervention(4, "add", 1.0), Intervention(4, "scale", 2.0)]))
    x = np.array(session.runner.activations(tokens, session.hook))
    assert not np.allclose(a, b)
    w = session.sae
    z4 = np.array(w.encode(mx.array(x)))[0, :, 4]
    d4 = np.array(w.decoder_directions[4])
    spliced = x[0] + np.outer(z4 + 1.0, d4)  # (2z+1) - z
    spliced[0] = x[0, 0]
    expected = np.array(session.runner.logits(tokens, session.hook, replace=lambda _: mx.array(spliced[None])))
    np.testing.assert_allclose(a, expected, atol=2e-4, rtol=2e-4)


def test_generation_checks(normalised):
    session, _ = normalised
    iv = [Intervention(1, "ablate")]
    for kwargs, words in [
        (dict(prompt=""), "empty"),
        (dict(max_new_tokens=0), "too small"),
        (dict(max_new_tokens=600), "do not fit the model's context of 512"),
        (dict(temperature=float("nan")), "not a temperature"),
        (dict(samples=0), "too small"),
    ]:
        args = dict(prompt="The cat", max_new_tokens=4, temperature=0.0, samples=1)
        args.update(kwargs)
        with pytest.raises(UserError) as info:
            drive(steer(session, args.pop("prompt"), iv, **args))
        assert words in info.value.one_line()
    with pytest.raises(UserError, match="Unknown feature"):
        drive(steer(session, "The cat", [Intervention(10_000, "ablate")], 4))


def test_steering_streams_and_cancels(normalised):
    session, _ = normalised
    gen = steer(session, "The cat", [Intervention(2, "add", 50.0)], max_new_tokens=6)
    first = next(gen)
    assert first.total == 12 and first.done == 1 and first.sample == 0
    gen.close()  # cancelling leaves no hook behind
    layer = session.runner.layers[session.hook.layer]
    assert type(layer.mlp).__name__ != "_HookedModule"


# -- the demo's planted concepts --------------------------------------------------------


def _concept_words():
    from saetui.demo import demo_corpus_path
    from saetui.demo.corpus import CONCEPTS

    words = {c: set() for c in CONCEPTS}
    with open(demo_corpus_path(), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            for a, b, label in d["spans"]:
                words[label].update(w.lower() for w in re.findall(r"[A-Za-z]{3,}", d["text"][a:b]))
    shared = {w for c in CONCEPTS for w in words[c] if sum(w in words[o] for o in CONCEPTS) > 1}
    return {c: words[c] - shared for c in CONCEPTS}


@pytest.fixture(scope="module")
def demo():
    from support import open_session

    from saetui.demo import demo_available

    if not demo_available():
        pytest.skip("the demo assets are not installed")
    engine = open_session()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def concept_features(demo):
    """Per concept: its purest feature (share of the feature's activation on the concept's
    labelled tokens, among features firing on >= 0.5% of tokens), from the corpus labels."""
    from saetui.demo import demo_corpus_path
    from saetui.demo.corpus import CONCEPTS

    def scan():
        tok = demo.session.runner.tokenizer
        inner = tok._tokenizer
        stream, labels = [], []
        with open(demo_corpus_path(), encoding="utf-8") as f:
            docs = [json.loads(line) for _, line in zip(range(600), f)]
        for d in docs:
            enc = inner(d["text"], add_special_tokens=False, return_offsets_mapping=True)
            for tid, (s, t) in zip(enc["input_ids"], enc["offset_mapping"]):
                label = next((CONCEPTS.index(concept) for a, b, concept in d["spans"] if s < b and t > a), -1)
                stream.append(tid)
                labels.append(label)
            stream.append(tok.eos_token_id)
            labels.append(-1)
        n = len(stream) // 63
        ctx = np.concatenate([np.full((n, 1), tok.bos_token_id), np.array(stream[: n * 63]).reshape(n, 63)], 1)
        feats = np.concatenate([
            np.array(demo.session.sae.encode(demo.session.runner.activations(mx.array(ctx[i : i + 32]), demo.session.hook))[:, 1:])
            for i in range(0, n, 32)
        ]).reshape(-1, demo.session.sae.d_sae)
        label = np.array(labels[: n * 63])
        mass, count = feats.sum(0), (feats > 0).sum(0)
        out = {}
        for c, name in enumerate(CONCEPTS):
            purity = feats[label == c].sum(0) / np.maximum(mass, 1e-9)
            purity[count < 0.005 * len(label)] = 0
            f = int(np.argmax(purity))
            out[name] = dict(feature=f, purity=float(purity[f]), max=float(feats[:, f].max()))
        return out

    return demo.on_worker(scan)


PROMPTS = ["Then Elena slowly", "The road was longer than", "We ate", "My friend said that", "In the morning the", "Yesterday the children", "It was a"]


def test_amplifying_a_concept_feature_brings_its_words(demo, concept_features):
    words = _concept_words()

    def count(texts, concept):
        return sum(w.lower() in words[concept] for t in texts for w in re.findall(r"[A-Za-z]+", t))

    def generate(feature, value):
        clean, steered = [], []
        for p in PROMPTS:
            r = demo.job(steer, p, [Intervention(feature, "add", value)], 24)
            clean += r.clean
            steered += r.steered
        return clean, steered

    results = {}
    for concept in ("food", "geography"):
        info = concept_features[concept]
        assert info["purity"] > 0.5, (concept, info)
        clean, steered = generate(info["feature"], 6 * info["max"])
        results[concept] = (count(clean, concept), count(steered, concept))
    for concept, (before, after) in results.items():
        assert after >= 2 * before + 3, (concept, before, after, results)


def test_ablating_a_concept_feature_changes_predictions_where_it_fires(demo, concept_features):
    """Ablation moves the next-token distribution where the feature fires, and not before it.

    (On the demo, one feature's ablation changes the loss of the concept's own tokens by
    about 1e-4 nats either way: the tiny model barely depends on its layer-2 MLP, whose
    whole output is worth about 0.06 nats. So this checks where the effect is, not its sign.)
    """
    from saetui.demo import demo_corpus_path

    info = concept_features["geography"]
    f = info["feature"]
    with open(demo_corpus_path(), encoding="utf-8") as fh:
        texts = [d["text"] for d in map(json.loads, fh) if any(concept == "geography" for *_, concept in d["spans"])][:40]
    firing_kl, quiet_kl, before = [], [], []
    for text in texts:
        eff = demo(text_effects, text, [Intervention(f, "ablate")])
        z = eff.feature_activations[:, 0]
        # eff.kl[j] is the distribution that predicted token j, made at token j - 1.
        at = z[:-1] > 0
        kl_next = eff.kl[1:]
        firing_kl += list(kl_next[at])
        seen = np.cumsum(at) > 0
        quiet_kl += list(kl_next[seen & ~at])
        before += list(kl_next[~seen])
    assert firing_kl, "the feature never fired on its concept's texts"
    assert max(before) < 1e-6  # causal: nothing changes before the feature first fires
    assert np.mean(firing_kl) > 2 * np.mean(quiet_kl)


def test_removal_effect_on_top_contexts(demo, concept_features):
    from saetui.engine.index import build_index

    index = demo.job(build_index, budget=4096)
    f = concept_features["geography"]["feature"]
    effect = demo.job(removal_effect, index, f, max_contexts=8)
    stats = index.feature(f)
    assert effect.n_contexts == len({e.context_id for e in stats.top[:8]})
    assert effect.n_firing >= effect.n_contexts  # each top context has its strongest firing
    assert np.isfinite(effect.loss_change_firing) and np.isfinite(effect.loss_change_after)
    assert all(d.intervened_prob < d.clean_prob for d in effect.drops)
    # Cached with the index: the second call reads the same numbers back.
    again = demo.job(removal_effect, index, f, max_contexts=8)
    assert again.to_json() == effect.to_json()


def test_hook_features_equal_the_sae_encoding(normalised):
    session, _ = normalised
    rng = np.random.default_rng(0)
    x = mx.array(rng.normal(0, 1, (2, 9, HIDDEN)).astype(np.float32))
    features = [0, 5, 17, 40, 95]
    hook_fn = InterventionHook(session.sae, [Intervention(f, "scale", 2.0) for f in features])
    expected = np.array(session.sae.encode(x))[..., features]
    np.testing.assert_array_equal(np.array(hook_fn.clean_features(x)), expected)
    assert (expected > 0).any()
