"""Comparing two SAEs feature by feature.

Matching is by decoder cosine: for every live feature of A, the feature of B whose decoder
direction (as it moves the activation, unit length) is closest, found blockwise with MLX
(`block` rows of A against all of B at a time; never the full A x B matrix). The same is
done from B to A, so both sides' unique features are known. A feature "is found" in the
other SAE when its best cosine is at least `threshold` (default 0.7).

When both SAEs read the same hook, the activation correlation of each matched pair can be
measured on shared tokens (`pair_correlations`): Pearson correlation over tokens of the two
features' activations.

With clusterings of both sides, families that split or merge are reported: an A cluster
whose members' best matches (cosine >= FAMILY_THRESHOLD, 0.5) land in two or more B clusters
(each taking at least `min_part` members) splits; a B cluster receiving matches from two or
more A clusters merges them.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np

from .errors import UserError
from .worker import LongWork, Progress

if TYPE_CHECKING:
    from .session import Session

DEFAULT_THRESHOLD = 0.7
# Families are followed through looser matches: two SAEs trained apart rarely share a direction
# at 0.7 (the demo's pair: 3 %), but a best match at 0.5 still says where a feature went.
FAMILY_THRESHOLD = 0.5
DEFAULT_BLOCK = 1024
MIN_PART = 2
# Tokens on which matched pairs' activations are correlated (same hook only).
CORRELATION_TOKENS = 32_768
# candidates per row when matching through a sketch (big, wide decoders)
SKETCH_CANDIDATES = 16


@dataclass
class Comparison:
    a_live: np.ndarray  # A's live feature ids
    a_best: np.ndarray  # for each: best B feature
    a_similarity: np.ndarray  # and its cosine
    b_live: np.ndarray
    b_best: np.ndarray  # for each live B feature: best A feature
    b_similarity: np.ndarray
    threshold: float
    splits: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    correlations: np.ndarray | None = None  # per A match, when measured
    seconds: float = 0.0

    @property
    def found_fraction(self) -> float:
        """Fraction of A's live features whose best match in B is >= threshold."""
        return float((self.a_similarity >= self.threshold).mean()) if len(self.a_live) else 0.0

    @property
    def b_found_fraction(self) -> float:
        return float((self.b_similarity >= self.threshold).mean()) if len(self.b_live) else 0.0

    @property
    def unique_a(self) -> list[int]:
        """A's live features with no B feature at >= threshold."""
        return [int(f) for f in self.a_live[self.a_similarity < self.threshold]]

    @property
    def unique_b(self) -> list[int]:
        return [int(f) for f in self.b_live[self.b_similarity < self.threshold]]

    def matches(self) -> list[dict[str, Any]]:
        return [{"a": int(a), "b": int(b), "similarity": round(float(s), 6)}
                for a, b, s in zip(self.a_live, self.a_best, self.a_similarity)]

    def to_json(self, a: Any, b: Any, reports: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {
            "a": a,
            "b": b,
            "reports": reports or {},
            "matches": self.matches(),
            "found_fraction": self.found_fraction,
            "threshold": self.threshold,
            "b_found_fraction": self.b_found_fraction,
            "unique_a": self.unique_a,
            "unique_b": self.unique_b,
            "splits": self.splits,
            "merges": self.merges,
        }
        if self.correlations is not None:
            out["correlations"] = [None if not np.isfinite(c) else round(float(c), 6) for c in self.correlations]
        return out


def check_comparable(sae_a: Any, sae_b: Any, model_a: str | None = None, model_b: str | None = None) -> None:
    """Mismatched widths or models: one clear UserError."""
    if int(sae_a.d_model) != int(sae_b.d_model):
        raise UserError(f"The SAEs read activations of different widths: A {int(sae_a.d_model):,}, B {int(sae_b.d_model):,}",
                        "Compare SAEs trained on the same model (hooks of the same width)")
    if model_a and model_b and str(model_a) != str(model_b):
        raise UserError(f"The SAEs were trained on different models: A on {model_a!r}, B on {model_b!r}",
                        "Compare SAEs of one model, or pass --model to read both on the same one")


def best_matches(directions_a: Any, directions_b: Any, block: int = DEFAULT_BLOCK, sketch_dim: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each row of A, the most similar row of B by cosine: (positions in B (n_a,) int64,
    cosines (n_a,) float32); ties go to the smaller position. Blockwise: `block` x n_b.

    `sketch_dim`: as in `clusters.knn_blockwise`, candidates (SKETCH_CANDIDATES per row) from a
    seeded Gaussian projection, then the exact cosine picks the best; None: only for big, wide
    decoders (`clusters.wants_sketch`), 0: always exact."""
    from .clusters import SKETCH_DIM, wants_sketch

    ua = _unit(directions_a)
    ub = _unit(directions_b)
    n_a, d = int(ua.shape[0]), int(ua.shape[1])
    n_b = int(ub.shape[0])
    if sketch_dim is None:
        sketch_dim = SKETCH_DIM if wants_sketch(max(n_a, n_b), d) else 0
    best = np.empty(n_a, np.int64)
    sim = np.empty(n_a, np.float32)
    if sketch_dim and n_b > SKETCH_CANDIDATES:
        rng = np.random.default_rng(seed)
        projection = mx.array(rng.standard_normal((d, int(sketch_dim)), dtype=np.float32))
        sa, sb = _unit(ua @ projection), _unit(ub @ projection)
        mx.eval(sa, sb)
        for start in range(0, n_a, block):
            s = sa[start:start + block] @ sb.T
            cand = mx.argpartition(-s, kth=SKETCH_CANDIDATES - 1, axis=1)[:, :SKETCH_CANDIDATES]
            exact = mx.sum(ub[cand] * ua[start:start + block][:, None, :], axis=-1)
            cand_np, exact_np = np.array(cand).astype(np.int64), np.array(exact)
            order = np.lexsort((cand_np, -exact_np), axis=1)[:, 0]
            rows = np.arange(len(order))
            best[start:start + block] = cand_np[rows, order]
            sim[start:start + block] = exact_np[rows, order]
        return best, sim
    for start in range(0, n_a, block):
        s = ua[start:start + block] @ ub.T
        top = mx.max(s, axis=1, keepdims=True)
        # first position reaching the maximum (argmax's tie rule made explicit)
        first = mx.argmax((s >= top).astype(mx.int32), axis=1)
        mx.eval(top, first)
        best[start:start + block] = np.array(first).astype(np.int64)
        sim[start:start + block] = np.array(top[:, 0])
    return best, sim


def _unit(directions: Any) -> mx.array:
    d = directions if isinstance(directions, mx.array) else mx.array(np.ascontiguousarray(directions))
    d = d.astype(mx.float32)
    return d / mx.maximum(mx.linalg.norm(d, axis=-1, keepdims=True), 1e-12)


def family_changes(clusters_a: Any, clusters_b: Any, a_live: np.ndarray, a_best: np.ndarray, a_sim: np.ndarray,
                   threshold: float, min_part: int = MIN_PART) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Splits (an A cluster spread over several B clusters) and merges (a B cluster gathering
    several A clusters), from A's found matches."""
    lands: dict[int, Counter] = defaultdict(Counter)  # A cluster -> B cluster -> members
    for f, g, s in zip(a_live.tolist(), a_best.tolist(), a_sim.tolist()):
        if s < threshold:
            continue
        ca, cb = clusters_a.cluster_of(f), clusters_b.cluster_of(g)
        if ca is None or cb is None:
            continue
        lands[ca.id][cb.id] += 1
    splits = []
    gathers: dict[int, dict[int, int]] = defaultdict(dict)
    for ca, counts in sorted(lands.items()):
        parts = {cb: n for cb, n in counts.items() if n >= min_part}
        for cb, n in parts.items():
            gathers[cb][ca] = n
        if len(parts) >= 2:
            splits.append({"a_cluster": ca, "a_label": clusters_a.cluster(ca).label,
                           "b_clusters": sorted(parts, key=lambda c: (-parts[c], c)), "members": dict(sorted(parts.items()))})
    merges = []
    for cb, parts in sorted(gathers.items()):
        if len(parts) >= 2:
            merges.append({"b_cluster": cb, "b_label": clusters_b.cluster(cb).label,
                           "a_clusters": sorted(parts, key=lambda c: (-parts[c], c)), "members": dict(sorted(parts.items()))})
    for item in splits + merges:
        item["members"] = {str(k): v for k, v in item["members"].items()}
    return splits, merges


def compare_saes(
    sae_a: Any,
    sae_b: Any,
    live_a: np.ndarray | None = None,
    live_b: np.ndarray | None = None,
    *,
    clusters_a: Any = None,
    clusters_b: Any = None,
    threshold: float = DEFAULT_THRESHOLD,
    family_threshold: float = FAMILY_THRESHOLD,
    block: int = DEFAULT_BLOCK,
) -> LongWork[Comparison]:
    """Match A's live features to B's and back (live: ids; default all features with a
    nonzero decoder). Yields progress; returns the Comparison."""
    started = time.perf_counter()
    check_comparable(sae_a, sae_b)
    dirs_a, dirs_b = sae_a.decoder_directions, sae_b.decoder_directions
    live_a = _live(dirs_a, live_a)
    live_b = _live(dirs_b, live_b)
    if len(live_a) == 0:
        raise UserError("A has no live features to match", "Index more tokens (--max-tokens) or check A against its model")
    if len(live_b) == 0:
        raise UserError("B has no live features to match against", "Index more tokens (--max-tokens) or check B against its model")
    yield Progress("comparing: A to B", 0, 2, "steps", time.perf_counter() - started)
    sub_a = dirs_a[mx.array(np.ascontiguousarray(live_a))]
    sub_b = dirs_b[mx.array(np.ascontiguousarray(live_b))]
    pos_ab, sim_ab = best_matches(sub_a, sub_b, block)
    yield Progress("comparing: B to A", 1, 2, "steps", time.perf_counter() - started)
    pos_ba, sim_ba = best_matches(sub_b, sub_a, block)
    result = Comparison(live_a, live_b[pos_ab], sim_ab, live_b, live_a[pos_ba], sim_ba, float(threshold))
    if clusters_a is not None and clusters_b is not None:
        result.splits, result.merges = family_changes(clusters_a, clusters_b, result.a_live, result.a_best,
                                                      result.a_similarity, min(threshold, family_threshold))
    result.seconds = time.perf_counter() - started
    yield Progress("comparing", 2, 2, "steps", result.seconds)
    return result


def _live(directions: mx.array, live: np.ndarray | None) -> np.ndarray:
    if live is not None:
        return np.asarray(live, dtype=np.int64)
    norms = np.array(mx.linalg.norm(directions.astype(mx.float32), axis=-1))
    return np.flatnonzero(norms > 0).astype(np.int64)


def materialise_sae(sae: Any) -> None:
    """Evaluate an SAE's arrays on this thread. Weights are loaded lazily, and a lazy array
    belongs to the stream of the thread that made it: run this on B's own worker before A's
    worker reads B (matching, `pair_correlations`)."""
    arrays = [v for obj in (sae, getattr(sae, "norm", None)) if obj is not None
              for v in vars(obj).values() if isinstance(v, mx.array)]
    mx.eval(arrays, sae.decoder_directions)


def pair_correlations(session_a: "Session", session_b: "Session", a_ids: np.ndarray, b_ids: np.ndarray,
                      max_tokens: int = CORRELATION_TOKENS) -> LongWork[np.ndarray]:
    """Pearson correlation of each matched pair (a_ids[i], b_ids[i]) over the same tokens (BOS
    excluded): A's session reads the activations, both SAEs encode them (long work; B's SAE
    materialised on its own thread first, see `materialise_sae`). Only meaningful when both
    sessions read the same hook."""
    corpus = session_a.corpus(max_tokens)
    first = corpus.first_position
    acc = PairCorrelation(a_ids, b_ids)
    done = 0
    for _, tokens, acts in session_a.iter_activations(corpus):
        acts = acts[:, first:, :]
        acc.add(session_a.encode(acts), session_b.encode(acts))
        done += int(tokens.size)
        yield Progress("correlating matched pairs", done, corpus.n_tokens)
    return acc.values()


class PairCorrelation:
    """Pearson correlation over tokens of pairs (A feature, B feature), streamed: add batches of
    both SAEs' activations on the same tokens, read `values()`."""

    def __init__(self, a_ids: np.ndarray, b_ids: np.ndarray) -> None:
        self.a = mx.array(np.ascontiguousarray(a_ids, dtype=np.int64))
        self.b = mx.array(np.ascontiguousarray(b_ids, dtype=np.int64))
        n = len(a_ids)
        self.n = 0
        self.sx = np.zeros(n)
        self.sy = np.zeros(n)
        self.sxx = np.zeros(n)
        self.syy = np.zeros(n)
        self.sxy = np.zeros(n)

    def add(self, z_a: mx.array, z_b: mx.array) -> None:
        x = z_a.reshape(-1, z_a.shape[-1])[:, self.a].astype(mx.float32)
        y = z_b.reshape(-1, z_b.shape[-1])[:, self.b].astype(mx.float32)
        sums = [mx.sum(x, 0), mx.sum(y, 0), mx.sum(x * x, 0), mx.sum(y * y, 0), mx.sum(x * y, 0)]
        mx.eval(*sums)
        for acc, s in zip((self.sx, self.sy, self.sxx, self.syy, self.sxy), sums):
            acc += np.array(s, dtype=np.float64)
        self.n += int(x.shape[0])

    def values(self) -> np.ndarray:
        n = max(self.n, 1)
        cov = self.sxy / n - (self.sx / n) * (self.sy / n)
        var_x = self.sxx / n - (self.sx / n) ** 2
        var_y = self.syy / n - (self.sy / n) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(var_x * var_y)
        r[(var_x <= 1e-20) | (var_y <= 1e-20)] = np.nan  # a feature that never fired here
        return np.clip(r, -1.0, 1.0)


def benchmark_compare(n_features: int = 32768, d_model: int = 2048, seed: int = 0) -> dict[str, Any]:
    """Match two synthetic 32,768-feature decoders both ways (B: A's rows permuted, plus noise).
    Returns seconds (matching only) and the found fraction."""
    from .clusters import synthetic_decoder

    class _Decoder:
        def __init__(self, d: mx.array) -> None:
            self.decoder_directions = d
            self.d_model = int(d.shape[1])

    a = synthetic_decoder(n_features, d_model, seed=seed)
    rng = np.random.default_rng(seed + 1)
    b = a[mx.array(rng.permutation(n_features))] + 0.3 * mx.array(rng.standard_normal((n_features, d_model), dtype=np.float32))
    mx.eval(b)
    started, cpu = time.perf_counter(), time.process_time()
    gen = compare_saes(_Decoder(a), _Decoder(b))
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        result = stop.value
    return {"seconds": round(time.perf_counter() - started, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "found_fraction": round(result.found_fraction, 4),
            "n_features": n_features, "d_model": d_model}
