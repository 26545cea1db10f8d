"""Checks the subcommands share once the model is open."""

from __future__ import annotations

from typing import Any

from ..engine.errors import UserError


def model_positions(session: Any) -> int | None:
    """How many positions the model was trained for (max_position_embeddings), if it says."""
    runner = getattr(session, "runner", None)
    args = getattr(getattr(runner, "model", None), "args", None)
    limit = getattr(args, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def check_context_len(session: Any) -> None:
    """--context-len beyond the model's positions gives wrong activations: refuse it."""
    asked = getattr(getattr(session, "settings", None), "context_len", None)
    if asked is None:
        return
    if int(asked) < 2:
        raise UserError(f"--context-len {asked} is too short (BOS included)", "Pass --context-len 2 or more")
    limit = model_positions(session)
    if limit is not None and int(asked) > limit:
        raise UserError(
            f"--context-len {asked} is beyond the model's {limit:,} positions (activations past them are wrong)",
            f"Pass --context-len {limit} or less",
        )
