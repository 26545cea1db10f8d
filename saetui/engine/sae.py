"""Sparse autoencoders: the names the rest of saetui imports.

The classes live in `saetui.engine.saes` (one base `SAE`, one class per architecture,
one module per file format); this module re-exports them. `SparseAutoencoder` is the
base's old name.
"""

from __future__ import annotations



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
