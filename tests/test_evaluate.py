"""The evaluation on a tiny model: every number against an independent computation, the splice,
the cache, and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from support import OpenedSession, open_session, write_sae
from tolerance import rel

from saetui.engine import cache
from saetui.engine import metrics as m
from saetui.engine.engine import THRESHOLD_BATCH
from saetui.engine.errors import Cancelled, UserError
from saetui.engine.evaluate import (
    cached_report,
    default_json_path,
    evaluate,
    report_cache_file,
    write_report_json,
)
from saetui.engine.tokens import token_string

CTX = 32
BUDGET = CTX * 10  # 10 contexts: batches of 4, 4 and 2


def make_engine(sae: str, dataset: str, **settings) -> OpenedSession:
    settings.setdefault("context_len", CTX)
    settings.setdefault("batch_size", 4)
    return open_session(sae=sae, dataset=dataset, **settings)


@pytest.fixture(scope="module")
def engine(tiny_setup):
    e = make_engine(tiny_setup["sae"], tiny_setup["dataset"])
    yield e
    e.close()


def run_eval(engine: OpenedSession, budget: int = BUDGET, on_progress=None, **kw):
    kw.setdefault("registry", {})
    return engine.engine.call_job("evaluating", evaluate, engine.session, budget, on_progress=on_progress, **kw)


def _sae_weights(path: str) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in mx.load(str(Path(path) / "weights.safetensors")).items()}


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _independent(engine: OpenedSession, sae_path: str, budget: int = BUDGET) -> dict:
    """The report's numbers from whole arrays: numpy SAE, numpy metrics, one forward per variant."""

    def forward():
        corpus = engine.session.corpus(budget)
        tokens = mx.array(corpus.contexts)
        x = np.array(engine.session.runner.activations(tokens, engine.session.hook).astype(mx.float32))
        clean = np.array(engine.session.runner.logits(tokens).astype(mx.float32))
        return corpus, x, clean

    corpus, x_all, clean = engine.on_worker(forward)
    w = _sae_weights(sae_path)
    k = engine.session.sae.k
    x = x_all[:, 1:].astype(np.float64)  # BOS excluded
    pre = np.maximum(x @ w["encoder.weight"].T + w["encoder.bias"], 0)
    kth = -np.sort(-pre, axis=-1)[..., k - 1 : k]
    z = np.where(pre >= kth, pre, 0.0)
    x_hat = z @ w["decoder.weight"].T + w["decoder.bias"]

    def spliced(replacement: np.ndarray) -> np.ndarray:
        def work():
            tokens = mx.array(corpus.contexts)
            rep = mx.array(replacement.astype(np.float32))
            out = engine.session.runner.logits(tokens, engine.session.hook, replace=lambda a: mx.concatenate([a[:, :1], rep.astype(a.dtype)], axis=1))
            return np.array(out.astype(mx.float32))

        return engine.on_worker(work)

    sae_logits, zero_logits = spliced(x_hat), spliced(np.zeros_like(x_hat))
    targets = corpus.contexts[:, 1:]

    def ce(logits):
        lp = _log_softmax(logits[:, :-1].astype(np.float64))
        return -np.take_along_axis(lp, targets[..., None], axis=-1).mean()

    def kl(q):
        lp, lq = _log_softmax(clean[:, :-1].astype(np.float64)), _log_softmax(q[:, :-1].astype(np.float64))
        return (np.exp(lp) * (lp - lq)).sum(axis=-1).mean()

    X, H = x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x.shape[-1])
    Z = z.reshape(-1, z.shape[-1])
    err = X - H
    n = X.shape[0]
    counts = (Z > 0).sum(axis=0)
    l0 = (Z > 0).sum(axis=1)
    threshold = max(10, int(n * 0.01))
    return {
        "n": n,
        "z": Z,
        "tokens": corpus.contexts[:, 1:].reshape(-1),
        "mse": np.mean(err**2),
        "cosine_similarity": np.mean((X * H).sum(1) / (np.linalg.norm(X, axis=1) * np.linalg.norm(H, axis=1) + 1e-8)),
        "explained_variance": 1 - np.var(err) / np.var(X),
        "explained_variance_saebench": 1 - (err**2).sum() / ((X - X.mean(0)) ** 2).sum(),
        "l2_ratio": np.mean(np.linalg.norm(H, axis=1) / np.linalg.norm(X, axis=1)),
        "l0_mean": l0.mean(),
        "l0": l0,
        "counts": counts,
        "dead_features": int((counts == 0).sum()),
        "dead_features_practical": int((counts < threshold).sum()),
        "rare_threshold": threshold,
        "ce_clean": ce(clean),
        "ce_sae": ce(sae_logits),
        "ce_zero": ce(zero_logits),
        "kl_sae": kl(sae_logits),
        "kl_zero": kl(zero_logits),
    }


def test_every_metric_matches_an_independent_computation(engine, tiny_setup):
    report = run_eval(engine)
    d = report.data
    ref = _independent(engine, tiny_setup["sae"])
    rec, extra, spa = d["reconstruction"], d["reconstruction_extra"], d["sparsity"]
    for key in ("mse", "cosine_similarity", "explained_variance"):
        assert rec[key] == pytest.approx(ref[key], rel=rel(1e-4), abs=1e-6), key
    assert extra["explained_variance_saebench"] == pytest.approx(ref["explained_variance_saebench"], rel=rel(1e-4))
    assert extra["l2_ratio"] == pytest.approx(ref["l2_ratio"], rel=rel(1e-4))
    assert spa["l0_mean"] == pytest.approx(ref["l0_mean"])
    assert spa["dead_features"] == ref["dead_features"]
    assert spa["dead_features_practical"] == ref["dead_features_practical"]
    assert spa["rare_threshold"] == ref["rare_threshold"]
    assert spa["dead_fraction"] == pytest.approx(ref["dead_features_practical"] / 256)
    assert spa["max_feature_activations"] == ref["counts"].max()
    assert spa["min_feature_activations"] == ref["counts"].min()
    for q, key in ((50, "median"), (10, "p10"), (90, "p90")):
        assert d["l0_distribution"][key] == pytest.approx(np.percentile(ref["l0"], q))
    density = ref["counts"] / ref["n"]
    assert d["feature_density"]["dense_features"] == int((density > 0.1).sum())
    densest = [f["feature"] for f in d["feature_density"]["densest"]]
    assert densest == [int(f) for f in np.argsort(-ref["counts"], kind="stable")[:20]]
    mb = d["model_behaviour"]
    assert mb["available"] and mb["positions"] == 10 * (CTX - 1)
    assert mb["ce_loss_clean"] == pytest.approx(ref["ce_clean"], rel=rel(1e-4))
    assert mb["ce_loss_sae"] == pytest.approx(ref["ce_sae"], rel=rel(1e-4))
    assert mb["ce_loss_zero"] == pytest.approx(ref["ce_zero"], rel=rel(1e-4))
    recovered = (ref["ce_zero"] - ref["ce_sae"]) / (ref["ce_zero"] - ref["ce_clean"])
    assert mb["ce_loss_recovered"] == pytest.approx(recovered, rel=rel(1e-3), abs=1e-3)
    assert mb["kl_div_sae"] == pytest.approx(ref["kl_sae"], rel=rel(1e-3), abs=1e-6)
    assert mb["kl_div_zero"] == pytest.approx(ref["kl_zero"], rel=rel(1e-3), abs=1e-6)
    assert mb["kl_score"] == pytest.approx((ref["kl_zero"] - ref["kl_sae"]) / ref["kl_zero"], rel=rel(1e-3), abs=1e-3)

    # Interpretability: the top-20 tokens of each candidate feature, found by sorting all of them.
    counts, Z, toks = ref["counts"], ref["z"], ref["tokens"]
    tokenizer = engine.session.tokenizer
    top = {}
    for f in np.argsort(-counts, kind="stable")[:100]:
        order = np.argsort(-Z[:, f], kind="stable")[:20]
        top[int(f)] = [token_string(tokenizer, int(toks[i])) for i in order if Z[i, f] > 0]
    expected = m.interpretable_features(counts, top)
    assert d["interpretability"]["token_features"] == expected
    assert d["interpretability"]["count"] == len(expected)

    # The score is the guide's rubric applied to these numbers.
    s = m.quality_score(ref["cosine_similarity"], ref["dead_features_practical"] / 256, len(expected))
    assert d["quality_score"] == s["total"] and d["score"]["rating"] == s["rating"]
    assert d["settings"]["tokens_evaluated"] == ref["n"] == 10 * (CTX - 1)
    assert d["settings"]["bos_excluded"] is True


def _identity_sae(folder: Path, model: str, zero_decoder: bool = False, **kw) -> str:
    """relu([x; -x]) decoded by [I, -I] gives x back exactly; k = d_hidden keeps every feature."""
    d = 64
    eye = np.eye(d, dtype=np.float32)
    weights = {
        "encoder.weight": np.concatenate([eye, -eye], axis=0),
        "encoder.bias": np.zeros(2 * d, np.float32),
        "decoder.weight": np.zeros((d, 2 * d), np.float32) if zero_decoder else np.concatenate([eye, -eye], axis=1),
        "decoder.bias": np.zeros(d, np.float32),
    }
    for name, value in kw.items():
        weights[name] = value
    return str(write_sae(folder, d_hidden=2 * d, k=2 * d, weights=weights, metadata={"layer": 1, "component": "mlp", "model_name": model}))


def test_a_perfect_reconstruction_recovers_all_the_loss(tmp_path, tiny_setup):
    engine = make_engine(_identity_sae(tmp_path / "perfect.mlx", tiny_setup["model"]), tiny_setup["dataset"])
    try:
        d = run_eval(engine).data
    finally:
        engine.close()
    mb = d["model_behaviour"]
    assert abs(mb["ce_loss_zero"] - mb["ce_loss_clean"]) > 1e-3  # zero ablation matters in this model
    assert mb["ce_loss_sae"] == pytest.approx(mb["ce_loss_clean"], abs=1e-5)
    assert mb["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert mb["kl_div_sae"] == pytest.approx(0.0, abs=1e-6)
    assert mb["kl_score"] == pytest.approx(1.0, abs=1e-4)
    assert d["reconstruction"]["mse"] == pytest.approx(0.0, abs=1e-10)
    assert d["reconstruction"]["cosine_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert d["reconstruction"]["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert d["bands"]["cosine_similarity"] == "excellent" and d["score"]["reconstruction"] == 2.0


def test_a_zero_output_sae_recovers_nothing(tmp_path, tiny_setup):
    engine = make_engine(_identity_sae(tmp_path / "zero.mlx", tiny_setup["model"], zero_decoder=True), tiny_setup["dataset"])
    try:
        d = run_eval(engine).data
    finally:
        engine.close()
    mb = d["model_behaviour"]
    assert mb["ce_loss_sae"] == pytest.approx(mb["ce_loss_zero"], abs=1e-6)
    assert mb["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-3)
    assert mb["kl_div_sae"] == pytest.approx(mb["kl_div_zero"], rel=1e-5)
    assert mb["kl_score"] == pytest.approx(0.0, abs=1e-4)
    assert d["reconstruction"]["cosine_similarity"] == 0.0
    assert any(a["topic"] == "reconstruction" for a in d["advice"])


def test_a_second_evaluation_comes_from_the_cache_without_running_the_model(engine, monkeypatch):
    first = run_eval(engine)
    assert not first.from_cache and first.cache_file.exists()

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran although the report is cached")

    for name in ("logits", "logits_and_activations", "activations"):
        monkeypatch.setattr(engine.session.runner, name, forbidden)
    second = run_eval(engine)
    assert second.from_cache and second.to_json() == first.to_json()
    assert engine(cached_report, BUDGET, {}) is not None
    # Another budget is another report.
    assert engine(cached_report, BUDGET * 2, {}) is None


def test_a_cancelled_evaluation_is_never_cached(engine):
    def cancel_after_first_batch(job, progress):
        if progress is not None and progress.done > 0:
            job.cancel()

    job = engine.engine.start("evaluating", evaluate, engine.session, BUDGET, registry={}, listener=cancel_after_first_batch)
    with pytest.raises(Cancelled):
        job.result()
    assert job.last.done < job.last.total
    assert engine(cached_report, BUDGET, {}) is None
    assert not engine(report_cache_file, BUDGET).exists()
    # Once finished, the same budget is cached.
    assert not run_eval(engine).from_cache
    assert run_eval(engine).from_cache


def test_progress_counts_tokens(engine):
    seen = []
    run_eval(engine, on_progress=seen.append, use_cache=False)
    assert [p.done for p in seen] == [0, 128, 256, 320] and seen[-1].total == BUDGET


def test_registry_features_with_high_confidence_count(engine, tmp_path):
    from saetui.engine.registry import Registry

    base = run_eval(engine).data["interpretability"]
    counted = {f["feature"] for f in base["token_features"]}
    fresh = [f for f in range(256) if f not in counted][:3]
    path = tmp_path / "reg.features.json"
    entries = {str(fresh[0]): {"name": "a", "confidence": "high"}, str(fresh[1]): {"name": "b", "confidence": "low"},
               str(fresh[2]): {"name": "c", "confidence": "high"}}
    if counted:
        entries[str(min(counted))] = {"name": "already counted", "confidence": "high"}
    path.write_text(json.dumps(entries))
    report = run_eval(engine, registry=Registry.load(path))
    assert report.from_cache  # the registry part follows the registry, the measurement is cached
    interp = report.data["interpretability"]
    assert [f["feature"] for f in interp["registry_features"]] == [fresh[0], fresh[2]]
    assert interp["count"] == base["count"] + 2


GUIDE_KEYS = {
    "sae_path", "model", "layer", "component", "architecture", "reconstruction", "sparsity", "quality_score", "max_score",
}


def test_json_report_has_the_guides_keys_and_saetuis_sections(engine, tmp_path):
    report = run_eval(engine)
    path = write_report_json(report, engine.session, tmp_path / "out.json")
    data = json.loads(path.read_text())
    assert GUIDE_KEYS <= set(data)
    assert set(data["architecture"]) == {"type", "d_model", "d_hidden", "expansion", "k"}
    assert set(data["reconstruction"]) == {"mse", "cosine_similarity", "explained_variance"}
    assert set(data["sparsity"]) == {
        "l0_mean", "l0_fraction", "dead_features", "dead_features_practical", "dead_fraction",
        "rare_threshold", "max_feature_activations", "min_feature_activations",
    }
    assert data["architecture"] == {"type": "SAE", "d_model": 64, "d_hidden": 256, "expansion": 4.0, "k": 8}
    assert data["layer"] == 1 and data["component"] == "mlp" and data["max_score"] == 5
    assert 0 <= data["quality_score"] <= 5 and data["quality_score"] == data["score"]["total"]
    for section in ("score", "bands", "reconstruction_extra", "model_behaviour", "l0_distribution",
                    "dead_features", "feature_density", "interpretability", "advice", "settings", "notes"):
        assert section in data, section
    settings = data["settings"]
    assert {"dataset", "budget", "tokens_total", "tokens_evaluated", "seed", "threshold_mode"} <= set(settings)
    assert settings["budget"] == BUDGET and settings["tokens_total"] == BUDGET
    assert data["interpretability"]["criterion"].startswith("Among the 100 most frequent live features")
    assert any("BOS" in note for note in data["notes"])


def test_default_json_path_is_beside_the_sae_with_a_fallback(engine, tmp_path, monkeypatch):
    copy = tmp_path / "sae folder" / "my_sae.mlx"
    copy.mkdir(parents=True)
    monkeypatch.setattr(engine.session, "sae_path", copy)
    report = run_eval(engine)
    assert default_json_path(engine.session) == tmp_path / "sae folder" / "my_sae_evaluation.json"
    assert write_report_json(report, engine.session) == tmp_path / "sae folder" / "my_sae_evaluation.json"

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == copy.parent else real_access(p, mode))
    assert write_report_json(report, engine.session) == cwd / "my_sae_evaluation.json"
    assert json.loads((cwd / "my_sae_evaluation.json").read_text())["sae_path"] == str(copy)


def test_a_failed_write_leaves_no_half_written_json(engine, tmp_path, monkeypatch):
    report = run_eval(engine)
    target = tmp_path / "out" / "report.json"

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "replace", fail)
    with pytest.raises(UserError, match="No space left"):
        write_report_json(report, engine.session, target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_budget_larger_than_the_dataset_uses_what_there_is(tmp_path, tiny_setup):
    small = tmp_path / "small.txt"
    small.write_text("The cat sat on the mat. Paris is the capital of France.\n" * 8)
    engine = make_engine(tiny_setup["sae"], str(small))
    try:
        d = run_eval(engine, 10**6).data
    finally:
        engine.close()
    s = d["settings"]
    assert s["budget"] == 10**6 and 0 < s["tokens_total"] < 10**6
    assert any("fewer than the budget" in note for note in d["notes"])


def test_an_sae_whose_every_feature_is_dead_gets_a_report(tmp_path, tiny_setup):
    weights = {
        "encoder.weight": np.zeros((256, 64), np.float32),
        "encoder.bias": np.full(256, -1.0, np.float32),
        "decoder.weight": np.ones((64, 256), np.float32),
        "decoder.bias": np.zeros(64, np.float32),
    }
    sae = write_sae(tmp_path / "dead.mlx", weights=weights, metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]})
    engine = make_engine(str(sae), tiny_setup["dataset"])
    try:
        d = run_eval(engine).data
    finally:
        engine.close()
    assert d["sparsity"]["dead_features"] == 256 and d["sparsity"]["dead_fraction"] == 1.0
    assert d["sparsity"]["l0_mean"] == 0 and d["l0_distribution"]["median"] == 0
    assert d["score"]["sparsity"] == 0 and d["interpretability"]["count"] == 0
    assert d["feature_density"]["densest"] == [] and len(d["dead_features"]["strict_ids"]) == 200
    assert any("Every feature is dead" in note for note in d["notes"])
    assert {a["topic"] for a in d["advice"]} >= {"dead_features", "interpretability"}


def test_nan_activations_are_a_clear_error(engine):
    down = engine.session.runner.model.model.layers[0].mlp.down_proj
    original = down["weight"]
    # MLX arrays belong to the thread that made them: make this one on the worker.
    down["weight"] = engine.on_worker(lambda: mx.full(original.shape, float("nan")))
    try:
        with pytest.raises(UserError, match="activations at the hook contain NaN or infinite values"):
            run_eval(engine, use_cache=False)
    finally:
        down["weight"] = original
    assert engine(cached_report, BUDGET, {}) is None


def test_infinite_reconstructions_are_a_clear_error(tmp_path, tiny_setup):
    sae = _identity_sae(tmp_path / "huge.mlx", tiny_setup["model"],
                        **{"decoder.weight": np.full((64, 128), 3e38, np.float32),
                           "encoder.weight": 1e3 * np.concatenate([np.eye(64), -np.eye(64)]).astype(np.float32)})
    engine = make_engine(sae, tiny_setup["dataset"])
    try:
        with pytest.raises(UserError, match="reconstruction contain NaN or infinite"):
            run_eval(engine)
    finally:
        engine.close()


def test_a_model_without_an_unembedding_skips_ce_and_kl_and_says_why(engine, monkeypatch):
    # The inner LlamaModel returns hidden states, not logits: no unembedding is reachable.
    monkeypatch.setattr(engine.session.runner, "model", engine.session.runner.model.model)
    d = run_eval(engine, use_cache=False).data
    mb = d["model_behaviour"]
    assert mb["available"] is False and "vocabulary" in mb["reason"]
    assert any("CE loss and KL are not computed" in note for note in d["notes"])
    assert d["reconstruction"]["mse"] > 0 and d["score"]["max"] == 5


def test_zero_budget_is_a_clear_error(engine):
    with pytest.raises(UserError, match="nothing to evaluate"):
        run_eval(engine, 0)


def test_batchtopk_uses_the_calibrated_threshold_and_says_so(tmp_path, tiny_setup):
    sae = str(write_sae(tmp_path / "btk.mlx", cls="BatchTopKSAE", metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]}))
    engine = make_engine(sae, tiny_setup["dataset"])
    try:
        d = run_eval(engine).data
    finally:
        engine.close()
    assert d["settings"]["threshold_mode"] == "calibrated" and d["settings"]["threshold"] > 0
    assert any("calibrated per-token threshold" in n for n in d["notes"])

    engine = make_engine(sae, tiny_setup["dataset"], threshold_mode=THRESHOLD_BATCH)
    try:
        d = run_eval(engine).data
    finally:
        engine.close()
    assert d["settings"]["threshold_mode"] == "batch"
    # Batch semantics: exactly k x tokens features fire over each batch, so mean L0 is k.
    assert d["sparsity"]["l0_mean"] == pytest.approx(8.0, abs=0.05)
    assert any("batch semantics" in n for n in d["notes"])
