"""Checks shared by the loaders: config values and tensors, each failure one `UserError`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import UserError
from .files import shown

COPY_AGAIN = "Check that the config matches the weights, or copy the SAE again"


def positive_int(cfg: dict[str, Any], key: str, where: str, default: Any = None, required: bool = True) -> int:
    value = cfg.get(key, default)
    if value is None and not required:
        return None  # type: ignore[return-value]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(
            f"{where}: {key!r} must be a positive integer, found {shown(value) if value is not None else 'nothing'}",
            "Restore the file from the SAE's release",
        )
    return value


def boolean(cfg: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UserError(
            f"{where}: {key!r} must be true or false, found {shown(value)}",
            f"Write {key} as a JSON boolean (true or false, no quotes)",
        )
    return value


def optional_str(cfg: dict[str, Any], key: str, where: str) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: {key!r} must be a string, found {shown(value)}", f"Fix {key} in the file, or pass the matching flag")
    return value


def optional_int(cfg: dict[str, Any], key: str, where: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{where}: {key!r} must be an integer, found {shown(value)}", f"Fix {key} in the file, or pass the matching flag")
    return value


def tensors(
    file: Path,
    arrays: dict[str, np.ndarray],
    stored_dtypes: dict[str, str] | None,
    expected: dict[str, tuple[int, ...]],
    why: str,
    optional: dict[str, tuple[int, ...]] | None = None,
    allowed_extra: set[str] = frozenset(),  # type: ignore[assignment]
    strict: bool = True,
) -> dict[str, mx.array]:
    """The expected tensors as float32 mx arrays, checked for presence, unexpected names
    (when `strict`), dtype, shape and finiteness."""
    optional = optional or {}
    stored_dtypes = stored_dtypes or {}
    names = set(arrays) | set(stored_dtypes)
    for name in expected:
        if name not in names:
            raise UserError(f"{file.name} has no {name!r} tensor ({why})", COPY_AGAIN)
    if strict:
        for name in sorted(names):
            if name not in expected and name not in optional and name not in allowed_extra:
                raise UserError(f"{file.name} has tensor {shown(name)} that saetui does not understand", COPY_AGAIN)
    out: dict[str, mx.array] = {}
    for name, shape in {**expected, **{n: s for n, s in optional.items() if n in names}}.items():
        if name not in arrays:
            raise UserError(f"{file.name}: {name!r} has dtype {shown(stored_dtypes.get(name, '?'))}", "Copy the SAE again (saetui reads F64, F32, F16 and BF16 weights)")
        arr = arrays[name]
        if arr.dtype.kind != "f":
            raise UserError(f"{file.name}: {name!r} has dtype {arr.dtype}", "Copy the SAE again (saetui reads F64, F32, F16 and BF16 weights)")
        got = tuple(arr.shape)
        if got != tuple(shape):
            hint = "; it looks transposed" if got == tuple(reversed(shape)) and len(shape) == 2 else ""
            raise UserError(f"{file}: {name!r} has shape {got}, expected {tuple(shape)} from the config{hint}", COPY_AGAIN)
        arr32 = np.asarray(arr, dtype=np.float32)
        # A float64 sum of float32 values cannot overflow, so it is finite exactly when
        # every value is (and needs no tokens x features boolean array).
        if not math.isfinite(float(arr32.sum(dtype=np.float64))):
            raise UserError(f"{file}: {name!r} contains NaN or infinite values", "The SAE's training diverged; use an earlier checkpoint or retrain")
        out[name] = mx.array(arr32)
    return out


def stored_dtype(stored: dict[str, str], arrays: dict[str, np.ndarray]) -> str:
    """One word for the weights' dtype as stored, for the metadata."""
    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    seen = {names.get(d, d) for d in stored.values()} if stored else {str(a.dtype) for a in arrays.values()}
    return "/".join(sorted(seen)) if seen else "float32"
