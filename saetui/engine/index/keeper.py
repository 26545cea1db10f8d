"""The exact top-K keeper, and the per-feature numbers every keeper entry is ranked by.

A `Keeper` holds, per feature, the K entries with the largest 64-bit rank: a 31-bit
primary key (an activation's float32 bits, or a sample hash) above a tie-break that
prefers the smaller context id. Every (feature, context) pair is offered at most once,
so ranks are unique within a feature: the kept set and its order depend only on the
set of entries offered, never on the order or the grouping they arrive in. That is what
makes a sharded build exact: `merge` of two keepers built over disjoint contexts equals
one keeper built over both.

Offers are buffered and folded in (`compact`) in one sort, so the cost is one sort per
few hundred thousand candidates instead of one per batch. The builder filters candidates
against `floor_*` (each feature's K-th kept key) first, so after the first contexts only
the few that can still get in are offered.
"""

from __future__ import annotations

import numpy as np

# Histogram: bin 0 holds (0, 1e-4), then 8 bins per decade up to 1e4, then >= 1e4.
HIST_LOG10_MIN = -4.0
HIST_LOG10_MAX = 4.0
HIST_BINS_PER_DECADE = 8
HIST_INNER = int((HIST_LOG10_MAX - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE)
HIST_BINS = HIST_INNER + 2
FLOAT16_MAX = float(np.finfo(np.float16).max)
CTX_MASK = np.int64(0x7FFFFFFF)
EMPTY = np.int64(-1)


def histogram_edges() -> np.ndarray:
    """The HIST_BINS + 1 bin edges: 0, 1e-4, ..., 1e4, inf."""
    inner = 10.0 ** np.linspace(HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_INNER + 1)
    return np.concatenate([[0.0], inner, [np.inf]])


def histogram_edges_f32() -> np.ndarray:
    """The edges as the smallest float32 at or above each: for a float32 value v,
    v >= edge64 exactly when v >= edge32, so float32 arithmetic bins exactly."""
    edges = histogram_edges()
    e32 = edges.astype(np.float32)
    low = e32.astype(np.float64) < edges
    e32[low] = np.nextafter(e32[low], np.float32(np.inf))
    return e32


def histogram_bin(values: np.ndarray) -> np.ndarray:
    """The bin of each positive activation (see `histogram_edges`)."""
    v = np.asarray(values, dtype=np.float64)
    return np.clip(np.searchsorted(histogram_edges(), v, side="right") - 1, 0, HIST_BINS - 1)


def _mix32(x: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser (uint32 in, uint32 out, wrapping)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def sample_key(context_ids: np.ndarray, features: np.ndarray) -> np.ndarray:
    """A pseudo-random 31-bit key per (context, feature): order-free and deterministic.

    The contexts with the K largest keys are a uniform sample of those a feature fires on.
    `bookkeeping.sample_key_mx` computes the same numbers on the device.
    """
    with np.errstate(over="ignore"):
        c = np.asarray(context_ids).astype(np.uint32)
        f = np.asarray(features).astype(np.uint32)
        z = _mix32(c * np.uint32(0x9E3779B1) + _mix32(f + np.uint32(0x7F4A7C15)))
    return (z >> np.uint32(1)).astype(np.int64)


def activation_key(act: np.ndarray) -> np.ndarray:
    """The float32 bits of positive activations: integers in the same order as the values."""
    return np.ascontiguousarray(act, dtype=np.float32).view(np.int32).astype(np.int64)


def rank_of(primary: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """The 62-bit rank: primary key, then the smaller context id."""
    return (np.asarray(primary, dtype=np.int64) << np.int64(31)) | (CTX_MASK - np.asarray(ctx, dtype=np.int64))


class Keeper:
    """Per feature, the K entries of largest rank, rows sorted best first (rank -1: empty)."""

    FIELDS = ("key", "ctx", "pos", "act", "win")

    def __init__(self, d_sae: int, k: int, window: int) -> None:
        self.k = int(k)
        self.key = np.full((d_sae, k), EMPTY, dtype=np.int64)  # the rank
        self.ctx = np.full((d_sae, k), -1, dtype=np.int32)
        self.pos = np.zeros((d_sae, k), dtype=np.int32)
        self.act = np.zeros((d_sae, k), dtype=np.float32)
        self.win = np.zeros((d_sae, k, window), dtype=np.float16)
        self._offers: list[tuple[np.ndarray, ...]] = []
        self.pending = 0

    # -- files ------------------------------------------------------------------------------

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_{name}": getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "Keeper":
        keeper = cls.__new__(cls)
        for name in cls.FIELDS:
            setattr(keeper, name, arrays[f"{prefix}_{name}"])
        keeper.k = keeper.key.shape[1]
        keeper._offers = []
        keeper.pending = 0
        return keeper

    # -- what can still get in ----------------------------------------------------------------

    def full(self) -> np.ndarray:
        return self.ctx[:, -1] >= 0

    def floor_primary(self) -> np.ndarray:
        """Per feature, the K-th kept primary key (-1 while fewer than K are kept).

        A later context (larger id) with a primary key at or below it cannot get in.
        """
        return np.where(self.full(), self.key[:, -1] >> np.int64(31), -1)

    def floor_activation(self) -> np.ndarray:
        """Per feature, the K-th kept activation (0 while fewer than K are kept)."""
        return np.where(self.full(), self.act[:, -1], np.float32(0.0)).astype(np.float32)

    # -- offering ----------------------------------------------------------------------------------

    def offer(self, f: np.ndarray, key: np.ndarray, ctx: np.ndarray, pos: np.ndarray, act: np.ndarray, win: np.ndarray) -> None:
        """Candidates (feature, rank, context, position, activation, window), at most one per
        (feature, context) over the keeper's life. Folded in by `compact`."""
        if f.size:
            self._offers.append((f.astype(np.int64, copy=False), key, ctx.astype(np.int32, copy=False), pos.astype(np.int32, copy=False), act.astype(np.float32, copy=False), win))
            self.pending += int(f.size)

    def compact(self) -> None:
        """Fold the offers in: one sort of the offers and the kept rows they touch."""
        if not self._offers:
            return
        f_new, key_new, ctx_new, pos_new, act_new, win_new = (np.concatenate(parts) for parts in zip(*self._offers))
        self._offers, self.pending = [], 0
        d, k = self.key.shape
        touched = np.zeros(d, dtype=bool)
        touched[f_new] = True
        rows = np.flatnonzero(touched)
        # Kept entries of the touched rows, as flat slots (row * k + column).
        live = self.ctx[rows] >= 0
        kept_slot = (rows[:, None] * k + np.arange(k)[None, :])[live]
        kept_f = kept_slot // k
        n_kept = kept_slot.size
        flat_key = self.key.reshape(-1)
        f_all = np.concatenate([kept_f, f_new])
        key_all = np.concatenate([flat_key[kept_slot], key_new])
        # Feature, then rank descending: ranks sort first, then a stable sort by feature.
        by_rank = np.argsort(-key_all)
        f_type = np.uint16 if d <= 1 << 16 else np.int64  # radix sort when it fits 16 bits
        order = by_rank[np.argsort(f_all[by_rank].astype(f_type), kind="stable")]
        f_sorted = f_all[order]
        starts = np.flatnonzero(np.r_[True, f_sorted[1:] != f_sorted[:-1]])
        rank = np.arange(f_sorted.size) - np.repeat(starts, np.diff(np.r_[starts, f_sorted.size]))
        keep = rank < k
        src = order[keep]
        dest = f_sorted[keep] * k + rank[keep]
        # Rows never shrink (offers only add entries), so every slot kept before is
        # written again: no clearing needed. Gather everything before writing anything.
        old = src < n_kept
        old_src, new_src = kept_slot[src[old]], src[~old] - n_kept
        d_old, d_new = dest[old], dest[~old]
        for name, new in (("key", key_new), ("ctx", ctx_new), ("pos", pos_new), ("act", act_new), ("win", win_new)):
            arr = getattr(self, name)
            flat = arr.reshape(d * k, *arr.shape[2:])
            moved = flat[old_src]
            flat[d_new] = new[new_src]
            flat[d_old] = moved

    def merge(self, other: "Keeper") -> None:
        """Fold in every entry another keeper holds (disjoint contexts)."""
        self.compact()
        other.compact()
        r, c = np.nonzero(other.ctx >= 0)
        self.offer(r, other.key[r, c], other.ctx[r, c], other.pos[r, c], other.act[r, c], other.win[r, c])
        self.compact()
