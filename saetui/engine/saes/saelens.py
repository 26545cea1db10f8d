"""SAELens folders: cfg.json + sae_weights.safetensors (spec §2).

Standard (ReLU), topk, jumprelu and gated; BatchTopK as exported (a jumprelu file) and
BatchTopK/Matryoshka training checkpoints (converted the way SAELens exports them); the
pre-6.0 flat config; training checkpoints with their activation scaler.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import UserError
from . import validate
from .base import (
    ARCHITECTURES,
    SAE,
    ConstantNormRescale,
    InputNorm,
    LayerNormNorm,
    SAEMetadata,
    Scale,
    Whitening,
)
from .files import digest, read_bytes, read_json_object, read_safetensors, shown
from .hooks import hook_for_sae

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
NORM_MODES = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm", "covariance_whitening")
INFERENCE = ("standard", "topk", "jumprelu", "gated")
BATCHTOPK = ("batchtopk", "matryoshka_batchtopk")
TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
OTHER_ENCODERS = ("abstopk", "matching_pursuit", "temporal")
METADATA_KEYS = (
    "model_name", "model_class_name", "hook_name", "hook_head_index", "context_size", "dataset_path",
    "prepend_bos", "seqpos_slice", "model_from_pretrained_kwargs", "neuronpedia_id",
    "sae_lens_version", "sae_lens_training_version", "hook_layer",
)
FIX = "Restore it from the SAE's release"


def _version_major(v: Any) -> int | None:
    if not isinstance(v, str):
        return None
    m = re.match(r"\s*v?(\d+)", v)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class SAELensConfig:
    """cfg.json parsed once (6.x, or the pre-6.0 flat file converted as SAELens 6 does)."""

    architecture: str
    d_in: int
    d_sae: int
    dtype: str
    apply_b_dec_to_input: bool
    normalize_activations: str
    k: int | None
    rescale_acts_by_decoder_norm: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False

    @classmethod
    def parse(cls, raw: dict[str, Any], where: Path) -> SAELensConfig:
        w = str(where)
        md_raw = raw.get("metadata")
        md: dict[str, Any] = dict(md_raw) if isinstance(md_raw, dict) else {}
        version = raw.get("sae_lens_version") or md.get("sae_lens_version")
        major = _version_major(version)
        legacy = major is None or major < 6
        cfg = dict(raw)
        if legacy:
            # SAELens <= 5: one flat object (spec §2.3).
            for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"), ("activation_fn_str", "activation_fn")):
                if old in cfg and new not in cfg:
                    cfg[new] = cfg.pop(old)
            cfg.setdefault("architecture", "standard")
            activation = cfg.get("activation_fn") or "relu"
            if not isinstance(activation, str):
                raise UserError(f"{w}: 'activation_fn' must be a string, found {shown(activation)}", FIX)
            hook_name = cfg.get("hook_name")
            if cfg.get("reshape_activations") is None:
                cfg["reshape_activations"] = "hook_z" if isinstance(hook_name, str) and "hook_z" in hook_name else "none"
            norm = cfg.get("normalize_activations")
            if norm is None:
                cfg["normalize_activations"] = "none"
            elif norm is True:
                cfg["normalize_activations"] = "expected_average_only_in"
            elif norm is False:
                cfg["normalize_activations"] = "none"
            fn_kwargs = cfg.get("activation_fn_kwargs")
            kwargs = fn_kwargs if isinstance(fn_kwargs, dict) else {}
            if activation == "topk" and kwargs.get("k") is not None:
                cfg["architecture"] = "topk"
                cfg["k"] = kwargs["k"]
                cfg["rescale_acts_by_decoder_norm"] = False
            elif activation not in ("relu", "topk"):
                raise UserError(f"{w}: unsupported activation {shown(activation)}", "saetui reads relu and topk activations in SAELens files before 6.0")
            for key in METADATA_KEYS:
                if key in cfg and key not in md:
                    md[key] = cfg[key]
        else:
            for key in METADATA_KEYS:  # tolerate hand-made files with the keys at the top
                if key in cfg and key not in md:
                    md[key] = cfg[key]

        arch = cfg.get("architecture")
        if not isinstance(arch, str):
            raise UserError(f"{w}: 'architecture' must be a string, found {shown(arch)}", "saetui reads standard, topk, jumprelu and gated")
        if arch in TRANSCODERS or "d_out" in cfg or "hook_name_out" in cfg or "hook_name_out" in md:
            raise UserError(f"{w}: transcoders are not supported", "Open a sparse autoencoder (it reconstructs its own hook)")
        if arch in OTHER_ENCODERS:
            raise UserError(f"{w}: architecture {shown(arch)} is not supported", "saetui reads standard, topk, jumprelu and gated")
        if arch not in INFERENCE and arch not in BATCHTOPK:
            raise UserError(f"{w}: unknown SAELens architecture {shown(arch)}", "saetui reads standard, topk, jumprelu and gated")
        d_in = validate.positive_int(cfg, "d_in", f"{w}")
        d_sae = validate.positive_int(cfg, "d_sae", f"{w}")
        norm = cfg.get("normalize_activations", "none")
        if norm is None:
            norm = "none"
        if norm not in NORM_MODES:
            raise UserError(
                f"{w}: normalize_activations {shown(norm)} is not one of none, expected_average_only_in, constant_norm_rescale, layer_norm",
                FIX,
            )
        reshape = cfg.get("reshape_activations", "none")
        if reshape == "hook_z":
            hook = md.get("hook_name")
            raise UserError(
                f"hook {shown(hook if hook is not None else 'hook_z')} is not a residual, MLP or attention output (reshape_activations is hook_z)",
                "Pick an SAE trained on one of those",
            )
        if reshape not in (None, "none"):
            raise UserError(f"{w}: reshape_activations {shown(reshape)} is not one of none, hook_z", FIX)
        k = None
        rescale = False
        if arch == "topk":
            if "k" not in cfg:
                raise UserError(f"{w}: a topk SAE needs 'k', and this cfg.json has none", "Restore it from the SAE's release (SAELens always writes k)")
            k = validate.positive_int(cfg, "k", w)
            if k > d_sae:
                raise UserError(f"{w}: k={k} is larger than d_sae={d_sae}", FIX)
            rescale = validate.boolean(cfg, "rescale_acts_by_decoder_norm", w, False)
        elif arch in BATCHTOPK:
            # The training config's default is true (spec §2.7).
            rescale = validate.boolean(cfg, "rescale_acts_by_decoder_norm", w, True)
        dtype = cfg.get("dtype", "float32")
        return cls(
            architecture=arch,
            d_in=d_in,
            d_sae=d_sae,
            dtype=dtype.removeprefix("torch.") if isinstance(dtype, str) else "float32",
            apply_b_dec_to_input=validate.boolean(cfg, "apply_b_dec_to_input", w, True),
            normalize_activations=norm,
            k=k,
            rescale_acts_by_decoder_norm=rescale,
            metadata=md,
            legacy=legacy,
        )


def load_saelens(path: Path, norm_scaling_factor: float | None = None) -> SAE:
    raw, cfg_bytes = read_json_object(path / CFG, FIX)
    cfg = SAELensConfig.parse(raw, path / CFG)
    notes: list[str] = []
    md = cfg.metadata
    # Per-head SAEs need activations saetui does not capture.
    if md.get("hook_head_index") is not None:
        raise UserError(
            f"hook {shown(md.get('hook_name'))} with hook_head_index {shown(md.get('hook_head_index'))} is not a residual, MLP or attention output (a per-head SAE)",
            "Pick an SAE trained on one of those",
        )
    w_path = path / WEIGHTS
    if not w_path.exists() and not w_path.is_symlink():
        raise UserError(f"{path} has cfg.json but no {WEIGHTS}", "Copy the whole SAE folder again")
    arrays, stored, w_bytes = read_safetensors(w_path)
    d, m, arch = cfg.d_in, cfg.d_sae, cfg.architecture

    # Old files: scaling_factor all ones is dropped; anything else is the pre-6 finetuning factor.
    if "scaling_factor" in arrays:
        sf = np.asarray(arrays["scaling_factor"], dtype=np.float32)
        if sf.shape == (m,) and np.all(sf == 1.0):
            arrays = {n: a for n, a in arrays.items() if n != "scaling_factor"}
            stored = {n: t for n, t in stored.items() if n != "scaling_factor"}
        else:
            raise UserError(f"{WEIGHTS} has tensor 'scaling_factor' that saetui does not understand (a finetuning scaling factor)", "Load it with SAELens 5 and fold the factor in, or use another release")

    expected: dict[str, tuple[int, ...]] = {"W_enc": (d, m), "W_dec": (m, d), "b_dec": (d,)}
    if arch == "gated":
        expected.update(b_gate=(m,), b_mag=(m,), r_mag=(m,))
    else:
        expected["b_enc"] = (m,)
    if arch == "jumprelu":
        expected["threshold"] = (m,)
    if arch in BATCHTOPK:
        expected["topk_threshold"] = ()
        if "topk_threshold" not in arrays and "topk_threshold" not in stored:
            raise UserError(
                f"{path}: training checkpoint of a BatchTopK SAE without its 'topk_threshold'",
                "Export it with save_inference_model",
            )
    w = validate.tensors(w_path, arrays, stored, expected, f"architecture {arch}")

    norm = _input_norm(path, cfg, norm_scaling_factor, notes)
    W_enc, b_enc, W_dec = w["W_enc"], w.get("b_enc"), w["W_dec"]
    arch_cls: type[SAE] = ARCHITECTURES[arch]
    extra: dict[str, Any] = {}
    if arch in BATCHTOPK:
        # Export as SAELens does (spec §2.7): fold the decoder norms, one threshold for all.
        if cfg.rescale_acts_by_decoder_norm:
            assert b_enc is not None  # expected (and validated) for every architecture but gated
            n = mx.linalg.norm(W_dec, axis=-1)
            W_enc = W_enc * n
            b_enc = b_enc * n
            W_dec = W_dec / n[:, None]
        extra["threshold"] = mx.full((m,), w["topk_threshold"].item())
        notes.append(f"{arch} training checkpoint converted to JumpReLU with its learnt threshold {w['topk_threshold'].item():.4g}")
    elif arch == "topk":
        extra.update(k=cfg.k, rescale_by_decoder_norm=cfg.rescale_acts_by_decoder_norm)
    elif arch == "jumprelu":
        extra["threshold"] = w["threshold"]
        if bool((w["threshold"] < 0).any().item()):
            notes.append("Some JumpReLU thresholds are negative; they act as 0 because of the ReLU")
    elif arch == "gated":
        b_enc = mx.zeros((m,))  # unused: gated SAEs have b_gate and b_mag
        extra.update(b_gate=w["b_gate"], b_mag=w["b_mag"], r_mag=w["r_mag"])

    assert b_enc is not None  # validated above for every architecture but gated, which gets zeros
    _check_sparsity(path, m, notes)
    hook = hook_for_sae(md.get("hook_name"), md.get("model_class_name"), str(path / CFG))
    model_name = md.get("model_name")
    if model_name is not None and not isinstance(model_name, str):
        raise UserError(f"{path / CFG}: 'model_name' must be a string, found {shown(model_name)}", "Fix it, or pass --model")
    context = md.get("context_size")
    metadata = SAEMetadata(
        layer=hook.layer,
        component=hook.component,
        model_name=model_name,
        hook_name=md.get("hook_name") if isinstance(md.get("hook_name"), str) else None,
        post_norm=hook.post_norm,
        dtype=validate.stored_dtype(stored, arrays),
        dataset=md.get("dataset_path") if isinstance(md.get("dataset_path"), str) else None,
        context_size=context if isinstance(context, int) and not isinstance(context, bool) else None,
        training_config={k: v for k, v in md.items() if isinstance(v, (str, int, float, bool)) or v is None},
        notes=notes,
    )
    scaler = _scaler_bytes(path)
    sae = arch_cls(
        W_enc=W_enc,
        b_enc=b_enc,
        W_dec=W_dec,
        b_dec=w["b_dec"],
        metadata=metadata,
        content_hash=digest("saelens", cfg_bytes, w_bytes, scaler, repr(norm_scaling_factor)),
        path=path,
        config=raw,
        subtract_b_dec=cfg.apply_b_dec_to_input,
        norm=norm,
        format="SAELens",
        **extra,
    )
    return sae


def _scaler_bytes(path: Path) -> bytes:
    p = path / "activation_scaler.json"
    return read_bytes(p, 1 << 20) if p.exists() else b""


def _input_norm(path: Path, cfg: SAELensConfig, cli_factor: float | None, notes: list[str]) -> InputNorm:
    mode = cfg.normalize_activations
    if mode == "none":
        return InputNorm()
    if mode == "constant_norm_rescale":
        return ConstantNormRescale()
    if mode == "layer_norm":
        return LayerNormNorm()
    if mode == "covariance_whitening":
        wp = path / "activation_whitening.safetensors"
        if not wp.exists():
            raise UserError(f"{path}: normalize_activations is covariance_whitening but activation_whitening.safetensors is missing", "Copy the whole checkpoint folder again")
        arrays, stored, _ = read_safetensors(wp)
        d = cfg.d_in
        w = validate.tensors(wp, arrays, stored, {"mean": (d,), "matrix": (d, d), "inverse_matrix": (d, d)}, "covariance_whitening")
        return Whitening(w["mean"], w["matrix"], w["inverse_matrix"])
    # expected_average_only_in: the factor from the checkpoint's scaler, or the flag.
    factor: float | None = None
    scaler = path / "activation_scaler.json"
    if scaler.exists():
        data, _ = read_json_object(scaler, "Restore it from the checkpoint")
        sf = data.get("scaling_factor")
        if sf is not None:
            if not isinstance(sf, (int, float)) or isinstance(sf, bool) or not math.isfinite(sf) or sf <= 0:
                raise UserError(f"{scaler}: 'scaling_factor' must be a positive number or null, found {shown(sf)}", "Restore it from the checkpoint")
            factor = float(sf)
    if cli_factor is not None:
        factor = float(cli_factor)
    if factor is None:
        notes.append("normalize_activations is expected_average_only_in but no scaling factor was found; using 1")
        return InputNorm()
    return Scale(factor)


def _check_sparsity(path: Path, d_sae: int, notes: list[str]) -> None:
    """sparsity.safetensors is informational (the training firing rates): a note if it is bad."""
    p = path / "sparsity.safetensors"
    if not p.exists():
        return
    try:
        arrays, _, _ = read_safetensors(p)
    except UserError as exc:
        notes.append(f"sparsity.safetensors ignored: {exc.problem}")
        return
    sparsity = arrays.get("sparsity")
    if sparsity is None or tuple(sparsity.shape) != (d_sae,):
        notes.append("sparsity.safetensors ignored: it holds no 'sparsity' tensor of shape (d_sae,)")
