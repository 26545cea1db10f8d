"""On the demo: the planted concepts' features come first and are explained by their words.

Purity is computed independently of the index: the labelled corpus is run through the
model and the SAE (the demo build's own numpy helpers), each feature's 20 strongest
tokens are looked up in the concept spans.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from saetui.demo import demo_available, demo_corpus_path, demo_model_path, demo_sae_path
from saetui.demo.corpus import CONCEPTS

pytestmark = pytest.mark.skipif(not demo_available(), reason="demo assets missing")

# Held-out sentences, one per concept, written fresh with the generator's vocabulary
# (not from the corpus; no template produces them).
HELD_OUT = {
    "geography": "Clara moved from Vienna to Oslo and then to Lisbon.",
    "arithmetic": "Ben wrote that 14 + 27 = 41 was the answer.",
    "animal": "A fox and a rabbit ran across the field.",
    "colour": "The door of the house was turquoise and the window was crimson.",
    "python_code": "Nobody noticed that print(len(words)) was the bug.",
    "date_time": "The parcel arrived on Tuesday, March 14 at 9:30.",
    "machine_learning": "The dropout and the learning rate were the hardest part.",
    "emotion": "Maya was nervous and a little anxious after the meeting.",
    "family": "Victor called his grandmother and his uncle again.",
    "food": "We had pancakes and strawberries at the station.",
    "sport": "Zoe plays tennis and rugby every summer.",
}
PURE = 0.9


@pytest.fixture(scope="module")
def demo_engine():
    from support import open_session

    engine = open_session()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def demo_index(demo_engine):
    from saetui.engine.index import build_index

    return demo_engine.job(build_index, use_cache=False)


@pytest.fixture(scope="module")
def labelled():
    """(purity (d_sae, concepts), concept firing counts (d_sae, concepts), concept span texts)."""
    import mlx.core as mx
    from mlx_lm import load

    from saetui.demo.build import collect_activations, sae_forward_np

    model, tok = load(str(demo_model_path()))
    docs = [json.loads(line) for line in open(demo_corpus_path(), encoding="utf-8")][2000:2700]
    stream, labels = [], []
    spans_text = {c: set() for c in CONCEPTS}
    for d in docs:
        enc = tok._tokenizer(d["text"], add_special_tokens=False, return_offsets_mapping=True)
        for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
            lab = -1
            for a, b, label in d["spans"]:
                if s < b and e > a:
                    lab = CONCEPTS.index(label)
                    break
            stream.append(tid)
            labels.append(lab)
        stream.append(tok.eos_token_id)
        labels.append(-1)
        for a, b, label in d["spans"]:
            spans_text[label].add(d["text"][a:b].casefold())
    n = len(stream) // 63
    body = np.array(stream[: n * 63]).reshape(n, 63)
    lab = np.array(labels[: n * 63])
    contexts = np.concatenate([np.full((n, 1), tok.bos_token_id), body], 1)
    cfg = json.loads((demo_sae_path() / "config.json").read_text())
    meta = cfg["metadata"]
    x = collect_activations(model, contexts, meta["layer"], meta["component"], 10**9)
    w = {k: np.array(v) for k, v in mx.load(str(demo_sae_path() / "weights.safetensors")).items()}
    z, _ = sae_forward_np(w, x, cfg["k"])
    top = np.argsort(-z, axis=0)[:20]
    purity = np.stack([(lab[top] == c).mean(0) for c in range(len(CONCEPTS))], 1)
    purity[(z > 0).sum(0) == 0] = 0
    support = np.stack([((z > 0) & (lab[:, None] == c)).sum(0) for c in range(len(CONCEPTS))], 1)
    return purity, support, spans_text


def test_a_pure_concept_feature_is_in_the_top_5(demo_engine, demo_index, labelled):
    from saetui.engine.ranking import RANK_ACTIVATION, top_features

    purity, _, _ = labelled
    found, raw_found, misses = 0, 0, []
    for concept, text in HELD_OUT.items():
        c = CONCEPTS.index(concept)
        _, rows = demo_engine(top_features, demo_index, text, 5)
        _, raw = demo_engine(top_features, demo_index, text, 5, RANK_ACTIVATION)
        hit = any(purity[r.feature_id, c] >= PURE for r in rows)
        found += hit
        raw_found += any(purity[r.feature_id, c] >= PURE for r in raw)
        if not hit:
            misses.append(concept)
    assert found >= 10, f"{found}/11 (raw ranking: {raw_found}/11); missed {misses}"
    assert found > raw_found


def _concept_word(word: str, spans: set[str]) -> bool:
    w = word.strip().casefold()
    if not w:
        return False
    pattern = re.compile(r"(?<![a-z0-9])" + re.escape(w) + r"(?![a-z0-9])") if w[-1:].isalnum() and w[:1].isalnum() else None
    return any((pattern.search(s) if pattern else w in s) for s in spans)


def test_purest_features_are_explained_by_their_concepts_words(demo_engine, demo_index, labelled):
    from saetui.engine.explain import EXPLAINED_BAR, iter_explanations
    from saetui.engine.worker import drive

    purity, support, spans_text = labelled
    explanations = drive(iter_explanations(demo_index, demo_engine.session.tokenizer))
    good, report = 0, []
    for c, concept in enumerate(CONCEPTS):
        best = purity[:, c].max()
        candidates = np.flatnonzero(purity[:, c] == best)
        f = int(candidates[np.argmax(support[candidates, c])])  # ties: the most firings on the concept
        e = explanations[f]
        words = e.words[:4]
        inside = sum(_concept_word(w, spans_text[concept]) for w in words)
        ok = e.view == "token" and words and inside >= len(words) - 1 and e.score is not None and e.score >= EXPLAINED_BAR
        good += bool(ok)
        report.append(f"{concept}: #{f} {e.label!r} {inside}/{len(words)} score {e.score}")
    assert good >= 10, "\n".join(report)
