"""mlxterp's `.mlx` directories (../shared/spec/mlxterp-sae-format.md): TopK `SAE` and
`BatchTopKSAE`, optionally tied and input-standardised."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import UserError
from . import validate
from .base import SAE, BatchTopKSAE, SAEMetadata, Standardize, TopKSAE
from .files import digest, read_json_object, read_safetensors, shown

TOPK = "SAE"
BATCH_TOPK = "BatchTopKSAE"
KNOWN_CLASSES = (TOPK, BATCH_TOPK)
FIX = "Restore the file from the SAE's training run"


@dataclass(frozen=True)
class MlxterpConfig:
    cls: str
    d_model: int
    d_hidden: int
    k: int
    normalize_input: bool
    tied_weights: bool
    layer: int | None
    component: str | None
    model_name: str | None
    training_config: dict[str, Any] = field(default_factory=dict)
    training_samples: int | None = None

    @classmethod
    def parse(cls, config: dict[str, Any], where: Path) -> MlxterpConfig:
        kind = config.get("class")
        if kind not in KNOWN_CLASSES:
            raise UserError(
                f"{where}: unknown SAE class {shown(kind)}",
                f"saetui reads {' and '.join(KNOWN_CLASSES)}; set \"class\" to one of them",
            )
        d_model = validate.positive_int(config, "d_model", str(where))
        d_hidden = validate.positive_int(config, "d_hidden", str(where))
        k = validate.positive_int(config, "k", str(where))
        if k > d_hidden:
            raise UserError(f"{where}: k={k} is larger than d_hidden={d_hidden}", FIX)
        md = config.get("metadata")
        if md is None:
            md = {}
        if not isinstance(md, dict):
            raise UserError(f"{where}: metadata must be an object", "Fix or remove the metadata key")
        layer = md.get("layer")
        if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool)):
            raise UserError(f"{where}: metadata.layer must be an integer, found {shown(layer)}", "Fix it or pass --layer")
        component = validate.optional_str(md, "component", f"{where}: metadata")
        model_name = validate.optional_str(md, "model_name", f"{where}: metadata")
        training = md.get("config")
        samples = md.get("training_samples")
        return cls(
            cls=kind,
            d_model=d_model,
            d_hidden=d_hidden,
            k=k,
            normalize_input=validate.boolean(config, "normalize_input", str(where), False),
            tied_weights=validate.boolean(config, "tied_weights", str(where), False),
            layer=layer,
            component=component,
            model_name=model_name,
            training_config=training if isinstance(training, dict) else {},
            training_samples=samples if isinstance(samples, int) and not isinstance(samples, bool) else None,
        )


def load_mlxterp(path: Path) -> SAE:
    cfg_path = path / "config.json"
    if not cfg_path.exists() and not cfg_path.is_symlink():
        raise UserError(f"{path} is not an SAE: it has no config.json", "Pass the .mlx directory that mlxterp saved")
    raw_cfg, cfg_bytes = read_json_object(cfg_path, FIX)
    cfg = MlxterpConfig.parse(raw_cfg, cfg_path)
    w_path = path / "weights.safetensors"
    if not w_path.exists() and not w_path.is_symlink():
        raise UserError(f"{path} has no weights.safetensors", "Copy the whole .mlx directory that mlxterp saved")
    arrays, stored, w_bytes = read_safetensors(w_path)
    d, m = cfg.d_model, cfg.d_hidden
    expected: dict[str, tuple[int, ...]] = {"encoder.weight": (m, d), "encoder.bias": (m,)}
    if cfg.tied_weights:
        expected["decoder_bias"] = (d,)
    else:
        expected["decoder.weight"] = (d, m)
        expected["decoder.bias"] = (d,)
    optional: dict[str, tuple[int, ...]] = {"input_mean": (d,), "input_std": (d,)}
    w = validate.tensors(w_path, arrays, stored, expected, f"tied_weights={cfg.tied_weights}", optional, strict=False)
    norm = None
    if cfg.normalize_input:
        if "input_std" not in w:
            raise UserError(f"{w_path} has no 'input_std' but config.json sets normalize_input", "Copy the SAE again from its training run")
        std = w["input_std"]
        bad = int((std <= 0).sum().item())  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        if bad:
            raise UserError(
                f"{w_path}: 'input_std' has {bad} of {d} entries that are zero or negative, so normalize_input would "
                "divide by ~1e-8 and blow activations up",
                "Use a checkpoint whose input statistics were fitted, or set normalize_input to false if it was never fitted",
            )
        norm = Standardize(w.get("input_mean", mx.zeros((d,))), std)
    W_enc = mx.array(w["encoder.weight"].T)  # (d_model, d_sae)
    W_dec = w["encoder.weight"] if cfg.tied_weights else mx.array(w["decoder.weight"].T)
    b_dec = w["decoder_bias"] if cfg.tied_weights else w["decoder.bias"]
    metadata = SAEMetadata(
        layer=cfg.layer,
        component=cfg.component,
        model_name=cfg.model_name,
        training_config=cfg.training_config,
        training_samples=cfg.training_samples,
        dtype=validate.stored_dtype(stored, arrays),
    )
    common: dict[str, Any] = dict(
        W_enc=W_enc,
        b_enc=w["encoder.bias"],
        W_dec=W_dec,
        b_dec=b_dec,
        metadata=metadata,
        content_hash=digest("mlxterp", cfg_bytes, w_bytes),
        path=path,
        config=raw_cfg,
        norm=norm,
        format="mlxterp",
    )
    sae: SAE = TopKSAE(k=cfg.k, **common) if cfg.cls == TOPK else BatchTopKSAE(k=cfg.k, **common)
    sae.tied_weights = cfg.tied_weights  # type: ignore[attr-defined]
    sae.normalize_input = cfg.normalize_input  # type: ignore[attr-defined]
    sae.input_mean = norm.mean if norm else mx.zeros((d,))  # type: ignore[attr-defined]
    sae.input_std = norm.std if norm else mx.ones((d,))  # type: ignore[attr-defined]
    return sae


def mlxterp_sae(config: dict[str, Any], weights: dict[str, mx.array], path: Path | None = None, content_hash: str = "") -> SAE:
    """Build an mlxterp SAE from an in-memory config and weights (the benchmark's synthetic SAE)."""
    cfg = MlxterpConfig.parse(config, Path("config.json"))
    tied = cfg.tied_weights
    W_dec = weights["encoder.weight"] if tied else weights["decoder.weight"].T
    norm = Standardize(weights["input_mean"], weights["input_std"]) if cfg.normalize_input else None
    common: dict[str, Any] = dict(
        W_enc=weights["encoder.weight"].T,
        b_enc=weights["encoder.bias"],
        W_dec=W_dec,
        b_dec=weights["decoder_bias"] if tied else weights["decoder.bias"],
        metadata=SAEMetadata(layer=cfg.layer, component=cfg.component, model_name=cfg.model_name, training_config=cfg.training_config),
        content_hash=content_hash,
        path=path,
        config=config,
        norm=norm,
        format="mlxterp",
    )
    sae: SAE = TopKSAE(k=cfg.k, **common) if cfg.cls == TOPK else BatchTopKSAE(k=cfg.k, **common)
    sae.tied_weights = tied  # type: ignore[attr-defined]
    sae.normalize_input = cfg.normalize_input  # type: ignore[attr-defined]
    return sae
