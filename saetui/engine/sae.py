"""Sparse autoencoders: one abstraction, and the mlxterp `.mlx` format behind it.

`SparseAutoencoder` is what the rest of saetui uses (encode, decode, decoder
directions, widths, metadata); `MlxterpSAE` reads what mlxterp saves
(../shared/spec/mlxterp-sae-format.md). Another format plugs in by subclassing
`SparseAutoencoder` and teaching `load_sae` to recognise it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import mlx.core as mx
import numpy as np

from .errors import UserError

TOPK = "SAE"
BATCH_TOPK = "BatchTopKSAE"
KNOWN_CLASSES = (TOPK, BATCH_TOPK)

# mlxterp adds this to the std when normalising inputs, and not when de-normalising.
NORM_EPS = 1e-8


@dataclass
class SAEMetadata:
    """Where the SAE was trained: the hook point and the model."""

    layer: int | None = None
    component: str | None = None
    model_name: str | None = None
    training_config: dict[str, Any] = field(default_factory=dict)
    training_samples: int | None = None


class SparseAutoencoder:
    """The interface every SAE format provides.

    `encode` and `decode` take and return `mx.array`s of shape (..., d_model) and
    (..., d_sae).
    """

    kind: str = "SAE"
    d_model: int
    d_sae: int
    k: int
    metadata: SAEMetadata
    path: Path | None = None

    def encode(self, x: mx.array, batch: bool = False) -> mx.array:  # pragma: no cover
        raise NotImplementedError

    def decode(self, z: mx.array) -> mx.array:  # pragma: no cover
        raise NotImplementedError

    def pre_activations(self, x: mx.array) -> mx.array:  # pragma: no cover
        """relu(encoder(x)) before sparsification."""
        raise NotImplementedError

    @property
    def decoder_directions(self) -> mx.array:  # pragma: no cover
        """(d_sae, d_model): the direction each feature writes, in activation units."""
        raise NotImplementedError

    @property
    def content_hash(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def summary(self) -> str:
        md = self.metadata
        hook = f"L{md.layer}/{md.component}" if md.layer is not None else "hook ?"
        return f"{self.kind} {self.d_model}->{self.d_sae} k={self.k} {hook}"


class MlxterpSAE(SparseAutoencoder):
    """An SAE in mlxterp's `.mlx` directory format (TopK `SAE` or `BatchTopKSAE`)."""

    def __init__(
        self,
        config: dict[str, Any],
        weights: dict[str, mx.array],
        path: Path | None = None,
        content_hash: str = "",
    ) -> None:
        self.config = config
        self.kind = config["class"]
        self.d_model = int(config["d_model"])
        self.d_sae = int(config["d_hidden"])
        self.k = int(config["k"])
        self.normalize_input = bool(config.get("normalize_input", False))
        self.tied_weights = bool(config.get("tied_weights", False))
        self.path = path
        self._content_hash = content_hash
        md = config.get("metadata") or {}
        layer = md.get("layer")
        self.metadata = SAEMetadata(
            layer=int(layer) if layer is not None else None,
            component=md.get("component"),
            model_name=md.get("model_name"),
            training_config=md.get("config") or {},
            training_samples=md.get("training_samples"),
        )
        self.W_enc = weights["encoder.weight"]  # (d_sae, d_model)
        self.b_enc = weights["encoder.bias"]
        if self.tied_weights:
            self.W_dec = self.W_enc.T  # (d_model, d_sae)
            self.b_dec = weights["decoder_bias"]
        else:
            self.W_dec = weights["decoder.weight"]
            self.b_dec = weights["decoder.bias"]
        self.input_mean = weights.get("input_mean", mx.zeros((self.d_model,)))
        self.input_std = weights.get("input_std", mx.ones((self.d_model,)))
        # BatchTopK's per-token mode: a global threshold calibrated on corpus activations.
        self.threshold: float | None = None

    # -- encoding -------------------------------------------------------------------

    def pre_activations(self, x: mx.array) -> mx.array:
        x = x.astype(mx.float32)
        if self.normalize_input:
            x = (x - self.input_mean) / (self.input_std + NORM_EPS)
        return mx.maximum(x @ self.W_enc.T + self.b_enc, 0.0)

    def sparsify(self, h: mx.array, batch: bool = False) -> mx.array:
        if self.kind == TOPK:
            return _topk_per_token(h, self.k)
        if batch:
            return _topk_over_batch(h, self.k)
        if self.threshold is None:
            raise UserError(
                "This BatchTopK SAE has no calibrated threshold for per-token encoding",
                "Call sae.calibrate(activations) first, or encode(x, batch=True) for "
                "mlxterp's batch semantics",
            )
        return mx.where(h > self.threshold, h, 0.0)

    def encode(self, x: mx.array, batch: bool = False) -> mx.array:
        """Features for x (..., d_model) -> (..., d_sae).

        For a BatchTopK SAE, `batch=True` keeps the k * n_tokens largest values over
        the whole call exactly as mlxterp does; the default is the batch-independent
        calibrated threshold (see `calibrate`).
        """
        return self.sparsify(self.pre_activations(x), batch=batch)

    def decode(self, z: mx.array) -> mx.array:
        x_hat = z.astype(mx.float32) @ self.W_dec.T + self.b_dec
        if self.normalize_input:
            x_hat = x_hat * self.input_std + self.input_mean
        return x_hat

    def __call__(self, x: mx.array) -> mx.array:
        return self.decode(self.encode(x))

    @property
    def decoder_directions(self) -> mx.array:
        w = self.W_dec.T  # (d_sae, d_model)
        if self.normalize_input:
            # decode multiplies by input_std after the linear map, so a unit of feature
            # f moves the activation by W_dec[:, f] * input_std.
            w = w * self.input_std
        return w

    @property
    def content_hash(self) -> str:
        return self._content_hash

    # -- BatchTopK calibration ---------------------------------------------------------

    def calibrate(self, activations: Iterable[mx.array] | mx.array) -> float:
        """Set the per-token threshold so that mean L0 = k on these activations.

        Takes one array (..., d_model) or an iterable of such batches. The threshold is
        the (k * n_tokens)-th largest pre-activation over all of them, so exactly k
        features per token fire on average there (barring ties).
        """
        if isinstance(activations, mx.array):
            activations = [activations]
        activations = list(activations)
        total = sum(math.prod(a.shape[:-1]) for a in activations)
        calibrator = ThresholdCalibrator(self, total)
        for batch in activations:
            calibrator.add(batch)
        self.threshold = calibrator.threshold()
        return self.threshold


class ThresholdCalibrator:
    """Streams activation batches and finds BatchTopK's global threshold.

    Keeps only the largest k * total_tokens pre-activations seen so far: memory is
    O(k * tokens), never tokens x d_sae. The total must be known up front for the
    answer to be exact (a value dropped early could belong to the final top set).
    """

    def __init__(self, sae: MlxterpSAE, total_tokens: int) -> None:
        self.sae = sae
        self.total_tokens = int(total_tokens)
        self.n_tokens = 0
        self.kept = mx.zeros((0,), dtype=mx.float32)

    def add(self, activations: mx.array) -> None:
        h = self.sae.pre_activations(activations.reshape(-1, self.sae.d_model))
        self.n_tokens += h.shape[0]
        m = self.sae.k * max(self.total_tokens, self.n_tokens)
        pool = mx.concatenate([self.kept, h.reshape(-1)])
        if pool.size > m:
            pool = mx.topk(pool, m)
        self.kept = pool
        mx.eval(self.kept)

    def threshold(self) -> float:
        if self.n_tokens == 0:
            raise UserError(
                "No activations to calibrate the BatchTopK threshold on",
                "Use a dataset with at least one token",
            )
        m = self.sae.k * self.n_tokens
        kept = mx.topk(self.kept, m) if self.kept.size > m else self.kept
        m_th = float(mx.min(kept).item())
        if m_th <= 0.0:
            # Fewer than k positive values per token overall: keep every positive one.
            return 0.0
        # Keeping h >= the m-th value keeps m values; with `h > t` we step just below it.
        return float(np.nextafter(np.float32(m_th), np.float32(-np.inf)))


def _topk_per_token(h: mx.array, k: int) -> mx.array:
    k = min(k, h.shape[-1])
    kth = mx.topk(h, k, axis=-1).min(axis=-1, keepdims=True)
    return mx.where(h >= kth, h, 0.0)


def _topk_over_batch(h: mx.array, k: int) -> mx.array:
    n_tokens = math.prod(h.shape[:-1])
    m = min(k * n_tokens, h.size)
    kth = mx.topk(mx.abs(h).reshape(-1), m).min()
    return mx.where(mx.abs(h) >= kth, h, 0.0)


# -- loading -------------------------------------------------------------------------


def load_sae(path: str | Path) -> MlxterpSAE:
    """Load an SAE saved by mlxterp (a `NAME.mlx` directory).

    Raises `UserError` with a one-line problem and fix for anything wrong with the
    files.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"SAE not found: {path}", "Check the path, or run saetui with no SAE to open the demo")
    if not path.is_dir():
        raise UserError(
            f"{path} is a file, not an SAE directory",
            "Pass the .mlx directory that mlxterp saved (it holds config.json and weights.safetensors)",
        )
    config = _read_config(path)
    weights, digest = _read_weights(path, config)
    sae = MlxterpSAE(config, weights, path=path, content_hash=digest)
    return sae


def _read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise UserError(
            f"{path} is not an SAE: it has no config.json",
            "Pass the .mlx directory that mlxterp saved",
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{cfg_path} is not valid JSON ({exc})", "Restore the file from the SAE's training run"
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"{cfg_path} must hold a JSON object", "Restore the file from the SAE's training run")
    cls = config.get("class")
    if cls not in KNOWN_CLASSES:
        raise UserError(
            f"{cfg_path}: unknown SAE class {cls!r}",
            f"saetui reads {' and '.join(KNOWN_CLASSES)}; set \"class\" to one of them",
        )
    for key in ("d_model", "d_hidden", "k"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserError(
                f"{cfg_path}: {key!r} must be a positive integer, found {value!r}",
                "Restore the file from the SAE's training run",
            )
    if config["k"] > config["d_hidden"]:
        raise UserError(
            f"{cfg_path}: k={config['k']} is larger than d_hidden={config['d_hidden']}",
            "Restore the file from the SAE's training run",
        )
    md = config.get("metadata")
    if md is not None and not isinstance(md, dict):
        raise UserError(f"{cfg_path}: metadata must be an object", "Fix or remove the metadata key")
    if md and md.get("layer") is not None:
        layer = md["layer"]
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise UserError(f"{cfg_path}: metadata.layer must be an integer, found {layer!r}", "Fix it or pass --layer")
    return config


def _read_weights(path: Path, config: dict[str, Any]) -> tuple[dict[str, mx.array], str]:
    w_path = path / "weights.safetensors"
    if not w_path.exists():
        raise UserError(
            f"{path} has no weights.safetensors",
            "Copy the whole .mlx directory that mlxterp saved",
        )
    data = w_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        weights = mx.load(str(w_path))
    except Exception as exc:  # mlx raises plain RuntimeError/ValueError for bad files
        raise UserError(
            f"{w_path} cannot be read as safetensors ({str(exc).splitlines()[0]})",
            "Copy the file again from the SAE's training run",
        ) from None
    d_model, d_hidden = config["d_model"], config["d_hidden"]
    expected = {"encoder.weight": (d_hidden, d_model), "encoder.bias": (d_hidden,)}
    if config.get("tied_weights"):
        expected["decoder_bias"] = (d_model,)
    else:
        expected["decoder.weight"] = (d_model, d_hidden)
        expected["decoder.bias"] = (d_model,)
    for optional in ("input_mean", "input_std"):
        if optional in weights:
            expected[optional] = (d_model,)
    for name, shape in expected.items():
        if name not in weights:
            raise UserError(
                f"{w_path} has no {name!r} tensor (tied_weights={bool(config.get('tied_weights'))})",
                "Check that config.json matches the weights, or copy the SAE again",
            )
        if tuple(weights[name].shape) != shape:
            raise UserError(
                f"{w_path}: {name!r} has shape {tuple(weights[name].shape)}, expected {shape} from config.json",
                "Check that config.json matches the weights, or copy the SAE again",
            )
    if config.get("normalize_input") and "input_std" not in weights:
        raise UserError(
            f"{w_path} has no 'input_std' but config.json sets normalize_input",
            "Copy the SAE again from its training run",
        )
    out: dict[str, mx.array] = {}
    for name in expected:
        arr = weights[name].astype(mx.float32)
        if not bool(mx.all(mx.isfinite(arr)).item()):
            raise UserError(
                f"{w_path}: {name!r} contains NaN or infinite values",
                "The SAE's training diverged; use an earlier checkpoint or retrain",
            )
        out[name] = arr
    return out, digest
