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
    """Per feature, the K entries of largest rank (rank -1: an empty slot).

    A row's filled slots are a prefix, in no particular order while a build runs (so an
    offer that fits is written where it lands, and only rows that overflow are re-ranked);
    `sort_rows` puts every row best first, as files and queries show them.
    """

    FIELDS = ("key", "ctx", "pos", "act", "win")

    def __init__(self, d_sae: int, k: int, window: int) -> None:
        self.k = int(k)
        self.key = np.full((d_sae, k), EMPTY, dtype=np.int64)  # the rank
        self.ctx = np.full((d_sae, k), -1, dtype=np.int32)
        self.pos = np.zeros((d_sae, k), dtype=np.int32)
        self.act = np.zeros((d_sae, k), dtype=np.float32)
        self.win = np.zeros((d_sae, k, window), dtype=np.float16)
        self.n = np.zeros(d_sae, dtype=np.int64)  # filled slots per row
        self._offers: list[tuple[np.ndarray, ...]] = []
        self.pending = 0

    # -- files ------------------------------------------------------------------------------

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        self.compact()
        self.sort_rows()
        return {f"{prefix}_{name}": getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "Keeper":
        keeper = cls.__new__(cls)
        for name in cls.FIELDS:
            setattr(keeper, name, arrays[f"{prefix}_{name}"])
        keeper.k = keeper.key.shape[1]
        keeper.n = (keeper.ctx >= 0).sum(axis=1).astype(np.int64)
        keeper._offers = []
        keeper.pending = 0
        return keeper

    # -- what can still get in ----------------------------------------------------------------

    def full(self) -> np.ndarray:
        return self.n >= self.k

    def floor_primary(self) -> np.ndarray:
        """Per feature, the K-th kept primary key (-1 while fewer than K are kept).

        A later context (larger id) with a primary key at or below it cannot get in.
        """
        return np.where(self.full(), self.key.min(axis=1) >> np.int64(31), -1)

    def floor_activation(self) -> np.ndarray:
        """Per feature, the K-th kept activation (0 while fewer than K are kept)."""
        return np.where(self.full(), self.act.min(axis=1), np.float32(0.0)).astype(np.float32)

    def row_order(self, f: int) -> np.ndarray:
        """The filled slots of row f, best first."""
        n = int(self.n[f])
        return np.argsort(-self.key[f, :n], kind="stable")

    def sort_rows(self) -> None:
        """Put every row best first (empty slots last)."""
        order = np.argsort(-self.key, axis=1, kind="stable")
        if np.array_equal(order, np.broadcast_to(np.arange(self.k), order.shape)):
            return
        for name in self.FIELDS:
            arr = getattr(self, name)
            idx = order if arr.ndim == 2 else order[:, :, None]
            setattr(self, name, np.ascontiguousarray(np.take_along_axis(arr, idx, axis=1)))

    # -- offering ----------------------------------------------------------------------------------

    def offer(self, f: np.ndarray, key: np.ndarray, ctx: np.ndarray, pos: np.ndarray, act: np.ndarray, win: np.ndarray) -> None:
        """Candidates (feature, rank, context, position, activation, window), at most one per
        (feature, context) over the keeper's life. Folded in by `compact`."""
        if f.size:
            self._offers.append((f.astype(np.int64, copy=False), key, ctx.astype(np.int32, copy=False), pos.astype(np.int32, copy=False), act.astype(np.float32, copy=False), win))
            self.pending += int(f.size)

    def _write(self, dest: np.ndarray, sources: dict[str, np.ndarray]) -> None:
        d, k = self.key.shape
        for name, values in sources.items():
            arr = getattr(self, name)
            arr.reshape(d * k, *arr.shape[2:])[dest] = values

    def compact(self) -> None:
        """Fold the offers in. Offers that fit their row's free slots are written there;
        rows that overflow are re-ranked (their kept entries and offers, one sort)."""
        if not self._offers:
            return
        parts = list(zip(*self._offers))
        f_new = np.concatenate(parts[0])
        new = {name: np.concatenate(parts[i + 1]) for i, name in enumerate(self.FIELDS)}
        self._offers, self.pending = [], 0
        d, k = self.key.shape
        f_type = np.uint16 if d <= 1 << 16 else np.int64  # radix sort when it fits 16 bits
        by_f = np.argsort(f_new.astype(f_type), kind="stable")
        f_sorted = f_new[by_f]
        starts = np.flatnonzero(np.r_[True, f_sorted[1:] != f_sorted[:-1]])
        counts = np.diff(np.r_[starts, f_sorted.size])
        rows = f_sorted[starts]
        have = self.n[rows]
        fits = have + counts <= k
        fit_each = np.repeat(fits, counts)
        # Rows with room: each offer takes the next free slot.
        into = by_f[fit_each]
        slot = (np.repeat(have, counts) + np.arange(f_sorted.size) - np.repeat(starts, counts))[fit_each]
        self._write(f_sorted[fit_each] * k + slot, {name: values[into] for name, values in new.items()})
        self.n[rows[fits]] += counts[fits]
        # Rows that overflow: keep the k best of the kept entries and the offers.
        over = rows[~fits]
        if not over.size:
            return
        extra = by_f[~fit_each]
        kept_slot = (over[:, None] * k + np.arange(k)[None, :])[np.arange(k)[None, :] < self.n[over][:, None]]
        n_kept = kept_slot.size
        f_all = np.concatenate([kept_slot // k, f_new[extra]])
        key_all = np.concatenate([self.key.reshape(-1)[kept_slot], new["key"][extra]])
        by_rank = np.argsort(-key_all)
        order = by_rank[np.argsort(f_all[by_rank].astype(f_type), kind="stable")]
        fs = f_all[order]
        group = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
        rank = np.arange(fs.size) - np.repeat(group, np.diff(np.r_[group, fs.size]))
        keep = rank < k
        src, dest = order[keep], fs[keep] * k + rank[keep]
        old = src < n_kept
        gathered = {}
        for name, values in new.items():
            arr = getattr(self, name)
            flat = arr.reshape(d * k, *arr.shape[2:])
            out = np.empty((src.size, *flat.shape[1:]), dtype=flat.dtype)
            out[old] = flat[kept_slot[src[old]]]
            out[~old] = values[extra[src[~old] - n_kept]]
            gathered[name] = out
        self._write(dest, gathered)  # every slot of an overflowing row is written
        self.n[over] = k

    def merge(self, other: "Keeper") -> None:
        """Fold in every entry another keeper holds (disjoint contexts)."""
        other.compact()
        r, c = np.nonzero(other.ctx >= 0)
        self.offer(r, other.key[r, c], other.ctx[r, c], other.pos[r, c], other.act[r, c], other.win[r, c])
        self.compact()
