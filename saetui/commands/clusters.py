"""`saetui clusters [SAE] [--json]`: the SAE's families of features.

Every live feature (one that fired on the feature index's tokens) is placed in one cluster:
a k-nearest-neighbour graph over decoder directions plus co-activation from the index,
split by Louvain (see saetui/engine/clusters.py). The index is the cached one when there
is one, else built now (progress on stderr); the clustering is cached too.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..engine.clusters import DEFAULT_NEIGHBOURS, DEFAULT_RESOLUTION, DEFAULT_SEED, Clustering, compute_clusters
from ..engine.errors import UserError
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe, visible
from .top_texts import feature_names, print_notes

if TYPE_CHECKING:
    from ..engine.engine import Engine, EngineSettings
    from ..engine.index import FeatureIndex
    from ..engine.session import Session


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


def use_demo_defaults(settings: "EngineSettings") -> None:
    """A demo SAE named by its path (the bundled one, or the second, smaller one) reads the
    demo's corpus with the demo's index budget, as `saetui` with no SAE does (before opening)."""
    from ..demo import demo_corpus_path, is_demo_sae
    from ..engine.index import DEMO_BUDGET

    if settings.sae is None or not is_demo_sae(settings.sae):
        return
    if settings.dataset is None:
        settings.dataset = str(demo_corpus_path())
    if settings.max_tokens is None:
        settings.max_tokens = DEMO_BUDGET


def index_for(engine: "Engine", session: "Session", label: str = "indexing") -> "FeatureIndex":
    """The session's complete feature index, cached or built now (progress on stderr; Ctrl-C
    checkpoints the build, and the next run resumes it)."""
    from ..engine.index import DEFAULT_TOP_K, build_index, default_budget

    notes: list[str] = []
    with cli_progress() as progress:
        index = engine.call_job(label, build_index, session, default_budget(session), DEFAULT_TOP_K, None, notes, on_progress=progress)
    print_notes(notes)
    return index


def clustering_for(engine: "Engine", args: argparse.Namespace, label: str = "clustering") -> Clustering:
    """Open the engine, check the neighbour count against the SAE, index, cluster."""
    session = engine.call_job("loading", engine.opening)
    d_sae = session.d_sae
    if args.neighbours >= d_sae:
        raise UserError(f"The SAE has {d_sae:,} features, not more than the {args.neighbours} neighbours each feature is linked to",
                        f"Use --neighbours {max(1, d_sae - 1)} or fewer")
    index = index_for(engine, session)
    with cli_progress() as progress:
        return engine.call_job(label, compute_clusters, session, index, names=feature_names(engine),
                               neighbours=args.neighbours, seed=args.seed, resolution=args.resolution, on_progress=progress)


def run(args: argparse.Namespace, engine: "Engine") -> int:
    check_cluster_arguments(args)
    use_demo_defaults(engine.settings)
    clustering = clustering_for(engine, args)
    if args.json:
        sys.stdout.write(dumps_json_safe(clustering.to_json(), indent=2) + "\n")
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
