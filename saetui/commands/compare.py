"""`saetui compare A B [--model ...] [--json]`: two SAEs side by side, feature by feature.

Both are read on the same tokens (the same model, dataset and budget; their hooks may
differ). Printed: both quality reports side by side (unless --no-reports), how many of A's
live features have a match in B by decoder cosine (and the reverse), the activation
correlation of matched pairs when both read the same hook, families that split or merge
between them, and the features unique to each. See saetui/engine/compare.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

import numpy as np

from ..demo import is_demo_sae
from ..engine.compare import (
    CORRELATION_TOKENS,
    DEFAULT_THRESHOLD,
    FAMILY_THRESHOLD,
    check_comparable,
    compare_saes,
    materialise_sae,
    pair_correlations,
)
from ..engine.errors import UserError
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe, visible
from .clusters import add_cluster_arguments, check_cluster_arguments, clustering_for, use_demo_defaults

if TYPE_CHECKING:
    from ..engine.engine import Engine
    from ..engine.report import EvaluationReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sae_b", nargs="?", default=None, metavar="B", help="the second SAE directory (compared with the first, A)")
    parser.add_argument("--json", action="store_true", help='print JSON: {"a", "b", "reports", "matches": [{"a", "b", "similarity"}], "found_fraction", ...}')
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help=f"decoder cosine at which a feature counts as found in the other SAE (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--no-reports", action="store_true", help="skip the two quality reports")
    add_cluster_arguments(parser)


def run(args: argparse.Namespace, engine: "Engine") -> int:
    from ..cli import engine_settings
    from ..engine.engine import Engine

    if args.sae_b is None:
        raise UserError("compare needs two SAEs", "Run saetui compare A B (two SAE directories)")
    if not -1.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold} is not a cosine", "Use a value from -1 to 1, e.g. 0.7")
    check_cluster_arguments(args)
    settings_b = dataclasses.replace(engine_settings(args), sae=args.sae_b)
    use_demo_defaults(settings_b)
    if engine.settings.sae is None and is_demo_sae(args.sae_b):
        # The bundled demo against another demo SAE: both on the same demo tokens.
        engine.settings.dataset, engine.settings.max_tokens = settings_b.dataset, settings_b.max_tokens
    else:
        use_demo_defaults(engine.settings)
    engine_b = Engine(settings_b)
    try:
        return _run(args, engine, engine_b)
    finally:
        engine_b.close()


def _run(args: argparse.Namespace, engine_a: "Engine", engine_b: "Engine") -> int:
    # Both SAEs read (cheap) and checked against each other before any model loads.
    engine_a.call(engine_a.read_sae)
    engine_b.call(engine_b.read_sae)
    check_comparable(engine_a.sae, engine_b.sae, engine_a.model_name, engine_b.model_name)
    clusters_a = clustering_for(engine_a, args, "clustering A")
    clusters_b = clustering_for(engine_b, args, "clustering B")
    session_a, session_b = engine_a.require_session(), engine_b.require_session()
    sae_a, sae_b = session_a.sae, session_b.sae
    engine_b.call(materialise_sae, sae_b)  # A's worker reads B from here on
    with cli_progress() as progress:
        result = engine_a.call_job("comparing", compare_saes, sae_a, sae_b, clusters_a.live, clusters_b.live,
                                   clusters_a=clusters_a, clusters_b=clusters_b, threshold=args.threshold, on_progress=progress)
        if session_a.hook == session_b.hook:
            # A's worker reads the activations once; both SAEs encode them.
            result.correlations = engine_a.call_job("correlating", pair_correlations, session_a, session_b,
                                                    result.a_live, result.a_best, on_progress=progress)
    reports: dict[str, EvaluationReport] = {}
    if not args.no_reports:
        reports = {"a": _report(engine_a, args, "evaluating A"), "b": _report(engine_b, args, "evaluating B")}
    a_name, b_name = str(engine_a.sae_path), str(engine_b.sae_path)
    if args.json:
        payload = result.to_json(a_name, b_name, {side: report.to_json() for side, report in reports.items()})
        sys.stdout.write(dumps_json_safe(payload, indent=2) + "\n")
        return 0
    print(f"A: {visible(a_name)}  ({sae_a.d_sae:,} features, k {sae_a.k}, {len(result.a_live):,} live, {len(clusters_a.clusters):,} clusters)")
    print(f"B: {visible(b_name)}  ({sae_b.d_sae:,} features, k {sae_b.k}, {len(result.b_live):,} live, {len(clusters_b.clusters):,} clusters)")
    if reports:
        _print_reports(reports)
    t = result.threshold
    print(f"\nFound (best decoder cosine >= {t:g}): {result.found_fraction:.1%} of A's live features in B; "
          f"{result.b_found_fraction:.1%} of B's in A.")
    print(f"Median best cosine: A->B {np.median(result.a_similarity):.3f}, B->A {np.median(result.b_similarity):.3f}")
    if result.correlations is not None:
        r = result.correlations[np.isfinite(result.correlations)]
        found = result.a_similarity >= t
        rf = result.correlations[found & np.isfinite(result.correlations)]
        print(f"Same hook: activation correlation of matched pairs on {CORRELATION_TOKENS:,} shared tokens: median {np.median(r):.3f} over all"
              + (f", {np.median(rf):.3f} over found pairs" if rf.size else "") if r.size else "Same hook: no matched pair fired on the shared tokens")
    else:
        print("Different hooks: matched by decoder cosine only (activation correlation needs the same hook).")
    print(f"Unique to A: {len(result.unique_a):,} features; unique to B: {len(result.unique_b):,}")
    print(f"Families (followed through best matches at cosine >= {min(t, FAMILY_THRESHOLD):g}) that split, an A cluster over several B clusters: "
          f"{len(result.splits)}; that merge, a B cluster gathering several A clusters: {len(result.merges)}")
    for s in result.splits[:10]:
        print(f"  split  A#{s['a_cluster']} {visible(s['a_label'])!s:.40} -> B " + ", ".join(f"#{c}" for c in s["b_clusters"]))
    for m in result.merges[:10]:
        print("  merge  A " + ", ".join(f"#{c}" for c in m["a_clusters"]) + f" -> B#{m['b_cluster']} {visible(m['b_label'])!s:.40}")
    order = np.argsort(-result.a_similarity, kind="stable")
    print("\nBest matches (A -> B, cosine): " + ", ".join(
        f"{result.a_live[i]}->{result.a_best[i]} {result.a_similarity[i]:.2f}" for i in order[:8]))
    return 0


def _report(engine: "Engine", args: argparse.Namespace, label: str) -> "EvaluationReport":
    from ..engine.evaluate import DEFAULT_EVAL_TOKENS, evaluate

    # --max-tokens when given, else the report's own default (not the demo's index budget)
    budget = args.max_tokens or DEFAULT_EVAL_TOKENS
    with cli_progress() as progress:
        return engine.call_job(label, evaluate, engine.require_session(), budget, True, on_progress=progress)


def _print_reports(reports: dict[str, "EvaluationReport"]) -> None:
    from ..ui.report import summary_rows

    rows_a, rows_b = summary_rows(reports["a"]), summary_rows(reports["b"])
    print(f"\n{'metric':<24}  {'A':>26}  {'B':>26}")
    for ra, rb in zip(rows_a, rows_b):
        if ra.label != rb.label:
            continue
        print(f"{ra.label:<24}  {ra.value:>26}  {rb.value:>26}")
