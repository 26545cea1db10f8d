"""saetui: a keyboard-driven terminal explorer for sparse autoencoders on MLX language models.

Python API for notebooks and scripts:

    from saetui import load_sae, open_session
    sae = load_sae("my_sae.mlx")
    z = sae.encode(x)          # (..., d_model) -> (..., d_sae)
    x_hat = sae.decode(z)

    session = open_session("my_sae.mlx", dataset="texts.txt")   # SAE on its model's hook
    from saetui.engine.features import get_top_activating_features
    get_top_activating_features(session, "Paris is in France", top_k=10)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "load_sae",
    "open_session",
    "Intervention",
    "parse_intervention",
    "text_effects",
    "steer",
    "generate_side_by_side",
    "removal_effect",
    "__version__",
]

# Interventions (saetui/engine/intervene.py): functions that take an opened session.
_INTERVENE = ("Intervention", "parse_intervention", "text_effects", "steer", "generate_side_by_side", "removal_effect")


def _fast_blas() -> None:
    # Importing MLX is slow-ish and must follow the BLAS setup; do it on first use.
    from .blas import enable_fast_blas

    enable_fast_blas()


def open_session(sae: str | None = None, **settings: Any):
    """Open an SAE on its model's hook (None: the bundled demo) and return the `Session`.

    `settings` are `EngineSettings` fields: model, dataset, layer, component, context_len,
    max_tokens, text_column, download. Engine functions (saetui.engine.features, .probe,
    .evaluate, .index) take the session; long work (evaluate, build_index) is a generator:
    run it with `saetui.engine.worker.drive(...)`.
    """
    _fast_blas()
    from .engine.engine import Engine, EngineSettings

    engine = Engine(EngineSettings(sae=sae, **settings))
    try:
        return engine.open()  # on this thread: a script's MLX work stays on its own thread
    finally:
        engine.close()


def __getattr__(name: str):
    if name == "load_sae":
        _fast_blas()
        from .engine.sae import load_sae

        return load_sae
    if name in _INTERVENE:
        _fast_blas()
        from .engine import intervene

        return getattr(intervene, name)
    raise AttributeError(name)
