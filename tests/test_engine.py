"""The engine: opening an SAE on its model's hook, calibration, and the worker thread."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest
from support import write_sae

from saetui.engine import cache
from saetui.engine.engine import Engine, EngineSettings
from saetui.engine.errors import Cancelled, UserError
from saetui.engine.worker import Job


def test_open_tiny_setup_and_describe(tiny_setup):
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"]))
    try:
        engine.worker.call(engine.open)
        assert engine.hook.layer == 1 and engine.hook.component == "mlp"
        d = engine.describe()
        assert (d["kind"], d["d_model"], d["d_sae"], d["k"]) == ("SAE", 64, 256, 8)
        assert "SAE 64->256 k=8 | L1/mlp" in engine.summary_line()
    finally:
        engine.close()


def test_iter_activations_match_the_model_and_report_progress(tiny_setup):
    seen = []
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=16))

    def work():
        corpus = engine.corpus(16 * 6)
        job = Job("acts", seen.append, min_interval=0)
        batches = [np.array(a) for _, _, a in engine.iter_activations(corpus, job, batch_size=4)]
        direct = np.array(engine.runner.activations(mx.array(corpus.contexts), engine.hook))
        return corpus, batches, direct

    try:
        corpus, batches, direct = engine.worker.call(work)
    finally:
        engine.close()
    # MLX arrays belong to the worker thread's stream: results cross threads as numpy.
    np.testing.assert_allclose(np.concatenate(batches), direct, atol=1e-4)
    assert [p.done for p in seen] == [64, 96] and seen[-1].total == 96


def test_all_mlx_work_runs_on_one_worker_thread(tiny_setup):
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"]))
    try:
        names = {engine.worker.call(lambda: threading.current_thread().name) for _ in range(3)}
        assert len(names) == 1 and names.pop().startswith("saetui-mlx")
        assert engine.worker.call(lambda: engine.worker.on_worker_thread)
        assert not engine.worker.on_worker_thread
    finally:
        engine.close()


def test_cancelled_job_stops_iteration(tiny_setup):
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=16))
    job = Job("acts")

    def work():
        corpus = engine.corpus(16 * 8)
        for i, _ in enumerate(engine.iter_activations(corpus, job, batch_size=2)):
            if i == 1:
                job.cancel()
        return i

    try:
        with pytest.raises(Cancelled):
            engine.worker.call(work)
    finally:
        engine.close()


def test_width_mismatch_is_a_clear_error(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "wide.mlx", d_model=96, d_hidden=192, metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]})
    engine = Engine(EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"]))
    try:
        with pytest.raises(UserError, match="expects d_model=96 but .* gives width 64 at layer 1 mlp"):
            engine.worker.call(engine.open)
    finally:
        engine.close()


def test_metadata_missing_needs_flags(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "bare.mlx", metadata={})
    engine = Engine(EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"]))
    with pytest.raises(UserError, match="names no component.*--component"):
        engine.worker.call(engine.open_sae)
    engine.close()
    engine = Engine(EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"], model=tiny_setup["model"], layer=2, component="resid"))
    try:
        engine.worker.call(engine.open)
        assert engine.hook.layer == 2 and engine.hook.component == "resid"
    finally:
        engine.close()


def test_batchtopk_threshold_is_calibrated_on_the_dataset_and_cached(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "b.mlx", cls="BatchTopKSAE", metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]})
    settings = EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"], context_len=32)
    engine = Engine(settings)
    try:
        engine.worker.call(engine.open)
        theta = engine.sae.threshold
        assert theta is not None and theta > 0
        assert engine.threshold_mode == "calibrated" and "threshold" in engine.summary_line()

        def mean_l0():
            corpus = engine.corpus(16_384)
            acts = np.concatenate([np.array(a[:, 1:, :]).reshape(-1, 64) for _, _, a in engine.iter_activations(corpus)])
            z = np.array(engine.encode(mx.array(acts)))
            return (z != 0).sum(-1).mean()

        assert engine.worker.call(mean_l0) == pytest.approx(engine.sae.k, rel=1e-3)
    finally:
        engine.close()
    files = list((cache.cache_dir() / "threshold").glob("*.json"))
    assert len(files) == 1
    again = Engine(settings)
    try:
        again.worker.call(again.open_sae)
        again.worker.call(again.open_model)
        # A cached threshold is read without running the model over the corpus.
        again.iter_activations = None  # type: ignore[assignment]
        assert again.worker.call(again.calibrate_threshold) == theta
    finally:
        again.close()


@pytest.mark.parametrize("close", [True, False], ids=["closed", "left-open"])
def test_process_exits_cleanly_after_mlx_work_on_the_worker(tiny_setup, close):
    """MLX's per-thread streams are released before exit (else: abort, status 134)."""
    import subprocess
    import sys

    code = (
        "from saetui.blas import enable_fast_blas; enable_fast_blas()\n"
        "from saetui.engine.engine import Engine, EngineSettings\n"
        f"e = Engine(EngineSettings(sae={tiny_setup['sae']!r}, dataset={tiny_setup['dataset']!r}))\n"
        "e.worker.call(e.open)\n"
        "e.worker.call(lambda: e.runner.logits(__import__('mlx.core').core.array([[1, 2, 3]])).sum().item())\n"
        + ("e.close()\n" if close else "")
    )
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-500:]
