"""Rebuild the embedded demo from scratch: corpus, tokenizer, tiny llama model, TopK SAE.

    python -m saetui.demo.build [--out DIR] [--quick]

Everything is seeded. The full build trains for several minutes on a CPU; on Linux, MLX's CPU
wheel uses a slow reference BLAS, so preload OpenBLAS for a ~30x faster build::

    apt-get install libopenblas0-pthread
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        nice -n 10 python -m saetui.demo.build

Output (default ``saetui/demo/assets/``)::

    model/            config.json, model.safetensors, tokenizer.json, tokenizer_config.json
    sae.mlx/          config.json, weights.safetensors (the mlxterp format)
    sae_small.mlx/    a second, smaller TopK SAE (512 features, k 16, float16) on the same activations
    corpus.jsonl      held-out labelled corpus: {"text", "spans": [[start, end, label], ...]}
    build_info.json   seeds, sizes, measured quality numbers, durations

Context policy (the same as saetui's corpus engine): documents are tokenized without special
tokens and concatenated with ``</s>`` after each one; the stream is cut into chunks of
``ctx - 1`` tokens and each context is ``[<s>] + chunk``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import time
from typing import Any
from pathlib import Path

import numpy as np

from .corpus import CONCEPTS, generate_corpus

MODEL_NAME = "saetui-demo"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0, 1, 2, 3
UNK_ID, BOS_ID, EOS_ID, PAD_ID = range(4)

FULL = dict(
    seed=1234,
    n_train_docs=26000,
    n_heldout_docs=5000,
    vocab_size=2048,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    ctx=64,
    lm_batch=64,
    lm_steps=450,
    lm_lr=3e-3,
    lm_warmup=40,
    layer=2,
    component="mlp",
    sae_expansion=8,
    sae_k=32,
    sae_train_tokens=800_000,
    sae_eval_tokens=120_000,
    sae_batch=2048,
    sae_steps=2500,
    sae_lr=1e-3,
    sae_aux_k=256,
    sae_aux_coef=1 / 32,
    sae_dead_tokens=100_000,
    compile=True,
)
QUICK = dict(
    FULL,
    n_train_docs=300,
    n_heldout_docs=60,
    vocab_size=300,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    lm_batch=8,
    lm_steps=30,
    lm_warmup=5,
    sae_expansion=4,
    sae_k=8,
    sae_train_tokens=8_000,
    sae_eval_tokens=2_000,
    sae_batch=256,
    sae_steps=40,
    sae_aux_k=16,
    sae_dead_tokens=2_000,
    compile=False,  # MLX compiles C++ kernels on CPU: slow to start
)

# The second, smaller demo SAE (for `saetui compare`): trained on the same activations as the
# main one, after it (so the main SAE's bytes do not depend on it). 128 x 4 = 512 features.
SMALL_SAE = dict(sae_expansion=4, sae_k=16, sae_aux_k=128)
SMALL_SAE_DIR = "sae_small.mlx"
SMALL_SAE_SEED_OFFSET = 2  # its seed: the build seed + 2 (the corpora use seed and seed + 1)

# quality targets checked by the full build
TARGET_EV = 0.85
TARGET_DEAD = 0.30


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """Byte-level BPE; saved as tokenizer.json + tokenizer_config.json (PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    # like Llama: encode() adds <s>; encode(..., add_special_tokens=False) gives plain tokens
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                      special_tokens=[("<s>", BOS_ID)]),
    ])

    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", model_max_length=4096, clean_up_tokenization_spaces=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    # keep only what mlx_lm needs, with a stable tokenizer_config.json
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "add_bos_token": True, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 4096,
    })
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return tok


def tokenize_docs(tok, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def make_contexts(doc_ids: list[list[int]], ctx: int) -> np.ndarray:
    """(n, ctx) int32 contexts: ``[<s>] + (ctx - 1)`` tokens of the ``</s>``-joined stream."""
    stream: list[int] = []
    for ids in doc_ids:
        stream.extend(ids)
        stream.append(EOS_ID)
    n = len(stream) // (ctx - 1)
    body = np.asarray(stream[: n * (ctx - 1)], dtype=np.int32).reshape(n, ctx - 1)
    return np.concatenate([np.full((n, 1), BOS_ID, np.int32), body], axis=1)


def unigram_entropy(doc_ids: list[list[int]], vocab_size: int) -> float:
    counts = np.zeros(vocab_size, np.float64)
    for ids in doc_ids:
        np.add.at(counts, np.asarray(ids, np.int64), 1)
    counts[EOS_ID] += len(doc_ids)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------------------------
# Language model
# --------------------------------------------------------------------------------------------

def make_model_args(cfg: dict, vocab_size: int):
    from mlx_lm.models import llama

    return llama.ModelArgs(
        model_type="llama",
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        intermediate_size=cfg["intermediate_size"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_attention_heads"],
        rms_norm_eps=1e-5,
        vocab_size=vocab_size,
        max_position_embeddings=cfg["ctx"],
        rope_theta=10000.0,
        tie_word_embeddings=True,
    )


def lm_loss(model, contexts: np.ndarray, batch: int = 64) -> float:
    """Mean next-token cross-entropy (nats/token) over all predicted positions."""
    import mlx.core as mx
    import mlx.nn as nn

    total, n = 0.0, 0
    for i in range(0, len(contexts), batch):
        x = mx.array(contexts[i:i + batch])
        logits = model(x[:, :-1])
        loss = nn.losses.cross_entropy(logits, x[:, 1:], reduction="sum")
        total += loss.item()  # type: ignore[assignment]  # mlx stubs: item() is int | float | complex
        n += x[:, 1:].size
    return total / max(n, 1)


def train_lm(cfg: dict, args, train_ctx: np.ndarray, seed: int):
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.models import llama

    mx.random.seed(seed)
    model = llama.Model(args)
    # small init for the (tied) embedding, as in GPT-2 style models
    emb = model.model.embed_tokens
    emb.weight = mx.random.normal(emb.weight.shape) * 0.02
    mx.eval(model.parameters())

    steps, warm = cfg["lm_steps"], cfg["lm_warmup"]
    sched = optim.join_schedules(
        [optim.linear_schedule(cfg["lm_lr"] / 20, cfg["lm_lr"], warm),
         optim.cosine_decay(cfg["lm_lr"], max(steps - warm, 1), cfg["lm_lr"] / 20)],
        [warm])
    opt = optim.AdamW(learning_rate=sched, weight_decay=0.01, betas=[0.9, 0.98])

    def loss_fn(m, x):
        return nn.losses.cross_entropy(m(x[:, :-1]), x[:, 1:]).mean()

    vg = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]

    def step(x):
        loss, grads = vg(model, x)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(model, grads)
        return loss

    if cfg["compile"]:
        step = mx.compile(step, inputs=state, outputs=state)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_ctx))
    B = cfg["lm_batch"]
    pos, t0, ema = 0, time.time(), None
    for it in range(steps):
        if pos + B > len(order):
            order, pos = rng.permutation(len(train_ctx)), 0
        x = mx.array(train_ctx[order[pos:pos + B]])
        pos += B
        loss = step(x)
        mx.eval(state, loss)
        lv = loss.item()
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if it % 50 == 0 or it == steps - 1:
            el = time.time() - t0
            log(f"  lm step {it:4d}/{steps}  loss {lv:.3f} (ema {ema:.3f})  "
                f"{(it + 1) * B * (cfg['ctx'] - 1) / max(el, 1e-9):,.0f} tok/s  {el:.0f}s")
    return model, ema


def save_model(model, args, out_dir: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    out_dir.mkdir(parents=True, exist_ok=True)
    # mlx types tree_flatten() as a list of pairs or a dict; without destination it is the list
    weights = {k: v.astype(mx.float32) for k, v in tree_flatten(model.parameters())}  # type: ignore[str-unpack,union-attr]
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    config = dataclasses.asdict(args)
    config.update({
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": "float32",
        "_name_or_path": MODEL_NAME,
    })
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

def collect_activations(model, contexts: np.ndarray, layer: int, component: str,
                        max_tokens: int, batch: int = 64) -> np.ndarray:
    """Activations (n_tokens, d_model) float32 at ``model.model.layers[layer]``'s component,
    BOS positions excluded, for the first contexts until ``max_tokens``."""
    import mlx.core as mx
    import mlx.nn as nn

    inner = model.model
    block = inner.layers[layer]
    store: list = []

    class Recorder(nn.Module):
        def __init__(self, mod):
            super().__init__()
            self.mod = mod
            if hasattr(mod, "use_sliding"):  # read by LlamaModel.__call__
                self.use_sliding = mod.use_sliding

        def __call__(self, *a, **kw):
            out = self.mod(*a, **kw)
            store.append(out)
            return out

    layers = inner.layers
    attr = {"mlp": "mlp", "attn": "self_attn", "self_attn": "self_attn"}.get(component)
    if component in ("resid", "residual"):
        inner.layers = layers[:layer] + [Recorder(block)]
    elif attr is not None:
        inner.layers = layers[: layer + 1]  # later layers are not needed
        setattr(block, attr, Recorder(getattr(block, attr)))
    else:
        raise ValueError(f"unknown component {component!r}")
    chunks, n = [], 0
    try:
        for i in range(0, len(contexts), batch):
            store.clear()
            inner(mx.array(contexts[i:i + batch]))
            a = store[-1][:, 1:, :].astype(mx.float32)
            a = np.array(a.reshape(-1, a.shape[-1]))
            chunks.append(a)
            n += len(a)
            if n >= max_tokens:
                break
    finally:
        inner.layers = layers
        if attr is not None and component not in ("resid", "residual"):
            setattr(block, attr, getattr(block, attr).mod)
    return np.concatenate(chunks)[:max_tokens]


# --------------------------------------------------------------------------------------------
# TopK SAE (mlxterp "SAE" class)
# --------------------------------------------------------------------------------------------

def topk_mask(h, k: int):
    """Keep values >= the k-th largest per row (the mlxterp rule)."""
    import mlx.core as mx

    thr = mx.min(mx.topk(h, k, axis=-1), axis=-1, keepdims=True)
    return mx.where(h >= mx.stop_gradient(thr), h, 0.0)


def sae_forward_np(w: dict, x: np.ndarray, k: int, batch: int = 8192):
    """Encode/decode raw activations with the saved weights (exactly the format's equations)."""
    import mlx.core as mx

    W_e, b_e = mx.array(w["encoder.weight"]), mx.array(w["encoder.bias"])
    W_d, b_d = mx.array(w["decoder.weight"]), mx.array(w["decoder.bias"])
    mu, sd = mx.array(w["input_mean"]), mx.array(w["input_std"])
    zs, xh = [], []
    for i in range(0, len(x), batch):
        xb = (mx.array(x[i:i + batch]) - mu) / (sd + 1e-8)
        h = mx.maximum(xb @ W_e.T + b_e, 0.0)
        z = topk_mask(h, k)
        rec = (z @ W_d.T + b_d) * sd + mu
        mx.eval(z, rec)
        zs.append(np.array(z))
        xh.append(np.array(rec))
    return np.concatenate(zs), np.concatenate(xh)


def train_sae(cfg: dict, x_train: np.ndarray, seed: int) -> dict:
    """Train a TopK SAE on raw activations; returns the mlxterp weight dict (numpy float32)."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    mx.random.seed(seed)
    d = x_train.shape[1]
    m = d * cfg["sae_expansion"]
    k, aux_k = cfg["sae_k"], min(cfg["sae_aux_k"], m // 2)
    mean = x_train.mean(0).astype(np.float32)
    std = x_train.std(0).astype(np.float32)
    xn = ((x_train - mean) / (std + 1e-8)).astype(np.float32)

    W_dec = mx.random.normal((d, m))
    W_dec = W_dec / mx.linalg.norm(W_dec, axis=0, keepdims=True)

    class TopKSAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_enc = W_dec.T * 1.0
            self.b_enc = mx.zeros((m,))
            self.W_dec = W_dec * 1.0
            self.b_dec = mx.zeros((d,))

    sae = TopKSAE()
    dead_for = mx.zeros((m,))  # tokens since each feature last fired

    def loss_fn(s, x, dead):
        h = mx.maximum((x - s.b_dec) @ s.W_enc.T + s.b_enc, 0.0)
        z = topk_mask(h, k)
        x_hat = z @ s.W_dec.T + s.b_dec
        err = x - x_hat
        mse = (err * err).sum(-1).mean()
        # AuxK: reconstruct the residual error with the top aux_k dead features
        h_dead = h * dead
        z_aux = topk_mask(h_dead, aux_k) * dead
        e_hat = z_aux @ s.W_dec.T
        e = mx.stop_gradient(err)
        aux = ((e - e_hat) ** 2).sum(-1).mean() / mx.maximum((e * e).sum(-1).mean(), 1e-8)
        any_dead = (dead.sum() > 0).astype(mx.float32)
        loss = mse + cfg["sae_aux_coef"] * aux * any_dead
        fired = (z > 0).sum(0)
        return loss, (mse, fired)

    steps = cfg["sae_steps"]
    warm = max(steps // 20, 1)
    sched = optim.join_schedules(
        [optim.linear_schedule(cfg["sae_lr"] / 10, cfg["sae_lr"], warm),
         optim.cosine_decay(cfg["sae_lr"], max(steps - warm, 1), cfg["sae_lr"] / 10)], [warm])
    opt = optim.Adam(learning_rate=sched, betas=[0.9, 0.999])
    vg = nn.value_and_grad(sae, loss_fn)
    state = [sae.state, opt.state]

    def step(x, dead):
        (loss, (mse, fired)), grads = vg(sae, x, dead)
        opt.update(sae, grads)
        sae.W_dec = sae.W_dec / mx.maximum(mx.linalg.norm(sae.W_dec, axis=0, keepdims=True), 1e-6)
        return mse, fired

    if cfg["compile"]:
        step = mx.compile(step, inputs=state, outputs=state)

    rng = np.random.default_rng(seed)
    B = cfg["sae_batch"]
    order, pos = rng.permutation(len(xn)), 0
    t0 = time.time()
    base_var = float(xn.var(0).sum())
    for it in range(steps):
        if pos + B > len(order):
            order, pos = rng.permutation(len(xn)), 0
        xb = mx.array(xn[order[pos:pos + B]])
        pos += B
        dead = (dead_for >= cfg["sae_dead_tokens"]).astype(mx.float32)
        mse, fired = step(xb, dead)
        dead_for = mx.where(fired > 0, 0, dead_for + B)
        mx.eval(state, mse, dead_for)
        if it % 250 == 0 or it == steps - 1:
            n_dead = int((dead_for >= cfg["sae_dead_tokens"]).sum().item())
            log(f"  sae step {it:4d}/{steps}  norm. FVU {mse.item() / base_var:.4f}  "
                f"dead(>{cfg['sae_dead_tokens']} tok) {n_dead}/{m}  {time.time() - t0:.0f}s")

    # fold the training-time b_dec pre-subtraction into the encoder bias (format: no pre-bias)
    W_enc = np.array(sae.W_enc)
    b_dec = np.array(sae.b_dec)
    b_enc = np.array(sae.b_enc) - W_enc @ b_dec
    return {
        "encoder.weight": W_enc.astype(np.float32),
        "encoder.bias": b_enc.astype(np.float32),
        "decoder.weight": np.array(sae.W_dec).astype(np.float32),
        "decoder.bias": b_dec.astype(np.float32),
        "input_mean": mean,
        "input_std": std,
    }


def eval_sae(w: dict, x: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    z, x_hat = sae_forward_np(w, x, k)
    err = x - x_hat
    n = len(x)
    fires = (z > 0).sum(0)
    cos = (x * x_hat).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(x_hat, axis=-1) + 1e-12)
    m = z.shape[1]
    practical = max(10, 0.01 * n)
    stats = {
        "eval_tokens": n,
        "explained_variance": float(1 - err.var() / x.var()),
        "explained_variance_saebench": float(1 - (err ** 2).sum() / ((x - x.mean(0)) ** 2).sum()),
        "mse": float((err ** 2).mean()),
        "cosine_similarity": float(cos.mean()),
        "l0": float((z > 0).sum(-1).mean()),
        "dead_strict_fraction": float((fires == 0).mean()),
        "dead_practical_fraction": float((fires < practical).mean()),
        "n_features": int(m),
    }
    return stats, z


# --------------------------------------------------------------------------------------------
# Concept analysis (how cleanly the planted concepts show up as features)
# --------------------------------------------------------------------------------------------

def token_labels(tok, records: list[dict]) -> list[np.ndarray]:
    """Per document, the concept index of each plain token (-1: none), by char-span overlap."""
    encs = tok.encode_batch([r["text"] for r in records], add_special_tokens=False)
    out = []
    for rec, enc in zip(records, encs):
        lab = np.full(len(enc.ids), -1, np.int32)
        spans = rec["spans"]
        for j, (a, b) in enumerate(enc.offsets):
            for s, e, name in spans:
                if a < e and b > s:
                    lab[j] = CONCEPTS.index(name)
                    break
        out.append(lab)
    return out


def concept_report(z: np.ndarray, labels: np.ndarray, top_n: int = 20) -> dict:
    """Best feature per concept (F1 of 'fires' vs 'token in concept span') and the number of
    live features whose top-``top_n`` activations are >= 80 % one concept."""
    fires = z > 0
    n_fire = fires.sum(0)
    report = {}
    for ci, c in enumerate(CONCEPTS):
        is_c = labels == ci
        if not is_c.any():
            continue
        tp = fires[is_c].sum(0)
        prec = tp / np.maximum(n_fire, 1)
        rec = tp / is_c.sum()
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        f = int(f1.argmax())
        report[c] = {"feature": f, "f1": round(float(f1[f]), 3),
                     "precision": round(float(prec[f]), 3), "recall": round(float(rec[f]), 3)}
    pure = 0
    live = np.nonzero(n_fire >= top_n)[0]
    for feat in live:
        top = np.argpartition(-z[:, feat], top_n)[:top_n]
        lab = labels[top]
        lab = lab[lab >= 0]
        if len(lab) and np.bincount(lab).max() >= 0.8 * top_n:
            pure += 1
    return {"best_feature_per_concept": report, "n_concept_pure_features": int(pure),
            "concept_pure_criterion": f"live feature whose top-{top_n} activating tokens are "
                                      ">= 80% inside one concept's spans"}


# --------------------------------------------------------------------------------------------
# The second, smaller SAE
# --------------------------------------------------------------------------------------------

def topk_sae_config(w: dict, cfg: dict, layer: int, component: str, seed: int, aux_k: int, **extra: Any) -> dict:
    """The mlxterp config.json of a TopK SAE trained here (`extra`: more training-config keys)."""
    return {
        "class": "SAE",
        "d_model": int(w["encoder.weight"].shape[1]),
        "d_hidden": int(w["encoder.weight"].shape[0]),
        "k": int(cfg["sae_k"]),
        "normalize_input": True,
        "tied_weights": False,
        "metadata": {
            "layer": layer,
            "component": component,
            "model_name": MODEL_NAME,
            "config": {
                "expansion_factor": cfg["sae_expansion"],
                "k": cfg["sae_k"],
                "sae_type": "topk",
                "learning_rate": cfg["sae_lr"],
                "batch_size": cfg["sae_batch"],
                "num_steps": cfg["sae_steps"],
                "normalize_input": True,
                "tied_weights": False,
                "aux_k": aux_k,
                "aux_k_coef": cfg["sae_aux_coef"],
                "dead_feature_window_tokens": cfg["sae_dead_tokens"],
                "decoder_unit_norm": True,
                "seed": seed,
                **extra,
            },
            "training_samples": int(cfg["sae_train_tokens"]),
        },
    }


def save_small_sae(sae_dir: Path, cfg: dict, w: dict, x_eval: np.ndarray, labels: np.ndarray,
                   layer: int, component: str, seed: int) -> dict:
    """Save the small SAE in float16 (it ships with the package: ~270 KB instead of ~540 KB)
    and measure it as saved (the rounded weights) on the held-out activations."""
    import mlx.core as mx

    w16 = {k_: v.astype(np.float16) for k_, v in w.items()}
    stats, z = eval_sae({k_: v.astype(np.float32) for k_, v in w16.items()}, x_eval, cfg["sae_k"])
    concepts = concept_report(z[: len(labels)], labels)
    sae_cfg = topk_sae_config(w, cfg, layer, component, seed, aux_k=min(cfg["sae_aux_k"], int(w["encoder.weight"].shape[0]) // 2), weights_dtype="float16")
    if sae_dir.exists():
        shutil.rmtree(sae_dir)
    sae_dir.mkdir(parents=True)
    (sae_dir / "config.json").write_text(json.dumps(sae_cfg, indent=2) + "\n")
    mx.save_safetensors(str(sae_dir / "weights.safetensors"), {k_: mx.array(v) for k_, v in w16.items()})
    log(f"[sae small] {sae_cfg['d_hidden']} features, k {cfg['sae_k']}: EV {stats['explained_variance']:.4f}, "
        f"L0 {stats['l0']:.2f}, dead strict {stats['dead_strict_fraction']:.1%}; "
        f"concept-pure features {concepts['n_concept_pure_features']}; {dir_size(sae_dir) / 1e3:.0f} KB")
    return {"path": SMALL_SAE_DIR, "seed": seed, "expansion": cfg["sae_expansion"], "k": cfg["sae_k"],
            **{k_: (round(v, 5) if isinstance(v, float) else v) for k_, v in stats.items()},
            "concepts_report": concepts}


def build_small_sae(out: Path) -> dict:
    """Train only the small SAE, from the activations of the demo model already in ``out``.

    The model, the main SAE and the corpus are read, never written; ``build_info.json`` gains
    (or replaces) its ``sae_small`` entry. The corpora are regenerated from the recorded seeds.
    """
    from saetui.engine.blas import enable_fast_blas

    enable_fast_blas()
    from mlx_lm import load as mlx_load
    from tokenizers import Tokenizer

    info = json.loads((out / "build_info.json").read_text())
    cfg = dict(info["build_config"])
    seed = cfg["seed"]
    t = time.time()
    model, _ = mlx_load(str(out / "model"))  # type: ignore[misc]  # mlx_lm types load() as a 2- or 3-tuple; 2 without return_config
    tok = Tokenizer.from_file(str(out / "model" / "tokenizer.json"))
    train_docs = generate_corpus(cfg["n_train_docs"], seed=seed)
    held_docs = generate_corpus(cfg["n_heldout_docs"], seed=seed + 1)
    n_train_ctx_sae = cfg["sae_train_tokens"] // (cfg["ctx"] - 1) + 1
    train_ctx = make_contexts(tokenize_docs(tok, [d["text"] for d in train_docs])[: n_train_ctx_sae * 2], cfg["ctx"])
    held_ctx = make_contexts(tokenize_docs(tok, [d["text"] for d in held_docs]), cfg["ctx"])
    layer, component = cfg["layer"], cfg["component"]
    x_train = collect_activations(model, train_ctx[:n_train_ctx_sae], layer, component, cfg["sae_train_tokens"])
    x_eval = collect_activations(model, held_ctx, layer, component, cfg["sae_eval_tokens"])
    log(f"[activations] train {x_train.shape}, eval {x_eval.shape}  {time.time() - t:.0f}s")
    small_cfg = dict(cfg, **SMALL_SAE)
    t = time.time()
    w = train_sae(small_cfg, x_train, seed + SMALL_SAE_SEED_OFFSET)
    labels = np.concatenate([np.append(doc_labels, -1) for doc_labels in token_labels(tok, held_docs)])
    n_ctx_eval = len(x_eval) // (cfg["ctx"] - 1)
    labels = labels[: n_ctx_eval * (cfg["ctx"] - 1)]
    small = save_small_sae(out / SMALL_SAE_DIR, small_cfg, w, x_eval, labels, layer, component,
                           seed + SMALL_SAE_SEED_OFFSET)
    small["train_s"] = round(time.time() - t, 1)
    info["sae_small"] = small
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return small


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def default_out_dir() -> Path:
    return Path(__file__).resolve().parent / "assets"


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def build(out: Path, cfg: dict, quick: bool = False) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    t_start = time.time()
    times: dict[str, float] = {}
    seed = cfg["seed"]
    out.mkdir(parents=True, exist_ok=True)
    model_dir, sae_dir = out / "model", out / "sae.mlx"
    for p in (model_dir, sae_dir, out / SMALL_SAE_DIR):
        if p.exists():
            shutil.rmtree(p)

    # a. corpus ----------------------------------------------------------------------------
    t = time.time()
    train_docs = generate_corpus(cfg["n_train_docs"], seed=seed)
    held_docs = generate_corpus(cfg["n_heldout_docs"], seed=seed + 1)
    times["corpus_s"] = time.time() - t
    log(f"[corpus] {len(train_docs)} train docs ({sum(len(d['text']) for d in train_docs):,} chars), "
        f"{len(held_docs)} held-out docs  {times['corpus_s']:.1f}s")

    # b. tokenizer -------------------------------------------------------------------------
    t = time.time()
    tok = train_tokenizer([d["text"] for d in train_docs], cfg["vocab_size"], model_dir)
    vocab = tok.get_vocab_size()
    train_ids = tokenize_docs(tok, [d["text"] for d in train_docs])
    held_ids = tokenize_docs(tok, [d["text"] for d in held_docs])
    train_ctx = make_contexts(train_ids, cfg["ctx"])
    held_ctx = make_contexts(held_ids, cfg["ctx"])
    h_uni = unigram_entropy(train_ids, vocab)
    times["tokenizer_s"] = time.time() - t
    n_train_tok = sum(map(len, train_ids)) + len(train_ids)
    n_held_tok = sum(map(len, held_ids)) + len(held_ids)
    log(f"[tokenizer] vocab {vocab}; train {n_train_tok:,} tokens ({len(train_ctx)} contexts), "
        f"held-out {n_held_tok:,} tokens ({len(held_ctx)} contexts); "
        f"unigram entropy {h_uni:.3f} nats/token  {times['tokenizer_s']:.1f}s")

    # c. language model --------------------------------------------------------------------
    t = time.time()
    margs = make_model_args(cfg, vocab)
    model, train_loss = train_lm(cfg, margs, train_ctx, seed)
    n_eval_ctx = min(len(held_ctx), 400 if not quick else 50)
    held_loss = lm_loss(model, held_ctx[:n_eval_ctx])
    save_model(model, margs, model_dir)
    times["lm_s"] = time.time() - t
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))  # type: ignore[str-unpack,union-attr]  # tree_flatten: see save_model
    log(f"[lm] {n_params:,} params; held-out loss {held_loss:.3f} nats/token vs unigram entropy "
        f"{h_uni:.3f} (train ema {train_loss:.3f})  {times['lm_s']:.0f}s")

    # check that mlx_lm.load reads it back and agrees
    from mlx_lm import load as mlx_load

    model2, tw = mlx_load(str(model_dir))  # type: ignore[misc]  # mlx_lm types load() as a 2- or 3-tuple; 2 without return_config
    sample = held_docs[0]["text"]
    assert tw.encode(sample, add_special_tokens=False) == tok.encode(sample, add_special_tokens=False).ids
    reload_loss = lm_loss(model2, held_ctx[:16])
    assert abs(reload_loss - lm_loss(model, held_ctx[:16])) < 1e-3, "reloaded model differs"
    del model2

    # d. activations + SAE -----------------------------------------------------------------
    t = time.time()
    layer, component = cfg["layer"], cfg["component"]
    n_train_ctx_sae = cfg["sae_train_tokens"] // (cfg["ctx"] - 1) + 1
    x_train = collect_activations(model, train_ctx[:n_train_ctx_sae], layer, component,
                                  cfg["sae_train_tokens"])
    x_eval = collect_activations(model, held_ctx, layer, component, cfg["sae_eval_tokens"])
    times["activations_s"] = time.time() - t
    log(f"[activations] layer {layer} {component}: train {x_train.shape}, eval {x_eval.shape}; "
        f"raw std {x_train.std():.3f}  {times['activations_s']:.0f}s")

    t = time.time()
    w = train_sae(cfg, x_train, seed)
    small_cfg = dict(cfg, **SMALL_SAE)
    w_small = train_sae(small_cfg, x_train, seed + SMALL_SAE_SEED_OFFSET)
    del x_train
    stats, z = eval_sae(w, x_eval, cfg["sae_k"])
    times["sae_s"] = time.time() - t
    log(f"[sae] d_model {w['encoder.weight'].shape[1]} -> d_hidden {w['encoder.weight'].shape[0]}, "
        f"k {cfg['sae_k']}  {times['sae_s']:.0f}s")
    log(f"  held-out: EV {stats['explained_variance']:.4f} (SAEBench {stats['explained_variance_saebench']:.4f}), "
        f"cos {stats['cosine_similarity']:.4f}, MSE {stats['mse']:.5f}, L0 {stats['l0']:.2f}, "
        f"dead strict {stats['dead_strict_fraction']:.1%}, practical {stats['dead_practical_fraction']:.1%}")

    labels = np.concatenate([np.append(doc_labels, -1) for doc_labels in token_labels(tok, held_docs)])
    n_ctx_eval = len(x_eval) // (cfg["ctx"] - 1)
    labels = labels[: n_ctx_eval * (cfg["ctx"] - 1)]
    concepts = concept_report(z[: len(labels)], labels)
    log(f"  concept-pure features: {concepts['n_concept_pure_features']}; best F1 per concept: "
        + ", ".join(f"{c} {v['f1']:.2f}" for c, v in concepts["best_feature_per_concept"].items()))

    sae_cfg = topk_sae_config(w, cfg, layer, component, seed, aux_k=cfg["sae_aux_k"])
    sae_dir.mkdir(parents=True)
    (sae_dir / "config.json").write_text(json.dumps(sae_cfg, indent=2) + "\n")
    mx.save_safetensors(str(sae_dir / "weights.safetensors"),
                        {k_: mx.array(v.astype(np.float32)) for k_, v in w.items()})

    small_info = save_small_sae(out / SMALL_SAE_DIR, small_cfg, w_small, x_eval, labels, layer, component,
                                seed + SMALL_SAE_SEED_OFFSET)

    # e. corpus + build info ---------------------------------------------------------------
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in held_docs:
            f.write(json.dumps({"text": d["text"], "spans": d["spans"]}, ensure_ascii=False) + "\n")

    times["total_s"] = time.time() - t_start
    info = {
        "model_name": MODEL_NAME,
        "quick": quick,
        "seeds": {"train_corpus": seed, "heldout_corpus": seed + 1, "mlx": seed, "numpy": seed},
        "build_config": cfg,
        "concepts": list(CONCEPTS),
        "context_policy": f"[<s>] + {cfg['ctx'] - 1} plain tokens of the stream of documents, "
                          "each followed by </s>",
        "sizes": {
            "train_docs": len(train_docs), "train_tokens": n_train_tok,
            "heldout_docs": len(held_docs), "heldout_tokens": n_held_tok,
            "vocab_size": vocab, "model_params": int(n_params),
        },
        "lm": {
            "heldout_loss_nats_per_token": round(held_loss, 4),
            "heldout_eval_contexts": int(n_eval_ctx),
            "train_loss_ema": round(float(train_loss), 4),
            "unigram_entropy_nats_per_token": round(h_uni, 4),
        },
        "sae": {"layer": layer, "component": component, **{k_: (round(v, 5) if isinstance(v, float) else v)
                                                           for k_, v in stats.items()}},
        "concepts_report": concepts,
        "sae_small": small_info,
        "durations_s": {k_: round(v, 1) for k_, v in times.items()},
        "versions": {"python": platform.python_version(), "mlx": mx.__version__,  # type: ignore[attr-defined]  # not in mlx's stubs
                     "mlx_lm": __import__("mlx_lm").__version__},
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    sizes = {p.name: dir_size(p) if p.is_dir() else p.stat().st_size for p in sorted(out.iterdir())}
    total = sum(sizes.values())
    log("[assets] " + ", ".join(f"{k_} {v / 1e6:.2f} MB" for k_, v in sizes.items())
        + f"; total {total / 1e6:.2f} MB")
    log(f"[done] {times['total_s']:.0f}s")

    failures = []
    if not quick:
        if held_loss > 0.5 * h_uni:
            failures.append(f"LM held-out loss {held_loss:.3f} not far below unigram {h_uni:.3f}")
        if stats["explained_variance"] < TARGET_EV:
            failures.append(f"EV {stats['explained_variance']:.3f} < {TARGET_EV}")
        if stats["dead_strict_fraction"] >= TARGET_DEAD:
            failures.append(f"dead {stats['dead_strict_fraction']:.1%} >= {TARGET_DEAD:.0%}")
        if abs(stats["l0"] - cfg["sae_k"]) > 0.01 * cfg["sae_k"]:
            failures.append(f"L0 {stats['l0']:.2f} != k {cfg['sae_k']}")
        if total > 20e6:
            failures.append(f"assets {total / 1e6:.1f} MB > 20 MB")
    info["failures"] = failures
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saetui.demo.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (default: the package's demo assets; "
                         "with --quick: a new temporary directory)")
    ap.add_argument("--quick", action="store_true", help="tiny fast build for smoke tests")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--component", default=None, choices=["mlp", "attn", "self_attn", "resid", "residual"])
    ap.add_argument("--small-sae-only", action="store_true",
                    help="train only the second, smaller SAE from the model already in --out "
                         "(default: the package's assets); nothing else is rewritten")
    a = ap.parse_args(argv)
    if a.small_sae_only:
        out = a.out or default_out_dir()
        log(f"training the small demo SAE into {out / SMALL_SAE_DIR}")
        build_small_sae(out)
        return 0
    cfg = dict(QUICK if a.quick else FULL)
    if a.layer is not None:
        cfg["layer"] = a.layer
    if a.component is not None:
        cfg["component"] = a.component
    out = a.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="saetui-demo-")) if a.quick else default_out_dir()
    log(f"building the saetui demo into {out} ({'quick' if a.quick else 'full'})")
    info = build(out, cfg, quick=a.quick)
    for f in info["failures"]:
        log(f"TARGET MISSED: {f}")
    return 1 if info["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
