"""The index's state and its queries: what one feature's page and `top-texts` read.

State per feature: count, summed activation and histogram of the tokens it fires on,
its top-K contexts and a uniform sample of the contexts it fires on (`keeper.Keeper`),
and the contexts' token ids (windows are sliced from them at lookup). Two states built
over disjoint sets of contexts `merge` into exactly the state of one build over both
(sums add; keepers re-rank by a total order), which is what a sharded build reduces with.

Files: one uncompressed `.npz` (zip CRCs catch damage) with a JSON `meta`; `from_bytes`
raises ValueError for anything truncated, corrupt, inconsistent or of another format.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .keeper import HIST_BINS, Keeper

# 2: sparse-code bookkeeping (keeper ranks, exact float32 histogram edges, 31-bit sample keys).
INDEX_FORMAT = 2
# Tokens kept around a context's strongest token (it sits at index WINDOW_BEFORE).
WINDOW_BEFORE = 24
WINDOW_AFTER = 7
# Randomly sampled firing contexts kept per feature (for the quantile samples).
SAMPLES_KEPT = 12


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


class FeatureIndex:
    """Every feature's statistics and contexts; complete, or partial while a build runs."""

    def __init__(self, meta: dict[str, Any], contexts: np.ndarray, count: np.ndarray, act_sum: np.ndarray, hist: np.ndarray, top: Keeper, samples: Keeper) -> None:
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
            Keeper(d_sae, int(meta["top_k"]), window),
            Keeper(d_sae, int(meta["samples"]), window),
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

    def density(self, feature_id: int) -> tuple[float, bool]:
        """(fraction of the indexed tokens the feature fires on, partial): cheap enough for the
        UI thread (no examples are built), safe mid-build."""
        f = int(feature_id)
        if not 0 <= f < self.d_sae:
            raise UserError(f"Feature {f} is out of range: the SAE has {self.d_sae:,} features (0-{self.d_sae - 1})", f"Use a feature id from 0 to {self.d_sae - 1}")
        with self.lock:
            count, tokens, partial = int(self.count[f]), self.tokens_seen, not self.complete
        return (count / tokens if tokens else 0.0), partial

    def _examples(self, keeper: Keeper, f: int) -> list[ContextExample]:
        live = keeper.row_order(f)
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

    # -- folding in and merging ---------------------------------------------------------------

    def absorb(self, start_context: int, feats: np.ndarray) -> None:
        """Fold in one batch given as dense features (b, L - first, d_sae) of contexts
        start_context.. (tests and small inputs; builds fold sparse codes in directly)."""
        import mlx.core as mx

        from ..sparse import threshold_codes
        from .bookkeeping import Bookkeeper

        keeper = Bookkeeper(self)
        keeper.done = self.contexts_done
        keeper.fold(keeper.queue(start_context, threshold_codes(mx.array(np.asarray(feats, dtype=np.float32)), 0.0)))
        keeper.sync()
        with self.lock:
            self.top.sort_rows()
            self.samples.sort_rows()

    def merge(self, other: "FeatureIndex") -> "FeatureIndex":
        """This state and another over a disjoint set of the same contexts, as one state.

        Exact: equal to one build over both sets (sums add; each keeper keeps the K best
        by a total order). `contexts_done` adds up; `complete` is left to the caller.
        """
        if other.d_sae != self.d_sae or other.top_k != self.top_k or other.meta.get("window") != self.meta.get("window") or other.meta.get("samples") != self.meta.get("samples"):
            raise ValueError("the two index states have different shapes")
        if other.contexts.shape != self.contexts.shape or not np.array_equal(other.contexts, self.contexts):
            raise ValueError("the two index states cover different corpora")
        with self.lock, other.lock:
            out = FeatureIndex.empty(dict(self.meta), self.contexts, self.d_sae)
            out.count = self.count + other.count
            out.act_sum = self.act_sum + other.act_sum
            out.hist = self.hist + other.hist
            for mine, theirs, dest in ((self.top, other.top, out.top), (self.samples, other.samples, out.samples)):
                dest.merge(mine)
                dest.merge(theirs)
                dest.sort_rows()
            out.meta["contexts_done"] = self.contexts_done + other.contexts_done
            out.meta["complete"] = False
        return out

    # -- files ----------------------------------------------------------------------------

    def to_bytes(self, with_contexts: bool = True) -> bytes:
        """The index as a file (`with_contexts=False`: the state alone, for ranks that hold the corpus)."""
        with self.lock:
            arrays = dict(count=self.count, act_sum=self.act_sum, hist=self.hist)
            if with_contexts:
                arrays["contexts"] = self.contexts
            arrays.update(self.top.arrays("top"))
            arrays.update(self.samples.arrays("smp"))
            meta = json.dumps(self.meta, sort_keys=True, default=str)
            buffer = io.BytesIO()
            # Uncompressed: saving and loading stay fast; the zip's CRCs still catch damage.
            arrays["meta"] = np.frombuffer(meta.encode("utf-8"), dtype=np.uint8)
            np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its bool flag
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, contexts: np.ndarray | None = None) -> "FeatureIndex":
        """Read an index; ValueError for anything truncated, corrupt or inconsistent.

        `contexts`: the corpus's contexts, for state written without them."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - zip, zlib, CRC and JSON damage surface as assorted types
            raise ValueError(f"unreadable: {type(exc).__name__}") from None
        if contexts is not None:
            arrays["contexts"] = contexts
        missing = [name for name in ("contexts", "count", "act_sum", "hist", "top_key", "smp_key") if name not in arrays]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        index = cls(
            meta,
            arrays["contexts"],
            arrays["count"],
            arrays["act_sum"],
            arrays["hist"],
            Keeper.from_arrays(arrays, "top"),
            Keeper.from_arrays(arrays, "smp"),
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


