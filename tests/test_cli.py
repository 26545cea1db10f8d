"""The command line: bad input is one line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from support import write_sae

from saetui.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def _assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("saetui: note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("saetui: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_sae_path(capsys, tmp_path):
    _assert_one_line_error(*_run(capsys, str(tmp_path / "nope.mlx")), "SAE not found", "Check the path")


def test_directory_that_is_not_an_sae(capsys, tmp_path):
    _assert_one_line_error(*_run(capsys, str(tmp_path)), "no config.json", "mlxterp saved")


def test_invalid_config(capsys, tmp_path):
    p = write_sae(tmp_path / "s.mlx")
    (p / "config.json").write_text("{")
    _assert_one_line_error(*_run(capsys, str(p)), "not valid JSON")


def test_unknown_class(capsys, tmp_path):
    p = write_sae(tmp_path / "s.mlx", cls="GatedSAE")
    _assert_one_line_error(*_run(capsys, str(p)), "unknown SAE class 'GatedSAE'")


def test_mis_shaped_weights(capsys, tmp_path):
    p = write_sae(tmp_path / "s.mlx")
    cfg = json.loads((p / "config.json").read_text())
    cfg["d_model"] = 32
    (p / "config.json").write_text(json.dumps(cfg))
    _assert_one_line_error(*_run(capsys, str(p)), "has shape", "expected")


def test_nan_weights(capsys, tmp_path):
    import mlx.core as mx
    import numpy as np

    p = write_sae(tmp_path / "s.mlx")
    w = dict(mx.load(str(p / "weights.safetensors")))
    enc = np.array(w["encoder.weight"])
    enc[3, 3] = np.inf
    w["encoder.weight"] = mx.array(enc)
    mx.save_safetensors(str(p / "weights.safetensors"), w)
    _assert_one_line_error(*_run(capsys, str(p)), "NaN or infinite")


def test_unknown_component(capsys, tiny_setup):
    _assert_one_line_error(*_run(capsys, tiny_setup["sae"], "--component", "ffn"), "Unknown component 'ffn'", "--component mlp")


def test_missing_model(capsys, tmp_path):
    p = write_sae(tmp_path / "s.mlx", metadata={"layer": 1, "component": "mlp", "model_name": "nobody/not-cached-model"})
    # The app checks the model before painting anything heavy; the subcommands load it at once.
    code = main(["top-features", str(p), "hello"])
    err = capsys.readouterr().err
    if "not built yet" in err:
        pytest.skip("top-features is not built yet")
    _assert_one_line_error(code, err, "nobody/not-cached-model", "huggingface-cli download")


def test_debug_shows_the_traceback(capsys, tmp_path):
    code = main([str(tmp_path / "nope.mlx"), "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "SAE not found" in err


def test_console_script_exit_status(tmp_path):
    exe = shutil.which("saetui")
    cmd = [exe] if exe else [sys.executable, "-m", "saetui"]
    proc = subprocess.run([*cmd, str(tmp_path / "missing.mlx")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("saetui: error: SAE not found")
    assert "Traceback" not in proc.stderr


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for name in ("eval", "top-features", "top-texts", "registry", "--model", "--dataset", "--layer", "--component", "--registry"):
        assert name in out


def test_missing_dataset_file(capsys, tiny_setup, tmp_path):
    _assert_one_line_error(
        *_run(capsys, tiny_setup["sae"], "--dataset", str(tmp_path / "texts.jsonl")), "Dataset file not found", "--dataset"
    )


def test_empty_dataset_file(capsys, tiny_setup, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    _assert_one_line_error(*_run(capsys, tiny_setup["sae"], "--dataset", str(tmp_path / "empty.txt")), "is empty")


def test_app_with_an_uncached_model_fails_before_opening(capsys, fixtures_dir):
    _assert_one_line_error(
        *_run(capsys, str(fixtures_dir / "topk_llama_l2_mlp.mlx")),
        "mlx-community/Llama-3.2-1B-Instruct-4bit is not in the local Hugging Face cache",
        "--model",
    )
