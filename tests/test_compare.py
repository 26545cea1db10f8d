"""Comparing two SAEs: matching (itself, a permuted copy, brute force), families that split
or merge, activation correlation, `saetui compare` JSON and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from saetui.cli import main
from saetui.engine.clusters import Cluster, Clustering
from saetui.engine.compare import PairCorrelation, best_matches, compare_saes, family_changes
from saetui.engine.sae import load_sae
from saetui.engine.worker import drive

from support import HIDDEN, write_sae

CONTEXT = "48"
BUDGET = str(48 * 24)


def permuted_copy(src: Path, dst: Path, perm: np.ndarray) -> Path:
    """An SAE whose feature perm[i] is feature i of `src` (encoder rows and decoder columns moved)."""
    w = {k: np.array(v) for k, v in mx.load(str(src / "weights.safetensors")).items()}
    new = dict(w)
    inverse = np.argsort(perm)
    new["encoder.weight"] = w["encoder.weight"][inverse]
    new["encoder.bias"] = w["encoder.bias"][inverse]
    new["decoder.weight"] = w["decoder.weight"][:, inverse]
    cfg = json.loads((src / "config.json").read_text())
    return write_sae(dst, d_model=cfg["d_model"], d_hidden=cfg["d_hidden"], k=cfg["k"], weights=new, metadata=cfg["metadata"])


def test_best_matches_equals_brute_force():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 16)).astype(np.float32)
    b = rng.standard_normal((170, 16)).astype(np.float32)
    best, sim = best_matches(mx.array(a), mx.array(b), block=64)
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = ua.astype(np.float64) @ ub.T.astype(np.float64)
    assert np.array_equal(best, s.argmax(1))
    assert np.allclose(sim, s.max(1), atol=1e-5)


def test_sketched_matching_recovers_a_noisy_permutation():
    # Big, wide decoders are matched through a random sketch, ranked by the exact cosine.
    rng = np.random.default_rng(3)
    a = rng.standard_normal((400, 256)).astype(np.float32)
    perm = rng.permutation(400)
    b = np.empty_like(a)
    b[perm] = a + 0.5 * rng.standard_normal(a.shape).astype(np.float32)  # B's perm[i] is A's i, noisy
    best, sim = best_matches(mx.array(a), mx.array(b), block=64, sketch_dim=64)
    assert np.array_equal(best, perm)
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    assert np.allclose(sim, (ua * ub[perm]).sum(1), atol=1e-5)


def test_an_sae_against_itself_and_a_permuted_copy(tiny_setup, tmp_path):
    src = Path(tiny_setup["sae"])
    sae = load_sae(src)
    same = drive(compare_saes(sae, load_sae(src)))
    assert np.array_equal(same.a_best, same.a_live)
    assert np.allclose(same.a_similarity, 1.0, atol=1e-5)
    assert same.found_fraction == 1.0 and same.unique_a == [] and same.unique_b == []
    perm = np.random.default_rng(4).permutation(sae.d_sae)
    copy = load_sae(permuted_copy(src, tmp_path / "perm.mlx", perm))
    result = drive(compare_saes(sae, copy))
    assert np.array_equal(result.a_best, perm[result.a_live])  # the permutation is recovered
    assert np.allclose(result.a_similarity, 1.0, atol=1e-5)
    assert np.array_equal(result.b_best, np.argsort(perm)[result.b_live])


def test_unique_features_and_found_fraction():
    class Dec:
        def __init__(self, d):
            self.decoder_directions = mx.array(d)
            self.d_model = d.shape[1]

    eye = np.eye(6, dtype=np.float32)
    a = eye[[0, 1, 2, 3]]
    b = np.stack([eye[0], eye[1], (eye[2] + eye[4]) / np.sqrt(2), eye[5]])  # 2 is half there, 3 missing
    r = drive(compare_saes(Dec(a), Dec(b), threshold=0.75))  # 2 matches at cos 0.707
    assert r.a_best.tolist()[:2] == [0, 1]
    assert r.unique_a == [2, 3] and r.found_fraction == 0.5
    assert r.unique_b == [2, 3]
    assert {m["a"] for m in r.matches()} == {0, 1, 2, 3}


def test_families_that_split_and_merge():
    # A: cluster 0 = {0,1,2,3}, cluster 1 = {4,5}, cluster 2 = {6,7}
    # B: cluster 0 = {10,11}, cluster 1 = {12,13}, cluster 2 = {14,15,16,17}
    a = Clustering([Cluster(0, [0, 1, 2, 3], 0.5), Cluster(1, [4, 5], 0.5), Cluster(2, [6, 7], 0.5)], 8,
                   np.arange(8), np.zeros((8, 2), np.float32), {})
    b = Clustering([Cluster(0, [10, 11], 0.5), Cluster(1, [12, 13], 0.5), Cluster(2, [14, 15, 16, 17], 0.5)], 18,
                   np.arange(10, 18), np.zeros((8, 2), np.float32), {})
    live = np.arange(8)
    best = np.array([10, 11, 12, 13, 14, 15, 16, 17])  # A0 -> B0 + B1 (split); A1 + A2 -> B2 (merge)
    splits, merges = family_changes(a, b, live, best, np.ones(8), 0.7)
    assert [(s["a_cluster"], s["b_clusters"]) for s in splits] == [(0, [0, 1])]
    assert [(m["b_cluster"], m["a_clusters"]) for m in merges] == [(2, [1, 2])]


def test_pair_correlation_equals_numpy():
    rng = np.random.default_rng(1)
    za = np.maximum(rng.standard_normal((2, 50, 8)), 0).astype(np.float32)
    zb = np.maximum(za[..., ::-1] + 0.3 * rng.standard_normal((2, 50, 8)), 0).astype(np.float32)
    zb[..., 7] = 0  # never fires: undefined
    acc = PairCorrelation(np.arange(8), np.arange(8)[::-1])
    acc.add(mx.array(za[:1]), mx.array(zb[:1]))
    acc.add(mx.array(za[1:]), mx.array(zb[1:]))
    got = acc.values()
    fa, fb = za.reshape(-1, 8), zb.reshape(-1, 8)
    for i in range(8):
        j = 7 - i
        if j == 7:
            assert np.isnan(got[i])
        else:
            assert got[i] == pytest.approx(np.corrcoef(fa[:, i], fb[:, j])[0, 1], abs=1e-4)


# -- the command -------------------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith(("saetui: note:", "["))]
    assert len(lines) == 1 and lines[0].startswith("saetui: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def common(tiny_setup):
    return ["--dataset", tiny_setup["dataset"], "--context-len", CONTEXT, "--max-tokens", BUDGET, "--neighbours", "5"]


def test_compare_json_against_a_permuted_copy(capsys, tiny_setup, tmp_path):
    src = Path(tiny_setup["sae"])
    perm = np.random.default_rng(9).permutation(256)
    copy = permuted_copy(src, tmp_path / "perm.mlx", perm)
    code, out, err = run(capsys, "compare", str(src), str(copy), *common(tiny_setup), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"a", "b", "reports", "matches", "found_fraction"} <= set(data)
    assert set(data["reports"]) == {"a", "b"}
    # both reports on the same tokens
    assert data["reports"]["a"]["settings"]["tokens_evaluated"] == data["reports"]["b"]["settings"]["tokens_evaluated"]
    # one match per live feature of A (live: fired on the index's tokens, as `saetui clusters` says)
    code2, out2, err2 = run(capsys, "clusters", str(src), *common(tiny_setup), "--json")
    assert code2 == 0, err2
    live = sorted(f for c in json.loads(out2)["clusters"] for f in c["members"])
    assert sorted(m["a"] for m in data["matches"]) == live
    for m in data["matches"]:
        assert set(m) == {"a", "b", "similarity"}
        assert m["b"] == int(perm[m["a"]]) and m["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert data["found_fraction"] == 1.0
    # same hook: activation correlation of each pair (a permuted copy fires identically)
    finite = [c for c in data["correlations"] if c is not None]
    assert finite and all(c == pytest.approx(1.0, abs=1e-4) for c in finite)


def test_compare_text_output(capsys, tiny_setup):
    code, out, err = run(capsys, "compare", tiny_setup["sae"], tiny_setup["sae"], *common(tiny_setup), "--no-reports")
    assert code == 0, err
    assert "100.0% of A's live features in B" in out


def test_compare_bad_input(capsys, tiny_setup, tmp_path):
    code, _, err = run(capsys, "compare", tiny_setup["sae"], *common(tiny_setup))
    one_line_error(code, err, "two SAEs")
    meta = json.loads((Path(tiny_setup["sae"]) / "config.json").read_text())["metadata"]
    narrow = write_sae(tmp_path / "narrow.mlx", d_model=HIDDEN // 2, metadata=meta)
    code, _, err = run(capsys, "compare", tiny_setup["sae"], str(narrow), *common(tiny_setup))
    one_line_error(code, err, "different widths", f"A {HIDDEN}", f"B {HIDDEN // 2}")
    other = write_sae(tmp_path / "other.mlx", metadata=dict(meta, model_name="some/other-model"))
    code, _, err = run(capsys, "compare", tiny_setup["sae"], str(other), *common(tiny_setup))
    one_line_error(code, err, "different models", "--model")
