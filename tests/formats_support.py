"""Writers for SAE folders in the formats of ../shared/spec/sae-formats.md, and the
float64 reference math from ../shared/fixtures/formats/make_fixtures.py as the oracle."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import SHARED

FORMATS = SHARED / "fixtures" / "formats"
FIXTURE_NAMES = ["saelens_standard", "saelens_topk", "saelens_jumprelu", "saelens_gated", "gemma-scope-2b-pt-res", "sparsify_topk"]


def reference():
    """make_fixtures.py as a module: saelens_forward, gemmascope_forward, sparsify_forward."""
    script = FORMATS / "make_fixtures.py"
    if not script.exists():
        pytest.skip(f"{script} not found (../shared is absent)")
    spec = importlib.util.spec_from_file_location("make_fixtures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def stored_values(a: np.ndarray, dtype: str) -> np.ndarray:
    """What a float32 array reads back as after storing it in `dtype`."""
    if dtype == "BF16":
        return from_bf16(to_bf16(a))
    if dtype == "F16":
        return np.asarray(a, np.float16).astype(np.float32)
    return np.asarray(a, np.float32)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32", dtypes: dict[str, str] | None = None) -> None:
    """A safetensors file written by hand (so BF16 needs no torch)."""
    header: dict[str, Any] = {}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        dt = (dtypes or {}).get(name, dtype)
        a = np.asarray(arr)
        if dt == "BF16":
            data = to_bf16(a).tobytes()
        elif dt == "F16":
            data = a.astype("<f2").tobytes()
        elif dt == "F64":
            data = a.astype("<f8").tobytes()
        elif dt == "I32":
            data = a.astype("<i4").tobytes()
        else:
            data = a.astype("<f4").tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def saelens_weights(rng: np.random.Generator, arch: str, d: int, m: int, unit_decoder: bool = False) -> dict[str, np.ndarray]:
    W_dec = rng.normal(size=(m, d)).astype(np.float32) * rng.uniform(0.5, 2.0, size=(m, 1)).astype(np.float32) / np.sqrt(d)
    if unit_decoder:
        W_dec = W_dec / np.linalg.norm(W_dec, axis=-1, keepdims=True)
    w = {
        "W_enc": (rng.normal(size=(d, m)) / np.sqrt(d)).astype(np.float32),
        "W_dec": W_dec.astype(np.float32),
        "b_dec": (rng.normal(size=d) * 0.1).astype(np.float32),
    }
    if arch == "gated":
        w.update(b_gate=(rng.normal(size=m) * 0.1).astype(np.float32), b_mag=(rng.normal(size=m) * 0.1).astype(np.float32),
                 r_mag=(rng.normal(size=m) * 0.1).astype(np.float32))
    else:
        w["b_enc"] = (rng.normal(size=m) * 0.1 - 0.2).astype(np.float32)
    if arch == "jumprelu":
        w["threshold"] = rng.uniform(0.05, 0.3, size=m).astype(np.float32)
    return w


def write_saelens(
    folder: Path,
    arch: str = "standard",
    d: int = 32,
    m: int = 96,
    *,
    seed: int = 0,
    k: int | None = None,
    dtype: str = "F32",
    hook_name: str = "blocks.1.hook_resid_post",
    model_name: str = "tiny-model",
    model_class_name: str | None = None,
    cfg_extra: dict[str, Any] | None = None,
    weights: dict[str, np.ndarray] | None = None,
    legacy: bool = False,
) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """A SAELens 6.x export (or a pre-6.0 flat cfg with legacy=True). Returns (folder, cfg, weights as read back)."""
    rng = np.random.default_rng(seed)
    w = weights if weights is not None else saelens_weights(rng, arch, d, m)
    if legacy:
        cfg: dict[str, Any] = {"d_in": d, "d_sae": m, "dtype": "float32", "device": "cpu", "model_name": model_name,
                               "hook_point": hook_name, "hook_point_layer": 1, "hook_point_head_index": None,
                               "activation_fn_str": "relu", "apply_b_dec_to_input": True, "normalize_activations": None,
                               "sae_lens_training_version": None, "context_size": 128}
    else:
        md: dict[str, Any] = {"sae_lens_version": "6.18.0", "model_name": model_name, "hook_name": hook_name, "hook_head_index": None}
        if model_class_name:
            md["model_class_name"] = model_class_name
        cfg = {"architecture": arch, "d_in": d, "d_sae": m, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
               "normalize_activations": "none", "reshape_activations": "none", "metadata": md}
        if k is not None:
            cfg.update(k=k, rescale_acts_by_decoder_norm=False)
    cfg.update(cfg_extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "sae_weights.safetensors", w, dtype)
    return folder, cfg, {n: stored_values(a, dtype) for n, a in w.items()}


def write_sparsify(run: Path, hookpoint: str = "layers.1", d: int = 32, expansion: int = 3, k: int = 6, *, seed: int = 0,
                   model: str | None = "tiny-model", cfg_extra: dict[str, Any] | None = None, skip: bool = False) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    m = d * expansion
    w = {
        "encoder.weight": (rng.normal(size=(m, d)) / np.sqrt(d)).astype(np.float32),
        "encoder.bias": (rng.normal(size=m) * 0.1).astype(np.float32),
        "W_dec": (rng.normal(size=(m, d)) / np.sqrt(d)).astype(np.float32),
        "b_dec": (rng.normal(size=d) * 0.1).astype(np.float32),
    }
    if skip:
        w["W_skip"] = (rng.normal(size=(d, d)) * 0.05).astype(np.float32)
    cfg = {"activation": "topk", "expansion_factor": expansion, "normalize_decoder": True, "num_latents": 0, "k": k,
           "multi_topk": False, "skip_connection": skip, "transcode": False, "d_in": d}
    cfg.update(cfg_extra or {})
    folder = run / hookpoint
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "sae.safetensors", w)
    if model is not None:
        (run / "config.json").write_text(json.dumps({"model": model, "hookpoints": [hookpoint], "dataset": "some/data", "ctx_len": 64}))
    return folder, cfg, w


def write_gemmascope(folder: Path, d: int = 32, m: int = 96, *, seed: int = 0, lower_case: bool = False) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = saelens_weights(rng, "jumprelu", d, m)
    folder.mkdir(parents=True, exist_ok=True)
    stored = {("w_" + n[2:] if lower_case and n.startswith("W_") else n): a for n, a in w.items()}
    np.savez(folder / "params.npz", **stored)
    return folder / "params.npz", w
