"""Placeholder until the fast-BLAS work lands (issue 6)."""

from dataclasses import dataclass


@dataclass
class BlasStatus:
    active: bool = False
    library: str | None = None
    notice: str | None = None


def enable_fast_blas() -> BlasStatus:
    return BlasStatus()
