"""`saetui clusters [SAE] [--json]`: the SAE's families of features.

Every live feature (one that fired on the feature index's tokens) is placed in one cluster:
a k-nearest-neighbour graph over decoder directions plus co-activation from the index,
split by Louvain (see saetui/engine/clusters.py). The index is the cached one when there
is one, else built now (progress on stderr); the clustering is cached too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..engine.clusters import DEFAULT_NEIGHBOURS, DEFAULT_RESOLUTION, DEFAULT_SEED, Clustering, clusters_for
from ..engine.errors import UserError
from ..engine.worker import Job
from ..ui.safe_text import visible
from .top_texts import StderrProgress, feature_names, print_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help='print JSON: {"clusters": [{"id", "label", "members", "cohesion", ...}]}')
    add_cluster_arguments(parser)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS, help=f"decoder neighbours linked per feature (default {DEFAULT_NEIGHBOURS})")
    parser.add_argument("--resolution", type=float, default=DEFAULT_RESOLUTION, help=f"Louvain resolution: higher gives more, smaller clusters (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the community detection (default {DEFAULT_SEED})")
    parser.add_argument("--max-tokens", type=int, help="token budget of the feature index (default: 65,536 for the demo, 262,144 otherwise)")


def check_cluster_arguments(args: argparse.Namespace) -> None:
    if args.neighbours < 1:
        raise UserError(f"--neighbours {args.neighbours} is too small", "Use at least 1 neighbour per feature")
    if not args.resolution > 0:
        raise UserError(f"--resolution {args.resolution} must be positive", "Use e.g. 1.0 (more clusters above, fewer below)")


def use_demo_defaults(settings: Any) -> None:
    """A demo SAE named by its path (the bundled one, or the second, smaller one) reads the
    demo's corpus with the demo's index budget, as `saetui` with no SAE does."""
    from ..demo import demo_corpus_path, is_demo_sae
    from ..engine.index import DEMO_BUDGET

    if settings.sae is None or not is_demo_sae(settings.sae):
        return
    if settings.dataset is None:
        settings.dataset = str(demo_corpus_path())
    if settings.max_tokens is None:
        settings.max_tokens = DEMO_BUDGET


def index_for(engine: Any, label: str = "indexing") -> Any:
    """The engine's complete feature index, cached or built now with progress on stderr."""
    from ..engine.errors import Cancelled
    from ..engine.index import DEFAULT_TOP_K, build_index, default_budget

    progress = StderrProgress()
    notes: list[str] = []
    job = Job(label, progress)
    pending = engine.worker.submit(build_index, engine, default_budget(engine), DEFAULT_TOP_K, job, None, notes)
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
    return index


def clustering_for(engine: Any, args: argparse.Namespace, label: str = "clustering") -> Clustering:
    """Open the engine, check the neighbour count against the SAE, index, cluster."""
    engine.worker.call(engine.open, Job("loading"))
    d_sae = int(engine.sae.d_sae)
    if args.neighbours >= d_sae:
        raise UserError(f"The SAE has {d_sae:,} features, not more than the {args.neighbours} neighbours each feature is linked to",
                        f"Use --neighbours {max(1, d_sae - 1)} or fewer")
    index = index_for(engine)
    progress = StderrProgress()
    try:
        return engine.worker.call(clusters_for, engine, index, Job(label, progress), names=feature_names(engine),
                                  neighbours=args.neighbours, seed=args.seed, resolution=args.resolution)
    finally:
        progress.close()


def run(args: argparse.Namespace, engine) -> int:
    check_cluster_arguments(args)
    use_demo_defaults(engine.settings)
    clustering = clustering_for(engine, args)
    if args.json:
        json.dump(clustering.to_json(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    multi = [c for c in clustering.clusters if c.size > 1]
    singles = len(clustering.clusters) - len(multi)
    print(f"{len(clustering.clusters):,} clusters of {len(clustering.live):,} live features "
          f"({clustering.n_dead:,} dead left out); {singles:,} are single features. "
          f"Louvain (seed {clustering.parameters['seed']}, resolution {clustering.parameters['resolution']:g}) on "
          f"{clustering.parameters['neighbours']} decoder neighbours"
          + (" + co-firing" if clustering.parameters.get("cofiring_weight") else "")
          + (" + shared top tokens" if clustering.parameters.get("coactivation_weight") else ""))
    print(f"{'cluster':>7}  {'size':>5}  {'cohesion':>8}  {'co-act':>6}  label / members (most central first)")
    for c in multi:
        coh = "—" if c.cohesion is None else f"{c.cohesion:.3f}"
        coact = "—" if c.coactivation is None else f"{c.coactivation:.0%}"
        members = " ".join(str(f) for f in c.members[:12]) + (" …" if c.size > 12 else "")
        print(f"{c.id:>7}  {c.size:>5}  {coh:>8}  {coact:>6}  {visible(c.label)}")
        print(f"{'':>33}{members}")
    return 0
