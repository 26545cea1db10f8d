"""`saetui search [SAE] QUERY [--json]`: features by name, description, explanation or top tokens.

Also lists the features that fire most on the query as a token string (from the index's
kept contexts). The index is the cached one (built now, with progress, when missing);
the explanations are computed from it once and cached beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..engine.errors import Cancelled, UserError
from ..engine.explain import Explanation, load_explanations
from ..engine.index import build_index, default_budget
from ..engine.search import features_on_token, search_features
from ..engine.worker import Job
from ..ui.safe_text import visible
from .top_texts import StderrProgress, print_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="words to look for (e.g. rabbit, 'capital city', =)")
    parser.add_argument("--top-k", type=int, default=20, help="how many features per list (default 20)")
    parser.add_argument("--max-tokens", type=int, help="token budget of the index (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--json", action="store_true", help="print JSON: {query, matches: [...], fires_on: [...]}")


def registry_texts(engine: Any) -> tuple[dict[int, str], dict[int, str]]:
    """(names, descriptions) by feature id from the registry ({} when there is none)."""
    try:
        from ..engine.registry import Registry, registry_path_for

        registry = Registry.load(registry_path_for(engine))
        names, descriptions = {}, {}
        for fid in registry.feature_ids():
            if name := registry.name(fid):
                names[fid] = name
            entry = registry.get(fid) or {}
            if isinstance(entry.get("description"), str) and entry["description"].strip():
                descriptions[fid] = entry["description"]
        return names, descriptions
    except Exception:  # noqa: BLE001 - the registry is a nicety; search works without it
        return {}, {}


def index_and_explanations(engine: Any, top_k: int = 20, cached_only: bool = False):
    """(index, explanations) for the command line: built or read from the cache, progress on stderr.

    `cached_only`: no build; (None, {}) when no index is cached.
    """
    from ..engine.index import load_cached

    notes: list[str] = []
    if cached_only:
        index = engine.worker.call(load_cached, engine, None, top_k, notes)
        if index is None:
            return None, {}
    else:
        progress = StderrProgress()
        job = Job("indexing", progress)
        pending = engine.worker.submit(build_index, engine, default_budget(engine), top_k, job, None, notes)
        try:
            index = pending.result()
        except KeyboardInterrupt:
            job.cancel()
            try:
                pending.result()
            except Cancelled:
                pass
            raise
        finally:
            progress.close()
    print_notes(notes)
    progress = StderrProgress()
    try:
        explanations = engine.worker.call(load_explanations, engine, index, progress)
    finally:
        progress.close()
    return index, explanations


def explanation_json(e: Explanation | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"label": e.label, "score": e.score, "source": e.source, "view": e.view, "words": e.words}


def run(args: argparse.Namespace, engine) -> int:
    if not args.query.strip():
        raise UserError("The query is empty", "Pass a word to look for, e.g. saetui search rabbit")
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k} is too small", "Ask for at least 1 feature")
    engine.worker.call(engine.open, Job("loading"))
    index, explanations = index_and_explanations(engine)
    names, descriptions = registry_texts(engine)
    matches = search_features(args.query, explanations, names, descriptions, args.top_k)
    fires = features_on_token(args.query, explanations, args.top_k)
    if args.json:
        json.dump(
            {
                "query": args.query,
                "matches": [
                    {"feature_id": h.feature_id, "score": h.score, "matched": h.matched, "name": h.name, "explanation": explanation_json(explanations.get(h.feature_id))}
                    for h in matches
                ],
                "fires_on": [
                    {"feature_id": h.feature_id, "contexts": h.contexts, "mean_activation": h.mean_activation, "share": h.share, "explanation": explanation_json(explanations.get(h.feature_id))}
                    for h in fires
                ],
            },
            sys.stdout,
            indent=2,
            ensure_ascii=False,
        )
        sys.stdout.write("\n")
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
    for h in fires:
        label = names.get(h.feature_id) or (f"{h.explanation} (auto)" if h.explanation else "")
        print(f"  {h.feature_id:>7}  {h.contexts:>3} contexts  mean {h.mean_activation:.3f}  {h.share:.0%} of kept  {visible(label)}")
    return 0
