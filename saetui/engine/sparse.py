"""Sparse codes: each token's active (feature, value) pairs, computed on the MLX device.

An SAE's code has k (TopK) or about L0 (thresholded) non-zeros per token out of d_sae.
The index and the evaluation need only those pairs, so the encoder hands them over as two
MLX arrays of shape (..., width): `features` (int32) and `values` (float32). A slot whose
value is 0 is padding (no feature fires there); a feature appears at most once per token.

- TopK: exactly k slots per token, from `mx.argpartition` (ties at the k-th value keep
  exactly k, where the dense `encode` would keep every tied value).
- Thresholded (BatchTopK's calibrated per-token mode) and batch (mlxterp's BatchTopK over
  the whole call): the values above the threshold, padded to the largest count in the call
  (one scalar read back from the device to size the arrays).

Nothing of size tokens x d_sae leaves the device: the pre-activations are reduced to the
pairs there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np

from .sae import SAE, BatchTopKSAE, ThresholdedBatchTopKSAE, TopKSAE

if TYPE_CHECKING:
    from .session import Session


@dataclass(frozen=True)
class SparseCodes:
    """Per token, `width` (feature, value) slots; value 0 marks an unused slot."""

    features: mx.array  # int32 (..., width)
    values: mx.array  # float32 (..., width)
    d_sae: int

    @property
    def width(self) -> int:
        return int(self.values.shape[-1])

    def dense(self) -> mx.array:
        """The (..., d_sae) code (for tests and small inputs only)."""
        shape = self.values.shape[:-1]
        flat_f = self.features.reshape(-1, self.width)
        flat_v = self.values.reshape(-1, self.width)
        out = mx.zeros((flat_f.shape[0], self.d_sae), dtype=mx.float32)
        out = mx.put_along_axis(out, flat_f, flat_v, axis=-1) if self.width else out
        return out.reshape(*shape, self.d_sae)

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.features), np.asarray(self.values)


def topk_codes(pre: mx.array, k: int) -> SparseCodes:
    """Exactly min(k, d_sae) largest pre-activations per token (relu'd: non-positive ones are padding)."""
    d = int(pre.shape[-1])
    k = min(int(k), d)
    idx = mx.argpartition(-pre, kth=k - 1, axis=-1)[..., :k]
    values = mx.take_along_axis(pre, idx, axis=-1).astype(mx.float32)
    values = mx.maximum(values, 0.0)
    return SparseCodes(idx.astype(mx.int32), values, d)


def threshold_codes(pre: mx.array, threshold: Any, inclusive: bool = False) -> SparseCodes:
    """The positive pre-activations above `threshold` (>= when `inclusive`), padded per call.

    `threshold` is a Python float or a scalar mx.array.
    """
    d = int(pre.shape[-1])
    above = (pre >= threshold) if inclusive else (pre > threshold)
    above = above & (pre > 0)
    width = int(above.sum(axis=-1).max().item()) if pre.size else 0
    if width == 0:
        shape = (*pre.shape[:-1], 0)
        return SparseCodes(mx.zeros(shape, dtype=mx.int32), mx.zeros(shape, dtype=mx.float32), d)
    # Every value above the threshold is among a token's `width` largest.
    idx = mx.argpartition(-pre, kth=width - 1, axis=-1)[..., :width]
    values = mx.take_along_axis(pre, idx, axis=-1).astype(mx.float32)
    keep = (values >= threshold) if inclusive else (values > threshold)
    values = mx.where(keep & (values > 0), values, 0.0)
    return SparseCodes(idx.astype(mx.int32), values, d)


def batch_topk_codes(pre: mx.array, k: int) -> SparseCodes:
    """mlxterp's BatchTopK over the whole call: the k x n_tokens largest values (ties kept)."""
    n_tokens = math.prod(pre.shape[:-1])
    m = min(int(k) * n_tokens, pre.size)
    if m == 0:
        return threshold_codes(pre, float("inf"))
    kth = mx.topk(mx.abs(pre).reshape(-1), m).min()
    return threshold_codes(pre, kth, inclusive=True)


def nonzero_codes(z: mx.array) -> SparseCodes:
    """The non-zero entries of dense codes z (..., d_sae), padded to the largest count per call."""
    return threshold_codes(z, 0.0)


def encode_sparse(sae: "SAE", x: mx.array) -> SparseCodes:
    """The SAE's code for x (..., d_model) as sparse pairs, computed on the device.

    TopK keeps exactly k per token; BatchTopK its batch selection, or its calibrated
    per-token threshold (the inference view); every other architecture (JumpReLU, ReLU,
    gated, ...) its non-zero features.
    """
    if isinstance(sae, TopKSAE):
        return topk_codes(sae.pre_activations(x), sae.k)
    if isinstance(sae, ThresholdedBatchTopKSAE):
        return threshold_codes(mx.maximum(sae.pre_activations(x), 0.0), sae.threshold)
    if isinstance(sae, BatchTopKSAE):
        return batch_topk_codes(mx.maximum(sae.pre_activations(x), 0.0), sae.k)
    return nonzero_codes(sae.encode(x))


def session_codes(session: "Session", x: mx.array) -> SparseCodes:
    """`encode_sparse` by the SAE the session holds (in its chosen mode)."""
    return encode_sparse(session.sae, x)
