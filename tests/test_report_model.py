"""The typed report: the JSON file's keys and order, a byte-for-byte round trip, and damaged
reports rejected (a damaged cache file is a cache miss)."""

from __future__ import annotations

import copy
import json
import math

import pytest

from saetui.engine import cache
from support import open_session
from saetui.engine.evaluate import (
    cached_report,
    evaluate,
    report_cache_file,
    write_report_json,
)
from saetui.engine.report import Advice, EvaluationReport, ModelBehaviour

CTX = 32
BUDGET = CTX * 10

# The JSON report's keys in their order: the guide's (examples/evaluate_sae.py), then saetui's.
TOP_KEYS = [
    "sae_path", "model", "layer", "component", "architecture", "reconstruction", "sparsity", "quality_score", "max_score",
    "reconstruction_extra", "model_behaviour", "l0_distribution", "dead_features", "feature_density", "interpretability",
    "settings", "notes", "definitions", "saetui", "bands", "score", "advice",
]
SECTION_KEYS = {
    "architecture": ["type", "d_model", "d_hidden", "expansion", "k"],
    "reconstruction": ["mse", "cosine_similarity", "explained_variance"],
    "sparsity": ["l0_mean", "l0_fraction", "dead_features", "dead_features_practical", "dead_fraction", "rare_threshold",
                 "max_feature_activations", "min_feature_activations"],
    "reconstruction_extra": ["explained_variance_saebench", "l2_ratio"],
    "model_behaviour": ["available", "ce_loss_clean", "ce_loss_sae", "ce_loss_zero", "ce_loss_recovered", "kl_div_sae",
                        "kl_div_zero", "kl_score", "positions", "ce_loss_recovered_unreliable"],
    "l0_distribution": ["mean", "median", "p10", "p90", "k", "histogram"],
    "dead_features": ["strict", "strict_fraction", "practical", "practical_fraction", "rare_threshold", "strict_ids"],
    "feature_density": ["log10_bin_edges", "counts", "dead", "live", "dense_threshold", "dense_features", "dense_fraction",
                        "densest"],
    "interpretability": ["criterion", "candidates", "token_features", "registry_features", "count"],
    "settings": ["dataset", "budget", "tokens_total", "tokens_evaluated", "contexts", "context_len", "bos_excluded", "seed",
                 "selection", "threshold_mode", "threshold", "batch_size", "splice"],
    "saetui": ["report_format", "version", "created"],
    "bands": ["mse", "cosine_similarity", "explained_variance", "l0", "dead_fraction", "interpretability"],
    "score": ["reconstruction", "sparsity", "interpretability", "total", "max", "rating", "verdict", "next_step", "proceed"],
}
GUIDE_ADVICE_KEYS = ["title", "symptoms", "causes", "solutions", "topic", "triggered_by"]
NOTE_ADVICE_KEYS = ["topic", "title", "note", "triggered_by"]


@pytest.fixture(scope="module")
def engine(tiny_setup):
    e = open_session(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=CTX, batch_size=4)
    yield e
    e.close()


@pytest.fixture(scope="module")
def written(engine, tmp_path_factory):
    """An evaluation with two registry names, as `saetui eval` writes it: (report, file bytes)."""
    report = engine.job(evaluate, BUDGET, registry={3: "three", 200: "two hundred"})
    path = write_report_json(report, engine.session, tmp_path_factory.mktemp("json") / "report.json")
    return report, path.read_bytes()


def dumped(data: dict) -> bytes:
    """The bytes the report file holds for `data` (the writer's own encoding)."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def test_the_json_has_todays_keys_in_todays_order(written):
    report, raw = written
    data = json.loads(raw)
    assert list(data) == TOP_KEYS
    for section, keys in SECTION_KEYS.items():
        assert list(data[section]) == keys, section
    assert list(data["l0_distribution"]["histogram"]) == ["bin_edges", "counts"]
    assert all(list(d) == ["feature", "count", "density"] for d in data["feature_density"]["densest"])
    assert all(list(f) == ["feature", "token", "share"] for f in data["interpretability"]["token_features"])
    assert [list(f) for f in data["interpretability"]["registry_features"]] == [["feature", "name"]] * len(
        data["interpretability"]["registry_features"]) and data["interpretability"]["registry_features"]
    assert data["advice"] and all(list(a) in (GUIDE_ADVICE_KEYS, NOTE_ADVICE_KEYS) for a in data["advice"])
    # Attributes read the same numbers as the file's keys.
    assert report.reconstruction.cosine_similarity == data["reconstruction"]["cosine_similarity"]
    assert report.meta.version == data["saetui"]["version"] and report.score.max == data["max_score"] == 5
    assert report.budget == data["settings"]["budget"] == BUDGET


def test_a_round_trip_is_byte_for_byte(written):
    report, raw = written
    assert dumped(report.to_json()) == raw
    again = EvaluationReport.from_json(json.loads(raw))
    assert dumped(again.to_json()) == raw
    assert again == EvaluationReport.from_json(again.to_json())
    # Where a copy came from is not part of the file.
    assert "from_cache" not in again.to_json() and "cache_file" not in again.to_json()


def test_the_other_shapes_round_trip(written):
    _, raw = written
    data = json.loads(raw)
    data["model_behaviour"] = {"available": False, "reason": "the model's output has width 64"}
    data["advice"] = [{"topic": "dead_features", "title": "Many dead features", "note": "a note", "triggered_by": ["dead_fraction"]}]
    data["reconstruction"]["mse"] = None  # JSON's spelling of a number that was not finite
    data["settings"]["threshold_mode"], data["settings"]["threshold"] = "calibrated", 0.25
    report = EvaluationReport.from_json(copy.deepcopy(data))
    assert dumped(report.to_json()) == dumped(data)
    assert report.model_behaviour == ModelBehaviour(available=False, reason="the model's output has width 64")
    assert report.advice == [Advice(topic="dead_features", title="Many dead features", triggered_by=["dead_fraction"], note="a note")]
    assert report.reconstruction.mse is None


def test_not_finite_numbers_are_written_as_null(written):
    report, raw = written
    report = EvaluationReport.from_json(json.loads(raw))
    report.reconstruction.explained_variance = float("nan")
    report.reconstruction_extra.l2_ratio = math.inf
    data = report.to_json()
    assert data["reconstruction"]["explained_variance"] is None and data["reconstruction_extra"]["l2_ratio"] is None
    json.dumps(data, allow_nan=False)


def _damage(data: dict, path: list, how: str) -> None:
    *parents, last = path
    target = data
    for p in parents:
        target = target[p]
    if how == "delete":
        del target[last]
    elif how == "rename":
        target[str(last) + "_renamed"] = target.pop(last)
    elif how == "extra":
        target[last] = 1
    else:
        target[last] = json.loads(how)


DAMAGE = [
    (["sae_path"], "delete"),
    (["sparsity", "dead_fraction"], "delete"),
    (["reconstruction", "cosine_similarity"], "rename"),
    (["l0_distribution", "histogram", "counts"], "rename"),
    (["feature_density", "densest", 0, "density"], "delete"),
    (["model_behaviour", "kl_score"], "rename"),
    (["advice", 0, "solutions"], "delete"),
    (["score", "surprise"], "extra"),
    (["surprise"], "extra"),
    (["reconstruction", "mse"], '"0.1"'),
    (["sparsity", "dead_features"], "1.5"),
    (["sparsity", "dead_features"], "true"),
    (["architecture", "k"], "2.5"),  # null is allowed: SAEs without k (JumpReLU, ReLU, gated)
    (["score", "total"], "null"),
    (["score", "proceed"], "1"),
    (["settings", "seed"], "0"),
    (["notes"], '"one note"'),
    (["notes", 0], "3"),
    (["definitions", "mse"], "[]"),
    (["dead_features", "strict_ids", 0], '"7"'),
    (["interpretability", "registry_features", 0, "name"], "null"),
    (["model_behaviour", "available"], "false"),
    (["model_behaviour"], "[]"),
    (["saetui"], "null"),
    (["advice", 0, "causes"], "null"),
]


@pytest.mark.parametrize("path,how", DAMAGE, ids=[f"{'.'.join(map(str, p))}-{h}" for p, h in DAMAGE])
def test_a_damaged_report_is_rejected(written, path, how):
    data = json.loads(written[1])
    _damage(data, path, how)
    with pytest.raises(ValueError, match=str(path[0])):  # the message names where the damage is
        EvaluationReport.from_json(data)


def test_anything_but_an_object_is_rejected():
    for data in (None, [], "report", 5):
        with pytest.raises(ValueError):
            EvaluationReport.from_json(data)


def test_a_damaged_cache_file_is_a_cache_miss(engine):
    engine.job(evaluate, BUDGET, registry={})
    path = engine(report_cache_file, BUDGET)
    assert engine(cached_report, BUDGET, {}) is not None
    data = cache.read_json(path)  # the entry inside the cache's checksummed envelope
    data["sparsity"]["l0_mean"] = "eight"
    cache.atomic_write_json(path, data)  # a valid checksum over a report of the wrong shape
    assert engine(cached_report, BUDGET, {}) is None
    # The next evaluation measures again and replaces the damaged file.
    fresh = engine.job(evaluate, BUDGET, registry={})
    assert not fresh.from_cache and isinstance(cache.read_json(path)["sparsity"]["l0_mean"], float)
    assert engine(cached_report, BUDGET, {}).from_cache
