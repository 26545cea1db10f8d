"""The feature index: every feature's statistics and top contexts, from one streamed pass.

The user's guide finds a feature's top texts by re-running the model over the whole
dataset for every feature asked about. The index runs the model once over a token
budget of the dataset and keeps, for every feature:

- how many tokens it fires on (density), its summed and maximum activation;
- a histogram of its non-zero activations in log-spaced bins;
- its top-K contexts (K = 100, the guide's number): a context's activation is its
  strongest token, contexts are ranked by activation (descending), then context id, and
  the position is the first token reaching that maximum; each keeps the activations of a
  window of tokens around that position;
- a uniform random sample of the contexts it fires on (the contexts with the largest
  hash of (context, feature): order-independent and deterministic), from which the
  page shows contexts at lower activation quantiles.

Seams: `keeper` (the exact top-K keeper and its ranks), `store` (the state, its queries,
its files and `merge`), `bookkeeping` (sparse codes folded in on the device), `builder`
(the build generator and the cache). Memory is O(d_sae x K x window) plus one batch.
"""

from .builder import (
    CHECKPOINT_SECONDS,
    DEFAULT_BUDGET,
    DEFAULT_TOP_K,
    DEMO_BUDGET,
    MAX_TOP_K,
    PARTIAL_SUFFIX,
    SUFFIX,
    TOP_K_TIERS,
    IndexBuild,
    build_index,
    default_budget,
    find_cached,
    index_parts,
    index_path,
    load_cached,
    read_index,
    tier_for,
)
from .keeper import FLOAT16_MAX, HIST_BINS, HIST_BINS_PER_DECADE, HIST_LOG10_MAX, HIST_LOG10_MIN, Keeper, histogram_bin, histogram_edges, sample_key
from .store import INDEX_FORMAT, SAMPLES_KEPT, WINDOW_AFTER, WINDOW_BEFORE, ContextExample, FeatureIndex, FeatureStats

__all__ = [
    "CHECKPOINT_SECONDS", "DEFAULT_BUDGET", "DEFAULT_TOP_K", "DEMO_BUDGET", "FLOAT16_MAX", "HIST_BINS",
    "HIST_BINS_PER_DECADE", "HIST_LOG10_MAX", "HIST_LOG10_MIN", "INDEX_FORMAT", "MAX_TOP_K", "PARTIAL_SUFFIX",
    "SAMPLES_KEPT", "SUFFIX", "TOP_K_TIERS", "WINDOW_AFTER", "WINDOW_BEFORE", "ContextExample", "FeatureIndex",
    "FeatureStats", "IndexBuild", "Keeper", "build_index", "default_budget",
    "find_cached", "histogram_bin", "histogram_edges", "index_parts", "index_path", "load_cached",
    "read_index", "sample_key", "tier_for",
]
