"""SAELens, Gemma Scope and sparsify SAEs (../shared/spec/sae-formats.md): the shared
fixtures reproduced, every flag against the spec's float64 reference math, the path
forms, and every validation error of §7 as one clear line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from formats_support import (
    FIXTURE_NAMES,
    FORMATS,
    reference,
    saelens_weights,
    write_gemmascope,
    write_saelens,
    write_safetensors,
    write_sparsify,
)

from saetui.engine.errors import UserError
from saetui.engine.sae import (
    SAE,
    GatedSAE,
    GroupMaxSAE,
    JumpReLUSAE,
    ReLUSAE,
    SparseAutoencoder,
    TopKSAE,
    load_sae,
)

RTOL = ATOL = 1e-4


@pytest.fixture(scope="module")
def formats_dir() -> Path:
    if not FORMATS.exists():
        pytest.skip(f"format fixtures not found at {FORMATS} (../shared is absent)")
    return FORMATS


def _inputs(d: int, n: int = 40, seed: int = 1, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, d)) * scale).astype(np.float32)


def _check(sae: SAE, x: np.ndarray, want_z: np.ndarray, want_recon: np.ndarray) -> None:
    z = np.array(sae.encode(mx.array(x)))
    recon = np.array(sae.decode(mx.array(z)))
    np.testing.assert_allclose(z, want_z, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(z > 0, np.asarray(want_z) > 0)
    np.testing.assert_allclose(recon, want_recon, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.array(sae.reconstruct(mx.array(x))), want_recon, rtol=RTOL, atol=ATOL)


def _ref_cfg(arch: str, d: int, **kw) -> dict:
    cfg = {"architecture": arch, "d_in": d, "apply_b_dec_to_input": True, "normalize_activations": "none"}
    cfg.update(kw)
    return cfg


# -- the shared fixtures ------------------------------------------------------------------------

EXPECTED_SITES = {
    "saelens_standard": (ReLUSAE, 3, "resid", "tiny-stories-1M", None),
    "saelens_topk": (TopKSAE, 2, "mlp", "tiny-stories-1M", 16),
    "saelens_jumprelu": (JumpReLUSAE, 5, "attn", "tiny-stories-3M", None),
    "saelens_gated": (GatedSAE, 5, "resid", "pythia-14m", None),
    "gemma-scope-2b-pt-res": (JumpReLUSAE, 3, "resid", "gemma-2-2b", None),
    "sparsify_topk": (TopKSAE, 4, "resid", "EleutherAI/pythia-14m", 16),
}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_reproduces_expected(formats_dir, name):
    sae = load_sae(formats_dir / name)
    expected = np.load(formats_dir / f"{name}.expected.npz")
    _check(sae, expected["x"], expected["features"], expected["reconstruction"])
    cls, layer, component, model, k = EXPECTED_SITES[name]
    assert isinstance(sae, cls) and isinstance(sae, SparseAutoencoder)
    md = sae.metadata
    assert (md.layer, md.component, md.model_name, sae.k) == (layer, component, model, k)
    assert (sae.d_model, sae.d_sae) == (expected["x"].shape[1], expected["features"].shape[1])
    assert md.format == sae.format and md.architecture and sae.describe().startswith(sae.format)


def test_decoder_directions_are_what_decode_adds(formats_dir):
    for name in FIXTURE_NAMES:
        sae = load_sae(formats_dir / name)
        z = np.zeros((2, sae.d_sae), np.float32)
        z[0, 5] = 1.0
        out = np.array(sae.decode(mx.array(z)))
        np.testing.assert_allclose(np.array(sae.decoder_directions)[5], out[0] - out[1], atol=1e-5)


def test_gemma_scope_path_forms(formats_dir, tmp_path):
    leaf = formats_dir / "gemma-scope-2b-pt-res" / "layer_3" / "width_1k" / "average_l0_11"
    saes = [load_sae(p) for p in (leaf / "params.npz", leaf, formats_dir / "gemma-scope-2b-pt-res")]
    assert len({s.content_hash for s in saes}) == 1
    assert saes[0].metadata.l0_target == 11 and saes[0].metadata.hook_name == "blocks.3.hook_resid_post"
    # A release tree with two SAEs: the user must pick one.
    tree = tmp_path / "gemma-scope-2b-pt-res"
    shutil.copytree(formats_dir / "gemma-scope-2b-pt-res", tree)
    shutil.copytree(tree / "layer_3", tree / "layer_4")
    with pytest.raises(UserError, match=r"holds 2 Gemma Scope SAEs.*Pass one"):
        load_sae(tree)
    assert load_sae(tree / "layer_4" / "width_1k" / "average_l0_11").metadata.layer == 4


def test_gemma_scope_copied_npz_needs_flags(formats_dir, tmp_path):
    shutil.copy(formats_dir / "gemma-scope-2b-pt-res/layer_3/width_1k/average_l0_11/params.npz", tmp_path / "params.npz")
    sae = load_sae(tmp_path / "params.npz")
    assert (sae.metadata.layer, sae.metadata.component, sae.metadata.model_name) == (None, None, None)


def test_sparsify_run_and_hookpoint_folders(formats_dir, tmp_path):
    run = load_sae(formats_dir / "sparsify_topk")
    one = load_sae(formats_dir / "sparsify_topk" / "layers.4")
    assert run.content_hash == one.content_hash and run.metadata.hook_name == "layers.4"
    assert run.metadata.context_size == 2048 and run.metadata.dataset == "EleutherAI/SmolLM2-135M-10B"
    two = tmp_path / "run"
    write_sparsify(two, "layers.0")
    write_sparsify(two, "layers.1", seed=1)
    with pytest.raises(UserError, match=r"several hookpoints: layers\.0, layers\.1.*Pass one: .*layers\.0"):
        load_sae(two)


# -- every flag against the reference math ---------------------------------------------------------


@pytest.mark.parametrize("arch,k", [("standard", None), ("topk", 7), ("jumprelu", None), ("gated", None)])
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_saelens_architectures_and_dtypes(tmp_path, arch, k, dtype):
    ref = reference()
    folder, cfg, w = write_saelens(tmp_path / "sae", arch, k=k, dtype=dtype)
    x = _inputs(32)
    z, recon = ref.saelens_forward(_ref_cfg(arch, 32, k=k), w, x)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    assert sae.metadata.dtype == {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    assert sae.W_enc.dtype == mx.float32


def test_topk_rescaled_by_non_unit_decoder_norms(tmp_path):
    ref = reference()
    folder, cfg, w = write_saelens(tmp_path / "sae", "topk", k=5, cfg_extra={"rescale_acts_by_decoder_norm": True})
    norms = np.linalg.norm(w["W_dec"], axis=-1)
    assert norms.min() < 0.9 or norms.max() > 1.1  # really non-unit
    x = _inputs(32)
    z, recon = ref.saelens_forward(_ref_cfg("topk", 32, k=5, rescale_acts_by_decoder_norm=True), w, x)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    assert ((np.array(sae.encode(mx.array(x))) > 0).sum(-1) <= 5).all()
    # z is in unit-decoder units: a feature writes along W_dec / ||W_dec||.
    np.testing.assert_allclose(np.array(sae.decoder_directions), w["W_dec"] / norms[:, None], atol=1e-6)


@pytest.mark.parametrize("mode", ["constant_norm_rescale", "layer_norm"])
def test_token_dependent_normalisation(tmp_path, mode):
    ref = reference()
    folder, cfg, w = write_saelens(tmp_path / "sae", "standard", cfg_extra={"normalize_activations": mode})
    x = _inputs(32) + 1.5
    z, recon = ref.saelens_forward(_ref_cfg("standard", 32, normalize_activations=mode), w, x)
    _check(load_sae(folder), x, z, recon)


def test_training_checkpoint_with_activation_scaler(tmp_path):
    ref = reference()
    folder, cfg, w = write_saelens(tmp_path / "ckpt", "jumprelu", cfg_extra={"normalize_activations": "expected_average_only_in", "l1_coefficient": 5.0, "lp_norm": 1.0})
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.37}))
    (folder / "trainer_state.pt").write_bytes(b"not read")
    x = _inputs(32, scale=8.0)
    z, recon = ref.saelens_forward(_ref_cfg("jumprelu", 32, normalize_activations="expected_average_only_in"), w, x, scaling_factor=0.37)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    # Directions in activation units: one unit of feature j adds W_dec[j] / s.
    np.testing.assert_allclose(np.array(sae.decoder_directions), w["W_dec"] / 0.37, rtol=1e-5)
    # A null factor (already folded) is no scaling, with a note; the flag supplies one.
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None}))
    plain = load_sae(folder)
    z1, r1 = ref.saelens_forward(_ref_cfg("jumprelu", 32), w, x)
    _check(plain, x, z1, r1)
    assert any("no scaling factor" in n for n in plain.metadata.notes)
    _check(load_sae(folder, norm_scaling_factor=0.37), x, z, recon)


def test_covariance_whitening(tmp_path):
    folder, cfg, w = write_saelens(tmp_path / "sae", "standard", cfg_extra={"normalize_activations": "covariance_whitening"})
    rng = np.random.default_rng(3)
    mean = rng.normal(size=32).astype(np.float32)
    matrix = (np.eye(32) + 0.1 * rng.normal(size=(32, 32))).astype(np.float32)
    inverse = np.linalg.inv(matrix.astype(np.float64)).astype(np.float32)
    x = _inputs(32)
    sae_in = (x.astype(np.float64) - mean) @ matrix - w["b_dec"]
    z = np.maximum(sae_in @ w["W_enc"] + w["b_enc"], 0)
    recon = (z @ w["W_dec"] + w["b_dec"]) @ inverse + mean
    with pytest.raises(UserError, match="activation_whitening.safetensors is missing"):
        load_sae(folder)
    write_safetensors(folder / "activation_whitening.safetensors", {"mean": mean, "matrix": matrix, "inverse_matrix": inverse})
    _check(load_sae(folder), x, z, recon)


def test_gated_without_b_dec_subtraction(tmp_path):
    ref = reference()
    folder, cfg, w = write_saelens(tmp_path / "sae", "gated", cfg_extra={"apply_b_dec_to_input": False})
    x = _inputs(32)
    z, recon = ref.saelens_forward(_ref_cfg("gated", 32, apply_b_dec_to_input=False), w, x)
    _check(load_sae(folder), x, z, recon)


def test_batchtopk_exported_as_jumprelu_on_a_module_hook(tmp_path):
    """What save_inference_model writes for BatchTopK: jumprelu, one threshold, unit rows."""
    ref = reference()
    rng = np.random.default_rng(5)
    w = saelens_weights(rng, "jumprelu", 32, 96, unit_decoder=True)
    w["threshold"] = np.full(96, 0.21, np.float32)
    folder, cfg, w = write_saelens(tmp_path / "sae", "jumprelu", weights=w, hook_name="model.layers.2", model_class_name="AutoModelForCausalLM", model_name="meta-llama/Llama-3.2-1B")
    x = _inputs(32)
    z, recon = ref.saelens_forward(_ref_cfg("jumprelu", 32), w, x)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    assert (sae.metadata.layer, sae.metadata.component, sae.metadata.post_norm) == (2, "resid", False)


def test_batchtopk_training_checkpoint_is_converted(tmp_path):
    ref = reference()
    rng = np.random.default_rng(6)
    w = saelens_weights(rng, "topk", 32, 96)
    w["topk_threshold"] = np.array(0.15, dtype=np.float32)
    folder, cfg, _ = write_saelens(tmp_path / "ckpt", "batchtopk", weights=w, cfg_extra={"k": 8, "rescale_acts_by_decoder_norm": True})
    # Export by hand (spec §2.7): fold the decoder norms, repeat the scalar threshold.
    n = np.linalg.norm(w["W_dec"].astype(np.float64), axis=-1)
    folded = {"W_enc": w["W_enc"] * n, "b_enc": w["b_enc"] * n, "W_dec": w["W_dec"] / n[:, None], "b_dec": w["b_dec"], "threshold": np.full(96, 0.15)}
    x = _inputs(32)
    z, recon = ref.saelens_forward(_ref_cfg("jumprelu", 32), folded, x)
    sae = load_sae(folder)
    assert isinstance(sae, JumpReLUSAE) and sae.k is None
    _check(sae, x, z, recon)
    del w["topk_threshold"]
    write_safetensors(folder / "sae_weights.safetensors", w)
    with pytest.raises(UserError, match="training checkpoint of a BatchTopK SAE.*save_inference_model"):
        load_sae(folder)


def test_pre_6_config(tmp_path):
    ref = reference()
    folder, cfg, w = write_saelens(tmp_path / "old", "standard", legacy=True, hook_name="blocks.4.hook_resid_pre", model_name="gpt2-small")
    x = _inputs(32)
    z, recon = ref.saelens_forward(_ref_cfg("standard", 32), w, x)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    assert (sae.metadata.layer, sae.metadata.component, sae.metadata.model_name) == (3, "resid", "gpt2-small")
    # activation_fn topk with k in its kwargs is a topk SAE; normalize_activations true is the scaler mode.
    cfg.update(activation_fn_str="topk", activation_fn_kwargs={"k": 4})
    (folder / "cfg.json").write_text(json.dumps(cfg))
    topk = load_sae(folder)
    assert isinstance(topk, TopKSAE) and topk.k == 4
    z, recon = ref.saelens_forward(_ref_cfg("topk", 32, k=4), w, x)
    _check(topk, x, z, recon)
    cfg.update(activation_fn_str="tanh-relu")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="unsupported activation 'tanh-relu'"):
        load_sae(folder)


def test_gemma_scope_lower_case_keys_at_an_mlp_site(tmp_path):
    ref = reference()
    npz, w = write_gemmascope(tmp_path / "gemma-scope-9b-pt-mlp" / "layer_5" / "width_16k" / "average_l0_50", lower_case=True)
    x = _inputs(32)
    z, recon = ref.gemmascope_forward(w, x)
    sae = load_sae(npz.parent)
    _check(sae, x, z, recon)
    md = sae.metadata
    assert (md.layer, md.component, md.post_norm, md.model_name, md.l0_target) == (5, "mlp", True, "gemma-2-9b", 50)
    with pytest.raises(UserError, match="not a residual, MLP or attention output"):
        load_sae(write_gemmascope(tmp_path / "gemma-scope-2b-pt-att" / "layer_5" / "width_16k" / "average_l0_50")[0])


@pytest.mark.parametrize("variant", ["skip", "groupmax", "2024"])
def test_sparsify_variants(tmp_path, variant):
    ref = reference()
    if variant == "skip":
        folder, cfg, w = write_sparsify(tmp_path / "run", skip=True)
    elif variant == "groupmax":
        folder, cfg, w = write_sparsify(tmp_path / "run", cfg_extra={"activation": "groupmax"})
    else:  # a 2024 file: no activation, num_latents, skip or transcode keys; signed false
        folder, cfg, w = write_sparsify(tmp_path / "sae-ckpts", "layers.2.mlp", model=None)
        cfg = {k: cfg[k] for k in ("expansion_factor", "normalize_decoder", "k", "d_in")} | {"signed": False}
        (folder / "cfg.json").write_text(json.dumps(cfg))
    x = _inputs(32)
    z, recon = ref.sparsify_forward(cfg, w, x)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    if variant == "groupmax":
        assert isinstance(sae, GroupMaxSAE)
    if variant == "2024":
        assert (sae.metadata.layer, sae.metadata.component, sae.metadata.model_name) == (2, "mlp", None)


# -- identity: the content hash covers config and weights ---------------------------------------------


def test_content_hash_covers_config_and_weights(tmp_path):
    a, cfg, w = write_saelens(tmp_path / "a", "topk", k=8)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert load_sae(a).content_hash == load_sae(b).content_hash
    cfg["k"] = 4
    (b / "cfg.json").write_text(json.dumps(cfg))
    assert load_sae(b).content_hash != load_sae(a).content_hash and load_sae(b).k == 4
    shutil.rmtree(b)
    shutil.copytree(a, b)
    w2 = dict(w)
    w2["b_dec"] = w["b_dec"] + 1
    write_safetensors(b / "sae_weights.safetensors", w2)
    assert load_sae(b).content_hash != load_sae(a).content_hash


def test_mlxterp_hash_covers_k(fixtures_dir, tmp_path):
    p = tmp_path / "s.mlx"
    shutil.copytree(fixtures_dir / "topk_llama_l2_mlp.mlx", p)
    before = load_sae(p).content_hash
    cfg = json.loads((p / "config.json").read_text())
    cfg["k"] = 8
    (p / "config.json").write_text(json.dumps(cfg))
    assert load_sae(p).content_hash != before


# -- §7 validation: one line, problem and fix -------------------------------------------------------


def _edit_cfg(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value in changes.items():
        if value is ...:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _fails(path, pattern: str) -> UserError:
    with pytest.raises(UserError, match=pattern) as info:
        load_sae(path)
    assert "\n" not in info.value.one_line() and info.value.fix
    return info.value


def test_no_known_layout(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hi")
    _fails(tmp_path / "x", r"holds no SAE.*cfg.json \+ sae_weights.safetensors, cfg.json \+ sae.safetensors, params.npz")
    _fails(tmp_path / "missing", "SAE not found")


@pytest.mark.parametrize(
    "changes,pattern",
    [
        (dict(architecture="fancy"), "unknown SAELens architecture 'fancy'"),
        (dict(architecture="jumprelu_transcoder"), "transcoders are not supported"),
        (dict(d_out=32), "transcoders are not supported"),
        (dict(architecture="abstopk"), "architecture 'abstopk' is not supported"),
        (dict(d_in=0), "'d_in' must be a positive integer, found 0"),
        (dict(d_sae=True), "'d_sae' must be a positive integer, found True"),
        (dict(d_in="32"), "'d_in' must be a positive integer"),
        (dict(normalize_activations="zscore"), "normalize_activations 'zscore' is not one of none, expected_average_only_in"),
        (dict(reshape_activations="hook_z"), "is not a residual, MLP or attention output"),
        (dict(apply_b_dec_to_input="false"), "'apply_b_dec_to_input' must be true or false"),
    ],
)
def test_saelens_config_errors(tmp_path, changes, pattern):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    _edit_cfg(folder, **changes)
    _fails(folder, pattern)


def test_topk_k_errors(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "topk", k=8)
    _edit_cfg(folder, k=500)
    _fails(folder, "k=500 is larger than d_sae=96")
    _edit_cfg(folder, k=...)
    _fails(folder, "a topk SAE needs 'k'")
    sp, _, _ = write_sparsify(tmp_path / "run", cfg_extra={"k": 1000})
    _fails(sp, "k=1000 is larger than d_sae=96")
    write_sparsify(tmp_path / "run", cfg_extra={"k": 7, "activation": "groupmax"})
    _fails(sp, "groupmax needs d_sae=96 to be a multiple of k=7")


def test_invalid_json_and_non_objects(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    (folder / "cfg.json").write_text("{oops")
    _fails(folder, r"cfg.json is not valid JSON")
    (folder / "cfg.json").write_text("[1, 2]")
    _fails(folder, r"cfg.json is not a JSON object")


def test_tensor_errors(tmp_path):
    folder, cfg, w = write_saelens(tmp_path / "sae", "jumprelu")
    write_safetensors(folder / "sae_weights.safetensors", {n: a for n, a in w.items() if n != "threshold"})
    _fails(folder, r"has no 'threshold' tensor \(architecture jumprelu\)")
    write_safetensors(folder / "sae_weights.safetensors", {**w, "log_threshold": w["threshold"]})
    _fails(folder, "has tensor 'log_threshold' that saetui does not understand")
    write_safetensors(folder / "sae_weights.safetensors", {**w, "scaling_factor": np.full(96, 2.0, np.float32)})
    _fails(folder, "'scaling_factor' that saetui does not understand")
    write_safetensors(folder / "sae_weights.safetensors", {**w, "scaling_factor": np.ones(96, np.float32)})
    assert isinstance(load_sae(folder), JumpReLUSAE)  # all ones: dropped
    write_safetensors(folder / "sae_weights.safetensors", {**w, "W_enc": w["W_enc"].T.copy()})
    _fails(folder, r"'W_enc' has shape \(96, 32\), expected \(32, 96\) from the config; it looks transposed")
    write_safetensors(folder / "sae_weights.safetensors", w, dtypes={"W_dec": "I32"})
    _fails(folder, "'W_dec' has dtype 'I32'")
    bad = dict(w)
    bad["W_dec"] = w["W_dec"].copy()
    bad["W_dec"][3, 3] = np.inf
    write_safetensors(folder / "sae_weights.safetensors", bad)
    _fails(folder, "'W_dec' contains NaN or infinite values")
    (folder / "sae_weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    _fails(folder, "cannot be read as safetensors")


def test_warnings_are_notes(tmp_path):
    folder, cfg, w = write_saelens(tmp_path / "sae", "jumprelu")
    w = dict(w)
    w["threshold"] = w["threshold"] - 1.0
    write_safetensors(folder / "sae_weights.safetensors", w)
    write_safetensors(folder / "sparsity.safetensors", {"other": np.zeros(3, np.float32)})
    notes = load_sae(folder).metadata.notes
    assert any("negative" in n for n in notes) and any("sparsity.safetensors ignored" in n for n in notes)


def test_sparsify_flags(tmp_path):
    folder, _, _ = write_sparsify(tmp_path / "a", cfg_extra={"transcode": True})
    _fails(folder, "transcoders are not supported")
    folder, _, _ = write_sparsify(tmp_path / "b", cfg_extra={"signed": True})
    _fails(folder, "signed sparsify SAEs are not supported")
    folder, _, w = write_sparsify(tmp_path / "c", cfg_extra={"skip_connection": True})
    _fails(folder, "has no 'W_skip' tensor")
    write_safetensors(folder / "sae.safetensors", {n: a for n, a in w.items() if n != "W_dec"})
    _fails(folder, "has no 'W_dec' tensor")


def test_out_of_scope_hooks_and_files(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "z", "standard", hook_name="blocks.2.attn.hook_z")
    _fails(folder, "hook 'blocks.2.attn.hook_z' is not a residual, MLP or attention output.*Pick an SAE")
    folder, cfg, _ = write_saelens(tmp_path / "head", "standard")
    cfg["metadata"]["hook_head_index"] = 3
    (folder / "cfg.json").write_text(json.dumps(cfg))
    _fails(folder, "per-head SAE")
    folder, _, _ = write_saelens(tmp_path / "emb", "standard", hook_name="blocks.0.hook_resid_pre")
    _fails(folder, "is the embeddings")
    # A name saetui cannot read leaves layer and component to the flags.
    folder, _, _ = write_saelens(tmp_path / "odd", "standard", hook_name="my_custom_point")
    assert load_sae(folder).metadata.layer is None
    (tmp_path / "ae").mkdir()
    (tmp_path / "ae" / "ae.pt").write_bytes(b"\x80\x04")
    _fails(tmp_path / "ae", "is a pickled torch checkpoint.*Convert it to SAELens format")
    _fails(tmp_path / "ae" / "ae.pt", "is a pickled torch checkpoint")
    (tmp_path / "ls").mkdir()
    (tmp_path / "ls" / "hyperparams.json").write_text("{}")
    _fails(tmp_path / "ls", "Llama Scope files are not read directly")


def test_non_string_metadata(tmp_path):
    folder, cfg, _ = write_saelens(tmp_path / "sae", "standard")
    cfg["metadata"]["model_name"] = 42
    (folder / "cfg.json").write_text(json.dumps(cfg))
    _fails(folder, "'model_name' must be a string, found 42")
    cfg["metadata"]["model_name"] = "m"
    cfg["metadata"]["hook_name"] = ["blocks.1.hook_resid_post"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    _fails(folder, "'hook_name' must be a string")


# -- untrusted files: never hang, never fill memory, never an internal error ------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_config_does_not_hang(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    (folder / "cfg.json").unlink()
    os.mkfifo(folder / "cfg.json")
    _fails(folder, "cfg.json is a FIFO, not a regular file")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_weights_linked_to_dev_zero(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    (folder / "sae_weights.safetensors").unlink()
    (folder / "sae_weights.safetensors").symlink_to("/dev/zero")
    _fails(folder, "is a device or special file, not a regular file")
    (folder / "cfg.json").unlink()
    (folder / "cfg.json").symlink_to("/dev/zero")
    _fails(folder, "cfg.json is a device or special file")


def test_directory_and_oversized_config(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    (folder / "sae_weights.safetensors").unlink()
    (folder / "sae_weights.safetensors").mkdir()
    _fails(folder, "sae_weights.safetensors is a directory")
    shutil.rmtree(folder / "sae_weights.safetensors")
    write_saelens(folder, "standard")
    (folder / "cfg.json").write_text(" " * (9 * 1024 * 1024) + "{}")
    _fails(folder, "cfg.json is .* bytes, too large")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads everything")
def test_unreadable_weights(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    (folder / "sae_weights.safetensors").chmod(0)
    try:
        _fails(folder, "cannot be read \\(permission denied\\)")
    finally:
        (folder / "sae_weights.safetensors").chmod(0o644)


def test_escape_sequences_in_fields_are_shown_escaped(tmp_path):
    folder, _, _ = write_saelens(tmp_path / "sae", "standard")
    _edit_cfg(folder, architecture="\x1b]0;pwned\x07\x1b[2J")
    err = _fails(folder, "unknown SAELens architecture")
    assert "\x1b" not in err.one_line() and "\x07" not in err.one_line()


# -- mlxterp: issue 16's bad configs -----------------------------------------------------------------


def _mlx_copy(fixtures_dir, tmp_path):
    dst = tmp_path / "s.mlx"
    shutil.copytree(fixtures_dir / "topk_llama_l2_mlp.mlx", dst)
    return dst


def _mlx_edit(p: Path, md: dict | None = None, **changes):
    cfg = json.loads((p / "config.json").read_text())
    cfg.update(changes)
    if md:
        cfg["metadata"].update(md)
    (p / "config.json").write_text(json.dumps(cfg))


def test_mlxterp_string_booleans_are_refused(fixtures_dir, tmp_path):
    p = _mlx_copy(fixtures_dir, tmp_path)
    _mlx_edit(p, normalize_input="false")
    _fails(p, "'normalize_input' must be true or false, found 'false'")


def test_mlxterp_zero_input_std_is_refused(fixtures_dir, tmp_path):
    from saetui.engine.saes.files import read_safetensors

    p = _mlx_copy(fixtures_dir, tmp_path)
    arrays, _, _ = read_safetensors(p / "weights.safetensors")
    arrays = {n: np.array(a) for n, a in arrays.items()}
    arrays["input_std"] = np.zeros_like(arrays["input_std"])
    write_safetensors(p / "weights.safetensors", arrays)
    _fails(p, "'input_std' has 64 of 64 entries that are zero or negative")


@pytest.mark.parametrize("field,value", [("component", 3), ("model_name", 7), ("layer", "2"), ("layer", True)])
def test_mlxterp_non_string_metadata(fixtures_dir, tmp_path, field, value):
    p = _mlx_copy(fixtures_dir, tmp_path)
    _mlx_edit(p, md={field: value})
    _fails(p, f"metadata.*{field}.* must be")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_mlxterp_fifo_config(fixtures_dir, tmp_path):
    p = _mlx_copy(fixtures_dir, tmp_path)
    (p / "config.json").unlink()
    os.mkfifo(p / "config.json")
    _fails(p, "config.json is a FIFO")


def test_gemma_scope_npz_variants(tmp_path):
    """Compressed npz files load too; object arrays (pickles) and truncated files are refused."""
    ref = reference()
    npz, w = write_gemmascope(tmp_path / "a")
    x = _inputs(32)
    z, recon = ref.gemmascope_forward(w, x)
    np.savez_compressed(npz, **w)
    _check(load_sae(npz), x, z, recon)
    np.savez(npz, **w, extra=np.array([{"a": 1}], dtype=object))
    _fails(npz, "cannot be read as a numpy .npz file")
    np.savez(npz, **w)
    npz.write_bytes(npz.read_bytes()[:5000])
    _fails(npz, "cannot be read as a numpy .npz file")


def test_untrusted_folder_names_are_escaped(tmp_path):
    run = tmp_path / "run"
    folder, _, _ = write_sparsify(run, "layers.1\x1b[2J", cfg_extra={"k": 10_000})
    err = _fails(run, "k=10000 is larger")
    assert "\x1b" not in err.one_line() and "\\x1b" in err.one_line()


@pytest.mark.parametrize("point,site", [("model.layers.5.output", (5, "resid", False)),
                                        ("model.layers.5.post_feedforward_layernorm.output", (5, "mlp", True))])
def test_gemma_scope_2_folder(tmp_path, point, site):
    ref = reference()
    rng = np.random.default_rng(9)
    w = saelens_weights(rng, "jumprelu", 32, 96)
    folder = tmp_path / "resid_post" / "layer_5_width_16k_l0_medium"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architecture": "jump_relu", "model_name": "google/gemma-3-1b-pt", "hf_hook_point_in": point}))
    write_safetensors(folder / "params.safetensors", {n.lower(): a for n, a in w.items()})
    x = _inputs(32)
    z, recon = ref.gemmascope_forward(w, x)
    sae = load_sae(folder)
    _check(sae, x, z, recon)
    md = sae.metadata
    assert (md.layer, md.component, md.post_norm, md.model_name) == (*site, "google/gemma-3-1b-pt")
