"""EleutherAI sparsify: <hookpoint>/cfg.json + sae.safetensors, usually inside a run
folder whose config.json names the model (spec §4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import validate
from .base import SAE, GroupMaxSAE, SAEMetadata, TopKSAE
from .files import digest, read_json_object, read_safetensors, shown
from .hooks import hook_for_sae

FIX = "Restore it from the SAE's release"


@dataclass(frozen=True)
class SparsifyConfig:
    d_in: int
    d_sae: int
    k: int
    activation: str
    skip_connection: bool

    @classmethod
    def parse(cls, cfg: dict[str, Any], where: Path) -> SparsifyConfig:
        w = str(where)
        d_in = validate.positive_int(cfg, "d_in", w)
        expansion = validate.positive_int(cfg, "expansion_factor", w, default=32)
        num_latents = cfg.get("num_latents", 0)
        if num_latents is None:
            num_latents = 0
        if not isinstance(num_latents, int) or isinstance(num_latents, bool) or num_latents < 0:
            raise UserError(f"{w}: 'num_latents' must be a non-negative integer, found {shown(num_latents)}", FIX)
        d_sae = num_latents or d_in * expansion
        k = validate.positive_int(cfg, "k", w, default=32)
        if k > d_sae:
            raise UserError(f"{w}: k={k} is larger than d_sae={d_sae}", FIX)
        activation = cfg.get("activation", "topk")
        if activation not in ("topk", "groupmax"):
            raise UserError(f"{w}: activation {shown(activation)} is not one of topk, groupmax", FIX)
        if activation == "groupmax" and d_sae % k:
            raise UserError(f"{w}: groupmax needs d_sae={d_sae} to be a multiple of k={k}", FIX)
        if validate.boolean(cfg, "transcode", w, False):
            raise UserError(f"{w}: transcoders are not supported", "Open a sparse autoencoder (it reconstructs its own hook)")
        if validate.boolean(cfg, "signed", w, False):
            raise UserError(f"{w}: signed sparsify SAEs are not supported", "Use an SAE trained without signed=true")
        validate.boolean(cfg, "normalize_decoder", w, True)
        validate.boolean(cfg, "multi_topk", w, False)
        return cls(d_in, d_sae, k, activation, validate.boolean(cfg, "skip_connection", w, False))


def _hookpoint_and_run(folder: Path) -> tuple[str, Path]:
    """The hookpoint (the folder's name; its parent's for seed<N>) and the run folder."""
    if re.fullmatch(r"seed\d+", folder.name):
        return folder.parent.name, folder.parent.parent
    return folder.name, folder.parent


def load_sparsify(folder: Path) -> SAE:
    raw, cfg_bytes = read_json_object(folder / "cfg.json", FIX)
    cfg = SparsifyConfig.parse(raw, folder / "cfg.json")
    w_path = folder / "sae.safetensors"
    arrays, stored, w_bytes = read_safetensors(w_path)
    d, m = cfg.d_in, cfg.d_sae
    if "W_dec" not in arrays and "W_dec" not in stored:
        raise UserError(f"{w_path.name} has no 'W_dec' tensor (an encoder-only save)", "Save the SAE with its decoder")
    expected: dict[str, tuple[int, ...]] = {"encoder.weight": (m, d), "encoder.bias": (m,), "W_dec": (m, d), "b_dec": (d,)}
    if cfg.skip_connection:
        expected["W_skip"] = (d, d)
    w = validate.tensors(w_path, arrays, stored, expected, "sparsify", strict=False)

    hookpoint, run = _hookpoint_and_run(folder.resolve() if folder.exists() else folder)
    hook = hook_for_sae(hookpoint, None, str(folder))
    model = dataset = None
    context = None
    run_bytes = b""
    run_cfg_path = run / "config.json"
    if run_cfg_path.exists():
        run_cfg, run_bytes = read_json_object(run_cfg_path, FIX)
        model = validate.optional_str(run_cfg, "model", str(run_cfg_path))
        dataset = run_cfg.get("dataset") if isinstance(run_cfg.get("dataset"), str) else None
        ctx = run_cfg.get("ctx_len")
        context = ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None
    metadata = SAEMetadata(
        layer=hook.layer,
        component=hook.component,
        model_name=model,
        hook_name=hookpoint,
        post_norm=False,  # sparsify hooks the module itself
        dtype=validate.stored_dtype(stored, arrays),
        dataset=dataset,
        context_size=context,
        training_config=dict(raw),
    )
    common: dict[str, Any] = dict(
        W_enc=w["encoder.weight"].T,
        b_enc=w["encoder.bias"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        metadata=metadata,
        # The folder name is the hook: part of what the SAE is.
        content_hash=digest("sparsify", cfg_bytes, w_bytes, run_bytes, hookpoint),
        path=folder,
        config=raw,
        subtract_b_dec=True,
        W_skip=w.get("W_skip"),
        format="sparsify",
    )
    if cfg.activation == "groupmax":
        return GroupMaxSAE(k=cfg.k, **common)
    # ReLU before the top-k: the same dense z as SAELens's topk on relu(pre).
    return _SparsifyTopK(k=cfg.k, **common)


class _SparsifyTopK(TopKSAE):
    """sparsify's TopK: pre = relu(...) first, then the k largest (spec §4.4)."""

    def _pre(self, sae_in):  # type: ignore[override]
        import mlx.core as mx

        return mx.maximum(sae_in @ self.W_enc + self.b_enc, 0.0)
