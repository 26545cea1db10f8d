"""`saetui top-texts [SAE] FEATURE [--top-k K] [--json] [--max-tokens N]`: a feature's top contexts.

The guide's `get_top_activating_texts`, answered from the feature index: the cached one
when there is one for this SAE, model, hook, dataset and budget, else built now (one
pass, Rich's progress on stderr when it is a terminal) and cached for next time.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from ..engine.errors import UserError
from ..engine.features import check_feature_id, show_context
from ..engine.index import MAX_TOP_K, build_index, default_budget, tier_for
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe, visible

if TYPE_CHECKING:
    from ..engine.engine import Engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("feature", help="the feature id")
    parser.add_argument("--top-k", type=int, default=20, help=f"how many contexts (default 20, at most {MAX_TOP_K})")
    parser.add_argument("--max-tokens", type=int, help="token budget of the index (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--json", action="store_true", help="print JSON: {feature_id, name, density, ..., results: [{text, activation, token_position, ...}]}")


def feature_names(engine: "Engine") -> dict[int, str]:
    """Registry names by feature id ({} when there is no registry or it cannot be read)."""
    try:
        from ..engine.registry import Registry, registry_path_for

        registry = Registry.load(registry_path_for(engine))
        return {fid: name for fid in registry.feature_ids() if (name := registry.name(fid))}
    except Exception:  # noqa: BLE001 - names are a nicety; the command works without them
        return {}


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"saetui: note: {visible(note)}", file=sys.stderr)


def run(args: argparse.Namespace, engine) -> int:
    tier_for(args.top_k)  # 1..100, or a one-line error before any work
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UserError(f"--max-tokens {args.max_tokens} leaves nothing to index", "Pass a positive number of tokens")
    session = engine.call_job("loading", engine.opening)
    fid = check_feature_id(session.d_sae, args.feature)
    notes: list[str] = []
    started = time.perf_counter()
    with cli_progress() as progress:
        # Ctrl-C stops the build at the next batch; it checkpoints, and the next run resumes it.
        index = engine.call_job("indexing", build_index, session, default_budget(session), args.top_k, None, notes, on_progress=progress)
    built = progress.reported
    print_notes(notes)
    stats = index.feature(fid)
    shown = engine.call(lambda: [show_context(session, index, e) for e in stats.top[: args.top_k]])
    name = feature_names(engine).get(fid)
    from ..engine.explain import load_explanations
    from .search import explanation_json

    explanation = engine.call(load_explanations, session, index).get(fid)
    source = f"built in {time.perf_counter() - started:.1f}s" if built else "cached"
    if args.json:
        payload = {
            "feature_id": fid,
            "name": name,
            "explanation": explanation_json(explanation),
            "density": stats.density,
            "count": stats.count,
            "max_activation": stats.max_activation,
            "tokens_indexed": stats.tokens,
            "budget": index.budget,
            "index": str(index.path) if index.path else None,
            "results": [
                {
                    "text": s.text,
                    "activation": s.example.activation,
                    "token_position": s.example.position,
                    "context_id": s.example.context_id,
                    "token": s.tokens[s.example.max_index],
                    "window": "".join(s.tokens),
                }
                for s in shown
            ],
        }
        sys.stdout.write(dumps_json_safe(payload, indent=2) + "\n")
        return 0
    title = f"Feature {fid}" + (f" \"{visible(name)}\"" if name else "")
    if explanation is not None and explanation.label:
        score = f", detection score {explanation.score:.2f}" if explanation.score is not None else ""
        title += f" [auto: {visible(explanation.label)}{score}]"
    print(f"{title}: density {stats.density:.3%} ({stats.count:,} of {stats.tokens:,} tokens), max {stats.max_activation:.4f}  [{index.describe()}, {source}]")
    if not stats.fires:
        print(f"Feature {fid} never fired on the {stats.tokens:,} indexed tokens.")
        return 0
    print(f"Top {len(shown)} contexts (activation, position of the strongest token, marked ⟦ ⟧):")
    for rank, s in enumerate(shown, 1):
        e = s.example
        before = visible("".join(s.tokens[: e.max_index]))
        token = visible(s.tokens[e.max_index])
        after = visible("".join(s.tokens[e.max_index + 1 :]))
        print(f"{rank:>3}. [{e.activation:.4f}] pos {e.position:>4}  …{before}⟦{token}⟧{after}…")
    return 0
