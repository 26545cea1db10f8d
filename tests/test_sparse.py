"""Sparse codes from the device against the dense encoder, and the device twins of the
index's numpy helpers (sample keys, histogram bins)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from saetui.engine.index.bookkeeping import histogram_bin_mx, sample_key_mx
from saetui.engine.index.keeper import HIST_BINS, histogram_bin, histogram_edges, sample_key
from saetui.engine.sae import BATCH_TOPK, SAE
from saetui.engine.saes.mlxterp import mlxterp_sae
from saetui.engine.sparse import batch_topk_codes, encode_sparse, threshold_codes, topk_codes


def random_sae(kind: str = "SAE", d_model: int = 16, d_sae: int = 96, k: int = 8) -> SAE:
    rng = np.random.default_rng(0)
    weights = {
        "encoder.weight": mx.array(rng.normal(size=(d_sae, d_model)).astype(np.float32)),
        "encoder.bias": mx.array(rng.normal(size=(d_sae,)).astype(np.float32) * 0.1),
        "decoder.weight": mx.array(rng.normal(size=(d_model, d_sae)).astype(np.float32)),
        "decoder.bias": mx.zeros((d_model,)),
    }
    return mlxterp_sae({"class": kind, "d_model": d_model, "d_hidden": d_sae, "k": k}, weights)


def dense_of(codes) -> np.ndarray:
    f, v = codes.to_numpy()
    out = np.zeros((*v.shape[:-1], codes.d_sae), dtype=np.float32)
    np.put_along_axis(out, f.astype(np.int64), v, axis=-1)
    return out


def test_topk_codes_are_the_dense_encoding():
    sae = random_sae()
    x = mx.array(np.random.default_rng(1).normal(size=(3, 7, 16)).astype(np.float32))
    codes = encode_sparse(sae, x)
    assert codes.width == sae.k and codes.features.dtype == mx.int32
    f = np.asarray(codes.features)
    assert all(len(set(row)) == len(row) for row in f.reshape(-1, sae.k))  # a feature once per token
    np.testing.assert_array_equal(dense_of(codes), np.asarray(sae.encode(x)))
    np.testing.assert_array_equal(np.asarray(codes.dense()), np.asarray(sae.encode(x)))


def test_threshold_and_batch_codes_are_the_dense_encoding():
    sae = random_sae(BATCH_TOPK)
    x = mx.array(np.random.default_rng(2).normal(size=(4, 5, 16)).astype(np.float32))
    view = sae.with_threshold(0.9)  # the calibrated per-token view
    codes = encode_sparse(view, x)
    np.testing.assert_array_equal(dense_of(codes), np.asarray(view.encode(x)))
    assert codes.width == int((np.asarray(view.encode(x)) > 0).sum(axis=-1).max())
    batch = encode_sparse(sae, x)  # the SAE itself: mlxterp's batch semantics
    np.testing.assert_array_equal(dense_of(batch), np.asarray(sae.encode(x)))
    pre = sae.pre_activations(x)
    np.testing.assert_array_equal(dense_of(batch_topk_codes(pre, sae.k)), np.asarray(sae.encode(x)))
    nothing = threshold_codes(pre, 1e9)
    assert nothing.width == 0 and dense_of(nothing).sum() == 0


def test_topk_codes_pad_with_zero_when_few_fire():
    pre = mx.array(np.array([[0.0, 2.0, 0.0, 1.0, 0.0]], dtype=np.float32))
    codes = topk_codes(pre, 4)
    assert codes.width == 4
    np.testing.assert_array_equal(dense_of(codes), np.asarray(pre))
    assert int((np.asarray(codes.values) > 0).sum()) == 2


def test_device_sample_keys_match_numpy():
    rng = np.random.default_rng(3)
    ctx = rng.integers(0, 2**31 - 1, size=5000)
    f = rng.integers(0, 2**20, size=5000)
    got = np.asarray(sample_key_mx(mx.array(ctx.astype(np.int32)), mx.array(f.astype(np.int32))))
    want = sample_key(ctx, f)
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert want.min() >= 0 and want.max() < 2**31
    # Spread: roughly uniform over [0, 2^31).
    assert 0.45 < (want < 2**30).mean() < 0.55


def test_device_histogram_bins_are_exact_at_the_edges():
    edges = histogram_edges()[1:-1]
    e32 = edges.astype(np.float32)
    around = np.concatenate([e32, np.nextafter(e32, np.float32(0)), np.nextafter(e32, np.float32(np.inf))])
    values = np.concatenate([around, np.float32([1e-7, 3e-5, 0.5, 7.0, 9e3, 2e4, 1e30])]).astype(np.float32)
    got = np.asarray(histogram_bin_mx(mx.array(values)))
    np.testing.assert_array_equal(got, histogram_bin(values))
    reference = np.histogram(values.astype(np.float64), bins=histogram_edges())[0]
    np.testing.assert_array_equal(np.bincount(got, minlength=HIST_BINS), reference)


@pytest.mark.parametrize("shape", [(1, 1, 16), (2, 9, 16)])
def test_codes_keep_the_leading_shape(shape):
    sae = random_sae()
    x = mx.array(np.random.default_rng(4).normal(size=shape).astype(np.float32))
    codes = encode_sparse(sae, x)
    assert codes.values.shape == (*shape[:-1], sae.k)
