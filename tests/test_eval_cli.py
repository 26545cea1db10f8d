"""`saetui eval`: the report printed, the JSON written, and bad input as one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from saetui.cli import main
from saetui.engine.evaluate import default_json_path

FAST = ["--context-len", "32", "--max-tokens", "256"]


def _eval(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["eval", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_prints_the_report_and_writes_json(tiny_setup, tmp_path, capsys):
    target = tmp_path / "report.json"
    rc, out, err = _eval(capsys, tiny_setup["sae"], "--dataset", tiny_setup["dataset"], *FAST, "--json", str(target))
    assert rc == 0, err
    for text in ("SAE quality report", "MSE", "Cosine similarity", "Explained variance", "SAEBench form", "L0 mean",
                 "Dead (practical)", "Interpretable", "CE loss recovered", "KL score", "Score", "Next step",
                 "Feature density", "L0 per token", "BOS"):
        assert text in out, text
    data = json.loads(target.read_text())
    assert f"JSON report: {target}" in out
    assert data["sae_path"] == tiny_setup["sae"] and data["settings"]["budget"] == 256
    # The printed score and bands are the JSON's.
    assert f"Score {data['quality_score']:.1f} / 5" in out
    assert data["score"]["rating"].upper() in out
    assert data["bands"]["mse"] in out.split("MSE", 1)[1].splitlines()[0]


def test_default_json_goes_beside_the_sae_and_the_second_run_is_cached(tiny_setup, tmp_path, capsys):
    sae = tmp_path / "my_sae.mlx"
    shutil.copytree(tiny_setup["sae"], sae)
    rc, out, err = _eval(capsys, str(sae), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 0, err
    written = tmp_path / "my_sae_evaluation.json"
    assert written.exists() and "(cached)" not in out
    assert json.loads(written.read_text())["architecture"]["d_hidden"] == 256
    rc, out, err = _eval(capsys, str(sae), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 0 and "(cached)" in out


def test_the_demo_report_goes_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = SimpleNamespace(sae_path=Path("/somewhere/site-packages/saetui/demo/assets/sae.mlx"), is_demo=True)
    assert default_json_path(demo) == tmp_path / "demo_sae_evaluation.json"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--max-tokens", "0"], "nothing to evaluate"),
        (["--max-tokens", "8"], "smaller than one context"),
        (["--dataset", "/no/such/file.txt"], "Dataset file not found"),
        (["--json", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_setup, tmp_path, capsys, extra, message):
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    args = [tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", "32", "--max-tokens", "256", *extra]
    rc, out, err = _eval(capsys, *args)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("saetui: error:") and message in lines[0], err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.json"))
