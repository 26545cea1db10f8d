"""Quality metrics of an SAE: the guide's measurements and the field's additions.

The whole-array functions are plain numpy (the definitions, and what tests check
against). The accumulators take the same quantities batch by batch, so an evaluation's
memory is bounded by one batch whatever its token budget; each batch is first reduced on
the MLX device (`reconstruction_sums`, `sparsity_sums`, `TopTokenActivations`) to scalars
and small vectors, and the host merges those in float64. The definitions follow
`../shared/spec/metrics.md` and the user's guide exactly. The bands, the 0-5 score, the
advice and the thresholds saetui chose where the guide leaves a choice open live in
`rubric.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import mlx.core as mx
import numpy as np

# The thresholds measured with here; the rest of these are the rubric (rubric.py), re-exported
# for callers that still reach it through this module.
from .rubric import (  # noqa: F401
    DENSE_THRESHOLD,
    INTERP_CANDIDATES,
    INTERP_MIN_SHARE,
    INTERP_TOP_EXAMPLES,
    NEXT_STEP_GO,
    NEXT_STEP_RETRAIN,
    RATINGS,
    advice,
    band,
    l0_band,
    quality_score,
)

# The guide's cosine uses this in its denominator; an all-zero reconstruction gives 0, not NaN.
COSINE_EPS = 1e-8
# Log10-density histogram bin width, in decades.
DENSITY_BIN_WIDTH = 0.25


# -- whole-array metrics (the definitions) -----------------------------------------------


def mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean over tokens and dimensions of (x - x_hat)^2."""
    x, x_hat = _f64(x), _f64(x_hat)
    return float(np.mean((x - x_hat) ** 2))


def cosine_similarity(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean over tokens of cos(x, x_hat), with the guide's 1e-8 in the denominator."""
    x, x_hat = _f64(x), _f64(x_hat)
    return float(np.mean(_cosines(x, x_hat)))


def explained_variance_guide(x: np.ndarray, x_hat: np.ndarray) -> float:
    """The guide's form: 1 - var(x - x_hat) / var(x), every element pooled."""
    x, x_hat = _f64(x), _f64(x_hat)
    return _ev_ratio(float(np.var(x - x_hat)), float(np.var(x)))


def explained_variance_saebench(x: np.ndarray, x_hat: np.ndarray) -> float:
    """SAEBench's form: 1 - sum ||x - x_hat||^2 / sum ||x - mean_token(x)||^2."""
    x, x_hat = _f64(x), _f64(x_hat)
    flat = x.reshape(-1, x.shape[-1])
    total = float(np.sum((flat - flat.mean(axis=0)) ** 2))
    return _ev_ratio(float(np.sum((x - x_hat) ** 2)), total)


def l2_ratio(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean over tokens (with ||x|| > 0) of ||x_hat|| / ||x||: below 1 means shrinkage."""
    x, x_hat = _f64(x), _f64(x_hat)
    nx = np.linalg.norm(x.reshape(-1, x.shape[-1]), axis=-1)
    nh = np.linalg.norm(x_hat.reshape(-1, x_hat.shape[-1]), axis=-1)
    keep = nx > 0
    return float(np.mean(nh[keep] / nx[keep])) if keep.any() else float("nan")


def l0_per_token(features: np.ndarray) -> np.ndarray:
    """Number of non-zero features of each token."""
    f = np.asarray(features)
    return np.count_nonzero(f.reshape(-1, f.shape[-1]), axis=-1)


def feature_counts(features: np.ndarray) -> np.ndarray:
    """For each feature, the number of tokens it fires on."""
    f = np.asarray(features)
    return np.count_nonzero(f.reshape(-1, f.shape[-1]), axis=0)


def rare_threshold(n_tokens: int) -> int:
    """The guide's "practically dead" line: fewer than max(10, 1 % of tokens) firings."""
    return max(10, int(n_tokens * 0.01))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position next-token cross-entropy (natural log) of `targets` under `logits`."""
    logp = log_softmax(_f64(logits))
    return -np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)[..., 0]


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> np.ndarray:
    """Per-position KL(p || q) of the two next-token distributions."""
    lp, lq = log_softmax(_f64(logits_p)), log_softmax(_f64(logits_q))
    return np.sum(np.exp(lp) * (lp - lq), axis=-1)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float | None:
    """(CE_zero - CE_sae) / (CE_zero - CE_clean); None when zero ablation changes nothing."""
    denom = ce_zero - ce_clean
    if not math.isfinite(denom) or abs(denom) < 1e-9:
        return None
    return (ce_zero - ce_sae) / denom


def kl_score(kl_sae: float, kl_zero: float) -> float | None:
    """(KL_zero - KL_sae) / KL_zero; None when zero ablation changes nothing."""
    if not math.isfinite(kl_zero) or kl_zero < 1e-12:
        return None
    return (kl_zero - kl_sae) / kl_zero


def percentile_from_counts(counts: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (linear interpolation) of integer values given as counts[value]."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    cum = np.cumsum(counts)
    pos = q / 100.0 * (n - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, hi, side="right"))
    return float(v_lo + (pos - lo) * (v_hi - v_lo))


def density_histogram(counts: np.ndarray, n_tokens: int, bin_width: float = DENSITY_BIN_WIDTH) -> dict[str, Any]:
    """Histogram of log10(fraction of tokens a feature fires on), for the live features.

    Bins run from the lowest possible density (one firing) up to 0 (fires everywhere); the
    dead features, whose log-density is -inf, are counted apart.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_tokens = max(int(n_tokens), 1)
    lowest = math.log10(1.0 / n_tokens)
    lo = math.floor(lowest / bin_width) * bin_width
    n_bins = max(1, int(round(-lo / bin_width)))
    edges = np.round(lo + bin_width * np.arange(n_bins + 1), 6)
    live = counts[counts > 0]
    values = np.log10(live / n_tokens) if live.size else np.zeros(0)
    hist, _ = np.histogram(values, bins=edges)
    return {
        "log10_bin_edges": [float(e) for e in edges],
        "counts": [int(c) for c in hist],
        "dead": int(np.sum(counts == 0)),
        "live": int(live.size),
    }


def l0_histogram(l0_counts: np.ndarray, max_bins: int = 40) -> dict[str, Any]:
    """The per-token L0 distribution as at most `max_bins` bins of whole numbers."""
    l0_counts = np.asarray(l0_counts, dtype=np.int64)
    nz = np.nonzero(l0_counts)[0]
    if nz.size == 0:
        return {"bin_edges": [0.0, 1.0], "counts": [0]}
    first, last = int(nz[0]), int(nz[-1])
    span = last - first + 1
    width = max(1, math.ceil(span / max_bins))
    edges = list(range(first, last + 1 + width, width))
    hist = [int(l0_counts[a:b].sum()) for a, b in zip(edges[:-1], edges[1:])]
    return {"bin_edges": [float(e) for e in edges], "counts": hist}


def dominant_token(strings: Sequence[str]) -> tuple[str, float] | None:
    """The most common normalised token string among `strings`, and its share."""
    if not strings:
        return None
    tally: dict[str, int] = {}
    for s in strings:
        key = normalise_token(s)
        tally[key] = tally.get(key, 0) + 1
    best = max(tally.items(), key=lambda kv: (kv[1], kv[0]))
    return best[0], best[1] / len(strings)


def normalise_token(s: str) -> str:
    """Token strings compare without surrounding whitespace and case (" Paris" == "paris").

    A token that is only whitespace keeps its whitespace (" " and "\\n" stay apart).
    """
    return s.strip().casefold() or s


def interpretable_features(
    counts: np.ndarray,
    top_tokens: Mapping[int, Sequence[str]],
    candidates: int = INTERP_CANDIDATES,
    top_examples: int = INTERP_TOP_EXAMPLES,
    min_share: float = INTERP_MIN_SHARE,
) -> list[dict[str, Any]]:
    """Features passing the token-dominance criterion, one per distinct dominant token.

    Among the `candidates` most frequent live features, a feature passes when it has at
    least `top_examples` firings and one token string makes up at least `min_share` of its
    `top_examples` strongest activations. Features dominated by a string already counted
    are not distinct and are not counted again.
    """
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for fid in order[:candidates]:
        fid = int(fid)
        if counts[fid] < top_examples:
            continue
        strings = list(top_tokens.get(fid, ()))[:top_examples]
        if len(strings) < top_examples:
            continue
        dom = dominant_token(strings)
        if dom is None or dom[1] < min_share or dom[0] in seen:
            continue
        seen.add(dom[0])
        found.append({"feature": fid, "token": dom[0], "share": round(dom[1], 4)})
    return found


# -- streaming accumulators ---------------------------------------------------------------


@dataclass
class Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    n: int = 0
    mean: Any = 0.0
    m2: Any = 0.0

    def add(self, values: np.ndarray, axis: int | None = None) -> None:
        values = _f64(values)
        nb = values.size if axis is None else values.shape[axis]
        if nb == 0:
            return
        mb = values.mean(axis=axis)
        m2b = ((values - (mb if axis is None else np.expand_dims(mb, axis))) ** 2).sum(axis=axis)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n

    def add_summary(self, nb: int, mb: Any, m2b: Any) -> None:
        """Merge a batch given as its count, mean and sum of squared deviations."""
        if nb == 0:
            return
        mb, m2b = _f64(mb), _f64(m2b)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n

    @property
    def variance(self) -> Any:
        return self.m2 / self.n if self.n else float("nan")


@dataclass
class ReconstructionAccumulator:
    """MSE, cosine, both explained variances and the L2 ratio over batches of (x, x_hat)."""

    n_tokens: int = 0
    sum_sq_err: float = 0.0
    sum_cos: float = 0.0
    sum_l2_ratio: float = 0.0
    n_l2: int = 0
    x_pooled: Moments = field(default_factory=Moments)
    err_pooled: Moments = field(default_factory=Moments)
    x_per_dim: Moments = field(default_factory=Moments)

    def add(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        x = _f64(x).reshape(-1, np.shape(x)[-1])
        x_hat = _f64(x_hat).reshape(-1, np.shape(x_hat)[-1])
        if x.shape[0] == 0:
            return
        err = x - x_hat
        self.n_tokens += x.shape[0]
        self.sum_sq_err += float(np.sum(err**2))
        self.sum_cos += float(np.sum(_cosines(x, x_hat)))
        nx = np.linalg.norm(x, axis=-1)
        nh = np.linalg.norm(x_hat, axis=-1)
        keep = nx > 0
        self.sum_l2_ratio += float(np.sum(nh[keep] / nx[keep]))
        self.n_l2 += int(keep.sum())
        self.x_pooled.add(x)
        self.err_pooled.add(err)
        self.x_per_dim.add(x, axis=0)

    def add_sums(self, sums: "ReconstructionSums") -> None:
        """Merge one batch reduced on the device (`reconstruction_sums`)."""
        h = sums.to_host()
        n = int(h["n"])
        if n == 0:
            return
        d = int(np.size(h["dim_mean"]))
        self.n_tokens += n
        self.sum_sq_err += float(h["sum_sq_err"])
        self.sum_cos += float(h["sum_cos"])
        self.sum_l2_ratio += float(h["sum_l2_ratio"])
        self.n_l2 += int(h["n_l2"])
        self.x_pooled.add_summary(n * d, h["x_mean"], h["x_m2"])
        self.err_pooled.add_summary(n * d, h["err_mean"], h["err_m2"])
        self.x_per_dim.add_summary(n, h["dim_mean"], h["dim_m2"])

    def result(self) -> dict[str, float]:
        if self.n_tokens == 0:
            nan = float("nan")
            return {"mse": nan, "cosine_similarity": nan, "explained_variance": nan, "explained_variance_saebench": nan, "l2_ratio": nan}
        d = int(np.size(self.x_per_dim.mean))
        return {
            "mse": self.sum_sq_err / (self.n_tokens * d),
            "cosine_similarity": self.sum_cos / self.n_tokens,
            "explained_variance": _ev_ratio(float(self.err_pooled.variance), float(self.x_pooled.variance)),
            "explained_variance_saebench": _ev_ratio(self.sum_sq_err, float(np.sum(self.x_per_dim.m2))),
            "l2_ratio": self.sum_l2_ratio / self.n_l2 if self.n_l2 else float("nan"),
        }


@dataclass
class SparsityAccumulator:
    """Per-feature firing counts and the per-token L0 distribution over batches."""

    d_sae: int
    k: int | None  # None: the architecture has no k
    n_tokens: int = 0
    counts: np.ndarray = None  # type: ignore[assignment]
    l0_counts: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.d_sae, dtype=np.int64)
        self.l0_counts = np.zeros(self.d_sae + 1, dtype=np.int64)

    def add(self, l0: np.ndarray, counts: np.ndarray) -> None:
        """`l0`: per-token L0 of a batch; `counts`: per-feature firings in it."""
        l0 = np.asarray(l0, dtype=np.int64).reshape(-1)
        self.n_tokens += l0.size
        self.l0_counts += np.bincount(l0, minlength=self.d_sae + 1)[: self.d_sae + 1]
        self.counts += np.asarray(counts, dtype=np.int64)

    def add_features(self, features: np.ndarray) -> None:
        self.add(l0_per_token(features), feature_counts(features))

    def add_sums(self, sums: "SparsitySums") -> None:
        """Merge one batch reduced on the device (`sparsity_sums`)."""
        self.n_tokens += int(sums.n_tokens)
        self.l0_counts += np.asarray(sums.l0_counts).astype(np.int64)
        self.counts += np.asarray(sums.counts).astype(np.int64)

    def result(self) -> dict[str, Any]:
        """The guide's sparsity keys plus the L0 distribution, density and dense features."""
        n = self.n_tokens
        counts = self.counts
        l0_mean = float(np.dot(np.arange(self.d_sae + 1), self.l0_counts) / n) if n else float("nan")
        threshold = rare_threshold(n)
        practical = int(np.sum(counts < threshold))
        strict = int(np.sum(counts == 0))
        density = counts / n if n else np.zeros_like(counts, dtype=np.float64)
        dense = np.nonzero(density > DENSE_THRESHOLD)[0]
        return {
            "guide": {
                "l0_mean": l0_mean,
                "l0_fraction": l0_mean / self.d_sae,
                "dead_features": strict,
                "dead_features_practical": practical,
                "dead_fraction": practical / self.d_sae,
                "rare_threshold": threshold,
                "max_feature_activations": int(counts.max()) if counts.size else 0,
                "min_feature_activations": int(counts.min()) if counts.size else 0,
            },
            "l0_distribution": {
                "mean": l0_mean,
                "median": percentile_from_counts(self.l0_counts, 50),
                "p10": percentile_from_counts(self.l0_counts, 10),
                "p90": percentile_from_counts(self.l0_counts, 90),
                "k": self.k,
                "histogram": l0_histogram(self.l0_counts),
            },
            "dead_fraction_strict": strict / self.d_sae,
            "density": dict(
                density_histogram(counts, n),
                dense_threshold=DENSE_THRESHOLD,
                dense_features=int(dense.size),
                dense_fraction=float(dense.size / self.d_sae),
            ),
        }


@dataclass
class BehaviourAccumulator:
    """Sums of per-position CE (clean, SAE, zero) and KL (SAE, zero) over batches."""

    n_positions: int = 0
    ce_clean: float = 0.0
    ce_sae: float = 0.0
    ce_zero: float = 0.0
    kl_sae: float = 0.0
    kl_zero: float = 0.0

    def add(self, n: int, ce_clean: float, ce_sae: float, ce_zero: float, kl_sae: float, kl_zero: float) -> None:
        self.n_positions += int(n)
        self.ce_clean += float(ce_clean)
        self.ce_sae += float(ce_sae)
        self.ce_zero += float(ce_zero)
        self.kl_sae += float(kl_sae)
        self.kl_zero += float(kl_zero)

    def add_logits(self, clean: np.ndarray, sae: np.ndarray, zero: np.ndarray, targets: np.ndarray) -> None:
        """From whole logits (positions, V) and targets (numpy; for tests and small models)."""
        self.add(
            np.size(targets),
            cross_entropy(clean, targets).sum(),
            cross_entropy(sae, targets).sum(),
            cross_entropy(zero, targets).sum(),
            kl_divergence(clean, sae).sum(),
            kl_divergence(clean, zero).sum(),
        )

    def result(self) -> dict[str, Any]:
        n = self.n_positions
        if n == 0:
            return {}
        ce_clean, ce_sae, ce_zero = self.ce_clean / n, self.ce_sae / n, self.ce_zero / n
        kl_sae, kl_zero = self.kl_sae / n, self.kl_zero / n
        return {
            "ce_loss_clean": ce_clean,
            "ce_loss_sae": ce_sae,
            "ce_loss_zero": ce_zero,
            "ce_loss_recovered": ce_loss_recovered(ce_clean, ce_sae, ce_zero),
            "kl_div_sae": kl_sae,
            "kl_div_zero": kl_zero,
            "kl_score": kl_score(kl_sae, kl_zero),
            "positions": n,
        }


# -- per-batch reductions on the device ------------------------------------------------------


@dataclass
class ReconstructionSums:
    """One batch's reconstruction statistics as MLX scalars and d_model vectors.

    Means and squared deviations are per batch (two passes on the device); the host merges
    batches with Chan's formula in float64, so float32 rounding stays within one batch.
    """

    n: mx.array
    sum_sq_err: mx.array
    sum_cos: mx.array
    sum_l2_ratio: mx.array
    n_l2: mx.array
    x_mean: mx.array
    x_m2: mx.array
    err_mean: mx.array
    err_m2: mx.array
    dim_mean: mx.array
    dim_m2: mx.array

    def arrays(self) -> list[mx.array]:
        return list(vars(self).values())

    def to_host(self) -> dict[str, np.ndarray]:
        mx.eval(*self.arrays())
        return {name: np.asarray(value) for name, value in vars(self).items()}


def reconstruction_sums(x: mx.array, x_hat: mx.array) -> ReconstructionSums:
    """Reduce a batch of (x, x_hat) (..., d_model) to `ReconstructionSums` (lazily, on the device)."""
    d = x.shape[-1]
    x = x.reshape(-1, d).astype(mx.float32)
    x_hat = x_hat.reshape(-1, d).astype(mx.float32)
    n = x.shape[0]
    err = x - x_hat
    nx = mx.sqrt((x * x).sum(axis=-1))
    nh = mx.sqrt((x_hat * x_hat).sum(axis=-1))
    cos = (x * x_hat).sum(axis=-1) / (nx * nh + COSINE_EPS)
    keep = nx > 0
    ratio = mx.where(keep, nh / mx.where(keep, nx, 1.0), 0.0)
    err_mean = err.mean() if n else mx.array(0.0)
    dim_mean = x.mean(axis=0) if n else mx.zeros((d,))
    dim_m2 = mx.square(x - dim_mean).sum(axis=0)
    # Pooled over every element: the law of total variance, from the per-dimension moments
    # (no further pass over x).
    x_mean = dim_mean.mean()
    x_m2 = dim_m2.sum() + n * mx.square(dim_mean - x_mean).sum()
    return ReconstructionSums(
        n=mx.array(n),
        sum_sq_err=mx.square(err).sum(),
        sum_cos=cos.sum(),
        sum_l2_ratio=ratio.sum(),
        n_l2=keep.sum(),
        x_mean=x_mean,
        x_m2=x_m2,
        err_mean=err_mean,
        err_m2=mx.square(err - err_mean).sum(),
        dim_mean=dim_mean,
        dim_m2=dim_m2,
    )


@dataclass
class SparsitySums:
    """One batch's per-feature firing counts (d_sae) and L0 distribution (d_sae + 1), on the device."""

    n_tokens: int
    counts: mx.array
    l0_counts: mx.array

    def arrays(self) -> list[mx.array]:
        return [self.counts, self.l0_counts]


def sparsity_sums(features: mx.array, values: mx.array, d_sae: int) -> SparsitySums:
    """From sparse codes (`sparse.SparseCodes` features and values, (..., width)): counts and L0."""
    width = values.shape[-1]
    f = features.reshape(-1, width)
    fired = values.reshape(-1, width) > 0
    l0 = fired.sum(axis=-1).astype(mx.int32)
    counts = mx.zeros((d_sae,), dtype=mx.int32).at[f.reshape(-1)].add(fired.reshape(-1).astype(mx.int32))
    l0_counts = mx.zeros((d_sae + 1,), dtype=mx.int32).at[l0].add(mx.ones_like(l0))
    return SparsitySums(int(f.shape[0]), counts, l0_counts)


class TopTokenActivations:
    """Per feature, the `k` strongest activations over the evaluation and their token ids.

    Exact and deterministic: ranked by activation, then the earlier token. Candidates are
    narrowed on the device (activation above the feature's k-th so far) and kept by the
    index's exact keeper.
    """

    def __init__(self, d_sae: int, k: int) -> None:
        from .index.keeper import Keeper

        self.k = k
        self.keeper = Keeper(d_sae, k, 0)
        self.floor = mx.zeros((d_sae,), dtype=mx.float32)

    def queue(self, features: mx.array, values: mx.array, token_ids: mx.array, first_token: int) -> tuple:
        """Lazily select one batch's candidates: codes (T, width), token ids (T,), and the
        batch's first token's index in the evaluation (ties go to the earlier token)."""
        width = values.shape[-1]
        f = features.reshape(-1)
        v = values.reshape(-1)
        mask = (v > 0) & (v > self.floor[f])
        return f, v, mask, token_ids.reshape(-1), int(first_token), int(width)

    def fold(self, queued: tuple) -> None:
        f, v, mask, tokens, first_token, width = queued
        m = np.asarray(mask)
        cand = np.flatnonzero(m)
        if cand.size:
            from .index.keeper import activation_key, rank_of

            vv = np.asarray(v)[cand]
            local = cand // width
            self.keeper.offer(np.asarray(f)[cand], rank_of(activation_key(vv), first_token + local), first_token + local, np.asarray(tokens)[local], vv, np.zeros((cand.size, 0), np.float16))
            if self.keeper.pending >= max(65_536, self.keeper.key.shape[0]):
                self.compact()

    def compact(self) -> None:
        self.keeper.compact()
        self.floor = mx.array(self.keeper.floor_activation())

    def token_ids(self, features) -> dict[int, list[int]]:
        """For each feature, the token ids of its positive top activations, strongest first."""
        self.compact()
        out: dict[int, list[int]] = {}
        for fid in (int(f) for f in features):
            out[fid] = [int(t) for t in self.keeper.pos[fid][self.keeper.row_order(fid)]]
        return out


# -- helpers ---------------------------------------------------------------------------


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _cosines(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    num = np.sum(x * x_hat, axis=-1)
    return num / (np.linalg.norm(x, axis=-1) * np.linalg.norm(x_hat, axis=-1) + COSINE_EPS)


def _ev_ratio(residual: float, total: float) -> float:
    if not math.isfinite(total) or total <= 0:
        return float("nan")
    return 1.0 - residual / total


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return finite_or_none(value.item())
    return value
