"""Sparse autoencoders: the names the rest of saetui imports.

The classes live in `saetui.engine.saes` (one base `SAE`, one class per architecture,
one module per file format); this module re-exports them. `SparseAutoencoder` is the
base's old name.
"""

from __future__ import annotations

from abc import ABCMeta
from pathlib import Path
from typing import Any

import mlx.core as mx

from .saes import (
    ARCHITECTURES,
    SAE,
    BatchTopKSAE,
    GatedSAE,
    GroupMaxSAE,
    JumpReLUSAE,
    ReLUSAE,
    SAEMetadata,
    ThresholdCalibrator,
    ThresholdedBatchTopKSAE,
    TopKSAE,
    detect,
    load_sae,
    resolve_sae_location,
)
from .saes.base import NORM_EPS
from .saes.mlxterp import BATCH_TOPK, KNOWN_CLASSES, TOPK, mlxterp_sae

SparseAutoencoder = SAE


class _MlxterpMeta(ABCMeta):  # compat: callers move to the new API
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, SAE) and getattr(obj, "format", None) == "mlxterp"


class MlxterpSAE(metaclass=_MlxterpMeta):  # compat: callers move to the new API (saes.mlxterp.mlxterp_sae)
    """An mlxterp SAE built from a config dict and weights; `isinstance` is true for any
    SAE read from an mlxterp file."""

    def __new__(cls, config: dict[str, Any], weights: dict[str, mx.array], path: Path | None = None, content_hash: str = ""):  # type: ignore[misc]
        return mlxterp_sae(config, weights, path=path, content_hash=content_hash)


__all__ = [
    "ARCHITECTURES",
    "BATCH_TOPK",
    "KNOWN_CLASSES",
    "NORM_EPS",
    "SAE",
    "TOPK",
    "BatchTopKSAE",
    "GatedSAE",
    "GroupMaxSAE",
    "JumpReLUSAE",
    "MlxterpSAE",
    "ReLUSAE",
    "SAEMetadata",
    "SparseAutoencoder",
    "ThresholdCalibrator",
    "ThresholdedBatchTopKSAE",
    "TopKSAE",
    "detect",
    "load_sae",
    "mlxterp_sae",
    "resolve_sae_location",
]
