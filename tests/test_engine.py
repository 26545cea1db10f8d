"""The engine: opening a session on its model's hook, calibration, and the worker thread."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest
from support import opened_engine, write_sae

from saetui.engine import cache
from saetui.engine.engine import Engine, EngineSettings
from saetui.engine.errors import Cancelled, UserError
from saetui.engine.session import Session
from saetui.engine.worker import Progress, drive


def test_open_tiny_setup_and_describe(tiny_setup):
    with opened_engine(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"]) as (engine, session):
        assert isinstance(session, Session) and engine.session is session
        assert session.hook.layer == 1 and session.hook.component == "mlp"
        d = session.describe()
        assert (d["kind"], d["d_model"], d["d_sae"], d["k"]) == ("SAE", 64, 256, 8)
        assert "SAE 64->256 k=8 | L1/mlp" in engine.summary_line()


def test_iter_activations_match_the_model(tiny_setup):
    with opened_engine(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=16) as (engine, session):

        def work():
            corpus = session.corpus(16 * 6)
            batches = [np.array(a) for _, _, a in session.iter_activations(corpus, batch_size=4)]
            direct = np.array(session.runner.activations(mx.array(corpus.contexts), session.hook))
            return batches, direct

        batches, direct = engine.call(work)
    # MLX arrays belong to the worker thread's stream: results cross threads as numpy.
    np.testing.assert_allclose(np.concatenate(batches), direct, atol=1e-4)
    assert sum(b.shape[0] for b in batches) == 6


def test_all_mlx_work_runs_on_one_worker_thread(tiny_setup):
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"]))
    try:
        names = {engine.call(lambda: threading.current_thread().name) for _ in range(3)}
        assert len(names) == 1 and names.pop().startswith("saetui-mlx")
        assert engine.call(lambda: engine.worker.on_worker_thread)
        assert not engine.worker.on_worker_thread
        # Engine code calls engine code directly: going through the worker from it is a bug.
        with pytest.raises(RuntimeError, match="directly"):
            engine.call(lambda: engine.call(lambda: 1))
    finally:
        engine.close()


def _counting(n: int, log: list, closed: list):
    try:
        for i in range(n):
            log.append(("step", i, threading.current_thread().name))
            yield Progress("counting", i + 1, n, "steps")
        return "all done"
    finally:
        closed.append(True)


def test_long_work_runs_on_the_worker_with_progress_and_a_result():
    engine = Engine()
    seen: list = []
    log: list = []
    closed: list = []
    try:
        result = engine.call_job("count", _counting, 5, log, closed, on_progress=seen.append)
    finally:
        engine.close()
    assert result == "all done" and closed == [True]
    assert all(name.startswith("saetui-mlx") for _, _, name in log)
    assert seen[0].done == 1 and seen[-1].done == 5 and seen[-1].finished


def test_plain_calls_run_between_the_steps_of_long_work():
    """A page lookup is served while the index builds, not after it."""
    engine = Engine()
    gate = threading.Event()
    log: list = []

    def slow(n: int):
        for i in range(n):
            log.append(f"step {i}")
            if i == 1:
                gate.wait(10)  # hold the job at step 1 until the plain call has been queued
            yield Progress("slow", i + 1, n, "steps")
        return n

    try:
        job = engine.start("slow", slow, 6)
        while "step 1" not in log:
            threading.Event().wait(0.01)
        answer = engine.worker.submit(lambda: log.append("call") or "served")
        gate.set()
        assert answer.result(10) == "served"
        assert job.result(10) == 6
    finally:
        engine.close()
    assert log.index("call") < log.index("step 5")


def test_cancel_closes_the_generator_so_its_finally_runs():
    engine = Engine()
    gate = threading.Event()
    closed: list = []

    def endless():
        try:
            i = 0
            while True:
                i += 1
                gate.set()
                yield Progress("endless", i, 10**9)
        finally:
            closed.append(i)

    try:
        job = engine.start("endless", endless)
        gate.wait(10)
        assert engine.cancel_jobs() == 1
        with pytest.raises(Cancelled):
            job.result(10)
        assert engine.cancel_jobs() == 0  # nothing left to cancel
    finally:
        engine.close()
    assert len(closed) == 1 and closed[0] >= 1


def test_a_failing_job_hands_its_error_to_the_waiter():
    def broken():
        yield Progress("broken", 0, 1)
        raise UserError("it broke", "fix it")

    engine = Engine()
    try:
        with pytest.raises(UserError, match="it broke"):
            engine.call_job("broken", broken)
    finally:
        engine.close()


def test_width_mismatch_is_a_clear_error(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "wide.mlx", d_model=96, d_hidden=192, metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]})
    engine = Engine(EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"]))
    try:
        with pytest.raises(UserError, match="expects d_model=96 but .* gives width 64 at layer 1 mlp"):
            engine.call(engine.open)
        assert engine.session is None  # never half-open
    finally:
        engine.close()


def test_metadata_missing_needs_flags(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "bare.mlx", metadata={})
    engine = Engine(EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"]))
    with pytest.raises(UserError, match="names no component.*--component"):
        engine.call(engine.read_sae)
    engine.close()
    with opened_engine(sae=str(sae), dataset=tiny_setup["dataset"], model=tiny_setup["model"], layer=2, component="resid") as (_, session):
        assert session.hook.layer == 2 and session.hook.component == "resid"


def test_no_forward_pass_after_opening(tiny_setup, monkeypatch):
    """Feature pages and probes run only their own work: no re-validation passes."""
    from saetui.engine.features import feature_page
    from saetui.engine.model import ModelRunner
    from saetui.engine.probe import probe_text

    with opened_engine(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"]) as (engine, session):
        calls: list[str] = []
        original = ModelRunner.activations

        def counted(self, tokens, hook):
            calls.append("activations")
            return original(self, tokens, hook)

        monkeypatch.setattr(ModelRunner, "activations", counted)
        monkeypatch.setattr(ModelRunner, "hook_width", lambda *a: calls.append("hook_width"))
        engine.call(feature_page, session, 3)
        engine.call(feature_page, session, 4)
        assert calls == []  # decoder facts need no forward pass
        engine.call(probe_text, session, "The cat sat on the mat.")
        assert calls == ["activations"]  # exactly one pass per probe


def test_batchtopk_threshold_is_calibrated_on_the_dataset_and_cached(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "b.mlx", cls="BatchTopKSAE", metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]})
    settings = dict(sae=str(sae), dataset=tiny_setup["dataset"], context_len=32)
    with opened_engine(**settings) as (engine, session):
        theta = session.sae.threshold
        assert theta is not None and theta > 0
        assert session.threshold_mode == "calibrated" and "threshold" in engine.summary_line()

        def mean_l0():
            corpus = session.corpus(16_384)
            acts = np.concatenate([np.array(a[:, 1:, :]).reshape(-1, 64) for _, _, a in session.iter_activations(corpus)])
            z = np.array(session.encode(mx.array(acts)))
            return (z != 0).sum(-1).mean()

        assert engine.call(mean_l0) == pytest.approx(session.sae.k, rel=1e-3)
    files = list((cache.cache_dir() / "threshold").glob("*.json"))
    assert len(files) == 1
    # A cached threshold is read without running the model over the corpus.
    from saetui.engine.engine import calibrate_threshold

    with opened_engine(**settings) as (engine, session):
        session.iter_activations = None  # type: ignore[assignment]
        assert engine.call(lambda: drive(calibrate_threshold(session))).threshold == theta


@pytest.mark.parametrize("close", [True, False], ids=["closed", "left-open"])
def test_process_exits_cleanly_after_mlx_work_on_the_worker(tiny_setup, close):
    """MLX's per-thread streams are released before exit (else: abort, status 134)."""
    import subprocess
    import sys

    code = (
        "from saetui.blas import enable_fast_blas; enable_fast_blas()\n"
        "from saetui.engine.engine import Engine, EngineSettings\n"
        f"e = Engine(EngineSettings(sae={tiny_setup['sae']!r}, dataset={tiny_setup['dataset']!r}))\n"
        "s = e.call(e.open)\n"
        "e.call(lambda: s.runner.logits(__import__('mlx.core').core.array([[1, 2, 3]])).sum().item())\n"
        + ("e.close()\n" if close else "")
    )
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-500:]
