"""`saetui explain [SAE] [--explainer MODEL] [--features N] [--json]`: explanations and their scores.

Without `--explainer`: the automatic explanations of every live feature (engine/explain.py),
computed from the feature index and cached beside it, and the report's "explained
features" figure. With `--explainer MODEL` (any mlx-lm chat model in the local cache or
a local folder): the model writes and scores them (engine/explain_model.py): batched,
checkpointed after every few features (Ctrl-C, then the same command, resumes), with
progress and ETA on stderr.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.errors import UserError
from ..engine.explain import explained_summary
from ..ui.safe_text import visible
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe
from .search import explanation_json, index_and_explanations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--explainer", metavar="MODEL", help="an mlx-lm chat model (local folder or cached Hugging Face id) that writes and scores the explanations")
    parser.add_argument("--features", type=int, metavar="N", help="only the first N live features (with --explainer; default all)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch for --explainer (default 8)")
    parser.add_argument("--max-tokens", type=int, help="token budget of the index (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--json", action="store_true", help="print JSON: {summary, features: [{feature_id, label, score, source}]}")


def run(args: argparse.Namespace, engine) -> int:
    if args.features is not None and args.features < 1:
        raise UserError(f"--features {args.features} is too small", "Ask for at least 1 feature")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} is too small", "Use a batch size of at least 1")
    session = engine.call_job("loading", engine.opening)
    chat = None
    if args.explainer:
        from ..engine.explain_model import ChatModel

        chat = engine.call(ChatModel, args.explainer, engine.settings.download)  # a wrong model fails before any work
    index, explanations = index_and_explanations(engine, session)
    live = len(index.live_features())
    if chat is not None:
        from ..engine.explain_model import iter_model_explanations

        features = index.live_features().tolist()[: args.features] if args.features else None
        with cli_progress() as progress:
            explanations = engine.call_job(
                "explaining", iter_model_explanations, index, session.tokenizer, chat, features, args.batch_size, on_progress=progress
            )
    summary = explained_summary(explanations, live if not args.explainer else len(explanations))
    if args.json:
        payload = {"summary": summary, "features": [dict(feature_id=f, **explanation_json(e)) for f, e in sorted(explanations.items())]}
        sys.stdout.write(dumps_json_safe(payload, indent=2) + "\n")
        return 0
    print(f"Explained features: {summary['explained']:,} of {summary['live']:,} live ({summary['fraction']:.1%}); {summary['how']}")
    for f, e in sorted(explanations.items()):
        score = f"{e.score:.2f}" if e.score is not None else "  - "
        print(f"{f:>7}  {score}  {visible(e.label)}")
    return 0
