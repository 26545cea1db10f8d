"""`saetui search [SAE] QUERY [--json]`: features by name, description, explanation or top tokens.

Also lists the features that fire most on the query as a token string (from the index's
kept contexts). The index is the cached one (built now, with progress, when missing);
the explanations are computed from it once and cached beside it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, overload

from ..engine.errors import UserError
from ..engine.explain import Explanation, explain_index
from ..engine.index import build_index, default_budget, load_cached
from ..engine.search import features_on_token, registry_texts, search_features
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe, visible
from .top_texts import print_notes

if TYPE_CHECKING:
    from ..engine.engine import Engine
    from ..engine.session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="words to look for (e.g. rabbit, 'capital city', =)")
    parser.add_argument("--top-k", type=int, default=20, help="how many features per list (default 20)")
    parser.add_argument("--max-tokens", type=int, help="token budget of the index (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--json", action="store_true", help="print JSON: {query, matches: [...], fires_on: [...]}")


def cli_registry_texts(engine: "Engine") -> tuple[dict[int, str], dict[int, str]]:
    """(names, descriptions) from the registry the settings name ({} when it cannot be read)."""
    try:
        from ..engine.registry import Registry, registry_path_for

        return registry_texts(Registry.load(registry_path_for(engine)))
    except Exception:  # noqa: BLE001 - the registry is a nicety; search works without it
        return {}, {}


def index_and_explanations(engine: "Engine", session: "Session", top_k: int = 20, cached_only: bool = False):
    """(index, explanations) for the command line: built or read from the cache, progress on stderr.

    `cached_only`: no build; (None, {}) when no index is cached.
    """
    notes: list[str] = []
    if cached_only:
        index = engine.call(load_cached, session, None, top_k, notes)
        if index is None:
            return None, {}
    else:
        with cli_progress() as progress:
            index = engine.call_job("indexing", build_index, session, default_budget(session), top_k, None, notes, on_progress=progress)
    print_notes(notes)
    with cli_progress() as progress:
        explanations = engine.call_job("explaining", explain_index, session, index, on_progress=progress)
    session.explanations = explanations
    return index, explanations


@overload
def explanation_json(e: Explanation) -> dict[str, Any]: ...


@overload
def explanation_json(e: Explanation | None) -> dict[str, Any] | None: ...


def explanation_json(e: Explanation | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"label": e.label, "score": e.score, "source": e.source, "view": e.view, "words": e.words}


def run(args: argparse.Namespace, engine) -> int:
    if not args.query.strip():
        raise UserError("The query is empty", "Pass a word to look for, e.g. saetui search rabbit")
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k} is too small", "Ask for at least 1 feature")
    session = engine.call_job("loading", engine.opening)
    index, explanations = index_and_explanations(engine, session)
    names, descriptions = cli_registry_texts(engine)
    matches = search_features(args.query, explanations, names, descriptions, args.top_k)
    fires = features_on_token(args.query, explanations, args.top_k)
    if args.json:
        payload = {
            "query": args.query,
            "matches": [
                {"feature_id": h.feature_id, "score": h.score, "matched": h.matched, "name": h.name, "explanation": explanation_json(explanations.get(h.feature_id))}
                for h in matches
            ],
            "fires_on": [
                {"feature_id": h.feature_id, "contexts": h.contexts, "mean_activation": h.mean_activation, "share": h.share, "explanation": explanation_json(explanations.get(h.feature_id))}
                for h in fires
            ],
        }
        sys.stdout.write(dumps_json_safe(payload, indent=2) + "\n")
        return 0
    print(f"Features matching \"{visible(args.query)}\" (registry name, description, explanation, top tokens):")
    if not matches:
        print("  none")
    for h in matches:
        label = h.name or (f"{h.explanation} (auto)" if h.explanation else "")
        score = f"{h.explanation_score:.2f}" if h.explanation_score is not None else "  - "
        print(f"  {h.feature_id:>7}  match {h.score:4.1f}  expl. score {score}  {visible(label)}  [{', '.join(h.matched)}]")
    print(f"Features firing most on \"{visible(args.query.strip())}\" (kept contexts of the index peaking on it):")
    if not fires:
        print("  none")
    for hit in fires:
        label = names.get(hit.feature_id) or (f"{hit.explanation} (auto)" if hit.explanation else "")
        print(f"  {hit.feature_id:>7}  {hit.contexts:>3} contexts  mean {hit.mean_activation:.3f}  {hit.share:.0%} of kept  {visible(label)}")
    return 0
