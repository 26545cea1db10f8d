"""One index built by several processes or machines, with MLX's own distributed engine.

Started by `mlx.launch` (`-n 2` on one machine, `--hosts mac1,mac2` or a hostfile over
Ethernet or Thunderbolt with the ring backend, or MPI), every rank opens the same
session and runs `build_index_distributed`:

1. rank 0 looks for a finished cached index; if there is one, every rank stops there;
2. every rank checks that it read the same corpus (a digest of the token ids, all_gather);
3. rank r builds the state of its contiguous, batch-aligned share of the contexts
   (`builder.shard_range`): its own forward passes and encodes, no file written;
4. the states are exchanged as serialized bytes with `all_gather` (counts, sums,
   histograms and the two keepers; not the contexts, which every rank has);
5. rank 0 merges them in rank order (`FeatureIndex.merge`, exact), marks the result
   complete and writes the cache file (atomically), which is the file a single process
   writes for the same settings, equal in every stored value but `build_seconds`.

Every step that can fail on one rank ends with a collective vote (all_sum of a flag), so
the others stop with one clear line instead of waiting forever; a peer that dies outright
breaks its ring connection, which MLX reports as an error on the survivors. Nothing but
rank 0's final, complete file is ever written, so a failed or cancelled distributed run
leaves no file that reads as complete (and no partial file to resume: a rerun starts over).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any, Generator

import numpy as np

from .. import cache
from ..errors import UserError
from ..worker import Progress
from .builder import SUFFIX, IndexBuild, default_budget, find_cached, index_parts, tier_for
from .store import FeatureIndex

if TYPE_CHECKING:
    from ..session import Session

# The environment mlx.launch (ring, MPI) gives each rank; without one of them the
# command never touches mx.distributed.
LAUNCH_VARS = ("MLX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
# Tests only: the rank named here raises partway through its build.
_FAIL_RANK_VAR = "SAETUI_TEST_FAIL_RANK"


class RankFailed(UserError):
    """Another rank (or this one) could not do its part."""


def launched_group() -> Any | None:
    """The MLX distributed group when this process is one of several ranks, else None."""
    if not any(os.environ.get(v) for v in LAUNCH_VARS):
        return None
    import mlx.core as mx

    group = mx.distributed.init()
    return group if group.size() > 1 else None


class Collective:
    """The few collectives the build needs, on the CPU stream (as MLX's backends want)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = int(group.rank())
        self.size = int(group.size())

    def _run(self, fn, array):
        import mlx.core as mx

        try:
            out = fn(array, group=self.group, stream=mx.cpu)
            mx.eval(out)
        except RuntimeError as exc:  # a peer died: the ring reports a lost connection
            raise RankFailed(f"rank {self.rank}: lost contact with the other ranks ({exc})", "Check the other ranks' output; rerun the whole launch") from None
        return np.asarray(out)

    def gather_ints(self, values: list[int]) -> np.ndarray:
        """Every rank's `values`, as rows in rank order."""
        import mlx.core as mx

        row = mx.array(np.asarray(values, dtype=np.int32)[None, :])
        return self._run(mx.distributed.all_gather, row)

    def vote(self, ok: bool, what: str) -> None:
        """All ranks say whether `what` worked; any failure stops every rank with one line."""
        flags = self.gather_ints([1 if ok else 0])[:, 0]
        failed = [int(r) for r in np.flatnonzero(flags == 0)]
        if failed:
            ranks = ", ".join(str(r) for r in failed)
            raise RankFailed(f"rank {self.rank}: stopping, {what} failed on rank {ranks}", "See that rank's error above; no complete index was written, rerun the launch")

    def gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's bytes, in rank order (all_gather of a padded uint8 array)."""
        import mlx.core as mx

        lengths = self.gather_ints([len(data) >> 31, len(data) & 0x7FFFFFFF])
        sizes = [int(hi) << 31 | int(lo) for hi, lo in lengths]
        padded = np.zeros(max(sizes), dtype=np.uint8)
        padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        rows = self._run(mx.distributed.all_gather, mx.array(padded[None, :]))
        return [rows[r, : sizes[r]].tobytes() for r in range(self.size)]


def corpus_digest(contexts: np.ndarray) -> list[int]:
    """A digest of the token ids, as four int32 (compared across ranks)."""
    digest = hashlib.sha256(np.ascontiguousarray(contexts, dtype=np.int32).tobytes()).digest()[:16]
    return [int(x) for x in np.frombuffer(digest, dtype=np.int32)]


def shard_to_bytes(index: FeatureIndex) -> bytes:
    """A shard's state without its contexts (every rank holds the same corpus)."""
    return index.to_bytes(with_contexts=False)


def shard_from_bytes(data: bytes, contexts: np.ndarray) -> FeatureIndex:
    """A shard's state read back (and checked) over this rank's copy of the contexts."""
    return FeatureIndex.from_bytes(data, contexts=contexts)


def merge_shards(shards: list[FeatureIndex]) -> FeatureIndex:
    """The shards' states merged in rank order, marked complete (ValueError if they do not cover the corpus)."""
    merged = shards[0]
    for shard in shards[1:]:
        merged = merged.merge(shard)
    if merged.contexts_done != merged.n_contexts:
        raise ValueError(f"the shards cover {merged.contexts_done} of {merged.n_contexts} contexts")
    with merged.lock:
        merged.top.sort_rows()
        merged.samples.sort_rows()
        merged.meta["complete"] = True
    return merged


def _maybe_fail_for_tests(rank: int, done: int) -> None:
    """`RANK`: that rank raises; `RANK:exit`: it dies on the spot (as a killed process would)."""
    target, _, how = os.environ.get(_FAIL_RANK_VAR, "").partition(":")
    if done > 0 and target == str(rank):
        if how == "exit":
            os._exit(3)
        raise RuntimeError(f"{_FAIL_RANK_VAR} made rank {rank} fail")


class DistributedBuild:
    """One rank's part of a distributed build; `run()` is the generator (see the module)."""

    def __init__(self, session: "Session", group: Any, budget: int | None = None, top_k: int = 100, batch_size: int | None = None) -> None:
        self.session = session
        self.comm = Collective(group)
        self.budget = int(budget or default_budget(session))
        self.top_k = tier_for(top_k)
        self.batch_size = batch_size
        self.notes: list[str] = []
        self.from_cache = False
        self.seconds = 0.0
        self.merge_seconds = 0.0  # rank 0: merging the shards and writing the file
        self.exchange_seconds = 0.0  # serializing and all_gather of the states (after the vote: no waiting on a slower rank)
        self.wire_bytes = 0  # this rank's serialized state

    @property
    def rank(self) -> int:
        return self.comm.rank

    def _vote(self, error: BaseException | None, what: str) -> None:
        """Every rank learns whether `what` worked; the rank it failed on raises its own error."""
        try:
            self.comm.vote(error is None, what)
        except RankFailed:
            if error is not None:
                raise error from None
            raise

    def run(self) -> Generator[Progress, None, FeatureIndex | None]:
        """Rank 0 returns the complete index; the other ranks return None."""
        session, comm = self.session, self.comm
        began = time.perf_counter()
        cached = find_cached(session, self.budget, self.top_k, self.notes) if comm.rank == 0 else None
        if int(comm.gather_ints([1 if cached is not None else 0])[0, 0]):
            self.from_cache = True
            if cached is not None:
                session.index = cached
            return cached
        corpus = session.corpus(self.budget)
        digests = comm.gather_ints(corpus_digest(corpus.contexts))
        if not (digests == digests[0]).all():
            raise RankFailed(f"rank {comm.rank}: the ranks read different corpora (datasets or tokenizers differ between machines)", "Give every machine the same dataset, model and SAE files at the same paths")
        build = IndexBuild(session, self.budget, self.top_k, self.batch_size, shard=(comm.rank, comm.size))
        error: BaseException | None = None
        shard = None
        try:
            gen = build.run()
            for progress in gen:
                _maybe_fail_for_tests(comm.rank, progress.done)
                yield Progress(f"indexing (rank {comm.rank} of {comm.size})", progress.done, progress.total, progress.unit, progress.elapsed)
            shard = build.index
        except GeneratorExit:
            raise  # cancelled: the other ranks see this rank's connection close
        except Exception as exc:  # noqa: BLE001 - told to every rank, then raised here
            error = exc
        finally:
            self.notes.extend(build.notes)
        self._vote(error, "the build")
        assert shard is not None
        yield Progress("exchanging and merging the ranks' states", 0, 1, "steps", time.perf_counter() - began)
        t0 = time.perf_counter()
        data = shard_to_bytes(shard)
        self.wire_bytes = len(data)
        exchanged = comm.gather_bytes(data)
        self.exchange_seconds = time.perf_counter() - t0
        merged = None
        if comm.rank == 0:
            t0 = time.perf_counter()
            try:
                shards = [shard] + [shard_from_bytes(b, corpus.contexts) for b in exchanged[1:]]
                merged = merge_shards(shards)
                merged.meta["build_seconds"] = time.perf_counter() - began
                key = cache.cache_key(**index_parts(session, self.budget, self.top_k))
                path = cache.cache_path("index", key, SUFFIX)
                cache.atomic_write_bytes(path, merged.to_bytes())
                merged.path = path
            except (OSError, ValueError) as exc:
                error = exc
            self.merge_seconds = time.perf_counter() - t0
        self._vote(error, "merging and writing the index")
        self.seconds = time.perf_counter() - began
        if merged is not None:
            session.index = merged
        return merged


def build_index_distributed(session: "Session", group: Any, budget: int | None = None, top_k: int = 100, batch_size: int | None = None, notes: list[str] | None = None) -> Generator[Progress, None, FeatureIndex | None]:
    """Long work: this rank's part of a distributed build (see the module)."""
    run = DistributedBuild(session, group, budget, top_k, batch_size)
    try:
        return (yield from run.run())
    finally:
        if notes is not None:
            notes.extend(run.notes)
