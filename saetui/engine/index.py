"""The feature index: every feature's statistics and top contexts, from one streamed pass.

The user's guide finds a feature's top texts by re-running the model over the whole
dataset for every feature asked about. The index runs the model once over a token
budget of the dataset (forward to the hook, SAE encode, batch by batch on the engine's
worker thread) and keeps, for every feature:

- how many tokens it fires on (density), its summed and maximum activation;
- a histogram of its non-zero activations in log-spaced bins;
- its top-K contexts: a context's activation is its strongest token, contexts are
  ranked by activation (descending), then context id, and the position is the first
  token reaching that maximum; each keeps the activations of a window of tokens around
  that position;
- a uniform random sample of the contexts it fires on (the contexts with the largest
  hash of (context, feature): order-independent and deterministic), from which the
  page shows contexts at lower activation quantiles.

Memory is O(d_sae x K x window) plus one batch; the corpus's tokens x d_sae matrix is
never held. Each batch's features are brought to numpy once and reduced to their
non-zero entries (a TopK SAE has k per token), so the per-batch work scales with the
firing entries, not with tokens x d_sae.

The index is cached under the user cache folder, keyed by everything it depends on
(`Engine.cache_parts` plus the budget, K and the index's own format). Files are written
atomically; a truncated or corrupt file is detected (zip CRCs, shapes, key) and rebuilt.
An interrupted build is checkpointed as a separate `.partial` file, which is only ever
read to resume a build, never as a finished index. While a build runs, the index in
memory answers queries with what is known so far and says it is partial.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np

from . import cache
from .errors import UserError
from .worker import LongWork, Progress

if TYPE_CHECKING:
    from .session import Session

INDEX_FORMAT = 1
DEFAULT_TOP_K = 20
MAX_TOP_K = 100
# Indexes are built for one of these K, so a smaller request reuses a deeper index.
TOP_K_TIERS = (20, 50, 100)
# Token budgets: the demo's is quick; a real SAE's covers the guide's 1,000 wikitext texts.
DEMO_BUDGET = 65_536
DEFAULT_BUDGET = 262_144
# Tokens kept around a context's strongest token (it sits at index WINDOW_BEFORE).
WINDOW_BEFORE = 24
WINDOW_AFTER = 7
# Randomly sampled firing contexts kept per feature (for the quantile samples).
SAMPLES_KEPT = 12
# Histogram: bin 0 holds (0, 1e-4), then 8 bins per decade up to 1e4, then >= 1e4.
HIST_LOG10_MIN = -4.0
HIST_LOG10_MAX = 4.0
HIST_BINS_PER_DECADE = 8
HIST_INNER = int((HIST_LOG10_MAX - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE)
HIST_BINS = HIST_INNER + 2
# Seconds between checkpoints of a long build (so a killed process can resume).
CHECKPOINT_SECONDS = 60.0
FLOAT16_MAX = float(np.finfo(np.float16).max)
SUFFIX = ".npz"
PARTIAL_SUFFIX = ".partial.npz"


def histogram_edges() -> np.ndarray:
    """The HIST_BINS + 1 bin edges: 0, 1e-4, ..., 1e4, inf."""
    inner = 10.0 ** np.linspace(HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_INNER + 1)
    return np.concatenate([[0.0], inner, [np.inf]])


def histogram_bin(values: np.ndarray) -> np.ndarray:
    """The bin of each positive activation (see `histogram_edges`)."""
    with np.errstate(divide="ignore"):
        logs = np.log10(np.asarray(values, dtype=np.float64))
    bins = np.floor((logs - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE).astype(np.int64) + 1
    return np.clip(bins, 0, HIST_BINS - 1)


def sample_key(context_ids: np.ndarray, features: np.ndarray, d_sae: int) -> np.ndarray:
    """A pseudo-random number in [0, 1) per (context, feature) (splitmix64 of the pair)."""
    z = context_ids.astype(np.uint64) * np.uint64(d_sae) + features.astype(np.uint64)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def tier_for(top_k: int) -> int:
    """The K an index is built with to answer `top_k` (20, 50 or 100)."""
    top_k = int(top_k)
    if not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"--top-k {top_k} is out of range", f"Use a value from 1 to {MAX_TOP_K}")
    return next(t for t in TOP_K_TIERS if t >= top_k)


def default_budget(session: "Session") -> int:
    """--max-tokens when given; else the demo's quick budget or the default for real SAEs."""
    if session.settings.max_tokens:
        return int(session.settings.max_tokens)
    return DEMO_BUDGET if session.is_demo else DEFAULT_BUDGET


# -- what a query returns ----------------------------------------------------------------


@dataclass
class ContextExample:
    """One context of a feature: where its strongest token is, and the tokens around it."""

    context_id: int
    position: int  # of the strongest token in the context (BOS, when there is one, is 0)
    activation: float
    window_start: int  # position of window_tokens[0]
    window_tokens: np.ndarray  # int32 token ids
    window_acts: np.ndarray  # float32, the feature's activation at each of them
    quantile: float | None = None  # samples: where it sits among the feature's firing contexts

    @property
    def max_index(self) -> int:
        """Index of the strongest token within the window."""
        return self.position - self.window_start


@dataclass
class FeatureStats:
    """What the index knows about one feature (so far, when `partial`)."""

    feature_id: int
    count: int  # tokens it fires on
    tokens: int  # tokens looked at (BOS excluded)
    max_activation: float
    mean_activation: float  # over the tokens it fires on
    histogram: np.ndarray  # int64 (HIST_BINS,)
    top: list[ContextExample]
    samples: list[ContextExample]
    partial: bool
    contexts_done: int
    n_contexts: int

    @property
    def density(self) -> float:
        return self.count / self.tokens if self.tokens else 0.0

    @property
    def fires(self) -> bool:
        return self.count > 0


# -- the per-feature keepers ----------------------------------------------------------


class _Keeper:
    """Per feature, the K entries with the largest key, ties to the smaller context id.

    Rows stay sorted (key descending, context ascending). Batches arrive in context
    order, so every new candidate has a larger context id than anything kept: a stable
    sort of [kept, candidates] by key gives exactly that order.
    """

    def __init__(self, d_sae: int, k: int, window: int, key_dtype: Any) -> None:
        self.k = k
        self.key = np.full((d_sae, k), -np.inf, dtype=key_dtype)
        self.ctx = np.full((d_sae, k), -1, dtype=np.int32)
        self.pos = np.zeros((d_sae, k), dtype=np.int32)
        self.act = np.zeros((d_sae, k), dtype=np.float32)
        self.win = np.zeros((d_sae, k, window), dtype=np.float16)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_{name}": getattr(self, name) for name in ("key", "ctx", "pos", "act", "win")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "_Keeper":
        keeper = cls.__new__(cls)
        for name in ("key", "ctx", "pos", "act", "win"):
            setattr(keeper, name, arrays[f"{prefix}_{name}"])
        keeper.k = keeper.key.shape[1]
        return keeper

    def merge(self, f: np.ndarray, c: np.ndarray, p: np.ndarray, act: np.ndarray, key: np.ndarray, windows) -> None:
        """Offer candidates (feature, context, position, activation, key), one per (f, c),
        sorted by feature then context.

        `windows(f, c, p)` gives the window activations of the candidates that get in.
        """
        if f.size == 0:
            return
        starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
        counts = np.diff(np.r_[starts, f.size])
        features = f[starts]
        # Only features whose best candidate beats their K-th kept entry can change
        # (an equal key loses the tie: the kept entry has the smaller context id).
        enters = np.maximum.reduceat(key, starts) > self.key[features, -1]
        if not enters.any():
            return
        take = np.repeat(enters, counts)
        cols = (np.arange(f.size) - np.repeat(starts, counts))[take]
        rows = np.repeat(np.cumsum(enters) - 1, counts)[take]
        features = features[enters]
        n, width = features.size, int(counts[enters].max())
        # Candidates sit in context order after the kept entries, so a stable sort by key
        # breaks ties by context id.
        cand_key = np.full((n, width), -np.inf, dtype=self.key.dtype)
        cand_ctx = np.full((n, width), -1, dtype=np.int32)
        cand_pos = np.zeros((n, width), dtype=np.int32)
        cand_act = np.zeros((n, width), dtype=np.float32)
        cand_key[rows, cols] = key[take]
        cand_ctx[rows, cols] = c[take]
        cand_pos[rows, cols] = p[take]
        cand_act[rows, cols] = act[take]

        all_key = np.concatenate([self.key[features], cand_key], axis=1)
        sel = np.argsort(-all_key, axis=1, kind="stable")[:, : self.k]
        new_key = np.take_along_axis(all_key, sel, axis=1)
        new_ctx = np.take_along_axis(np.concatenate([self.ctx[features], cand_ctx], axis=1), sel, axis=1)
        new_pos = np.take_along_axis(np.concatenate([self.pos[features], cand_pos], axis=1), sel, axis=1)
        new_act = np.take_along_axis(np.concatenate([self.act[features], cand_act], axis=1), sel, axis=1)
        new_win = np.zeros((n, self.k, self.win.shape[2]), dtype=np.float16)
        old = sel < self.k
        r_old, k_old = np.nonzero(old)
        new_win[r_old, k_old] = self.win[features[r_old], sel[r_old, k_old]]
        r_new, k_new = np.nonzero(~old & np.isfinite(new_key))
        if r_new.size:
            new_win[r_new, k_new] = windows(features[r_new], new_ctx[r_new, k_new], new_pos[r_new, k_new])
        self.key[features] = new_key
        self.ctx[features] = new_ctx
        self.pos[features] = new_pos
        self.act[features] = new_act
        self.win[features] = new_win


# -- the index ------------------------------------------------------------------------------


class FeatureIndex:
    """Every feature's statistics and contexts; complete, or partial while a build runs."""

    def __init__(self, meta: dict[str, Any], contexts: np.ndarray, count: np.ndarray, act_sum: np.ndarray, hist: np.ndarray, top: _Keeper, samples: _Keeper) -> None:
        self.meta = meta
        self.contexts = contexts
        self.count = count
        self.act_sum = act_sum
        self.hist = hist
        self.top = top
        self.samples = samples
        self.lock = threading.RLock()
        self.path: Path | None = None

    @classmethod
    def empty(cls, meta: dict[str, Any], contexts: np.ndarray, d_sae: int) -> "FeatureIndex":
        window = int(meta["window"])
        return cls(
            meta,
            np.ascontiguousarray(contexts, dtype=np.int32),
            np.zeros(d_sae, dtype=np.int64),
            np.zeros(d_sae, dtype=np.float64),
            np.zeros((d_sae, HIST_BINS), dtype=np.int64),
            _Keeper(d_sae, int(meta["top_k"]), window, np.float32),
            _Keeper(d_sae, int(meta["samples"]), window, np.float64),
        )

    # -- facts ----------------------------------------------------------------------------

    @property
    def d_sae(self) -> int:
        return int(self.count.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.meta["top_k"])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def n_contexts(self) -> int:
        return int(self.contexts.shape[0])

    @property
    def context_len(self) -> int:
        return int(self.contexts.shape[1])

    @property
    def first_position(self) -> int:
        return int(self.meta["first_position"])

    @property
    def contexts_done(self) -> int:
        return int(self.meta["contexts_done"])

    @property
    def tokens_seen(self) -> int:
        """Tokens the statistics count (BOS excluded) so far."""
        return self.contexts_done * (self.context_len - self.first_position)

    @property
    def budget(self) -> int:
        return int(self.meta["budget"])

    def describe(self) -> str:
        done = self.tokens_seen
        total = self.n_contexts * (self.context_len - self.first_position)
        state = "" if self.complete else f" (PARTIAL: {done:,} of {total:,} tokens)"
        return f"index of {total:,} tokens ({self.n_contexts:,} contexts of {self.context_len}), top {self.top_k}{state}"

    def live_features(self) -> np.ndarray:
        with self.lock:
            return np.flatnonzero(self.count > 0)

    def window_bounds(self, positions: np.ndarray) -> np.ndarray:
        """Start of the window around each position (kept inside the context, after BOS)."""
        window = int(self.meta["window"])
        lo, hi = self.first_position, self.context_len - window
        return np.clip(np.asarray(positions) - WINDOW_BEFORE, lo, max(lo, hi))

    def feature(self, feature_id: int) -> FeatureStats:
        """What is known about a feature (safe to call from any thread, even mid-build)."""
        f = int(feature_id)
        if not 0 <= f < self.d_sae:
            raise UserError(f"Feature {f} is out of range: the SAE has {self.d_sae:,} features (0-{self.d_sae - 1})", f"Use a feature id from 0 to {self.d_sae - 1}")
        with self.lock:
            count = int(self.count[f])
            top = self._examples(self.top, f)
            sampled = self._examples(self.samples, f)
            hist = self.hist[f].copy()
            act_sum = float(self.act_sum[f])
            tokens = self.tokens_seen
            partial = not self.complete
            done = self.contexts_done
        return FeatureStats(
            feature_id=f,
            count=count,
            tokens=tokens,
            max_activation=top[0].activation if top else 0.0,
            mean_activation=act_sum / count if count else 0.0,
            histogram=hist,
            top=top,
            samples=_quantile_samples(sampled, {e.context_id for e in top}),
            partial=partial,
            contexts_done=done,
            n_contexts=self.n_contexts,
        )

    def _examples(self, keeper: _Keeper, f: int) -> list[ContextExample]:
        live = np.flatnonzero(keeper.ctx[f] >= 0)
        starts = self.window_bounds(keeper.pos[f, live])
        window = keeper.win.shape[2]
        out = []
        for j, start in zip(live, starts):
            cid, pos = int(keeper.ctx[f, j]), int(keeper.pos[f, j])
            out.append(
                ContextExample(
                    context_id=cid,
                    position=pos,
                    activation=float(keeper.act[f, j]),
                    window_start=int(start),
                    window_tokens=self.contexts[cid, start : start + window].copy(),
                    window_acts=keeper.win[f, j].astype(np.float32),
                )
            )
        return out

    # -- building -------------------------------------------------------------------------

    def absorb(self, start_context: int, feats: np.ndarray) -> None:
        """Fold in one batch: features (b, L - first, d_sae) of contexts start_context..."""
        first = self.first_position
        b, length, d = feats.shape
        # Token level (count, sum, histogram): the firing entries only.
        flat = feats.reshape(-1)
        where = np.flatnonzero(flat > 0)
        v = flat[where]
        f = where % d
        row = where // d  # context * length + position
        count = np.bincount(f, minlength=d)
        act_sum = np.bincount(f, weights=v, minlength=d)
        hist = np.bincount(f * HIST_BINS + histogram_bin(v), minlength=d * HIST_BINS).reshape(d, HIST_BINS)
        # Context level: one candidate per (feature, context), its strongest token (the
        # first on ties), listed by feature then context.
        peak = feats.max(axis=1)  # (b, d)
        c_loc, p_loc = row // length, row % length
        at_peak = v == peak[c_loc, f]
        peak_at = np.full((b, d), length, dtype=np.int64)
        np.minimum.at(peak_at, (c_loc[at_peak], f[at_peak]), p_loc[at_peak])
        gf, gc = np.nonzero(peak.T > 0)
        gv = peak[gc, gf]
        gp = peak_at[gc, gf]
        window = int(self.meta["window"])
        offsets = np.arange(window)

        def windows(features: np.ndarray, contexts: np.ndarray, positions: np.ndarray) -> np.ndarray:
            starts = self.window_bounds(positions) - first
            rows = (contexts - start_context)[:, None]
            cols = starts[:, None] + offsets[None, :]
            vals = feats[rows, cols, features[:, None]]
            return np.minimum(vals, FLOAT16_MAX).astype(np.float16)

        contexts = (gc + start_context).astype(np.int64)
        positions = gp + first
        with self.lock:
            self.count += count
            self.act_sum += act_sum
            self.hist += hist
            self.top.merge(gf, contexts, positions, gv, gv, windows)
            self.samples.merge(gf, contexts, positions, gv, sample_key(contexts, gf, d), windows)
            self.meta["contexts_done"] = start_context + b

    # -- files ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        with self.lock:
            arrays = dict(contexts=self.contexts, count=self.count, act_sum=self.act_sum, hist=self.hist)
            arrays.update(self.top.arrays("top"))
            arrays.update(self.samples.arrays("smp"))
            meta = json.dumps(self.meta, sort_keys=True, default=str)
            buffer = io.BytesIO()
            # Uncompressed: saving and loading stay fast; the zip's CRCs still catch damage.
            np.savez(buffer, meta=np.frombuffer(meta.encode("utf-8"), dtype=np.uint8), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "FeatureIndex":
        """Read an index; ValueError for anything truncated, corrupt or inconsistent."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - zip, zlib, CRC and JSON damage surface as assorted types
            raise ValueError(f"unreadable: {type(exc).__name__}") from None
        index = cls(
            meta,
            arrays.get("contexts"),
            arrays.get("count"),
            arrays.get("act_sum"),
            arrays.get("hist"),
            _Keeper.from_arrays(arrays, "top") if "top_key" in arrays else None,
            _Keeper.from_arrays(arrays, "smp") if "smp_key" in arrays else None,
        )
        index._validate()
        return index

    def _validate(self) -> None:
        meta = self.meta
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise ValueError("written by another version of saetui")
        if any(a is None for a in (self.contexts, self.count, self.act_sum, self.hist, self.top, self.samples)):
            raise ValueError("arrays missing")
        d, n = self.count.shape[0], self.contexts.shape[0]
        window = int(meta.get("window", -1))
        expected = {
            "hist": (self.hist.shape, (d, HIST_BINS)),
            "top": (self.top.win.shape, (d, int(meta.get("top_k", -1)), window)),
            "samples": (self.samples.win.shape, (d, int(meta.get("samples", -1)), window)),
            "contexts": (n, int(meta.get("n_contexts", -1))),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise ValueError(f"{name} has shape {got}, expected {want}")
        for keeper in (self.top, self.samples):
            for arr in (keeper.key, keeper.ctx, keeper.pos, keeper.act):
                if arr.shape != keeper.win.shape[:2]:
                    raise ValueError("keeper arrays disagree")
            if keeper.ctx.size and (keeper.ctx.max() >= n or keeper.ctx.min() < -1):
                raise ValueError("context ids out of range")
        done = int(meta.get("contexts_done", -1))
        if not 0 <= done <= n or (meta.get("complete") and done != n):
            raise ValueError("inconsistent progress")


def _quantile_samples(sampled: list[ContextExample], exclude: set[int], shown: int = 4) -> list[ContextExample]:
    """A few of the sampled firing contexts, spread over their activation quantiles.

    The sample is uniform over the contexts the feature fires on, so its empirical
    quantiles estimate the feature's; contexts already in the top list are skipped.
    """
    if not sampled:
        return []
    ranked = sorted(sampled, key=lambda e: (e.activation, e.context_id))
    n = len(ranked)
    for i, example in enumerate(ranked):
        example.quantile = (i + 0.5) / n
    pool = [e for e in ranked if e.context_id not in exclude]
    if len(pool) <= shown:
        return pool[::-1]
    picks = sorted({int(round(q * (len(pool) - 1))) for q in np.linspace(0.1, 0.9, shown)})
    return [pool[i] for i in picks][::-1]


# -- cache files ------------------------------------------------------------------------


def index_parts(session: "Session", budget: int, top_k: int) -> dict[str, Any]:
    from .session import THRESHOLD_BATCH

    batch = session.settings.batch_size if session.threshold_mode == THRESHOLD_BATCH else None
    return session.cache_parts(
        purpose="feature-index",
        index_format=INDEX_FORMAT,
        budget=int(budget),
        top_k=int(top_k),
        window=[WINDOW_BEFORE, WINDOW_AFTER],
        samples=SAMPLES_KEPT,
        histogram=[HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_BINS_PER_DECADE],
        batch=batch,
    )


def index_path(session: "Session", budget: int, top_k: int, partial: bool = False) -> Path:
    key = cache.cache_key(**index_parts(session, budget, top_k))
    return cache.cache_path("index", key, PARTIAL_SUFFIX if partial else SUFFIX)


def read_index(path: Path, key: str | None = None, want_complete: bool = True) -> FeatureIndex:
    """An index file; ValueError when missing parts, corrupt, for another key, or unfinished."""
    data = Path(path).read_bytes()
    index = FeatureIndex.from_bytes(data)
    if key is not None and index.meta.get("key") != key:
        raise ValueError("made for other settings")
    if want_complete and not index.complete:
        raise ValueError("an unfinished build")
    index.path = Path(path)
    return index


def load_cached(session: "Session", budget: int | None = None, top_k: int = DEFAULT_TOP_K, notes: list[str] | None = None) -> FeatureIndex | None:
    """A finished cached index answering `top_k`, or None; it becomes the session's index.

    A damaged file is deleted (and said so in `notes`), so the next build replaces it.
    """
    budget = budget or default_budget(session)
    for tier in TOP_K_TIERS:
        if tier < tier_for(top_k):
            continue
        parts = index_parts(session, budget, tier)
        key = cache.cache_key(**parts)
        path = cache.cache_path("index", key, SUFFIX)
        if not path.exists():
            continue
        try:
            index = read_index(path, key)
        except (OSError, ValueError) as exc:
            if notes is not None:
                notes.append(f"The cached feature index {path.name} is damaged ({exc}); rebuilding it")
            _unlink(path)
            continue
        session.index = index
        return index
    return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# -- building ---------------------------------------------------------------------------


def build_index(
    session: "Session",
    budget: int | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int | None = None,
    notes: list[str] | None = None,
    use_cache: bool = True,
) -> LongWork[FeatureIndex]:
    """The finished index: from the cache, resumed from a checkpoint, or built now (long work).

    One step per batch. While it runs, `session.index` answers queries with what is known
    (labelled partial). Closing the generator (a cancelled job) checkpoints what was
    folded in, so a later build resumes there. `use_cache=False` builds in memory only
    (neither reads nor writes files; for timing a build).
    """
    notes = notes if notes is not None else []
    budget = budget or default_budget(session)
    tier = tier_for(top_k)
    if use_cache:
        cached = load_cached(session, budget, tier, notes)
        if cached is not None:
            return cached
    key = cache.cache_key(**index_parts(session, budget, tier))
    paths = (cache.cache_path("index", key, SUFFIX), cache.cache_path("index", key, PARTIAL_SUFFIX))
    corpus = session.corpus(budget)
    notes.extend(corpus.notes)
    index = _resume(paths[1], key, corpus, notes) if use_cache else None
    if index is None:
        window = min(WINDOW_BEFORE + 1 + WINDOW_AFTER, corpus.context_len - corpus.first_position)
        meta = dict(
            format=INDEX_FORMAT,
            key=key,
            complete=False,
            contexts_done=0,
            n_contexts=corpus.n_contexts,
            budget=budget,
            top_k=tier,
            window=window,
            samples=SAMPLES_KEPT,
            first_position=corpus.first_position,
            dataset=session.dataset_name,
            sae=str(session.sae_path) if not session.is_demo else "demo",
            hook=str(session.hook),
            threshold_mode=session.threshold_mode,
            build_seconds=0.0,
        )
        index = FeatureIndex.empty(meta, corpus.contexts, session.d_sae)
    session.index = index
    first = corpus.first_position
    total = corpus.n_tokens
    start = index.contexts_done
    rest = corpus.contexts[start:]
    yield Progress("indexing", start * corpus.context_len, total)
    began = time.perf_counter()
    last_checkpoint = began
    pending: tuple[int, mx.array] | None = None
    finished = False
    try:
        for s0, tokens, acts in session.iter_activations(_with_contexts(corpus, rest), batch_size):
            feats = session.encode(acts[:, first:, :]).astype(mx.float32)
            # Start this batch's forward pass and encode while numpy folds in the last one.
            mx.async_eval(feats)
            if pending is not None:
                index.absorb(pending[0], np.asarray(pending[1]))
                yield Progress("indexing", index.contexts_done * corpus.context_len, total)
            pending = (start + s0, feats)
            if use_cache and time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS:
                _checkpoint(index, paths[1], notes)
                last_checkpoint = time.perf_counter()
        if pending is not None:
            index.absorb(pending[0], np.asarray(pending[1]))
            pending = None
            yield Progress("indexing", index.contexts_done * corpus.context_len, total)
        finished = True
    finally:
        index.meta["build_seconds"] = float(index.meta.get("build_seconds", 0.0)) + time.perf_counter() - began
        if not finished and use_cache:
            # Cancelled or failed: the pending batch is not in the index; a later build
            # starts again after the last context folded in (via the checkpoint).
            _checkpoint(index, paths[1], notes)
    with index.lock:
        index.meta["complete"] = True
    if use_cache:
        try:
            cache.atomic_write_bytes(paths[0], index.to_bytes())
            index.path = paths[0]
        except OSError as exc:
            notes.append(f"Could not save the feature index to the cache ({exc}); it is kept in memory")
        _unlink(paths[1])
    return index


def _with_contexts(corpus: Any, contexts: np.ndarray) -> Any:
    from dataclasses import replace

    return replace(corpus, contexts=contexts)


def _resume(partial_path: Path, key: str, corpus: Any, notes: list[str]) -> FeatureIndex | None:
    if not partial_path.exists():
        return None
    try:
        index = read_index(partial_path, key, want_complete=False)
        if index.contexts.shape != corpus.contexts.shape or not np.array_equal(index.contexts, corpus.contexts):
            raise ValueError("the dataset changed")
    except (OSError, ValueError) as exc:
        notes.append(f"The interrupted index build could not be resumed ({exc}); starting afresh")
        _unlink(partial_path)
        return None
    notes.append(f"Resuming an interrupted index build at {index.tokens_seen:,} tokens")
    return index


def _checkpoint(index: FeatureIndex, path: Path, notes: list[str]) -> None:
    """Save what is built so far as a resumable partial file (never read as finished)."""
    if index.contexts_done == 0:
        return
    try:
        cache.atomic_write_bytes(path, index.to_bytes())
    except OSError as exc:
        notes.append(f"Could not save the partial index ({exc})")
