"""`saetui top-features [SAE] TEXT [--top-k K] [--rank distinctive|activation] [--json]`.

One forward pass over the text (tokenised like the corpus, `[BOS] + tokens`, cut to one
context; BOS left out). `--rank activation` is the guide's `get_top_activating_features`:
each feature scored by its maximum over the tokens, strongest first, ties by feature id.
`--rank distinctive` (the default) ranks by how unusual that maximum is for the feature
(engine/ranking.py), which needs the feature index (built and cached when missing).
Every row names the token the feature peaked on and the feature's automatic explanation.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.errors import UserError
from ..ui.safe_text import dumps_json_safe, visible
from .top_texts import feature_names, print_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to analyse")
    parser.add_argument("--top-k", type=int, default=10, help="how many features (default 10)")
    parser.add_argument("--max-tokens", type=int, help="token budget of the index the distinctive ranking reads (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--rank", choices=("distinctive", "activation"), default="distinctive", help="distinctive (default): how unusual the activation is for the feature, from the index; activation: the guide's raw maximum")
    parser.add_argument("--json", action="store_true", help="print JSON: {text, rank, features: [{feature_id, activation, score, peak_token, peak_position, name, explanation}]}")


def run(args: argparse.Namespace, engine) -> int:
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k} is too small", "Ask for at least 1 feature")
    if not args.text.strip():
        raise UserError("The text is empty", "Pass some text to analyse, e.g. saetui top-features \"Paris is in France\"")
    session = engine.call_job("loading", engine.opening)
    from ..engine.probe import probe_text
    from ..engine.ranking import RANK_DISTINCTIVE, rank_text
    from .search import explanation_json, index_and_explanations

    # The distinctive ranking needs the index; the raw one shows explanations when one is cached.
    index, explanations = index_and_explanations(engine, session, cached_only=args.rank != RANK_DISTINCTIVE)
    result = engine.call(probe_text, session, args.text, (), session.d_sae)
    rows = rank_text(index, result, args.rank, args.top_k)
    first = 1 if result.n_tokens and getattr(session.tokenizer, "bos_token_id", None) is not None else 0
    names = feature_names(engine)
    notes = [result.notice] if result.notice else []
    if args.json:
        payload = {
            "text": args.text,
            "tokens": result.n_tokens,
            "truncated": result.truncated,
            "rank": args.rank,
            "features": [
                {
                    "feature_id": r.feature_id,
                    "activation": r.max_activation,
                    "score": r.score,
                    "peak_token": r.peak_token,
                    "peak_position": r.peak_index + first,
                    "name": names.get(r.feature_id),
                    "explanation": explanation_json(explanations.get(r.feature_id)),
                }
                for r in rows
            ],
        }
        sys.stdout.write(dumps_json_safe(payload, indent=2) + "\n")
        print_notes(notes)
        return 0
    print_notes(notes)
    how = "how unusual the activation is for the feature (index)" if args.rank == RANK_DISTINCTIVE else "max activation over the tokens"
    print(f"Top {len(rows)} features for \"{visible(args.text[:60])}{'...' if len(args.text) > 60 else ''}\" ({result.n_tokens} tokens, BOS excluded), ranked by {how}")
    if not rows:
        print("No feature fires on this text.")
        return 0
    print(f"{'feature':>8}  {'score':>7}  {'activation':>10}  {'peak token':<14}  name or explanation")
    for r in rows:
        e = explanations.get(r.feature_id)
        label = names.get(r.feature_id) or (f"{e.label} (auto)" if e is not None and e.label else "")
        token = visible(repr(r.peak_token))[:14]
        print(f"{r.feature_id:>8}  {r.score:>7.3g}  {r.max_activation:>10.4f}  {token:<14}  {visible(label)}")
    return 0
