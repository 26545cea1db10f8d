from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Hermetic: nothing a test or its child processes do reads or writes the user's home,
# caches or data (a BLAS copy or cache left there by running saetui must not change a
# test's outcome). Set before anything is imported, so import-time lookups see it too;
# os.environ is what child processes inherit.
ISOLATED_VARS = ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME",
                 "HF_HOME", "SAETUI_CACHE_DIR", "SAETUI_DATA_DIR")


def _isolated_env(base: Path) -> dict[str, str]:
    return {
        "HOME": str(base / "home"),
        "XDG_CACHE_HOME": str(base / "home" / ".cache"),
        "XDG_DATA_HOME": str(base / "home" / ".local" / "share"),
        "XDG_CONFIG_HOME": str(base / "home" / ".config"),
        "XDG_STATE_HOME": str(base / "home" / ".local" / "state"),
        "HF_HOME": str(base / "home" / ".cache" / "huggingface"),
        "SAETUI_CACHE_DIR": str(base / "cache"),
        "SAETUI_DATA_DIR": str(base / "data"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


_SESSION_HOME = Path(tempfile.mkdtemp(prefix="saetui-tests-"))
atexit.register(shutil.rmtree, _SESSION_HOME, True)
os.environ.update(_isolated_env(_SESSION_HOME))
(_SESSION_HOME / "home").mkdir()

# Before anything imports MLX: the same fast BLAS the app uses (see saetui/blas.py).
from saetui.blas import enable_fast_blas  # noqa: E402

enable_fast_blas()

from support import FIXTURES, make_model_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Home, caches and user data go to temporary folders, never the user's (children too)."""
    base = tmp_path_factory.mktemp("saetui-home")
    (base / "home").mkdir()
    for name, value in _isolated_env(base).items():
        monkeypatch.setenv(name, value)


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
