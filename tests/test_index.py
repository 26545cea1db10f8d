"""The feature index against brute force, and its cache: round trip, damage, interruption."""

from __future__ import annotations


import numpy as np
import pytest

from saetui.engine import index as index_mod
from saetui.engine.errors import Cancelled, UserError
from saetui.engine.index import (
    HIST_BINS,
    WINDOW_BEFORE,
    FeatureIndex,
    build_index,
    load_cached,
)
from support import OpenedSession, open_session

CONTEXT = 48  # longer than the 32-token window, so windows are clamped at both ends
BUDGET = CONTEXT * 40  # 40 contexts, 5 batches of 8


def make_engine(tiny_setup, **overrides) -> OpenedSession:
    settings = dict(sae=tiny_setup["sae"], model=tiny_setup["model"], dataset=tiny_setup["dataset"], context_len=CONTEXT, max_tokens=BUDGET)
    settings.update(overrides)
    return open_session(**settings)


def build(eng: OpenedSession, **kwargs):
    """The index, built (or loaded) as long work on the engine's worker."""
    return eng.job(build_index, **kwargs)


@pytest.fixture(scope="module")
def engine(tiny_setup):
    eng = make_engine(tiny_setup)
    yield eng
    eng.close()


def dense_features(engine: OpenedSession, budget: int = BUDGET) -> tuple[np.ndarray, int]:
    """Every token's features for the whole corpus (fine at this size), BOS excluded."""
    session = engine.session

    def run():
        corpus = session.corpus(budget)
        first = corpus.first_position
        out = [np.array(session.encode(acts[:, first:, :])) for _, _, acts in session.iter_activations(corpus)]
        return np.concatenate(out), first

    return engine.on_worker(run)


def brute_top(dense: np.ndarray, f: int, k: int, first: int) -> list[tuple[int, int, float]]:
    """(context, position, activation) of the k strongest contexts, by the documented order."""
    per_ctx = dense[:, :, f]
    peak = per_ctx.max(axis=1)
    pos = per_ctx.argmax(axis=1) + first  # argmax: the first position on ties
    fired = [c for c in range(len(peak)) if peak[c] > 0]
    fired.sort(key=lambda c: (-peak[c], c))
    return [(c, int(pos[c]), float(peak[c])) for c in fired[:k]]


def reference_histogram(values: np.ndarray) -> np.ndarray:
    edges = np.concatenate([[0.0], np.logspace(-4, 4, 65), [np.inf]])
    return np.histogram(values, bins=edges)[0]


def test_index_matches_brute_force(engine):
    index = build(engine)
    dense, first = dense_features(engine)
    n_ctx, n_pos, d = dense.shape
    assert index.complete and index.n_contexts == n_ctx and index.d_sae == d
    assert index.tokens_seen == n_ctx * n_pos
    live = 0
    for f in range(d):
        stats = index.feature(f)
        vals = dense[:, :, f]
        firing = vals[vals > 0]
        assert stats.count == firing.size
        assert stats.density == pytest.approx(firing.size / (n_ctx * n_pos))
        assert not stats.partial
        if firing.size == 0:
            assert stats.top == [] and stats.samples == [] and stats.max_activation == 0
            continue
        live += 1
        assert stats.max_activation == firing.max()
        assert stats.mean_activation == pytest.approx(firing.mean(), rel=1e-5)
        np.testing.assert_array_equal(stats.histogram, reference_histogram(firing))
        got = [(e.context_id, e.position, e.activation) for e in stats.top]
        assert got == brute_top(dense, f, index.top_k, first)
        for e in stats.top:
            # The window: the context's tokens around the strongest one, with their activations.
            start = e.window_start
            assert first <= start <= e.position < start + len(e.window_tokens)
            width = min(32, CONTEXT - first)
            assert len(e.window_tokens) == width
            assert start == min(max(e.position - WINDOW_BEFORE, first), CONTEXT - width)
            np.testing.assert_array_equal(e.window_tokens, engine.session.corpus(BUDGET).contexts[e.context_id, start : start + len(e.window_tokens)])
            np.testing.assert_allclose(e.window_acts, vals[e.context_id, start - first : start - first + len(e.window_acts)], rtol=1e-3, atol=1e-6)
            assert e.window_acts[e.max_index] == pytest.approx(e.activation, rel=1e-3)
        for e in stats.samples:
            # Samples are real firing contexts, shown with their true activation.
            assert e.activation == vals[e.context_id].max() > 0
            assert e.context_id not in {t.context_id for t in stats.top}
    assert live > 10


def test_ties_are_broken_by_context_then_position():
    """Synthetic batches full of equal activations, against a sort of everything."""
    rng = np.random.default_rng(1)
    n_ctx, length, d, k = 37, 12, 16, 5
    dense = rng.integers(0, 4, size=(n_ctx, length - 1, d)).astype(np.float32) * 0.5  # many ties, many zeros
    meta = dict(format=1, key="x", complete=False, contexts_done=0, n_contexts=n_ctx, budget=0, top_k=k, window=6, samples=3, first_position=1)
    contexts = np.arange(n_ctx * length, dtype=np.int32).reshape(n_ctx, length)
    index = FeatureIndex.empty(meta, contexts, d)
    start = 0
    for size in (1, 7, 3, 8, 8, 10):  # uneven batches, including a single context
        index.absorb(start, dense[start : start + size])
        start += size
    assert index.contexts_done == n_ctx
    for f in range(d):
        got = [(e.context_id, e.position, e.activation) for e in index.feature(f).top]
        assert got == brute_top(dense, f, k, 1)
        assert index.feature(f).count == int((dense[:, :, f] > 0).sum())


def test_bad_feature_ids_and_budgets(engine, tiny_setup, tmp_path):
    index = build(engine)
    with pytest.raises(UserError, match="out of range"):
        index.feature(index.d_sae)
    with pytest.raises(UserError, match="out of range"):
        index.feature(-1)
    with pytest.raises(UserError, match="top-k"):
        build(engine, top_k=101)
    with pytest.raises(UserError, match="smaller than one context"):
        build(engine, budget=CONTEXT - 1)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    eng = make_engine(tiny_setup, dataset=str(empty))
    try:
        with pytest.raises(UserError, match="no non-empty text"):
            build(eng)
    finally:
        eng.close()


def test_cache_round_trip_and_memory(engine, monkeypatch):
    first = build(engine)
    assert first.path is not None and first.path.exists()

    def no_model(*args, **kwargs):
        raise AssertionError("the cached index should be used, not rebuilt")

    monkeypatch.setattr(engine.session, "iter_activations", no_model)
    again = build(engine)
    assert again.path == first.path
    np.testing.assert_array_equal(again.top.ctx, first.top.ctx)
    np.testing.assert_array_equal(again.top.win, first.top.win)
    np.testing.assert_array_equal(again.hist, first.hist)
    # A smaller K is answered by the same (deeper) index.
    assert engine(load_cached, None, 5).path == first.path


def test_uncached_build_touches_no_files(engine):
    from saetui.engine import cache

    before = sorted(p.name for p in (cache.cache_dir() / "index").glob("*")) if (cache.cache_dir() / "index").exists() else []
    fresh = build(engine, budget=2 * BUDGET, use_cache=False)
    after = sorted(p.name for p in (cache.cache_dir() / "index").glob("*"))
    assert fresh.complete and fresh.path is None and after == before


def per_feature_bytes(index: FeatureIndex) -> int:
    arrays = [index.count, index.act_sum, index.hist]
    for keeper in (index.top, index.samples):
        arrays += [keeper.key, keeper.ctx, keeper.pos, keeper.act, keeper.win]
    return sum(a.nbytes for a in arrays)


def test_memory_does_not_grow_with_the_budget(engine):
    small = build(engine)
    large = build(engine, budget=3 * BUDGET)
    assert large.n_contexts == 3 * small.n_contexts
    assert per_feature_bytes(large) == per_feature_bytes(small)
    d = small.d_sae
    # Per kept entry: rank 8, context 4, position 4, activation 4, window 32 float16.
    assert per_feature_bytes(small) == d * (8 + 8 + HIST_BINS * 8 + small.top_k * (20 + 2 * 32) + 12 * (20 + 2 * 32))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_cache_is_rebuilt(engine, damage):
    index = build(engine)
    path = index.path
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    elif damage == "garbage":
        path.write_bytes(b"not an index at all")
    else:
        path.write_bytes(b"")
    notes: list[str] = []
    assert engine(load_cached, None, 20, notes) is None
    assert notes and "damaged" in notes[0]
    rebuilt = build(engine)
    assert rebuilt.complete and rebuilt.path.exists()
    np.testing.assert_array_equal(rebuilt.top.ctx, index.top.ctx)
    np.testing.assert_array_equal(rebuilt.count, index.count)


def test_interrupted_build_is_never_complete_and_resumes(tiny_setup):
    eng = make_engine(tiny_setup)
    try:
        reports: list[int] = []

        def cancel_at_the_second_report(job, progress):
            if progress is not None:
                reports.append(progress.done)
                if len(reports) == 2:
                    job.cancel()

        job = eng.engine.start("indexing", build_index, eng.session, listener=cancel_at_the_second_report)
        with pytest.raises(Cancelled):
            job.result()
        # Nothing finished is on disk; the checkpoint is not read as an index.
        assert eng(load_cached) is None
        partial = index_mod.index_path(eng.session, BUDGET, 20, partial=True)
        assert partial.exists() and not index_mod.index_path(eng.session, BUDGET, 20).exists()
        with pytest.raises(ValueError, match="unfinished"):
            index_mod.read_index(partial)
        done_before = index_mod.read_index(partial, want_complete=False).contexts_done
        assert 0 < done_before < 40

        notes: list[str] = []
        resumed = build(eng, notes=notes)
        assert any("Resuming" in n for n in notes)
        assert resumed.complete and not partial.exists()
    finally:
        eng.close()
    # Resumed equals built in one go (from a fresh cache folder).
    fresh = make_engine(tiny_setup)
    try:
        index_mod.index_path(fresh.session, BUDGET, 20).unlink()
        whole = build(fresh)
    finally:
        fresh.close()
    for name in ("ctx", "pos", "act", "win"):
        np.testing.assert_array_equal(getattr(resumed.top, name), getattr(whole.top, name))
    np.testing.assert_array_equal(resumed.count, whole.count)
    np.testing.assert_array_equal(resumed.hist, whole.hist)


def test_partial_index_is_queryable_and_labelled(tiny_setup):
    eng = make_engine(tiny_setup)
    try:
        # Step the build by hand on the worker, as the worker does between page requests.
        gen = build_index(eng.session)
        eng.on_worker(lambda: [next(gen) for _ in range(3)])
        index = eng.session.index
        done = index.contexts_done
        assert 0 < done < index.n_contexts and not index.complete
        assert "PARTIAL" in index.describe()
        dense, first = dense_features(eng)
        f = int(np.argmax((dense[:done] > 0).sum(axis=(0, 1))))
        stats = index.feature(f)
        assert stats.partial and stats.contexts_done == done
        assert stats.count == int((dense[:done, :, f] > 0).sum())
        assert [(e.context_id, e.position, e.activation) for e in stats.top] == brute_top(dense[:done], f, index.top_k, first)
        eng.on_worker(lambda: list(gen))
        assert index.complete and not index.feature(f).partial
    finally:
        eng.close()


def synthetic_dense(seed: int = 5, n_ctx: int = 30, length: int = 10, d: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 4, size=(n_ctx, length - 1, d)) * (rng.random((n_ctx, length - 1, d)) < 0.3)).astype(np.float32) * 0.5


def empty_index(n_ctx: int, length: int, d: int, k: int = 4) -> FeatureIndex:
    meta = dict(format=2, key="x", complete=False, contexts_done=0, n_contexts=n_ctx, budget=0, top_k=k, window=6, samples=3, first_position=1)
    contexts = np.arange(n_ctx * length, dtype=np.int32).reshape(n_ctx, length)
    return FeatureIndex.empty(meta, contexts, d)


def assert_same_state(a: FeatureIndex, b: FeatureIndex) -> None:
    for keeper in ("top", "samples"):
        for name in ("key", "ctx", "pos", "act", "win"):
            np.testing.assert_array_equal(getattr(getattr(a, keeper), name), getattr(getattr(b, keeper), name), err_msg=f"{keeper}.{name}")
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.hist, b.hist)
    np.testing.assert_allclose(a.act_sum, b.act_sum, rtol=1e-12)
    assert a.contexts_done == b.contexts_done


def test_merge_of_disjoint_states_equals_one_build():
    """Two shards (interleaved batches, as ranks would get them) merge into the single build."""
    dense = synthetic_dense()
    n_ctx, length, d = dense.shape[0], dense.shape[1] + 1, dense.shape[2]
    whole = empty_index(n_ctx, length, d)
    shards = [empty_index(n_ctx, length, d), empty_index(n_ctx, length, d)]
    for i, start in enumerate(range(0, n_ctx, 4)):
        whole.absorb(start, dense[start : start + 4])
        shards[i % 2].absorb(start, dense[start : start + 4])
    merged = shards[0].merge(shards[1])
    assert_same_state(merged, whole)
    assert_same_state(shards[1].merge(shards[0]), whole)
    for f in range(d):
        assert [(e.context_id, e.position, e.activation) for e in merged.feature(f).top] == brute_top(dense, f, 4, 1)
        np.testing.assert_array_equal(merged.feature(f).histogram, whole.feature(f).histogram)
    # Samples are the contexts with the largest keys among those the feature fires on.
    for f in range(d):
        fired = np.flatnonzero(dense[:, :, f].max(axis=1) > 0)
        keys = index_mod.sample_key(fired, np.full(fired.size, f))
        want = sorted(fired[np.lexsort((fired, -keys))][:3].tolist())
        assert sorted(int(c) for c in merged.samples.ctx[f] if c >= 0) == want


def test_merge_refuses_states_of_other_shapes():
    a, b = empty_index(4, 10, 12), empty_index(4, 10, 13)
    with pytest.raises(ValueError, match="shapes"):
        a.merge(b)


def test_build_generator_closes_into_a_checkpoint(tiny_setup):
    eng = make_engine(tiny_setup)
    try:
        def run_two_steps():
            gen = index_mod.build_index(eng.session)
            seen = [next(gen), next(gen), next(gen)]
            gen.close()  # the driver cancels by closing the generator
            return seen

        seen = eng.on_worker(run_two_steps)
        assert all(p.unit == "tokens" and p.total == 40 * CONTEXT for p in seen)
        partial = index_mod.index_path(eng.session, BUDGET, 20, partial=True)
        saved = index_mod.read_index(partial, want_complete=False)
        assert 0 < saved.contexts_done < 40 and not saved.complete

        def run_to_end():
            gen = index_mod.build_index(eng.session)
            progress = []
            while True:
                try:
                    progress.append(next(gen))
                except StopIteration as stop:
                    return progress, stop.value

        progress, index = eng.on_worker(run_to_end)
        assert index.complete and progress[-1].done == progress[-1].total
        assert not partial.exists() and index.path.exists()
    finally:
        eng.close()


def test_density_without_examples_equals_the_feature_stats(engine):
    """The registry screen's cheap density (read on the UI thread) is the page's density."""
    index = build(engine)
    for f in range(index.d_sae):
        density, partial = index.density(f)
        assert density == index.feature(f).density and partial is False
    with pytest.raises(UserError, match="out of range"):
        index.density(index.d_sae)
