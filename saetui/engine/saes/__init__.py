"""SAEs in every supported format, on one base class (`SAE`).

- `base`: the abstract `SAE`, the architectures (ReLU, JumpReLU, gated, TopK, GroupMax,
  BatchTopK and its thresholded view) and input normalisations.
- one module per format: `mlxterp`, `saelens`, `gemmascope`, `sparsify`.
- `loading`: format detection by file names, Hugging Face cache specs, `load_sae`.
- `files`: safe reading (regular files only, bounded JSON, no pickle).
"""

from .base import (
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
)
from .loading import detect, load_sae, resolve_sae_location

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "BatchTopKSAE",
    "GatedSAE",
    "GroupMaxSAE",
    "JumpReLUSAE",
    "ReLUSAE",
    "SAEMetadata",
    "ThresholdCalibrator",
    "ThresholdedBatchTopKSAE",
    "TopKSAE",
    "detect",
    "load_sae",
    "resolve_sae_location",
]
