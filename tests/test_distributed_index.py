"""`saetui index` under `mlx.launch -n 2 --backend ring`: the ranks' merged index equals the
single-process index in every stored value, and a failing rank leaves no complete file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saetui.cli import main
from saetui.engine.index import SUFFIX, read_index

CONTEXT = "48"
BUDGET = str(48 * 40)  # 40 contexts: 5 batches of 8, split 2 + 3 between the ranks
LAUNCH = Path(sys.executable).with_name("mlx.launch")
# Only the wall-clock time the build took may differ between the two files.
VARIES = {"build_seconds"}


def needs_launch():
    if not LAUNCH.exists():
        pytest.skip(f"mlx.launch not found next to {sys.executable}")


def argv(tiny_setup):
    return ["index", tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT, "--max-tokens", BUDGET, "--json"]


def launch(tiny_setup, env_extra=None, ranks=2):
    env = dict(os.environ, **(env_extra or {}))
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [str(LAUNCH), "-n", str(ranks), "--backend", "ring", "--", sys.executable, "-m", "saetui", *argv(tiny_setup)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=root)


def stored(path: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    return arrays, {k: v for k, v in meta.items() if k not in VARIES}


def index_files() -> list[Path]:
    folder = Path(os.environ["SAETUI_CACHE_DIR"])
    return sorted(p for p in folder.rglob(f"*{SUFFIX}") if not p.name.endswith(".partial" + SUFFIX))


def test_two_ranks_build_the_single_process_index_exactly(capsys, tiny_setup):
    needs_launch()
    assert main(argv(tiny_setup)) == 0
    single = json.loads(capsys.readouterr().out)
    path = Path(single["cache_file"])
    one_arrays, one_meta = stored(path)
    path.unlink()

    done = launch(tiny_setup)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # rank 0 alone prints
    assert summary["ranks"] == 2 and summary["built"] is True and summary["cache_file"] == str(path)
    assert summary["shard_bytes"] > 0 and summary["merge_seconds"] >= 0
    assert summary["tokens_indexed"] == single["tokens_indexed"] and summary["live_features"] == single["live_features"]
    two_arrays, two_meta = stored(path)
    assert two_meta == one_meta and two_meta["complete"] is True
    assert sorted(two_arrays) == sorted(one_arrays)
    for name, expected in one_arrays.items():
        got = two_arrays[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert np.array_equal(got, expected), f"{name} differs between the 1-rank and the 2-rank index"
    assert (one_arrays["count"] > 0).any() and (one_arrays["top_ctx"] >= 20).any()  # rank 1's contexts made it in

    # `top-texts` then reads the distributed index (no build).
    fid = int(np.flatnonzero(one_arrays["count"])[0])
    assert main(["top-texts", tiny_setup["sae"], str(fid), "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT, "--max-tokens", BUDGET, "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["index"] == str(path) and "indexing" not in out.err
    assert read_index(path).complete


def test_a_failing_rank_leaves_no_complete_index(tiny_setup):
    needs_launch()
    done = launch(tiny_setup, {"SAETUI_TEST_FAIL_RANK": "1"})
    assert index_files() == [], "a failed distributed build left an index file"
    assert "stopping, the build failed on rank 1" in done.stderr, done.stderr
    assert "SAETUI_TEST_FAIL_RANK made rank 1 fail" in done.stderr
    assert done.stdout.strip() == ""


def test_a_rank_that_dies_leaves_no_complete_index(tiny_setup):
    needs_launch()
    # mlx.launch ends the other ranks when one dies (a survivor left waiting in a collective
    # would instead get MLX's lost-connection error, which saetui turns into one line).
    done = launch(tiny_setup, {"SAETUI_TEST_FAIL_RANK": "1:exit"})
    assert index_files() == [], "a distributed build whose rank died left an index file"
    assert done.stdout.strip() == ""
