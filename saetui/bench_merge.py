"""The distributed index's reduce step alone: `python -m saetui.bench_merge [--d-sae N] [--top-k K]`.

Two synthetic shard states over disjoint contexts (full keepers: every feature has K top
entries and its samples), built with the index's own classes, then timed: serializing a
shard for the wire (`distributed.shard_to_bytes`), reading it back, `merge_shards`, and
writing the final file (`FeatureIndex.to_bytes`). Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .engine.index.distributed import merge_shards, shard_from_bytes, shard_to_bytes
from .engine.index.keeper import HIST_BINS, activation_key, rank_of, sample_key
from .engine.index.store import INDEX_FORMAT, SAMPLES_KEPT, WINDOW_AFTER, WINDOW_BEFORE, FeatureIndex


def synthetic_shard(d_sae: int, top_k: int, contexts: np.ndarray, lo: int, hi: int, seed: int) -> FeatureIndex:
    """A full state for contexts [lo, hi): K top entries and the samples of every feature."""
    rng = np.random.default_rng(seed)
    window = WINDOW_BEFORE + 1 + WINDOW_AFTER
    meta = dict(format=INDEX_FORMAT, key="bench", complete=False, contexts_done=hi - lo, n_contexts=contexts.shape[0], budget=contexts.size,
                top_k=top_k, window=window, samples=SAMPLES_KEPT, first_position=1, build_seconds=0.0)
    index = FeatureIndex.empty(meta, contexts, d_sae)
    span = hi - lo
    for keeper, k, is_top in ((index.top, top_k, True), (index.samples, SAMPLES_KEPT, False)):
        rows = np.repeat(np.arange(d_sae), k)
        ctx = (lo + (rows * 7919 + np.tile(np.arange(k), d_sae) * (span // k)) % span).astype(np.int32)
        act = rng.gamma(2.0, 1.0, rows.size).astype(np.float32) + np.float32(0.01)
        primary = activation_key(act) if is_top else sample_key(ctx, rows)
        win = rng.random((rows.size, window), dtype=np.float32).astype(np.float16)
        pos = rng.integers(1, contexts.shape[1], rows.size).astype(np.int32)
        keeper.offer(rows, rank_of(primary, ctx), ctx, pos, act, win)
        keeper.compact()
        keeper.sort_rows()
    index.count = rng.integers(0, span * 10, d_sae).astype(np.int64)
    index.act_sum = rng.random(d_sae) * 1000
    index.hist = rng.integers(0, 100, (d_sae, HIST_BINS)).astype(np.int64)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m saetui.bench_merge")
    parser.add_argument("--d-sae", type=int, default=32_768)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--contexts", type=int, default=8192)
    parser.add_argument("--context-len", type=int, default=128)
    args = parser.parse_args()
    contexts = np.zeros((args.contexts, args.context_len), dtype=np.int32)
    half = args.contexts // 2
    a = synthetic_shard(args.d_sae, args.top_k, contexts, 0, half, 0)
    b = synthetic_shard(args.d_sae, args.top_k, contexts, half, args.contexts, 1)
    t = time.perf_counter()
    wire = shard_to_bytes(b)
    t_ser = time.perf_counter() - t
    t = time.perf_counter()
    b2 = shard_from_bytes(wire, contexts)
    t_de = time.perf_counter() - t
    t = time.perf_counter()
    merged = merge_shards([a, b2])
    t_merge = time.perf_counter() - t
    t = time.perf_counter()
    final = merged.to_bytes()
    t_file = time.perf_counter() - t
    print(json.dumps(dict(figure="index_merge", d_sae=args.d_sae, top_k=args.top_k, shard_bytes=len(wire), file_bytes=len(final),
                          serialize_s=round(t_ser, 3), deserialize_s=round(t_de, 3), merge_s=round(t_merge, 3), write_bytes_s=round(t_file, 3))))


if __name__ == "__main__":
    main()
