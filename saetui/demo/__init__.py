"""The embedded demo: a tiny llama model, a TopK SAE on it and a labelled corpus.

The assets live in ``saetui/demo/assets/`` inside the installed package and are rebuilt from
scratch by ``python -m saetui.demo.build``:

- ``model/``: an mlx-lm llama model with its BPE tokenizer (``mlx_lm.load`` reads it),
- ``sae.mlx/``: a TopK SAE in mlxterp's ``.mlx`` format (``metadata.model_name`` is
  :data:`DEMO_MODEL_NAME`, which is not a Hugging Face id: it means :func:`demo_model_path`),
- ``sae_small.mlx/``: a second, smaller TopK SAE (512 features, k 16) on the same activations,
- ``corpus.jsonl``: held-out documents ``{"text", "spans": [[start, end, label], ...]}`` with
  the planted concepts of :data:`saetui.demo.corpus.CONCEPTS`,
- ``build_info.json``: seeds, sizes and the quality numbers measured by the build.

Context policy used to train the model (and expected from the corpus engine): ``[<s>]`` followed
by 63 plain tokens of the stream of documents, each document followed by ``</s>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = [
    "DEMO_DIR", "DEMO_MODEL_NAME", "DEMO_CONTEXT_LENGTH", "demo_model_path", "demo_sae_path",
    "demo_small_sae_path",
    "demo_corpus_path", "demo_build_info_path", "demo_available", "is_demo_sae",
    "load_build_info",
]

#: Directory holding the demo assets inside the package.
DEMO_DIR: Path = Path(__file__).resolve().parent / "assets"
#: ``metadata.model_name`` of the demo SAE.
DEMO_MODEL_NAME = "saetui-demo"
#: Tokens per training context, BOS included.
DEMO_CONTEXT_LENGTH = 64


def demo_model_path() -> Path:
    """The mlx-lm model directory (config.json, model.safetensors, tokenizer files)."""
    return DEMO_DIR / "model"


def demo_sae_path() -> Path:
    """The demo SAE, an mlxterp ``.mlx`` directory."""
    return DEMO_DIR / "sae.mlx"


def demo_small_sae_path() -> Path:
    """The second, smaller demo SAE (512 features, k 16, float16 weights) on the same hook,
    trained on the same activations: for `saetui compare`."""
    return DEMO_DIR / "sae_small.mlx"


def demo_corpus_path() -> Path:
    """The held-out labelled corpus (JSON lines with ``text`` and ``spans``)."""
    return DEMO_DIR / "corpus.jsonl"


def demo_build_info_path() -> Path:
    return DEMO_DIR / "build_info.json"


def demo_available() -> bool:
    """True when all demo assets are present."""
    return all(p.exists() for p in (demo_model_path() / "config.json",
                                     demo_model_path() / "model.safetensors",
                                     demo_sae_path() / "config.json",
                                     demo_sae_path() / "weights.safetensors",
                                     demo_corpus_path()))


def load_build_info() -> dict:
    return json.loads(demo_build_info_path().read_text())


def is_demo_sae(path: "str | os.PathLike | None") -> bool:
    """True when ``path`` is the embedded demo SAE, or a copy of it.

    A path counts as the demo when it resolves to :func:`demo_sae_path`, or when it is an SAE
    directory whose ``config.json`` says ``metadata.model_name == "saetui-demo"`` (a copy made
    by the user, or a rebuild into another directory). ``None`` (no SAE given) is not the demo
    SAE itself; callers decide to fall back to the demo.
    """
    if path is None:
        return False
    p = Path(path).expanduser()
    try:
        if p.resolve() == demo_sae_path().resolve():
            return True
    except OSError:
        return False
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    try:
        meta = json.loads(cfg.read_text()).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and meta.get("model_name") == DEMO_MODEL_NAME
