"""`saetui top-features [SAE] TEXT [--top-k K] [--json]`: the features firing most on a text.

The guide's `get_top_activating_features`: one forward pass over the text (tokenised
like the corpus, `[BOS] + tokens`, cut to one context), each feature scored by its
maximum over the tokens (BOS left out), strongest first, ties by feature id.
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
    parser.add_argument("--json", action="store_true", help="print JSON: {text, features: [{feature_id, activation, name}]}")


def run(args: argparse.Namespace, engine) -> int:
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k} is too small", "Ask for at least 1 feature")
    if not args.text.strip():
        raise UserError("The text is empty", "Pass some text to analyse, e.g. saetui top-features \"Paris is in France\"")
    session = engine.call_job("loading", engine.opening)
    from ..engine.probe import probe_text

    # What get_top_activating_features returns, plus the token count and truncation notice.
    result = engine.call(probe_text, session, args.text, (), args.top_k)
    top = [(h.feature_id, h.max_activation) for h in result.top_features[: args.top_k]]
    names = feature_names(engine)
    notes = [result.notice] if result.notice else []
    if args.json:
        payload = {
            "text": args.text,
            "tokens": result.n_tokens,
            "truncated": result.truncated,
            "features": [{"feature_id": f, "activation": a, "name": names.get(f)} for f, a in top],
        }
        sys.stdout.write(dumps_json_safe(payload, indent=2) + "\n")
        print_notes(notes)
        return 0
    print_notes(notes)
    print(f"Top {len(top)} features for \"{visible(args.text[:60])}{'...' if len(args.text) > 60 else ''}\" (max over {result.n_tokens} tokens, BOS excluded)")
    if not top:
        print("No feature fires on this text.")
        return 0
    print(f"{'feature':>8}  {'activation':>10}  name")
    for f, a in top:
        print(f"{f:>8}  {a:>10.4f}  {visible(names.get(f) or '')}")
    return 0
