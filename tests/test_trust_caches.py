"""Caches that cannot lie, end to end (issue 16, items 7 and 8): a report or threshold
cache entry that was edited, damaged or replaced by a directory is rebuilt, never served,
never a crash."""

from __future__ import annotations

import json
import shutil

import pytest

from support import OpenedSession, open_session

from saetui.engine.evaluate import evaluate

CTX = 16
BUDGET = CTX * 6


def _engine(sae, dataset) -> OpenedSession:
    return open_session(sae=sae, dataset=dataset, context_len=CTX, batch_size=4)


def _eval(engine):
    return engine.job(evaluate, BUDGET, registry={})


@pytest.fixture(scope="module")
def engine(tiny_setup):
    e = _engine(tiny_setup["sae"], tiny_setup["dataset"])
    yield e
    e.close()


def _tamper(path, how):
    if how == "directory":
        path.unlink()
        path.mkdir()
        return
    envelope = json.loads(path.read_text())
    data = envelope["data"]
    if how == "edit-mse":
        data["reconstruction"]["mse"] = 0.5
    elif how == "rename-key":
        data["interpretability_"] = data.pop("interpretability")
    elif how == "truncate":
        path.write_text(path.read_text()[:100])
        return
    path.write_text(json.dumps(envelope))


@pytest.mark.parametrize("how", ["edit-mse", "rename-key", "truncate", "directory"])
def test_tampered_report_cache_is_recomputed_not_served(engine, how):
    first = _eval(engine)
    path = first.cache_file
    assert path.is_file()
    truth = first.to_json()
    _tamper(path, how)
    again = _eval(engine)
    assert not again.from_cache
    assert again.to_json()["reconstruction"]["mse"] == pytest.approx(truth["reconstruction"]["mse"], rel=1e-5)
    if path.is_dir():
        shutil.rmtree(path)


def test_tampered_threshold_cache_is_recalibrated(tmp_path, tiny_setup):
    from support import write_sae

    sae = str(write_sae(tmp_path / "btk.mlx", cls="BatchTopKSAE", metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]}))
    engine = _engine(sae, tiny_setup["dataset"])
    try:
        truth = engine.session.sae.threshold
    finally:
        engine.close()
    from saetui.engine.cache import cache_dir

    (entry,) = (cache_dir() / "threshold").glob("*.json")
    envelope = json.loads(entry.read_text())
    envelope["data"]["threshold"] = truth * 100  # would empty every feature list
    entry.write_text(json.dumps(envelope))
    engine = _engine(sae, tiny_setup["dataset"])
    try:
        assert engine.session.sae.threshold == pytest.approx(truth, rel=1e-6)
    finally:
        engine.close()
