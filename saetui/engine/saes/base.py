"""The SAE abstraction: one class per architecture on an abstract base.

Every SAE here is `x -> norm_in -> (- b_dec) -> encoder -> activation -> z` and
`z -> (rescale) -> z @ W_dec + b_dec (+ skip) -> norm_out`, with the weights held in
SAELens's orientation (`W_enc` (d_model, d_sae), `W_dec` (d_sae, d_model)) whatever the
file's layout, in float32. What differs between architectures is only the activation
(`_activate`); what differs between formats is the input normalisation (`InputNorm`),
whether `b_dec` is subtracted first, and the metadata. A format's loader builds one of
these classes; the mode an encoder runs in (BatchTopK over the batch, or its calibrated
per-token threshold) is a different object, never a flag passed to `encode`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import UserError
from .files import digest

# mlxterp adds this to the std when normalising inputs, and not when de-normalising.
NORM_EPS = 1e-8
# SAELens's layer_norm mode adds this to sigma on the way in only.
LAYER_NORM_EPS = 1e-5


@dataclass
class SAEMetadata:
    """Where the SAE was trained (hook point, model) and what it is (format, architecture)."""

    layer: int | None = None
    component: str | None = None  # canonical: mlp / attn / resid
    model_name: str | None = None
    training_config: dict[str, Any] = field(default_factory=dict)
    training_samples: int | None = None
    hook_name: str | None = None
    # True when the hook is TransformerLens's hook_mlp_out/hook_attn_out: the block's
    # contribution as added to the residual stream, i.e. after Gemma 2/3's post-norms.
    post_norm: bool = False
    format: str = "mlxterp"
    architecture: str = ""
    dtype: str = "float32"
    dataset: str | None = None
    context_size: int | None = None
    # Mean L0 the release was trained for, where the SAE has no k (Gemma Scope's average_l0_N).
    l0_target: int | None = None
    notes: list[str] = field(default_factory=list)


# -- input normalisation -------------------------------------------------------------------


class InputNorm:
    """Identity: no normalisation. Subclasses map x -> x_n (keeping per-token state) and back."""

    name = "none"
    token_dependent = False

    def apply(self, x: mx.array) -> tuple[mx.array, Any]:
        return x, None

    def invert(self, y: mx.array, state: Any) -> mx.array:
        return y

    def directions(self, w_dec: mx.array) -> mx.array:
        """Decoder rows (d_sae, d) in activation units (the linear part of `invert`)."""
        return w_dec


class Standardize(InputNorm):
    """mlxterp's normalize_input: (x - mean) / (std + 1e-8) in, y * std + mean out."""

    name = "standardize"

    def __init__(self, mean: mx.array, std: mx.array) -> None:
        self.mean, self.std = mean, std

    def apply(self, x: mx.array) -> tuple[mx.array, Any]:
        return (x - self.mean) / (self.std + NORM_EPS), None

    def invert(self, y: mx.array, state: Any) -> mx.array:
        return y * self.std + self.mean

    def directions(self, w_dec: mx.array) -> mx.array:
        return w_dec * self.std


class Scale(InputNorm):
    """SAELens expected_average_only_in with its factor s: x * s in, y / s out."""

    name = "expected_average_only_in"

    def __init__(self, s: float) -> None:
        self.s = float(s)

    def apply(self, x: mx.array) -> tuple[mx.array, Any]:
        return x * self.s, None

    def invert(self, y: mx.array, state: Any) -> mx.array:
        return y / self.s

    def directions(self, w_dec: mx.array) -> mx.array:
        return w_dec / self.s


class ConstantNormRescale(InputNorm):
    """SAELens constant_norm_rescale: each token scaled to norm sqrt(d), and back."""

    name = "constant_norm_rescale"
    token_dependent = True

    def apply(self, x: mx.array) -> tuple[mx.array, Any]:
        c = math.sqrt(x.shape[-1]) / mx.linalg.norm(x, axis=-1, keepdims=True)
        return x * c, c

    def invert(self, y: mx.array, state: Any) -> mx.array:
        return y / state


class LayerNormNorm(InputNorm):
    """SAELens layer_norm: (x - mu) / (sigma + 1e-5) with Bessel's sigma; y * sigma + mu back."""

    name = "layer_norm"
    token_dependent = True

    def apply(self, x: mx.array) -> tuple[mx.array, Any]:
        mu = x.mean(axis=-1, keepdims=True)
        centred = x - mu
        sigma = mx.sqrt((centred * centred).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1))
        return centred / (sigma + LAYER_NORM_EPS), (mu, sigma)

    def invert(self, y: mx.array, state: Any) -> mx.array:
        mu, sigma = state
        return y * sigma + mu


class Whitening(InputNorm):
    """SAELens 6.54 covariance_whitening: (x - mean) @ M in, y @ M^-1 + mean out."""

    name = "covariance_whitening"

    def __init__(self, mean: mx.array, matrix: mx.array, inverse: mx.array) -> None:
        self.mean, self.matrix, self.inverse = mean, matrix, inverse

    def apply(self, x: mx.array) -> tuple[mx.array, Any]:
        return (x - self.mean) @ self.matrix, None

    def invert(self, y: mx.array, state: Any) -> mx.array:
        return y @ self.inverse + self.mean

    def directions(self, w_dec: mx.array) -> mx.array:
        return w_dec @ self.inverse


# -- the base --------------------------------------------------------------------------------


class SAE(ABC):
    """A sparse autoencoder: `encode` (..., d_model) -> dense (..., d_sae), `decode` back.

    Computation is float32 whatever the file stored. `k` is None where the architecture
    has none (ReLU, JumpReLU, gated). For normalisation modes that depend on the token
    (`constant_norm_rescale`, `layer_norm`) and skip connections, `decode(z)` uses the
    state of the last `encode` (as SAELens does); `reconstruct(x)` needs no such care.
    """

    architecture: str = "SAE"
    k: int | None = None

    def __init__(
        self,
        *,
        W_enc: mx.array,
        b_enc: mx.array,
        W_dec: mx.array,
        b_dec: mx.array,
        metadata: SAEMetadata | None = None,
        content_hash: str = "",
        path: Path | None = None,
        config: dict[str, Any] | None = None,
        subtract_b_dec: bool = False,
        norm: InputNorm | None = None,
        W_skip: mx.array | None = None,
        format: str = "mlxterp",
    ) -> None:
        self.W_enc = W_enc  # (d_model, d_sae)
        self.b_enc = b_enc  # (d_sae,)
        self.W_dec = W_dec  # (d_sae, d_model): row j is feature j's direction
        self.b_dec = b_dec  # (d_model,)
        self.W_skip = W_skip  # (d_model, d_model) or None: sparsify adds x @ W_skip.T
        self.subtract_b_dec = bool(subtract_b_dec)
        self.norm = norm or InputNorm()
        self.format = format
        self.metadata = metadata or SAEMetadata()
        self.metadata.format = format
        self.metadata.architecture = self.architecture
        self.path = path
        self.config = config or {}
        self._content_hash = content_hash
        self._state: tuple[tuple[int, ...], Any, mx.array | None] | None = None

    # -- widths and identity ----------------------------------------------------------------

    @property
    def d_model(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def dtype(self) -> str:
        """The dtype the weights were stored in (computation is float32)."""
        return self.metadata.dtype

    @property
    def content_hash(self) -> str:
        """A digest of everything that changes the numbers: config and weights."""
        return self._content_hash

    def describe(self) -> str:
        """Format and architecture for the header, e.g. 'SAELens JumpReLU'."""
        text = f"{self.format} {self.architecture}"
        if self.k is not None:
            text += f" k={self.k}"
        if self.norm.name != "none":
            text += f", {self.norm.name}"
        return text

    def summary(self) -> str:
        md = self.metadata
        hook = f"L{md.layer}/{md.component}" if md.layer is not None else "hook ?"
        return f"{self.describe()} {self.d_model}->{self.d_sae} {hook}"

    @property
    def kind(self) -> str:
        """The report's architecture type: the class an mlxterp file declares, else describe()."""
        if self.format == "mlxterp":
            return str(self.config.get("class", self.architecture))
        return self.describe()

    # -- encoding ---------------------------------------------------------------------------

    def _sae_in(self, x: mx.array) -> tuple[mx.array, Any]:
        x_n, state = self.norm.apply(x.astype(mx.float32))
        return (x_n - self.b_dec if self.subtract_b_dec else x_n), state

    def _pre(self, sae_in: mx.array) -> mx.array:
        return sae_in @ self.W_enc + self.b_enc

    @abstractmethod
    def _activate(self, sae_in: mx.array) -> mx.array:
        """Dense features from the (normalised, b_dec-shifted) input."""

    def pre_activations(self, x: mx.array) -> mx.array:
        """What is compared with the threshold or the top-k (spec §8)."""
        sae_in, _ = self._sae_in(x)
        return self._pre(sae_in)

    def encode(self, x: mx.array) -> mx.array:
        """Features (..., d_sae) for x (..., d_model), in this SAE's mode."""
        x = x.astype(mx.float32)
        sae_in, state = self._sae_in(x)
        if self.norm.token_dependent or self.W_skip is not None:
            self._state = (tuple(x.shape[:-1]), state, x if self.W_skip is not None else None)
        return self._activate(sae_in)

    def _decode_scale(self, z: mx.array) -> mx.array:
        return z

    def decode(self, z: mx.array) -> mx.array:
        """The reconstruction (..., d_model) of features z, in activation units."""
        z = self._decode_scale(z.astype(mx.float32))
        y = z @ self.W_dec + self.b_dec
        state, x = None, None
        if self.norm.token_dependent or self.W_skip is not None:
            if self._state is None or self._state[0] != tuple(z.shape[:-1]):
                raise ValueError(
                    f"decode of a {self.norm.name} SAE needs the encode of the same tokens first; use reconstruct(x)"
                )
            _, state, x = self._state
        if x is not None:
            assert self.W_skip is not None  # encode keeps x only when there is a skip connection
            y = y + x @ self.W_skip.T
        return self.norm.invert(y, state)

    def reconstruct(self, x: mx.array) -> mx.array:
        return self.decode(self.encode(x))

    def __call__(self, x: mx.array) -> mx.array:
        return self.reconstruct(x)

    @property
    def decoder_directions(self) -> mx.array:
        """(d_sae, d_model): what one unit of each feature adds, in activation units.

        For token-dependent normalisations there is no such constant; these are then
        the rows of W_dec in normalised units.
        """
        return self.norm.directions(self.W_dec)

    @property
    def directions_in_normalised_units(self) -> bool:
        return self.norm.token_dependent


# -- architectures ---------------------------------------------------------------------------


class ReLUSAE(SAE):
    """SAELens `standard`: z = relu(pre)."""

    architecture = "ReLU"

    def _activate(self, sae_in: mx.array) -> mx.array:
        return mx.maximum(self._pre(sae_in), 0.0)


class JumpReLUSAE(SAE):
    """SAELens `jumprelu`, Gemma Scope, and BatchTopK's calibrated inference view:
    z = relu(pre) * (pre > threshold), threshold per feature or one scalar."""

    architecture = "JumpReLU"

    def __init__(self, *, threshold: mx.array | float, **kw: Any) -> None:
        super().__init__(**kw)
        # Not `threshold`: callers read `sae.threshold` as BatchTopK's calibrated float.
        self.thresholds = threshold

    def _activate(self, sae_in: mx.array) -> mx.array:
        pre = self._pre(sae_in)
        return mx.where(pre > self.thresholds, mx.maximum(pre, 0.0), 0.0)


class GatedSAE(SAE):
    """SAELens `gated`: gate = (sae_in @ W_enc + b_gate) > 0; mag = relu(sae_in @ (W_enc *
    exp(r_mag)) + b_mag); z = gate * mag."""

    architecture = "gated"

    def __init__(self, *, b_gate: mx.array, b_mag: mx.array, r_mag: mx.array, **kw: Any) -> None:
        super().__init__(**kw)
        self.b_gate, self.b_mag, self.r_mag = b_gate, b_mag, r_mag
        self.W_mag = self.W_enc * mx.exp(r_mag)

    def _pre(self, sae_in: mx.array) -> mx.array:
        return sae_in @ self.W_enc + self.b_gate

    def _activate(self, sae_in: mx.array) -> mx.array:
        gate = self._pre(sae_in) > 0
        mag = mx.maximum(sae_in @ self.W_mag + self.b_mag, 0.0)
        return mx.where(gate, mag, 0.0)


class TopKSAE(SAE):
    """Top-k per token: the k largest pre-activations, then ReLU.

    Every pre >= the k-th largest is kept, so a tie at the boundary keeps more than k
    (mlxterp's rule; SAELens and sparsify keep whichever k torch.topk returns). Without
    ties all three agree, also when fewer than k are positive. This is also faster than
    scattering k indices. With `rescale_by_decoder_norm` (SAELens topk), pre is
    multiplied by ||W_dec|| before the selection and z divided by it before decoding:
    z is in unit-decoder units.
    """

    architecture = "TopK"
    k: int

    def __init__(self, *, k: int, rescale_by_decoder_norm: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.k = int(k)
        self.rescale_by_decoder_norm = bool(rescale_by_decoder_norm)
        self.decoder_norms = mx.linalg.norm(self.W_dec, axis=-1) if self.rescale_by_decoder_norm else None
        if self.rescale_by_decoder_norm:
            self.architecture = "TopK (decoder-norm rescaled)"
            self.metadata.architecture = self.architecture

    def _pre(self, sae_in: mx.array) -> mx.array:
        pre = sae_in @ self.W_enc + self.b_enc
        return pre * self.decoder_norms if self.decoder_norms is not None else pre

    def _activate(self, sae_in: mx.array) -> mx.array:
        pre = self._pre(sae_in)
        k = min(self.k, pre.shape[-1])
        kth = mx.topk(pre, k, axis=-1).min(axis=-1, keepdims=True)
        return mx.where(pre >= kth, mx.maximum(pre, 0.0), 0.0)

    def _decode_scale(self, z: mx.array) -> mx.array:
        return z / self.decoder_norms if self.decoder_norms is not None else z

    @property
    def decoder_directions(self) -> mx.array:
        w = self.W_dec / self.decoder_norms[:, None] if self.decoder_norms is not None else self.W_dec
        return self.norm.directions(w)


class GroupMaxSAE(SAE):
    """sparsify `groupmax`: relu(pre) split into k contiguous groups; each keeps its max."""

    architecture = "GroupMax"
    k: int

    def __init__(self, *, k: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.k = int(k)

    def _pre(self, sae_in: mx.array) -> mx.array:
        return mx.maximum(sae_in @ self.W_enc + self.b_enc, 0.0)

    def _activate(self, sae_in: mx.array) -> mx.array:
        pre = self._pre(sae_in)
        lead = pre.shape[:-1]
        g = pre.reshape(*lead, self.k, self.d_sae // self.k)
        arg = mx.argmax(g, axis=-1, keepdims=True)
        vals = mx.take_along_axis(g, arg, axis=-1)
        return mx.put_along_axis(mx.zeros_like(g), arg, vals, axis=-1).reshape(pre.shape)


class BatchTopKSAE(SAE):
    """mlxterp's BatchTopK: over the whole call (all tokens passed at once), keep the
    k * n_tokens largest relu(pre), zero the rest. A token's features depend on the
    batch; `calibrated(...)` / `with_threshold(t)` give the per-token inference view."""

    architecture = "BatchTopK"
    k: int

    def __init__(self, *, k: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.k = int(k)

    def _pre(self, sae_in: mx.array) -> mx.array:
        return mx.maximum(sae_in @ self.W_enc + self.b_enc, 0.0)

    def _activate(self, sae_in: mx.array) -> mx.array:
        h = self._pre(sae_in)
        n_tokens = math.prod(h.shape[:-1])
        m = min(self.k * n_tokens, h.size)
        kth = mx.topk(mx.abs(h).reshape(-1), m).min()
        return mx.where(mx.abs(h) >= kth, h, 0.0)

    def with_threshold(self, threshold: float) -> ThresholdedBatchTopKSAE:
        """The per-token inference view: z = h * (h > threshold), independent of the batch."""
        return ThresholdedBatchTopKSAE(self, float(threshold))

    def calibrated(self, activations: Iterable[mx.array] | mx.array) -> ThresholdedBatchTopKSAE:
        """The inference view whose threshold gives mean L0 = k on these activations."""
        if isinstance(activations, mx.array):
            activations = [activations]
        activations = list(activations)
        calibrator = ThresholdCalibrator(self, sum(math.prod(a.shape[:-1]) for a in activations))
        for batch in activations:
            calibrator.add(batch)
        return calibrator.view()


class ThresholdedBatchTopKSAE(JumpReLUSAE):
    """A BatchTopK SAE at inference: one global threshold on relu(pre), per token
    (the way SAELens exports BatchTopK as JumpReLU). Shares the weights of `base`."""

    def __init__(self, base: BatchTopKSAE, threshold: float) -> None:
        super().__init__(
            threshold=float(threshold),
            W_enc=base.W_enc,
            b_enc=base.b_enc,
            W_dec=base.W_dec,
            b_dec=base.b_dec,
            metadata=base.metadata,
            content_hash=digest(base.content_hash, repr(float(threshold))),
            path=base.path,
            config=base.config,
            subtract_b_dec=base.subtract_b_dec,
            norm=base.norm,
            W_skip=base.W_skip,
            format=base.format,
        )
        self.metadata.architecture = base.architecture  # the metadata stays the file's
        self.base = base
        self.k = base.k  # the threshold was calibrated for mean L0 = k
        self.threshold_value = float(threshold)
        self.architecture = f"BatchTopK, calibrated threshold {self.threshold_value:.4g}"

    @property
    def threshold(self) -> float:
        return self.threshold_value

    @property
    def kind(self) -> str:
        """The base SAE's type (the view reports as the SAE the file declares)."""
        return self.base.kind


class ThresholdCalibrator:
    """Streams activation batches and finds BatchTopK's global threshold.

    Keeps only the largest k * total_tokens pre-activations seen so far: memory is
    O(k * tokens), never tokens x d_sae. The total must be known up front for the
    answer to be exact (a value dropped early could belong to the final top set).
    """

    def __init__(self, sae: BatchTopKSAE, total_tokens: int) -> None:
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
        m_th = float(mx.min(kept).item())  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        if m_th <= 0.0:
            # Fewer than k positive values per token overall: keep every positive one.
            return 0.0
        # Keeping h >= the m-th value keeps m values; with `h > t` we step just below it.
        return float(np.nextafter(np.float32(m_th), np.float32(-np.inf)))

    def view(self) -> ThresholdedBatchTopKSAE:
        return self.sae.with_threshold(self.threshold())


# Architecture names as the formats spell them -> the class that computes them.
ARCHITECTURES: dict[str, type[SAE]] = {
    # mlxterp config.json "class"
    "SAE": TopKSAE,
    "BatchTopKSAE": BatchTopKSAE,
    # SAELens cfg.json "architecture"
    "standard": ReLUSAE,
    "topk": TopKSAE,
    "jumprelu": JumpReLUSAE,
    "gated": GatedSAE,
    # exported as JumpReLU (spec §2.7)
    "batchtopk": JumpReLUSAE,
    "matryoshka_batchtopk": JumpReLUSAE,
    # Gemma Scope 2 config.json
    "jump_relu": JumpReLUSAE,
    # sparsify cfg.json "activation"
    "groupmax": GroupMaxSAE,
}
