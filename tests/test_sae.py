"""SAE loading: mlxterp's fixtures reproduced, both BatchTopK modes, and every bad file."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from support import write_sae

from saetui import load_sae
from saetui.engine.errors import UserError
from saetui.engine.sae import BATCH_TOPK, BatchTopKSAE, ThresholdedBatchTopKSAE, TopKSAE

FIXTURE_NAMES = ["topk_llama_l2_mlp", "batchtopk_qwen_l1_mlp", "topk_tied_nonorm"]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_encode_decode_match_mlxterp(fixtures_dir, name):
    sae = load_sae(fixtures_dir / f"{name}.mlx")
    expected = np.load(fixtures_dir / f"{name}.expected.npz")
    x = mx.array(expected["x"])
    features = np.array(sae.encode(x))  # BatchTopKSAE: mlxterp's batch semantics
    np.testing.assert_allclose(features, expected["features"], atol=1e-5, rtol=0)
    recon = np.array(sae.decode(mx.array(expected["features"])))
    np.testing.assert_allclose(recon, expected["reconstruction"], atol=1e-5, rtol=0)


def test_fixture_metadata_and_api(fixtures_dir):
    sae = load_sae(fixtures_dir / "topk_llama_l2_mlp.mlx")
    assert (type(sae), sae.d_model, sae.d_sae, sae.k) == (TopKSAE, 64, 512, 16)
    assert sae.format == "mlxterp" and sae.architecture == "TopK" and sae.metadata.format == "mlxterp"
    assert sae.metadata.layer == 2 and sae.metadata.component == "mlp"
    assert sae.metadata.model_name == "mlx-community/Llama-3.2-1B-Instruct-4bit"
    assert sae.metadata.training_config["expansion_factor"] == 8
    tied = load_sae(fixtures_dir / "topk_tied_nonorm.mlx")
    assert tied.tied_weights and not tied.normalize_input and tied.metadata.component == "attn"


def test_topk_is_per_token_and_independent_of_batch(fixtures_dir):
    sae = load_sae(fixtures_dir / "topk_llama_l2_mlp.mlx")
    x = mx.array(np.load(fixtures_dir / "topk_llama_l2_mlp.expected.npz")["x"])
    whole = np.array(sae.encode(x))
    one = np.array(sae.encode(x[1:2, 3:4]))
    np.testing.assert_allclose(one[0, 0], whole[1, 3], atol=1e-6)
    assert ((whole != 0).sum(-1) == 16).all()


def test_batchtopk_batch_semantics_depend_on_the_batch(fixtures_dir):
    sae = load_sae(fixtures_dir / "batchtopk_qwen_l1_mlp.mlx")
    data = np.load(fixtures_dir / "batchtopk_qwen_l1_mlp.expected.npz")
    x = mx.array(data["x"])
    whole = np.array(sae.encode(x))
    alone = np.array(sae.encode(x[0:1, 0:1]))
    # Alone, a token keeps exactly k features; in the batch it keeps however many survive.
    assert (alone != 0).sum() == sae.k
    assert (whole != 0).sum() == sae.k * 4 * 9


def test_batchtopk_calibrated_threshold_gives_mean_l0_k_and_is_per_token(fixtures_dir):
    sae = load_sae(fixtures_dir / "batchtopk_qwen_l1_mlp.mlx")
    rng = np.random.default_rng(0)
    acts = mx.array(rng.normal(size=(3000, 64)).astype(np.float32))
    view = sae.calibrated([acts[:1000], acts[1000:2000], acts[2000:]])
    assert isinstance(view, ThresholdedBatchTopKSAE) and view.k == sae.k
    theta = view.threshold_value
    # Independent: the (k * n)-th largest pre-activation over all tokens.
    h = np.maximum(np.array(sae.pre_activations(acts)), 0).ravel()
    kth = np.sort(h)[::-1][sae.k * 3000 - 1]
    assert theta < kth and np.isclose(theta, kth, rtol=1e-6)
    z = np.array(view.encode(acts))
    assert (z != 0).sum(-1).mean() == pytest.approx(sae.k, abs=1e-9)
    # Batch-independent: one token alone gives the same features as inside the batch.
    np.testing.assert_allclose(np.array(view.encode(acts[5:6]))[0], z[5], atol=1e-6)
    # The view decodes with the same weights, and its identity includes the threshold.
    np.testing.assert_allclose(np.array(view.decode(mx.array(z))), np.array(sae.decode(mx.array(z))), atol=1e-6)
    assert view.content_hash != sae.content_hash and sae.with_threshold(theta).content_hash == view.content_hash


def test_decoder_directions_are_what_decode_adds(fixtures_dir):
    sae = load_sae(fixtures_dir / "topk_llama_l2_mlp.mlx")
    z = np.zeros((1, 512), np.float32)
    z[0, 7] = 1.0
    delta = np.array(sae.decode(mx.array(z)) - sae.decode(mx.zeros((1, 512))))[0]
    np.testing.assert_allclose(np.array(sae.decoder_directions)[7], delta, atol=1e-5)


# -- bad files ---------------------------------------------------------------------------


def _copy(fixtures_dir, tmp_path, name="topk_llama_l2_mlp"):
    dst = tmp_path / f"{name}.mlx"
    shutil.copytree(fixtures_dir / f"{name}.mlx", dst)
    return dst


def _config(path):
    return json.loads((path / "config.json").read_text())


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="SAE not found"):
        load_sae(tmp_path / "nope.mlx")


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="not an SAE directory"):
        load_sae(f)


def test_directory_without_config(tmp_path):
    (tmp_path / "empty.mlx").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_sae(tmp_path / "empty.mlx")


def test_invalid_json(fixtures_dir, tmp_path):
    p = _copy(fixtures_dir, tmp_path)
    (p / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_sae(p)


def test_unknown_class(fixtures_dir, tmp_path):
    p = _copy(fixtures_dir, tmp_path)
    cfg = _config(p)
    cfg["class"] = "JumpReLUSAE"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="unknown SAE class 'JumpReLUSAE'"):
        load_sae(p)


def test_bad_dimension_in_config(fixtures_dir, tmp_path):
    p = _copy(fixtures_dir, tmp_path)
    cfg = _config(p)
    cfg["d_hidden"] = "512"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="'d_hidden' must be a positive integer"):
        load_sae(p)


def test_missing_weights_file(fixtures_dir, tmp_path):
    p = _copy(fixtures_dir, tmp_path)
    (p / "weights.safetensors").unlink()
    with pytest.raises(UserError, match="no weights.safetensors"):
        load_sae(p)


def test_corrupt_weights_file(fixtures_dir, tmp_path):
    p = _copy(fixtures_dir, tmp_path)
    (p / "weights.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(UserError, match="cannot be read as safetensors"):
        load_sae(p)


def test_missing_tensor(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"encoder.weight": rng.normal(size=(32, 8)).astype(np.float32), "encoder.bias": np.zeros(32, np.float32)}
    p = write_sae(tmp_path / "s.mlx", d_model=8, d_hidden=32, weights=weights)
    with pytest.raises(UserError, match="no 'decoder.weight' tensor"):
        load_sae(p)


def test_mis_shaped_tensor(fixtures_dir, tmp_path):
    p = _copy(fixtures_dir, tmp_path)
    cfg = _config(p)
    cfg["d_hidden"] = 256
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"'encoder.weight' has shape \(512, 64\), expected \(256, 64\)"):
        load_sae(p)


def test_nan_weights(tmp_path):
    p = write_sae(tmp_path / "s.mlx", d_model=8, d_hidden=32, k=4)
    w = dict(mx.load(str(p / "weights.safetensors")))
    bad = np.array(w["decoder.weight"])
    bad[0, 0] = np.nan
    w["decoder.weight"] = mx.array(bad)
    mx.save_safetensors(str(p / "weights.safetensors"), w)
    with pytest.raises(UserError, match="NaN or infinite"):
        load_sae(p)


def test_batchtopk_class_loads(tmp_path):
    p = write_sae(tmp_path / "b.mlx", d_model=8, d_hidden=32, k=4, cls=BATCH_TOPK, normalize=True, tied=True)
    sae = load_sae(p)
    assert isinstance(sae, BatchTopKSAE) and sae.tied_weights
    z = sae.encode(mx.ones((2, 8)))
    assert int((z != 0).sum()) <= 8
