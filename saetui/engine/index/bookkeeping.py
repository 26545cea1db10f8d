"""Folding sparse codes into the index: the device narrows, the host keeps score.

Per batch, on the MLX device, from the (feature, value) pairs of `sparse.SparseCodes`:
- counts and log-binned histograms, as scatter-adds into device tallies (a d_sae vector
  and a d_sae x bins matrix) flushed to the host at each sync;
- each (context, feature)'s strongest token (the first on ties), by a scatter-max and a
  scatter-min over the pairs;
- which of those can still enter a feature's top K (activation above its K-th kept one)
  or its sample (hash above its K-th kept one): a one-byte mask per pair.
The host reads back the pairs and the mask (O(tokens x k)), and for the few candidates
that pass it gathers their window of activations from the same pairs and offers them
to the keepers. Nothing of size tokens x d_sae is formed on either side.

Window activations are stored for the entries that get in (float16, 32 per entry), not
recomputed at lookup: recomputing means a forward pass and a full encode per feature page
(seconds for a 2048-wide model on a CPU), and recomputing for the final top K at the end
means a second pass over nearly every context. The window's token ids are not stored:
the index keeps its contexts and slices them at lookup.

Activation sums are added on the host in float64 from the pairs read back anyway: a
float64 sum of float32 values is exact while a feature's total over its smallest value
stays under 2^29, so it does not depend on how the contexts were grouped into batches,
syncs or shards (a sharded build then merges to the very same sums).

`sync` flushes the tallies, compacts the keepers and refreshes the device's floors; the
index's visible state (and `contexts_done`) changes only there, so a partial index is
always consistent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..sparse import SparseCodes
from .keeper import FLOAT16_MAX, HIST_BINS, HIST_BINS_PER_DECADE, HIST_LOG10_MIN, activation_key, histogram_edges_f32, rank_of, sample_key

# Offers buffered before the keepers are compacted (which also tightens the device's
# floors): a quarter of the top keeper's size (84 bytes an offer), at least this many.
COMPACT_MIN = 262_144


def _mix32_mx(x: mx.array) -> mx.array:
    x = x ^ (x >> 16)
    x = x * mx.array(0x85EBCA6B, dtype=mx.uint32)
    x = x ^ (x >> 13)
    x = x * mx.array(0xC2B2AE35, dtype=mx.uint32)
    return x ^ (x >> 16)


def sample_key_mx(context_ids: mx.array, features: mx.array) -> mx.array:
    """`keeper.sample_key` on the device (int32 in [0, 2^31))."""
    c = context_ids.astype(mx.uint32)
    f = features.astype(mx.uint32)
    z = _mix32_mx(c * mx.array(0x9E3779B1, dtype=mx.uint32) + _mix32_mx(f + mx.array(0x7F4A7C15, dtype=mx.uint32)))
    return (z >> 1).astype(mx.int32)


_EDGES: dict[str, mx.array] = {}


def histogram_bin_mx(values: mx.array) -> mx.array:
    """The histogram bin of positive float32 values, exactly as `keeper.histogram_bin`.

    log10 gives the bin to within one; comparing with the float32 edges settles it.
    """
    edges = _EDGES.get("f32")
    if edges is None:
        edges = _EDGES.setdefault("f32", mx.array(histogram_edges_f32()))
    v = mx.maximum(values, 1e-30)
    guess = mx.floor((mx.log10(v) - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE).astype(mx.int32) + 1
    guess = mx.clip(guess, 0, HIST_BINS - 1)
    guess = guess - (values < edges[guess]).astype(mx.int32)
    guess = guess + (values >= edges[mx.minimum(guess + 1, HIST_BINS)]).astype(mx.int32)
    return mx.clip(guess, 0, HIST_BINS - 1)


@dataclass
class PendingBatch:
    """One batch's device results, queued (`mx.async_eval`) and not yet read back."""

    start: int  # first context
    n_contexts: int
    length: int  # code positions per context (BOS excluded)
    width: int  # slots per token
    features: mx.array  # int32 (n,), n = contexts x length x width
    values: mx.array  # float32 (n,)
    mask: mx.array  # uint8 (n,): 1 top candidate, 2 sample candidate
    valid: mx.array  # int32 (n,): 1 where a feature fires
    hist_slot: mx.array  # int32 (n,): feature x bins + bin (the padding slot where none fires)

    def arrays(self) -> list[mx.array]:
        return [self.features, self.values, self.mask, self.valid, self.hist_slot]


class Bookkeeper:
    """Turns sparse codes into index state (see the module's docstring)."""

    def __init__(self, index) -> None:
        self.index = index
        d = index.d_sae
        self.d = d
        self.window = int(index.meta["window"])
        self.first = index.first_position
        self.context_len = index.context_len
        self.done = index.contexts_done  # contexts folded in, synced or not
        self._zero_tallies()
        self._refresh_floors()
        self._row_of = np.full(0, -1, dtype=np.int32)
        self.compact_at = max(COMPACT_MIN, d * index.top_k // 4)
        self.last_sync: float | None = None  # perf_counter of the last sync (None: never)

    def _zero_tallies(self) -> None:
        self.count = mx.zeros((self.d,), dtype=mx.int32)
        self.act_sum = np.zeros((self.d,), dtype=np.float64)
        self.hist = mx.zeros((self.d * HIST_BINS + 1,), dtype=mx.int32)  # + a slot for padding

    def _refresh_floors(self) -> None:
        self.floor_top = mx.array(self.index.top.floor_activation())
        self.floor_smp = mx.array(self.index.samples.floor_primary().astype(np.int32))

    # -- device -------------------------------------------------------------------------------

    def queue(self, start: int, codes: SparseCodes) -> PendingBatch:
        """Queue one batch's device work (codes of contexts start.., BOS excluded)."""
        b, length, width = (int(s) for s in codes.values.shape)
        d = self.d
        F = codes.features.reshape(-1).astype(mx.int32)
        V = codes.values.reshape(-1).astype(mx.float32)
        n = F.size
        slot = mx.arange(n, dtype=mx.int32)
        c = slot // (length * width)
        pos = (slot // width) % length
        cf = c * d + F
        valid = V > 0
        peak = mx.zeros((b * d,), dtype=mx.float32).at[cf].maximum(V)
        at_peak = valid & (V == peak[cf])
        first = mx.full((b * d,), length, dtype=mx.int32).at[cf].minimum(mx.where(at_peak, pos, length))
        rep = at_peak & (pos == first[cf])
        top = rep & (V > self.floor_top[F])
        smp = rep & (sample_key_mx(c + start, F) > self.floor_smp[F])
        mask = top.astype(mx.uint8) + 2 * smp.astype(mx.uint8)
        hist_slot = mx.where(valid, F * HIST_BINS + histogram_bin_mx(V), d * HIST_BINS)
        pending = PendingBatch(start, b, length, width, F, V, mask, valid.astype(mx.int32), hist_slot)
        # The tallies of the batch folded before this one are added now, on the device.
        mx.async_eval(*pending.arrays(), self.count, self.hist)
        return pending

    # -- host ---------------------------------------------------------------------------------

    def fold(self, p: PendingBatch) -> None:
        """Read one batch back and offer its candidates to the keepers."""
        # Tallied when folded (queued lazily on the device), so they always cover exactly
        # the batches folded in, whatever is still queued.
        self.count = self.count.at[p.features].add(p.valid)
        self.hist = self.hist.at[p.hist_slot].add(mx.ones_like(p.hist_slot))
        mask = np.asarray(p.mask)
        cand = np.flatnonzero(mask)
        F = np.asarray(p.features)
        V = np.asarray(p.values)
        self.act_sum += np.bincount(F, weights=np.where(V > 0, V, 0).astype(np.float64), minlength=self.d)
        if cand.size:
            self._offer(p, F, V, mask, cand)
        self.done += p.n_contexts
        # Otherwise the driver syncs when it wants the partial state seen (slices, checkpoints).
        if self.index.top.pending + self.index.samples.pending >= self.compact_at:
            self.sync()

    def _offer(self, p: PendingBatch, F: np.ndarray, V: np.ndarray, mask: np.ndarray, cand: np.ndarray) -> None:
        d, w, length, first = self.d, p.width, p.length, self.first
        per_ctx = length * w
        c_loc = cand // per_ctx
        f = F[cand].astype(np.int64)
        act = V[cand]
        pos = ((cand // w) % length + first).astype(np.int32)
        ctx = (c_loc + p.start).astype(np.int32)
        starts = self.index.window_bounds(pos)
        # Each candidate's window, from the batch's pairs: a pair (context, position,
        # feature) lands in the window of the candidate for its (context, feature).
        size = p.n_contexts * d
        if self._row_of.size < size:
            self._row_of = np.full(size, -1, dtype=np.int32)
        row_of = self._row_of
        cf = c_loc * d + f
        row_of[cf] = np.arange(cand.size, dtype=np.int32)
        pair_cf = (np.arange(F.size) // per_ctx) * d + F
        r = row_of[pair_cf]
        hit = np.flatnonzero(r >= 0)
        row_of[cf] = -1
        r = r[hit]
        col = (hit // w) % length + first - starts[r]
        ok = (col >= 0) & (col < self.window)
        win = np.zeros((cand.size, self.window), dtype=np.float16)
        win[r[ok], col[ok]] = np.minimum(V[hit[ok]], FLOAT16_MAX)
        m = mask[cand]
        top = (m & 1) > 0
        if top.any():
            self.index.top.offer(f[top], rank_of(activation_key(act[top]), ctx[top]), ctx[top], pos[top], act[top], win[top])
        smp = (m & 2) > 0
        if smp.any():
            key = sample_key(ctx[smp], f[smp])
            self.index.samples.offer(f[smp], rank_of(key, ctx[smp]), ctx[smp], pos[smp], act[smp], win[smp])

    def sync(self) -> None:
        """Make everything folded so far visible in the index, and tighten the floors."""
        mx.eval(self.count, self.hist)
        count = np.asarray(self.count).astype(np.int64)
        act_sum = self.act_sum
        hist = np.asarray(self.hist[:-1]).astype(np.int64).reshape(self.d, HIST_BINS)
        index = self.index
        with index.lock:
            index.count += count
            index.act_sum += act_sum
            index.hist += hist
            index.top.compact()
            index.samples.compact()
            index.meta["contexts_done"] = self.done
        self._zero_tallies()
        self._refresh_floors()
        self.last_sync = time.perf_counter()
