"""`saetui index [SAE] [--max-tokens N] [--top-k K] [--json]`: build the feature index headless.

Builds (or resumes, or finds cached) the index `saetui`, `top-texts` and the feature
page read for the same settings, with Rich's progress on stderr (tokens, tokens/s, ETA),
then prints what it built. Useful alone: precompute over SSH before opening the app.

Under `mlx.launch` (`mlx.launch -n 2 -- python -m saetui index ...`, or `--hosts mac1,mac2`)
each rank indexes its share of the contexts and rank 0 merges them and writes the same
cache file (engine/index/distributed.py); only rank 0 shows progress and prints.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..engine.errors import UserError
from ..engine.index import MAX_TOP_K, build_index, default_budget, tier_for
from ..engine.index.distributed import DistributedBuild, launched_group
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe, visible
from .top_texts import print_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, help="token budget of the index (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--top-k", type=int, default=MAX_TOP_K, help=f"top contexts kept per feature (default and most: {MAX_TOP_K}; the index is built for {MAX_TOP_K})")
    parser.add_argument("--json", action="store_true", help="print JSON: {tokens_indexed, live_features, dead_features, d_sae, seconds, built, cache_file, ranks, ...}")


def run(args: argparse.Namespace, engine) -> int:
    top_k = tier_for(args.top_k)  # 1..100, or a one-line error before any work
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UserError(f"--max-tokens {args.max_tokens} leaves nothing to index", "Pass a positive number of tokens")
    group = launched_group()  # None unless started by mlx.launch with several ranks
    rank, ranks = (group.rank(), group.size()) if group is not None else (0, 1)
    session = engine.call_job("loading", engine.opening)
    budget = default_budget(session)
    notes: list[str] = []
    started = time.perf_counter()
    sharded = DistributedBuild(session, group, budget, top_k) if group is not None else None
    if rank == 0:
        with cli_progress() as progress:
            index = _build(engine, session, sharded, budget, top_k, notes, progress)
        built = progress.reported
    else:
        _build(engine, session, sharded, budget, top_k, notes, None)
        return 0  # rank 0 reports for everyone (mlx.launch merges the ranks' output)
    print_notes(notes)
    seconds = time.perf_counter() - started
    live = int(index.live_features().size)
    summary = {
        "tokens_indexed": index.tokens_seen,
        "contexts": index.n_contexts,
        "context_len": index.context_len,
        "d_sae": index.d_sae,
        "live_features": live,
        "dead_features": index.d_sae - live,
        "top_k": index.top_k,
        "budget": index.budget,
        "built": bool(built),
        "seconds": round(seconds, 3),
        "tokens_per_second": round(index.tokens_seen / seconds, 1) if built and seconds > 0 else None,
        "ranks": ranks,
        "cache_file": str(index.path) if index.path else None,
    }
    if sharded is not None and built:
        summary["exchange_seconds"] = round(sharded.exchange_seconds, 3)  # serializing and all_gather of the states
        summary["merge_seconds"] = round(sharded.merge_seconds, 3)  # rank 0's merge and file write
        summary["shard_bytes"] = sharded.wire_bytes  # rank 0's state on the wire
    if args.json:
        sys.stdout.write(dumps_json_safe(summary, indent=2) + "\n")
        return 0
    how = f"built in {seconds:.1f}s ({summary['tokens_per_second']:,.0f} tokens/s" + (f", {ranks} ranks)" if ranks > 1 else ")") if built else "already cached"
    print(f"Indexed {summary['tokens_indexed']:,} tokens ({index.n_contexts:,} contexts of {index.context_len}), {how}")
    print(f"Features: {live:,} live, {summary['dead_features']:,} dead of {index.d_sae:,}; top {index.top_k} contexts each")
    print(f"Cache file: {visible(summary['cache_file'] or '(not saved)')}")
    return 0


def _build(engine, session, sharded, budget, top_k, notes, progress):
    if sharded is None:
        return engine.call_job("indexing", build_index, session, budget, top_k, None, notes, on_progress=progress)
    try:
        return engine.call_job("indexing", sharded.run, on_progress=progress)
    finally:
        notes.extend(sharded.notes)
