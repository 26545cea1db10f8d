"""Tolerances honest for the device the suite runs on.

On the CPU, MLX's float32 matrix products are accurate to a few float32 ulps, and the
tests keep their tight tolerances. On a GPU backend (MLX's CUDA backend runs float32
products at TF32-like precision, about 1e-3 relative) a comparison with a numpy float64
oracle must allow the device's own error. `matmul_error()` measures it once, on the
device the tests run on, and `rel(tight)` widens a CPU tolerance to what that device can
honestly meet.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

# How many times the measured matmul error a derived quantity may accumulate.
SAFETY = 20.0


def on_gpu() -> bool:
    return mx.default_device().type == mx.DeviceType.gpu


@functools.lru_cache(maxsize=1)
def matmul_error() -> float:
    """The relative error of a float32 matrix product on the default device vs float64."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(128, 1024)).astype(np.float32)
    b = rng.normal(size=(1024, 128)).astype(np.float32)
    got = np.asarray(mx.matmul(mx.array(a), mx.array(b))).astype(np.float64)
    want = a.astype(np.float64) @ b.astype(np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def rel(tight: float) -> float:
    """`tight` on the CPU; on another device, at least SAFETY x its measured matmul error."""
    if not on_gpu():
        return tight
    return max(tight, SAFETY * matmul_error())


def abs_tol(tight: float, scale: float = 1.0) -> float:
    """An absolute tolerance for a quantity of magnitude `scale` (see `rel`)."""
    if not on_gpu():
        return tight
    return max(tight, SAFETY * matmul_error() * scale)
