"""`saetui top-texts [SAE] FEATURE [--top-k K] [--json] [--max-tokens N]`: a feature's top contexts.

The guide's `get_top_activating_texts`, answered from the feature index: the cached one
when there is one for this SAE, model, hook, dataset and budget, else built now (one
pass, progress on stderr) and cached for next time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..engine.errors import Cancelled
from ..engine.features import check_feature_id, show_context
from ..engine.index import MAX_TOP_K, build_index, default_budget, tier_for
from ..engine.worker import Job, Progress
from ..ui.safe_text import visible


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("feature", help="the feature id")
    parser.add_argument("--top-k", type=int, default=20, help=f"how many contexts (default 20, at most {MAX_TOP_K})")
    parser.add_argument("--max-tokens", type=int, help="token budget of the index (default: 65,536 for the demo, 262,144 otherwise)")
    parser.add_argument("--json", action="store_true", help="print JSON: {feature_id, name, density, ..., results: [{text, activation, token_position, ...}]}")


def feature_names(engine: Any) -> dict[int, str]:
    """Registry names by feature id ({} when there is no registry or it cannot be read)."""
    try:
        from ..engine.registry import Registry, registry_path_for

        registry = Registry.load(registry_path_for(engine))
        return {fid: name for fid in registry.feature_ids() if (name := registry.name(fid))}
    except Exception:  # noqa: BLE001 - names are a nicety; the command works without them
        return {}


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"saetui: note: {note}", file=sys.stderr)


class StderrProgress:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False
        self._last = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.perf_counter()
        finished = progress.total and progress.done >= progress.total
        if not self.tty and not finished and now - self._last < 5.0:
            return
        self._last = now
        width = 24
        filled = int(round(width * progress.fraction))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {progress.describe()}"
        if self.tty:
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(args: argparse.Namespace, engine) -> int:
    tier_for(args.top_k)  # 1..100, or a one-line error before any work
    engine.worker.call(engine.open, Job("loading"))
    fid = check_feature_id(engine, args.feature)
    progress = StderrProgress()
    notes: list[str] = []
    started = time.perf_counter()
    job = Job("indexing", progress)
    pending = engine.worker.submit(build_index, engine, default_budget(engine), args.top_k, job, None, notes)
    try:
        index = pending.result()
    except KeyboardInterrupt:
        # Stop the build at the next batch; it checkpoints, and the next run resumes it.
        job.cancel()
        try:
            pending.result()
        except Cancelled:
            pass
        raise
    finally:
        progress.close()
    built = progress.shown
    print_notes(notes)
    stats = index.feature(fid)
    shown = [engine.worker.call(show_context, engine, index, e) for e in stats.top[: args.top_k]]
    name = feature_names(engine).get(fid)
    from ..engine.explain import load_explanations
    from .search import explanation_json

    explanation = engine.worker.call(load_explanations, engine, index).get(fid)
    source = f"built in {time.perf_counter() - started:.1f}s" if built else "cached"
    if args.json:
        json.dump(
            {
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
            },
            sys.stdout,
            indent=2,
            ensure_ascii=False,
        )
        sys.stdout.write("\n")
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
