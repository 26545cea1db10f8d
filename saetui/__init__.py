"""saetui: a keyboard-driven terminal explorer for sparse autoencoders on MLX language models.

Python API for notebooks and scripts:

    from saetui import load_sae
    sae = load_sae("my_sae.mlx")
    z = sae.encode(x)          # (..., d_model) -> (..., d_sae)
    x_hat = sae.decode(z)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "load_sae",
    "Intervention",
    "parse_intervention",
    "text_effects",
    "steer",
    "generate_side_by_side",
    "removal_effect",
    "__version__",
]

# Interventions (saetui/engine/intervene.py): functions that take an opened session/engine.
_INTERVENE = {
    "Intervention": "Intervention",
    "parse_intervention": "parse_intervention",
    "text_effects": "text_effects",
    "steer": "steer",
    "generate_side_by_side": "generate_side_by_side",
    "removal_effect": "removal_effect",
}


def __getattr__(name: str):
    # Importing MLX is slow-ish and must follow engine.blas setup; do it on first use.
    if name == "load_sae":
        from .engine.blas import enable_fast_blas

        enable_fast_blas()
        from .engine.sae import load_sae

        return load_sae
    if name in _INTERVENE:
        from .engine.blas import enable_fast_blas

        enable_fast_blas()
        from .engine import intervene

        return getattr(intervene, _INTERVENE[name])
    raise AttributeError(name)
