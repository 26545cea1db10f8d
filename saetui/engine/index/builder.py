"""Building the index: one streamed pass (forward to the hook, sparse encode, bookkeeping).

`build_index(session, ...)` is a generator: it yields `Progress` after every batch and returns
the finished `FeatureIndex` (StopIteration.value). It loads a finished cached index when
there is one, resumes an interrupted build from its checkpoint, or starts afresh.
Cancelling is closing the generator: whatever was folded in is checkpointed (a separate
`.partial` file, only ever read to resume, never as a finished index), as it is every
`CHECKPOINT_SECONDS` of a long build. Files are written atomically and keyed by
everything the index depends on (`session.cache_parts` plus the budget, K and the
index's own format); a damaged file is deleted and rebuilt.

While a build runs, `session.index` answers queries with what is known so far (partial).

A shard build (`shard=(rank, size)`, see `distributed.py`) folds in only its rank's
contiguous, batch-aligned share of the contexts (`shard_range`), touches no file and is
never marked complete: the ranks' states merge into the index.

The next batch's forward pass and encode are queued on the device (`mx.async_eval`)
before the host reads back the previous batch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

import numpy as np

from .. import cache
from ..errors import UserError
from ..sparse import session_codes
from ..worker import Progress
from .bookkeeping import Bookkeeper
from .keeper import HIST_BINS_PER_DECADE, HIST_LOG10_MAX, HIST_LOG10_MIN
from .store import INDEX_FORMAT, SAMPLES_KEPT, WINDOW_AFTER, WINDOW_BEFORE, FeatureIndex

if TYPE_CHECKING:
    from ..session import Session

# The guide's 100 top examples: 32,768 features x 100 entries x 84 bytes is 275 MB.
DEFAULT_TOP_K = 100
MAX_TOP_K = 100
# Indexes are built for one of these K, so a smaller request reuses a deeper index.
TOP_K_TIERS = (100,)
# Token budgets: the demo's is quick; a real SAE's covers the guide's 1,000 wikitext texts.
DEMO_BUDGET = 65_536
DEFAULT_BUDGET = 262_144
# Seconds between checkpoints of a long build (so a killed process can resume).
CHECKPOINT_SECONDS = 60.0
# A stepped build makes its partial state visible at most this often.
PARTIAL_SYNC_SECONDS = 2.0
SUFFIX = ".npz"
PARTIAL_SUFFIX = ".partial.npz"


def tier_for(top_k: int) -> int:
    """The K an index is built with to answer `top_k`."""
    top_k = int(top_k)
    if not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"--top-k {top_k} is out of range", f"Use a value from 1 to {MAX_TOP_K}")
    return next(t for t in TOP_K_TIERS if t >= top_k)


def default_budget(session: "Session") -> int:
    """--max-tokens when given; else the demo's quick budget or the default for real SAEs."""
    if session.settings.max_tokens:
        return int(session.settings.max_tokens)
    return DEMO_BUDGET if session.is_demo else DEFAULT_BUDGET


# -- cache files ------------------------------------------------------------------------------


def _threshold_mode(session: "Session") -> str | None:
    return session.threshold_mode


def index_parts(session: "Session", budget: int, top_k: int) -> dict[str, Any]:
    batch = session.settings.batch_size if _threshold_mode(session) == "batch" else None
    return session.cache_parts(
        purpose="feature-index",
        index_format=INDEX_FORMAT,
        budget=int(budget),
        top_k=int(top_k),
        window=[WINDOW_BEFORE, WINDOW_AFTER],
        samples=SAMPLES_KEPT,
        histogram=[HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_BINS_PER_DECADE],
        batch=batch,
    )


def index_path(session: "Session", budget: int, top_k: int, partial: bool = False) -> Path:
    key = cache.cache_key(**index_parts(session, budget, tier_for(top_k)))
    return cache.cache_path("index", key, PARTIAL_SUFFIX if partial else SUFFIX)


def read_index(path: Path, key: str | None = None, want_complete: bool = True) -> FeatureIndex:
    """An index file; ValueError when missing parts, corrupt, for another key, or unfinished."""
    data = Path(path).read_bytes()
    index = FeatureIndex.from_bytes(data)
    if key is not None and index.meta.get("key") != key:
        raise ValueError("made for other settings")
    if want_complete and not index.complete:
        raise ValueError("an unfinished build")
    index.path = Path(path)
    return index


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def find_cached(session: "Session", budget: int | None = None, top_k: int = DEFAULT_TOP_K, notes: list[str] | None = None) -> FeatureIndex | None:
    """A finished cached index answering `top_k`, or None (a damaged file is deleted and said so)."""
    budget = budget or default_budget(session)
    for tier in TOP_K_TIERS:
        if tier < tier_for(top_k):
            continue
        key = cache.cache_key(**index_parts(session, budget, tier))
        path = cache.cache_path("index", key, SUFFIX)
        if not path.exists():
            continue
        try:
            return read_index(path, key)
        except (OSError, ValueError) as exc:
            if notes is not None:
                notes.append(f"The cached feature index {path.name} is damaged ({exc}); rebuilding it")
            _unlink(path)
    return None


# -- the build ---------------------------------------------------------------------------------


def shard_range(n_contexts: int, batch_size: int, rank: int, size: int) -> tuple[int, int]:
    """Contexts [lo, hi) of rank `rank` of `size`: a contiguous run of whole batches.

    Whole batches, so every rank forms exactly the batches a single process forms (the
    numbers of a batched forward pass, and BatchTopK's batch thresholds, depend on them).
    """
    n_batches = -(-int(n_contexts) // int(batch_size))
    lo = rank * n_batches // size * batch_size
    hi = (rank + 1) * n_batches // size * batch_size
    return min(lo, n_contexts), min(hi, n_contexts)


class IndexBuild:
    """One build's settings and what it found out (`notes`, `resumed_from`, `seconds`).

    `run()` is the generator; `index` is set as soon as it is known (before any batch).
    """

    def __init__(self, session: Any, budget: int | None = None, top_k: int = DEFAULT_TOP_K, batch_size: int | None = None, use_cache: bool = True, shard: tuple[int, int] | None = None) -> None:
        self.session = session
        self.shard = shard  # (rank, size): fold in only that share; no files, never complete
        self.use_cache = use_cache and shard is None  # False: build in memory only (neither read nor write files)
        self.budget = int(budget or default_budget(session))
        self.top_k = tier_for(top_k)
        self.batch_size = batch_size
        self.index: FeatureIndex | None = None
        self.notes: list[str] = []
        self.resumed_from = 0
        self.seconds = 0.0
        self.from_cache = False
        self._keeper: Bookkeeper | None = None

    def sync(self, min_interval: float = 0.0) -> None:
        """Make every batch folded in so far visible in `index` (between slices of a build),
        unless the last sync is less than `min_interval` seconds old (a sync compacts the
        keepers, which costs more than a slice of a few batches)."""
        keeper = self._keeper
        if keeper is None:
            return
        if keeper.last_sync is None or time.perf_counter() - keeper.last_sync >= min_interval:
            keeper.sync()

    def run(self) -> Generator[Progress, None, FeatureIndex]:
        session = self.session
        began = time.perf_counter()
        self._thread = threading.current_thread()
        cached = find_cached(session, self.budget, self.top_k, self.notes) if self.use_cache else None
        if cached is not None:
            self.index, self.from_cache = cached, True
            session.index = cached
            return cached
        key = cache.cache_key(**index_parts(session, self.budget, self.top_k))
        final_path = cache.cache_path("index", key, SUFFIX)
        partial_path = cache.cache_path("index", key, PARTIAL_SUFFIX)
        corpus = session.corpus(self.budget)
        self.notes.extend(corpus.notes)
        index = self._resume(partial_path, key, corpus) if self.use_cache else None
        if index is None:
            index = FeatureIndex.empty(self._meta(key, corpus), corpus.contexts, session.sae.d_sae)
        self.index = session.index = index
        self.resumed_from = index.contexts_done
        first = corpus.first_position
        total = corpus.n_tokens
        start, stop = 0, corpus.n_contexts
        if self.shard is not None:
            start, stop = shard_range(corpus.n_contexts, self.batch_size or session.settings.batch_size, *self.shard)
            total = (stop - start) * corpus.context_len
        label = "indexing"
        yield Progress(label, index.contexts_done * corpus.context_len, total, "tokens", 0.0)
        keeper = self._keeper = Bookkeeper(index)
        last_checkpoint = time.perf_counter()
        start += index.contexts_done
        rest = replace(corpus, contexts=corpus.contexts[start:stop])
        batches = session.iter_activations(rest, batch_size=self.batch_size)
        pending = None
        try:
            for s, _, acts in batches:
                # Queue this batch's device work, then read back the previous one.
                queued = keeper.queue(start + s, session_codes(session, acts[:, first:, :]))
                previous, pending = pending, queued
                if previous is None:
                    continue
                keeper.fold(previous)
                # Page requests served between steps see the partial index, refreshed now and then
                # (a sync compacts the keepers, which costs more than a batch).
                self.sync(PARTIAL_SYNC_SECONDS)
                yield Progress(label, keeper.done * corpus.context_len, total, "tokens", time.perf_counter() - began)
                if self.use_cache and time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS:
                    keeper.sync()
                    self._checkpoint(partial_path)
                    last_checkpoint = time.perf_counter()
            if pending is not None:
                previous, pending = pending, None
                keeper.fold(previous)
            keeper.sync()
        except GeneratorExit:
            # Cancelled: keep everything computed so far, resumable from the checkpoint
            # (MLX work only on the thread that ran the build: not from a garbage collector).
            if threading.current_thread() is not self._thread:
                raise
            if pending is not None:
                keeper.fold(pending)
            keeper.sync()
            if self.use_cache:
                self._checkpoint(partial_path)
            raise
        finally:
            elapsed = time.perf_counter() - began
            self.seconds += elapsed
            index.meta["build_seconds"] = float(index.meta.get("build_seconds", 0.0)) + elapsed
            self._keeper = None
        with index.lock:
            index.top.sort_rows()
            index.samples.sort_rows()
            index.meta["complete"] = self.shard is None
        if self.use_cache:
            try:
                cache.atomic_write_bytes(final_path, index.to_bytes())
                index.path = final_path
            except OSError as exc:
                self.notes.append(f"Could not save the feature index to the cache ({exc}); it is kept in memory")
            _unlink(partial_path)
        yield Progress(label, total, total, "tokens", time.perf_counter() - began)
        return index

    def _meta(self, key: str, corpus: Any) -> dict[str, Any]:
        session = self.session
        window = min(WINDOW_BEFORE + 1 + WINDOW_AFTER, corpus.context_len - corpus.first_position)
        return dict(
            format=INDEX_FORMAT,
            key=key,
            complete=False,
            contexts_done=0,
            n_contexts=corpus.n_contexts,
            budget=self.budget,
            top_k=self.top_k,
            window=window,
            samples=SAMPLES_KEPT,
            first_position=corpus.first_position,
            dataset=session.dataset_name,
            sae=str(session.sae_path) if not session.is_demo else "demo",
            hook=str(session.hook),
            threshold_mode=_threshold_mode(session),
            build_seconds=0.0,
        )

    def _resume(self, partial_path: Path, key: str, corpus: Any) -> FeatureIndex | None:
        if not partial_path.exists():
            return None
        try:
            index = read_index(partial_path, key, want_complete=False)
            if index.contexts.shape != corpus.contexts.shape or not np.array_equal(index.contexts, corpus.contexts):
                raise ValueError("the dataset changed")
        except (OSError, ValueError) as exc:
            self.notes.append(f"The interrupted index build could not be resumed ({exc}); starting afresh")
            _unlink(partial_path)
            return None
        self.notes.append(f"Resuming an interrupted index build at {index.tokens_seen:,} tokens")
        return index

    def _checkpoint(self, partial_path: Path) -> None:
        """Save what is built so far as a resumable partial file (never read as finished)."""
        if self.index is None or self.index.contexts_done == 0:
            return
        try:
            cache.atomic_write_bytes(partial_path, self.index.to_bytes())
        except OSError as exc:
            self.notes.append(f"Could not save the partial index ({exc})")


def build_index(
    session: "Session",
    budget: int | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int | None = None,
    notes: list[str] | None = None,
    use_cache: bool = True,
    shard: tuple[int, int] | None = None,
) -> Generator[Progress, None, FeatureIndex]:
    """Build (or load, or resume) the index: long work that yields Progress and returns the
    FeatureIndex. `session.index` is the index from the first step on (partial while it
    builds). `notes` receives what the build found worth saying (resumed, damaged cache...).
    """
    run = IndexBuild(session, budget, top_k, batch_size, use_cache, shard)
    try:
        return (yield from run.run())
    finally:
        if notes is not None:
            notes.extend(run.notes)


def load_cached(session: "Session", budget: int | None = None, top_k: int = DEFAULT_TOP_K, notes: list[str] | None = None) -> FeatureIndex | None:
    """A finished cached index answering `top_k`, or None; it becomes the session's index."""
    index = find_cached(session, budget, top_k, notes)
    if index is not None:
        session.index = index
    return index
