from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Before anything imports MLX: the same fast BLAS the app uses (see saetui/engine/blas.py).
from saetui.engine.blas import enable_fast_blas  # noqa: E402

enable_fast_blas()

from support import FIXTURES, make_model_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Caches and user data go to temporary folders, never the user's."""
    base = tmp_path_factory.mktemp("saetui-home")
    monkeypatch.setenv("SAETUI_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("SAETUI_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 3-layer llama with hidden size 64 and a byte-level BPE tokenizer."""
    return make_model_dir(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.exists():
        pytest.skip(f"mlxterp fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory, tiny_model_dir) -> dict:
    """A tiny model, an SAE on its layer-1 MLP, and a small text dataset.

    Returns paths as strings: model, sae, dataset. The SAE is random (not trained), so
    only use it where the numbers are checked against an independent computation.
    """
    from support import TEXT, write_sae

    base = tmp_path_factory.mktemp("tiny-setup")
    sae = write_sae(base / "tiny_sae.mlx", metadata={"layer": 1, "component": "mlp", "model_name": str(tiny_model_dir)})
    dataset = base / "texts.txt"
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    lines = [" ".join(sentences[(i + j) % len(sentences)] for j in range(3)) for i in range(200)]
    dataset.write_text("\n".join(lines) + "\n")
    return {"model": str(tiny_model_dir), "sae": str(sae), "dataset": str(dataset)}
