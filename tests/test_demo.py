"""The embedded demo: shipped assets (model, SAE, corpus), the corpus generator, the build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saetui.demo import (
    DEMO_CONTEXT_LENGTH,
    DEMO_DIR,
    DEMO_MODEL_NAME,
    demo_available,
    demo_corpus_path,
    demo_model_path,
    demo_sae_path,
    is_demo_sae,
    load_build_info,
)
from saetui.demo.corpus import CONCEPTS, generate_corpus

REPO_ROOT = Path(__file__).resolve().parents[1]


def _read_corpus(n: int | None = None) -> list[dict]:
    out = []
    with open(demo_corpus_path(), encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if n is not None and len(out) >= n:
                break
    return out


@pytest.fixture(scope="module")
def demo_model():
    from mlx_lm import load

    return load(str(demo_model_path()))


@pytest.fixture(scope="module")
def held_contexts(demo_model):
    from saetui.demo.build import make_contexts

    _, tok = demo_model
    docs = _read_corpus(300)
    ids = [tok.encode(d["text"], add_special_tokens=False) for d in docs]
    return make_contexts(ids, DEMO_CONTEXT_LENGTH)


# ------------------------------------------------------------------------------ shipped assets

def test_assets_present_and_small():
    assert demo_available()
    total = sum(f.stat().st_size for f in DEMO_DIR.rglob("*") if f.is_file())
    assert total <= 20e6, f"demo assets are {total / 1e6:.1f} MB"
    info = load_build_info()
    assert info["quick"] is False
    assert info["sae"]["explained_variance"] >= 0.85
    assert info["sae"]["dead_strict_fraction"] < 0.30


def test_model_loads_with_tokenizer(demo_model):
    model, tok = demo_model
    cfg = json.loads((demo_model_path() / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["tie_word_embeddings"] is True
    assert len(model.model.layers) == cfg["num_hidden_layers"]
    text = "The capital of France is Paris."
    plain = tok.encode(text, add_special_tokens=False)
    assert plain and tok.bos_token_id not in plain
    assert tok.encode(text) == [tok.bos_token_id] + plain
    assert tok.decode(plain) == text
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>"
    assert tok.eos_token_id in tok.eos_token_ids
    # single tokens decode to readable pieces
    pieces = [tok.decode([t]) for t in plain]
    assert "".join(pieces) == text
    assert any(p.strip() == "Paris" or p.strip() == "France" for p in pieces)


def test_model_loss_far_below_unigram(demo_model, held_contexts):
    import mlx.core as mx
    import mlx.nn as nn

    model, _ = demo_model
    x = mx.array(held_contexts[:48])
    loss = nn.losses.cross_entropy(model(x[:, :-1]), x[:, 1:]).mean().item()
    unigram = load_build_info()["lm"]["unigram_entropy_nats_per_token"]
    assert loss < 0.5 * unigram, (loss, unigram)


def test_sae_format():
    import mlx.core as mx

    cfg = json.loads((demo_sae_path() / "config.json").read_text())
    for key in ("class", "d_model", "d_hidden", "k", "normalize_input", "tied_weights", "metadata"):
        assert key in cfg
    assert cfg["class"] == "SAE" and cfg["tied_weights"] is False and cfg["normalize_input"] is True
    meta = cfg["metadata"]
    assert meta["model_name"] == DEMO_MODEL_NAME
    assert isinstance(meta["layer"], int) and meta["component"] in ("mlp", "resid", "self_attn")
    assert meta["config"]["sae_type"] == "topk" and meta["config"]["k"] == cfg["k"]
    assert meta["config"]["expansion_factor"] * cfg["d_model"] == cfg["d_hidden"]
    assert meta["training_samples"] > 0
    model_cfg = json.loads((demo_model_path() / "config.json").read_text())
    assert cfg["d_model"] == model_cfg["hidden_size"]
    assert 0 <= meta["layer"] < model_cfg["num_hidden_layers"]

    w = mx.load(str(demo_sae_path() / "weights.safetensors"))
    d, m = cfg["d_model"], cfg["d_hidden"]
    shapes = {"encoder.weight": (m, d), "encoder.bias": (m,), "decoder.weight": (d, m),
              "decoder.bias": (d,), "input_mean": (d,), "input_std": (d,)}
    assert set(w) == set(shapes)
    for name, shape in shapes.items():
        assert tuple(w[name].shape) == shape, name
        assert w[name].dtype == mx.float32, name
    assert is_demo_sae(demo_sae_path())


def test_sae_reconstructs_held_out_activations(demo_model, held_contexts):
    import mlx.core as mx

    from saetui.demo.build import collect_activations, sae_forward_np

    model, _ = demo_model
    cfg = json.loads((demo_sae_path() / "config.json").read_text())
    meta = cfg["metadata"]
    x = collect_activations(model, held_contexts[:64], meta["layer"], meta["component"], 4000)
    w = {k: np.array(v) for k, v in mx.load(str(demo_sae_path() / "weights.safetensors")).items()}
    z, x_hat = sae_forward_np(w, x, cfg["k"])
    ev = 1 - (x - x_hat).var() / x.var()
    assert ev > 0.8
    assert np.allclose((z > 0).sum(-1).mean(), cfg["k"], atol=0.5)


def test_corpus_has_all_concepts():
    docs = _read_corpus()
    assert len(docs) >= 1000
    seen = set()
    for d in docs:
        assert set(d) == {"text", "spans"}
        for s, e, label in d["spans"]:
            assert 0 <= s < e <= len(d["text"])
            assert d["text"][s:e].strip() == d["text"][s:e]
            seen.add(label)
    assert seen == set(CONCEPTS)
    assert len(CONCEPTS) >= 8


# ------------------------------------------------------------------------------ generator

def test_generate_corpus_is_deterministic_and_labelled():
    a = generate_corpus(200, seed=7)
    assert a == generate_corpus(200, seed=7)
    assert a != generate_corpus(200, seed=8)
    labels = {label for d in a for _, _, label in d["spans"]}
    assert labels == set(CONCEPTS)
    by_label: dict[str, set[str]] = {}
    for d in a:
        for s, e, label in d["spans"]:
            by_label.setdefault(label, set()).add(d["text"][s:e])
    assert {"Paris", "France"} & by_label["geography"] or len(by_label["geography"]) > 10
    assert any("=" in s for s in by_label["arithmetic"])
    assert any("\n" in s or "(" in s for s in by_label["python_code"])
    # varied texts
    assert len({d["text"] for d in a}) == len(a)


def test_is_demo_sae(tmp_path):
    assert is_demo_sae(demo_sae_path())
    assert is_demo_sae(str(demo_sae_path()))
    assert not is_demo_sae(None)
    assert not is_demo_sae(tmp_path / "nope.mlx")
    other = tmp_path / "other.mlx"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"class": "SAE", "metadata": {"model_name": "x"}}))
    assert not is_demo_sae(other)


# ------------------------------------------------------------------------------ build

def test_build_quick_smoke(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "saetui.demo.build", "--quick", "--out", str(out)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for rel in ("model/config.json", "model/model.safetensors", "model/tokenizer.json",
                "model/tokenizer_config.json", "sae.mlx/config.json", "sae.mlx/weights.safetensors",
                "corpus.jsonl", "build_info.json"):
        assert (out / rel).is_file(), rel
    info = json.loads((out / "build_info.json").read_text())
    assert info["quick"] is True
    sae_cfg = json.loads((out / "sae.mlx" / "config.json").read_text())
    assert sae_cfg["class"] == "SAE" and sae_cfg["metadata"]["model_name"] == DEMO_MODEL_NAME
    assert is_demo_sae(out / "sae.mlx")

    from mlx_lm import load

    model, tok = load(str(out / "model"))
    assert tok.encode("Hello world", add_special_tokens=False)
