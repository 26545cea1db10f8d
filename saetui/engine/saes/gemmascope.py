"""Gemma Scope `params.npz` (spec §3) and, optionally, Gemma Scope 2's
config.json + params.safetensors (§3.5): JumpReLU without b_dec subtraction; model,
layer and hook from the release path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from . import validate
from .base import SAE, JumpReLUSAE, SAEMetadata
from .files import digest, read_json_object, read_npz, read_safetensors, shown
from .hooks import hook_for_sae

_MODELS = (("2b-it", "gemma-2-2b-it"), ("9b-it", "gemma-2-9b-it"), ("27b-it", "gemma-2-27b-it"), ("2b", "gemma-2-2b"), ("9b", "gemma-2-9b"), ("27b", "gemma-2-27b"))


def _rename(arrays: dict[str, Any]) -> dict[str, Any]:
    """SAELens's rule: a key beginning `w_` becomes `W_` + the rest."""
    return {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in arrays.items()}


def _release_from_path(path: Path) -> tuple[str | None, int | None, int | None]:
    """(repo name, layer, average L0) from a path like .../gemma-scope-2b-pt-res/layer_3/width_1k/average_l0_11."""
    parts = path.resolve().parts if path.exists() else path.parts
    parts = tuple(path.parts) + tuple(p for p in parts if p not in path.parts)
    repo = None
    for part in parts:
        low = part.lower()
        if "gemma-scope" in low:
            repo = low.split("models--")[-1].split("--")[-1]
    layer = l0 = None
    for part in path.parts:
        if part == "embedding":
            raise UserError("hook 'embedding' is not a residual, MLP or attention output (a Gemma Scope embedding SAE)", "Pick an SAE trained on one of those")
        m = re.fullmatch(r"layer_(\d+)", part)
        if m:
            layer = int(m.group(1))
        m = re.fullmatch(r"average_l0_(\d+)", part)
        if m:
            l0 = int(m.group(1))
    return repo, layer, l0


def _site(repo: str | None, layer: int | None) -> tuple[str | None, str | None]:
    """(model name, TransformerLens hook name) from the repo name, as SAELens derives them."""
    if repo is None:
        return None, None
    model = next((name for tag, name in _MODELS if tag in repo), None)
    tail = repo.rsplit("-", 1)[-1]
    site = tail if tail in ("res", "mlp", "att") else ("res" if "res" in repo else "mlp" if "mlp" in repo else "att" if "att" in repo else None)
    if layer is None or site is None:
        return model, None
    if site == "att":
        raise UserError(
            f"hook 'blocks.{layer}.attn.hook_z' is not a residual, MLP or attention output (Gemma Scope attention SAEs read hook_z)",
            "Pick an SAE trained on one of those",
        )
    return model, f"blocks.{layer}.{'hook_resid_post' if site == 'res' else 'hook_mlp_out'}"


def load_gemmascope(npz: Path) -> SAE:
    arrays, raw = read_npz(npz)
    return _build(npz, _rename(arrays), None, raw, b"")


def load_gemmascope2(folder: Path) -> SAE:
    cfg, cfg_bytes = read_json_object(folder / "config.json")
    arch = cfg.get("architecture", "jump_relu")
    if arch != "jump_relu":
        if isinstance(arch, str) and ("transcoder" in arch or "clt" in arch or "skip" in arch):
            raise UserError(f"{folder / 'config.json'}: transcoders are not supported", "Open a sparse autoencoder (it reconstructs its own hook)")
        raise UserError(f"{folder / 'config.json'}: architecture {shown(arch)} is not supported", "saetui reads Gemma Scope 2 jump_relu SAEs")
    arrays, stored, raw = read_safetensors(folder / "params.safetensors")
    return _build(folder / "params.safetensors", _rename(arrays), _rename(stored), raw, cfg_bytes, cfg)


def _build(file: Path, arrays: dict[str, np.ndarray], stored: dict[str, str] | None, raw: bytes, cfg_bytes: bytes, cfg: dict[str, Any] | None = None) -> SAE:
    notes: list[str] = []
    if "scaling_factor" in arrays:
        sf = np.asarray(arrays["scaling_factor"], dtype=np.float32)
        if np.all(sf == 1.0):
            arrays = {n: a for n, a in arrays.items() if n != "scaling_factor"}
        else:
            raise UserError(f"{file.name} has tensor 'scaling_factor' that saetui does not understand (a finetuning scaling factor)", "Use another release")
    enc = arrays.get("W_enc")
    if enc is None or np.ndim(enc) != 2:
        raise UserError(f"{file.name} has no 2-D 'W_enc' tensor (Gemma Scope)", validate.COPY_AGAIN)
    d, m = (int(s) for s in enc.shape)
    expected = {"W_enc": (d, m), "W_dec": (m, d), "b_enc": (m,), "b_dec": (d,), "threshold": (m,)}
    w = validate.tensors(file, arrays, stored, expected, "Gemma Scope")
    if bool((w["threshold"] < 0).any().item()):
        notes.append("Some JumpReLU thresholds are negative; they act as 0 because of the ReLU")

    folder = file.parent
    repo, layer, l0 = _release_from_path(folder)
    model, hook_name = _site(repo, layer)
    if cfg is not None:  # Gemma Scope 2: the config names the model and the HF hook point
        model = validate.optional_str(cfg, "model_name", str(file.parent / "config.json")) or model
        point = cfg.get("hf_hook_point_in")
        if isinstance(point, str):
            point = re.sub(r"\.output$", "", point)
            if point.endswith("post_feedforward_layernorm"):
                hook_name = re.sub(r"\.post_feedforward_layernorm$", ".hook_mlp_out", re.sub(r"^model\.layers\.", "blocks.", point))
            else:
                hook_name = point
    hook = hook_for_sae(hook_name, None, str(file))
    if hook_name is None and layer is not None:
        notes.append(f"The path gives layer {layer} but not the site (res or mlp): pass --component")
    metadata = SAEMetadata(
        layer=hook.layer if hook.layer is not None else layer,
        component=hook.component,
        model_name=model,
        hook_name=hook_name,
        post_norm=hook.post_norm,
        dtype=validate.stored_dtype(stored or {}, arrays),
        dataset="monology/pile-uncopyrighted",
        context_size=1024,
        l0_target=l0,
        training_config={"release": repo, "average_l0": l0} if repo else {},
        notes=notes,
    )
    return JumpReLUSAE(
        threshold=w["threshold"],
        W_enc=w["W_enc"],
        b_enc=w["b_enc"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        metadata=metadata,
        # The path is part of the SAE here: layer, site and model come from it.
        content_hash=digest("gemmascope", raw, cfg_bytes, repr((repo, layer, hook_name, model))),
        path=folder,
        config=cfg or {},
        subtract_b_dec=False,
        format="Gemma Scope",
    )
