"""Feature families: clusters of all live features, and a 2-D map of them.

How a clustering is made (deterministic for a given seed):

1. Decoder directions of the live features (those the feature index saw fire), scaled as
   they move the activation (`SparseAutoencoder.decoder_directions`) and normalised.
2. A k-nearest-neighbour graph by cosine, computed blockwise with MLX: `block` rows of
   the similarity matrix at a time (block x n_live floats), never the n x n matrix, so
   32,768+ features fit in a few hundred MB. Edges with cosine <= `min_similarity` are
   dropped; the graph is made symmetric (an edge if either end lists the other).
3. Co-activation from the feature index: two features that share top-activating tokens
   (the same (context, position) among their kept top contexts) fire on the same tokens.
   Each shared token adds `coactivation_weight / top_k` to the pair's edge. This uses only
   what the index already keeps (its top contexts), so it costs no extra pass or memory.
4. Louvain community detection (networkx's `louvain_communities`, with the seed) on the
   weighted graph. networkx is pure Python, installs everywhere without a compiler, and its
   Louvain is seedable and fast enough for 32k nodes (see `benchmark_clustering`).

Each cluster has its members (most central first: highest mean cosine to the others),
`cohesion` (the mean pairwise decoder cosine of its members, found exactly from the sum of
their unit vectors: (|sum u|^2 - n) / (n (n - 1)); None for a single feature),
`coactivation` (fraction of members sharing a top token with another member; None without
an index) and a label: the most common registry names of its members when some are named
(`names`), else its members' most frequent strongest tokens.

The map is a PCA of the (centred, unit) decoder directions of the live features, by
randomized subspace iteration (a few (n x d) @ (d x 8) products, no d x d or n x n matrix).

Results are cached (engine/cache.py) keyed by the index's key, the SAE's hash and the
parameters; names are applied after loading, so renaming a feature needs no recompute.
The clustering last computed belongs to the session (`session.clusters`), so the feature
page and the clusters screen share it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import mlx.core as mx
import numpy as np

from . import cache
from .errors import UserError
from .worker import LongWork, Progress

if TYPE_CHECKING:
    from .index import FeatureIndex
    from .session import Session

CLUSTERS_FORMAT = 2
DEFAULT_NEIGHBOURS = 10
DEFAULT_SEED = 0
DEFAULT_RESOLUTION = 2.0
DEFAULT_MIN_SIMILARITY = 0.1
DEFAULT_COACTIVATION_WEIGHT = 1.0
DEFAULT_BLOCK = 1024
DEFAULT_COFIRING_WEIGHT = 1.0
DEFAULT_DECODER_WEIGHT = 1.0
COFIRING_TOKENS = 16_384
COFIRING_WINDOW = 2
# Exact co-firing needs an n x n sum of products: 8,192 features is 256 MB.
COFIRING_MAX_FEATURES = 8192
# kNN candidates from a random sketch for big, wide decoders (see knn_blockwise).
SKETCH_DIM = 512
SKETCH_MIN_ROWS = 8192
SKETCH_CANDIDATES = 4
LABEL_PARTS = 3


# -- results ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    id: int
    members: list[int]  # feature ids, most central first
    cohesion: float | None  # mean pairwise decoder cosine; None for one member
    coactivation: float | None = None  # fraction of members sharing a top token with another
    token_label: str = ""  # from the members' strongest tokens (cached)
    label: str = ""  # what is shown: names when there are some, else token_label

    @property
    def size(self) -> int:
        return len(self.members)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "members": list(self.members), "cohesion": self.cohesion,
                "coactivation": self.coactivation, "size": self.size}


@dataclass
class Clustering:
    clusters: list[Cluster]  # by size, largest first (ties: smallest first member)
    n_features: int  # d_sae
    live: np.ndarray  # int64 ids of the clustered (live) features
    map_xy: np.ndarray  # float32 (n_live, 2): the map position of live[i]
    parameters: dict[str, Any]
    seconds: float = 0.0
    from_cache: bool = False
    _of: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._of = {f: c.id for c in self.clusters for f in c.members}
        self._by_id = {c.id: c for c in self.clusters}

    @property
    def n_dead(self) -> int:
        return self.n_features - len(self.live)

    def cluster(self, cluster_id: int) -> Cluster:
        return self._by_id[int(cluster_id)]

    def cluster_of(self, feature_id: int) -> Cluster | None:
        """The cluster of a feature (None for a dead one)."""
        cid = self._of.get(int(feature_id))
        return None if cid is None else self._by_id[cid]

    def live_cluster_ids(self) -> np.ndarray:
        """The cluster id of each live feature, in `live` order (the map's colours)."""
        return np.array([self._of[int(f)] for f in self.live], dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        return {"clusters": [c.to_json() for c in self.clusters]}


def feature_family(clustering: Clustering, feature_id: int, n_siblings: int = 8) -> tuple[Cluster | None, list[int]]:
    """For the feature page: the feature's cluster and up to `n_siblings` other members (most
    central first). (None, []) for a dead feature."""
    cluster = clustering.cluster_of(feature_id)
    if cluster is None:
        return None, []
    return cluster, [f for f in cluster.members if f != int(feature_id)][:n_siblings]


# -- decoder geometry ---------------------------------------------------------------------------


def unit_rows(directions: Any) -> mx.array:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    d = directions if isinstance(directions, mx.array) else mx.array(np.ascontiguousarray(directions))
    d = d.astype(mx.float32)
    norms = mx.linalg.norm(d, axis=-1, keepdims=True)
    return d / mx.maximum(norms, 1e-12)


def knn_blockwise(unit: mx.array, k: int, block: int = DEFAULT_BLOCK, sketch_dim: int | None = None,
                  seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar other rows by dot product: (ids (n, k) int64, sims (n, k)
    float32), most similar first, ties by smaller id. Only `block` x n similarities exist at a
    time. `unit` should have unit rows (then the similarity is the cosine).

    `sketch_dim`: find candidates in a seeded Gaussian projection to that many dimensions
    (SKETCH_CANDIDATES x k per row), then rank them by their exact similarity. The n x n x d
    product is what costs (32,768 features of 2,048: 4.4 TFLOP); a 512-dimensional sketch
    cuts it 4x. None: exact when n <= SKETCH_MIN_ROWS or d <= 2 x SKETCH_DIM (see
    `wants_sketch`), 0: always exact."""
    n, d = int(unit.shape[0]), int(unit.shape[1])
    if not 1 <= k < n:
        raise ValueError(f"k={k} needs 1 <= k < n={n}")
    if sketch_dim is None:
        sketch_dim = SKETCH_DIM if wants_sketch(n, d) else 0
    ids = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    # A few spare candidates, so ties at the k-th place are broken by id, not by argpartition.
    take = min(n - 1, k + 4)
    if not sketch_dim:
        for start in range(0, n, block):
            stop = min(n, start + block)
            _top_of_block(unit[start:stop] @ unit.T, start, k, take, ids[start:stop], sims[start:stop])
        return ids, sims
    rng = np.random.default_rng(seed)
    projection = mx.array(rng.standard_normal((d, int(sketch_dim)), dtype=np.float32) / np.sqrt(sketch_dim))
    sketch = unit @ projection
    sketch = sketch / mx.maximum(mx.linalg.norm(sketch, axis=-1, keepdims=True), 1e-12)
    mx.eval(sketch)
    n_cand = min(n - 1, SKETCH_CANDIDATES * k)
    cand_ids = np.empty((n, n_cand), np.int64)
    cand_sims = np.empty((n, n_cand), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        _top_of_block(sketch[start:stop] @ sketch.T, start, n_cand, n_cand, cand_ids[start:stop], cand_sims[start:stop])
        # exact similarities of the candidates
        rows = unit[start:stop]
        cand = mx.array(cand_ids[start:stop])
        exact = mx.sum(unit[cand] * rows[:, None, :], axis=-1)
        exact_np = np.array(exact)
        order = np.lexsort((cand_ids[start:stop], -exact_np), axis=1)[:, :k]
        ids[start:stop] = np.take_along_axis(cand_ids[start:stop], order, axis=1)
        sims[start:stop] = np.take_along_axis(exact_np, order, axis=1)
    return ids, sims


def wants_sketch(n: int, d: int) -> bool:
    """Whether the default kNN finds candidates in a sketch (big and wide decoders only)."""
    return n > SKETCH_MIN_ROWS and d > 2 * SKETCH_DIM


def knn_of_similarity(similarity: mx.array, k: int, block: int = DEFAULT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """`knn_blockwise` for a given (n, n) similarity matrix (small SAEs' co-firing correlation)."""
    n = int(similarity.shape[0])
    k = min(k, n - 1)
    ids = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    take = min(n - 1, k + 4)
    for start in range(0, n, block):
        stop = min(n, start + block)
        _top_of_block(similarity[start:stop], start, k, take, ids[start:stop], sims[start:stop])
    return ids, sims


def _top_of_block(s: mx.array, start: int, k: int, take: int, ids_out: np.ndarray, sims_out: np.ndarray) -> None:
    rows = mx.arange(s.shape[0])
    s = mx.array(s)
    s[rows, rows + start] = -mx.inf  # not its own neighbour
    cand = mx.argpartition(-s, kth=take - 1, axis=1)[:, :take]
    cand_s = mx.take_along_axis(s, cand, axis=1)
    cand_np, cand_s_np = np.array(cand).astype(np.int64), np.array(cand_s)
    order = np.lexsort((cand_np, -cand_s_np), axis=1)[:, :k]
    ids_out[:] = np.take_along_axis(cand_np, order, axis=1)
    sims_out[:] = np.take_along_axis(cand_s_np, order, axis=1)


def cohesion_of(unit_np: np.ndarray) -> float | None:
    """Mean pairwise cosine of unit rows, from their sum: (|sum|^2 - n) / (n (n - 1))."""
    n = len(unit_np)
    if n < 2:
        return None
    s = unit_np.astype(np.float64).sum(0)
    return float((s @ s - n) / (n * (n - 1)))


def pca_2d(unit: mx.array, seed: int = DEFAULT_SEED, iterations: int = 6) -> np.ndarray:
    """The first two principal components of the rows (centred), by randomized subspace
    iteration: (n, 2) float32 coordinates, each axis's sign fixed so its largest |value| is
    positive (deterministic)."""
    n, d = int(unit.shape[0]), int(unit.shape[1])
    if n == 0:
        return np.zeros((0, 2), np.float32)
    x = unit - mx.mean(unit, axis=0, keepdims=True)
    rank = min(8, d, n)
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((d, rank)).astype(np.float32))[0]
    for _ in range(iterations):
        y = x.T @ (x @ mx.array(q))
        q = np.linalg.qr(np.array(y, dtype=np.float64))[0].astype(np.float32)
    proj = np.array(x @ mx.array(q), dtype=np.float64)  # (n, rank)
    _, _, vt = np.linalg.svd(proj, full_matrices=False)
    xy = proj @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    for j in range(2):
        col = xy[:, j]
        if col.size and col[np.argmax(np.abs(col))] < 0:
            xy[:, j] = -col
    return xy.astype(np.float32)


# -- co-activation from the index -----------------------------------------------------------------


def top_tokens(index: "FeatureIndex", features: Iterable[int]) -> dict[int, list[tuple[int, int, int]]]:
    """Each feature's kept top activations as (context id, position, token id), strongest first
    (FeatureIndex.feature(f).top)."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for f in features:
        stats = index.feature(int(f))
        out[int(f)] = [(e.context_id, e.position, int(e.window_tokens[e.max_index])) for e in stats.top]
    return out


def coactivation_pairs(tops: dict[int, list[tuple[int, int, int]]], positions: dict[int, int]) -> dict[tuple[int, int], int]:
    """How many top tokens each pair of features shares: {(i, j): count} over graph positions
    (i < j), from the features' top (context, position) lists."""
    by_token: dict[tuple[int, int], list[int]] = {}
    for f, items in tops.items():
        i = positions.get(f)
        if i is None:
            continue
        for c, p, _ in items:
            by_token.setdefault((c, p), []).append(i)
    pairs: Counter = Counter()
    for members in by_token.values():
        if len(members) < 2:
            continue
        members = sorted(set(members))
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs[(members[a], members[b])] += 1
    return dict(pairs)


# -- co-firing over tokens ---------------------------------------------------------------------------


def cofiring_correlation(session: "Session", live: np.ndarray, max_tokens: int = 32_768, window: int = 2) -> LongWork[mx.array | None]:
    """Correlation over tokens between the live features' activations, each max-pooled over
    +-`window` tokens (features of one phrase fire on neighbouring tokens, not always the same
    one): (n_live, n_live) float32, from one pass over `max_tokens` of the session's corpus.
    Exact (a d_sae x d_sae sum of products), so only for SAEs up to COFIRING_MAX_FEATURES;
    None for larger ones."""
    if session.d_sae > COFIRING_MAX_FEATURES:
        return None
    started = time.perf_counter()
    corpus = session.corpus(max_tokens)
    first = corpus.first_position
    live_mx = mx.array(np.ascontiguousarray(live, dtype=np.int64))
    n = len(live)
    gram = mx.zeros((n, n), mx.float32)
    sums = mx.zeros((n,), mx.float32)
    count = 0
    done = 0
    total = corpus.n_tokens
    for _, tokens, acts in session.iter_activations(corpus):
        z = session.encode(acts[:, first:, :])
        z = z[:, :, live_mx].astype(mx.float32)
        pooled = z
        for shift in range(1, window + 1):
            pad = mx.zeros((z.shape[0], shift, n), mx.float32)
            pooled = mx.maximum(pooled, mx.concatenate([z[:, shift:], pad], axis=1))
            pooled = mx.maximum(pooled, mx.concatenate([pad, z[:, :-shift]], axis=1))
        flat = pooled.reshape(-1, n)
        gram = gram + flat.T @ flat
        sums = sums + flat.sum(0)
        mx.eval(gram, sums)
        count += int(flat.shape[0])
        done += int(tokens.size)
        yield Progress("clustering: co-firing", done, total, "tokens", time.perf_counter() - started)
    if count == 0:
        return None
    mean = sums / count
    cov = gram / count - mean[:, None] * mean[None, :]
    sd = mx.sqrt(mx.maximum(mx.diagonal(cov), 0.0))
    corr = cov / mx.maximum(sd[:, None] * sd[None, :], 1e-12)
    corr = mx.where((sd[:, None] > 0) & (sd[None, :] > 0), corr, 0.0)
    mx.eval(corr)
    return corr


# -- the clustering ---------------------------------------------------------------------------------


def check_clusterable(n_features: int, n_live: int, neighbours: int) -> None:
    if neighbours < 1:
        raise UserError(f"--neighbours {neighbours} is too small", "Use at least 1 neighbour per feature")
    if n_live == 0:
        raise UserError(f"All {n_features:,} features are dead (none fired on the indexed tokens): nothing to cluster",
                        "Index more tokens (--max-tokens) or check that the SAE matches the model and hook")
    if n_live == 1:
        raise UserError(f"Only one of the {n_features:,} features is live: clustering needs at least two",
                        "Index more tokens (--max-tokens) or check that the SAE matches the model and hook")
    if n_live <= neighbours:
        what = "features" if n_live == n_features else "live features"
        raise UserError(f"The SAE has {n_live:,} {what}, not more than the {neighbours} neighbours each feature is linked to",
                        f"Use --neighbours {max(1, n_live - 1)} or fewer")


def cluster_directions(
    directions: Any,
    live: np.ndarray,
    *,
    neighbours: int = DEFAULT_NEIGHBOURS,
    seed: int = DEFAULT_SEED,
    resolution: float = DEFAULT_RESOLUTION,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    coactivation: dict[tuple[int, int], int] | None = None,
    coactivation_weight: float = DEFAULT_COACTIVATION_WEIGHT,
    top_k: int = 1,
    cofiring: mx.array | None = None,
    cofiring_weight: float = DEFAULT_COFIRING_WEIGHT,
    decoder_weight: float = DEFAULT_DECODER_WEIGHT,
    block: int = DEFAULT_BLOCK,
) -> LongWork[Clustering]:
    """Cluster the `live` rows of `directions` (d_sae, d_model). `coactivation`: shared top
    tokens per pair of graph positions (see `coactivation_pairs`). Yields progress; returns the
    Clustering (labels empty: see `label_clusters`)."""
    import networkx as nx

    started = time.perf_counter()
    live = np.asarray(live, dtype=np.int64)
    n_features = int(directions.shape[0])
    check_clusterable(n_features, len(live), neighbours)
    n = len(live)
    yield Progress("clustering: neighbours", 0, 4, "steps", time.perf_counter() - started)
    directions = directions if isinstance(directions, mx.array) else mx.array(np.ascontiguousarray(directions))
    unit = unit_rows(directions[mx.array(np.ascontiguousarray(live))] if n < n_features else directions)
    mx.eval(unit)
    ids, sims = knn_blockwise(unit, neighbours, block, seed=seed)
    yield Progress("clustering: graph", 1, 4, "steps", time.perf_counter() - started)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    keep = sims > min_similarity
    rows = np.repeat(np.arange(n), neighbours)[keep.ravel()]
    cols, weights = ids.ravel()[keep.ravel()], sims.ravel()[keep.ravel()].astype(np.float64)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    edges: dict[tuple[int, int], float] = {}
    for a, b, w in zip(lo.tolist(), hi.tolist(), weights.tolist()):
        edges[(a, b)] = decoder_weight * w  # symmetric: both directions carry the same cosine
    if cofiring is not None:
        c_ids, c_sims = knn_of_similarity(cofiring, neighbours, block)
        c_keep = (c_sims > 0).ravel()
        c_rows = np.repeat(np.arange(n), c_ids.shape[1])[c_keep]
        c_cols, c_w = c_ids.ravel()[c_keep], c_sims.ravel()[c_keep].astype(np.float64)
        cofired: dict[tuple[int, int], float] = {}
        for a, b, w in zip(np.minimum(c_rows, c_cols).tolist(), np.maximum(c_rows, c_cols).tolist(), c_w.tolist()):
            cofired[(a, b)] = w
        for pair, w in cofired.items():
            edges[pair] = edges.get(pair, 0.0) + cofiring_weight * w
    if coactivation:
        scale = coactivation_weight / max(1, top_k)
        for pair, count in coactivation.items():
            edges[pair] = edges.get(pair, 0.0) + scale * count
    graph.add_weighted_edges_from((a, b, w) for (a, b), w in sorted(edges.items()))
    yield Progress("clustering: communities", 2, 4, "steps", time.perf_counter() - started)
    communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    yield Progress("clustering: map", 3, 4, "steps", time.perf_counter() - started)
    unit_np = np.array(unit)
    groups = sorted((sorted(c) for c in communities), key=lambda g: (-len(g), g[0]))
    clusters = []
    shared = set()
    if coactivation:
        for a, b in coactivation:
            shared.add(a)
            shared.add(b)
    for cid, group in enumerate(groups):
        members = np.asarray(group)
        u = unit_np[members]
        total = u.sum(0)
        # centrality: mean cosine to the other members
        central = (u @ total - 1.0) / max(1, len(members) - 1)
        order = np.lexsort((live[members], -central))
        clusters.append(Cluster(
            id=cid,
            members=[int(f) for f in live[members[order]]],
            cohesion=cohesion_of(u),
            coactivation=(sum(1 for m in group if m in shared) / len(group)) if coactivation is not None else None,
        ))
    xy = pca_2d(unit, seed)
    params = dict(neighbours=neighbours, seed=seed, resolution=resolution, min_similarity=min_similarity,
                  coactivation_weight=coactivation_weight if coactivation is not None else None,
                  cofiring_weight=cofiring_weight if cofiring is not None else None, decoder_weight=decoder_weight)
    yield Progress("clustering", 4, 4, "steps", time.perf_counter() - started)
    return Clustering(clusters, n_features, live, xy, params, seconds=time.perf_counter() - started)


# -- labels -------------------------------------------------------------------------------------------


def token_labels(clustering: Clustering, tops: dict[int, list[tuple[int, int, int]]], token_text: Callable[[int], str]) -> None:
    """Set each cluster's token_label: the strongest tokens most typical of its members
    (count in the cluster x log(clusters / clusters where the token is strong), TF-IDF), the
    same text once."""
    import math

    counts_of = []
    seen_in: Counter = Counter()
    for c in clustering.clusters:
        counts: Counter = Counter()
        for f in c.members:
            for _, _, tid in (tops.get(f) or [])[:5]:
                counts[tid] += 1
        counts_of.append(counts)
        seen_in.update(counts.keys())
    n = max(1, len(clustering.clusters))
    for c, counts in zip(clustering.clusters, counts_of):
        scored = sorted(counts.items(), key=lambda kv: (-kv[1] * math.log(1 + n / seen_in[kv[0]]), kv[0]))
        parts: list[str] = []
        for tid, _ in scored:
            raw = token_text(tid)
            text = repr(raw.strip() or raw)[1:-1]
            if text and text not in parts:
                parts.append(text)
            if len(parts) == LABEL_PARTS:
                break
        c.token_label = " · ".join(parts)


def label_clusters(clustering: Clustering, names: dict[int, str] | None = None) -> Clustering:
    """Set each cluster's label: the most common names of its members (when any is named),
    else its token label, else "cluster N". Untrusted text: show it through safe_text."""
    names = names or {}
    for c in clustering.clusters:
        named = [names[f].strip() for f in c.members if names.get(f, "").strip()]
        if named:
            counts = Counter(named)
            top = [n for n, _ in sorted(counts.items(), key=lambda kv: (-kv[1], named.index(kv[0])))[:2]]
            extra = len(c.members) - sum(counts[n] for n in top)
            c.label = " · ".join(top) + (f" +{extra}" if extra else "")
        else:
            c.label = c.token_label or f"cluster {c.id}"
    return clustering


# -- the session-facing computation ------------------------------------------------------------


def clusters_cache_parts(session: "Session", index: "FeatureIndex | None", **params: Any) -> dict[str, Any]:
    index_key = index.meta.get("key") if index is not None else None
    # SAE hash, model, hook, dataset, context length: the co-firing pass reads the corpus
    return session.cache_parts(purpose="clusters", format=CLUSTERS_FORMAT, index=index_key, d_sae=session.d_sae, **params)


def _token_text_fn(tokenizer: Any) -> Callable[[int], str]:
    def text(tid: int) -> str:
        if tokenizer is None:
            return f"<{tid}>"
        try:
            return tokenizer.decode([int(tid)])
        except Exception:  # noqa: BLE001 - a token the tokenizer cannot decode alone
            return f"<{tid}>"
    return text


def compute_clusters(
    session: "Session",
    index: "FeatureIndex | None" = None,
    *,
    names: dict[int, str] | None = None,
    neighbours: int = DEFAULT_NEIGHBOURS,
    seed: int = DEFAULT_SEED,
    resolution: float = DEFAULT_RESOLUTION,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    coactivation_weight: float = DEFAULT_COACTIVATION_WEIGHT,
    cofiring_weight: float = DEFAULT_COFIRING_WEIGHT,
    decoder_weight: float = DEFAULT_DECODER_WEIGHT,
    cofiring_tokens: int = COFIRING_TOKENS,
    use_cache: bool = True,
) -> LongWork[Clustering]:
    """Clusters of the session's SAE (long work). `index`: a complete FeatureIndex (live
    features and co-activation come from it); without one, every feature with a nonzero
    decoder counts as live and only decoder geometry is used. Cached; returns the Clustering,
    which becomes the session's (`session.clusters`)."""
    sae = session.sae
    params = _key_params(neighbours, seed, resolution, min_similarity, coactivation_weight, cofiring_weight,
                         decoder_weight, cofiring_tokens)
    path = None
    if use_cache:
        key = cache.cache_key(**clusters_cache_parts(session, index, **params))
        path = cache.cache_path("clusters", key, ".json")
        loaded = _read_cached(path, key, int(sae.d_sae))
        if loaded is not None:
            session.clusters = label_clusters(loaded, names)
            return session.clusters
    directions = sae.decoder_directions
    if index is not None:
        live = np.asarray(index.live_features(), dtype=np.int64)
    else:
        norms = np.array(mx.linalg.norm(directions.astype(mx.float32), axis=-1))
        live = np.flatnonzero(norms > 0).astype(np.int64)
    check_clusterable(int(sae.d_sae), len(live), neighbours)
    tops: dict[int, list[tuple[int, int, int]]] = {}
    pairs = None
    top_k = 1
    if index is not None:
        started = time.perf_counter()
        for i, f in enumerate(live):
            if i % 2048 == 0:
                yield Progress("clustering: reading top contexts", i, len(live), "features", time.perf_counter() - started)
            tops.update(top_tokens(index, [f]))
        positions = {int(f): i for i, f in enumerate(live)}
        pairs = coactivation_pairs(tops, positions)
        top_k = int(getattr(index, "top_k", 1) or 1)
    cofiring = None
    if cofiring_weight > 0 and cofiring_tokens > 0:
        cofiring = yield from cofiring_correlation(session, live, cofiring_tokens, COFIRING_WINDOW)
    clustering = yield from cluster_directions(
        directions, live, neighbours=neighbours, seed=seed, resolution=resolution, min_similarity=min_similarity,
        coactivation=pairs if coactivation_weight > 0 else None, coactivation_weight=coactivation_weight, top_k=top_k,
        cofiring=cofiring, cofiring_weight=cofiring_weight, decoder_weight=decoder_weight)
    token_labels(clustering, tops, _token_text_fn(session.tokenizer))
    if path is not None:
        try:
            cache.atomic_write_json(path, _to_cache(clustering, key))
        except OSError:
            pass  # a cache that cannot be written only costs a recompute
    session.clusters = label_clusters(clustering, names)
    return session.clusters


def cached_clusters(session: "Session", index: "FeatureIndex | None" = None, *, names: dict[int, str] | None = None, **params: Any) -> Clustering | None:
    """The cached clustering for these settings (defaults as in `compute_clusters`), or None;
    never computes, and leaves `session.clusters` as it is."""
    full: dict[str, Any] = dict(neighbours=DEFAULT_NEIGHBOURS, seed=DEFAULT_SEED, resolution=DEFAULT_RESOLUTION,
                min_similarity=DEFAULT_MIN_SIMILARITY, coactivation_weight=DEFAULT_COACTIVATION_WEIGHT,
                cofiring_weight=DEFAULT_COFIRING_WEIGHT, decoder_weight=DEFAULT_DECODER_WEIGHT,
                cofiring_tokens=COFIRING_TOKENS)
    full.update(params)
    key = cache.cache_key(**clusters_cache_parts(session, index, **_key_params(**full)))
    loaded = _read_cached(cache.cache_path("clusters", key, ".json"), key, int(session.sae.d_sae))
    return None if loaded is None else label_clusters(loaded, names)


def _key_params(neighbours: int, seed: int, resolution: float, min_similarity: float, coactivation_weight: float,
                cofiring_weight: float, decoder_weight: float, cofiring_tokens: int) -> dict[str, Any]:
    return dict(neighbours=int(neighbours), seed=int(seed), resolution=float(resolution),
                min_similarity=float(min_similarity), coactivation_weight=float(coactivation_weight),
                cofiring_weight=float(cofiring_weight), decoder_weight=float(decoder_weight),
                cofiring_tokens=int(cofiring_tokens), cofiring_window=COFIRING_WINDOW)


def _to_cache(c: Clustering, key: str) -> dict[str, Any]:
    return {
        "key": key, "format": CLUSTERS_FORMAT, "n_features": c.n_features, "parameters": c.parameters,
        "seconds": c.seconds, "live": c.live.tolist(), "map": np.round(c.map_xy, 5).tolist(),
        "clusters": [{"id": x.id, "members": x.members, "cohesion": x.cohesion, "coactivation": x.coactivation,
                      "token_label": x.token_label} for x in c.clusters],
    }


def _read_cached(path: Any, key: str, d_sae: int) -> Clustering | None:
    data = cache.read_json(path)
    if not isinstance(data, dict) or data.get("key") != key or data.get("format") != CLUSTERS_FORMAT:
        return None
    try:
        live = np.asarray(data["live"], dtype=np.int64)
        xy = np.asarray(data["map"], dtype=np.float32).reshape(len(live), 2)
        clusters = [Cluster(int(x["id"]), [int(f) for f in x["members"]],
                            None if x["cohesion"] is None else float(x["cohesion"]),
                            None if x["coactivation"] is None else float(x["coactivation"]),
                            str(x.get("token_label", ""))) for x in data["clusters"]]
        members = sorted(f for x in clusters for f in x.members)
        if int(data["n_features"]) != d_sae or members != sorted(live.tolist()) or (live.size and (live.min() < 0 or live.max() >= d_sae)):
            return None
        return Clustering(clusters, d_sae, live, xy, dict(data["parameters"]), float(data.get("seconds", 0.0)), True)
    except (KeyError, TypeError, ValueError):
        return None


# -- benchmark (for saetui.bench) ----------------------------------------------------------------------


def synthetic_decoder(n_features: int = 32768, d_model: int = 2048, family_size: int = 16, seed: int = 0) -> mx.array:
    """A synthetic decoder (n_features, d_model) float32 with planted families: each row is
    its family's random centre plus as much independent noise (mean cosine within a family
    about 0.5, between families about 0), rows shuffled."""
    rng = np.random.default_rng(seed)
    n_families = max(1, n_features // family_size)
    family = rng.permutation(np.arange(n_features) % n_families)
    centres = rng.standard_normal((n_families, d_model), dtype=np.float32)
    rows = centres[family] + rng.standard_normal((n_features, d_model), dtype=np.float32)
    out = mx.array(rows)
    mx.eval(out)
    return out


def benchmark_clustering(n_features: int = 32768, d_model: int = 2048, seed: int = 0, neighbours: int = DEFAULT_NEIGHBOURS) -> dict[str, Any]:
    """Cluster all features of a synthetic decoder (`synthetic_decoder`: planted families of
    16) with the default parameters, decoder geometry only (what an index adds is a dict of
    shared-token counts). Returns the clustering's seconds (making the decoder excluded) and
    the number of clusters. Peak memory: run it in a fresh process and read VmHWM, as
    saetui.bench does (`python -m saetui.bench_families` prints both)."""
    directions = synthetic_decoder(n_features, d_model, seed=seed)
    started, cpu = time.perf_counter(), time.process_time()
    steps: dict[str, float] = {}
    gen = cluster_directions(directions, np.arange(n_features), neighbours=neighbours, seed=seed)
    last, label = started, "start"
    try:
        while True:
            progress = next(gen)
            now = time.perf_counter()
            steps[label] = round(now - last, 2)
            last, label = now, progress.label
    except StopIteration as stop:
        result = stop.value
    steps[label] = round(time.perf_counter() - last, 2)
    # cpu_seconds: all threads' CPU time; on a loaded machine it says more than the wall clock
    return {"seconds": round(time.perf_counter() - started, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "steps": steps, "clusters": len(result.clusters), "n_features": n_features, "d_model": d_model}
