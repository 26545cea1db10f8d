"""saetui: a keyboard-driven terminal explorer for sparse autoencoders on MLX language models.

Python API for notebooks and scripts:

    from saetui import load_sae
    sae = load_sae("my_sae.mlx")
    z = sae.encode(x)          # (..., d_model) -> (..., d_sae)
    x_hat = sae.decode(z)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_sae", "__version__"]


def __getattr__(name: str):
    # Importing MLX is slow-ish and must follow saetui.blas setup; do it on first use.
    if name == "load_sae":
        from .blas import enable_fast_blas

        enable_fast_blas()
        from .engine.sae import load_sae

        return load_sae
    raise AttributeError(name)
