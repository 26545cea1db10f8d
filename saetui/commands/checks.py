"""The app's up-front check of --context-len, before the first frame (no model loaded).

Once the model is loaded, `engine.session.model_context_len` refuses the same values.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.errors import UserError


def positions_in_config(model_dir: Path) -> int | None:
    """max_position_embeddings from a model directory's config.json (no model loaded)."""
    from ..engine.cache import read_regular_file

    raw = read_regular_file(Path(model_dir) / "config.json", 16 * 1024 * 1024)
    try:
        config = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None
    for holder in (config, config.get("text_config")):
        limit = holder.get("max_position_embeddings") if isinstance(holder, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
    return None


def check_context_len_against(asked: int | None, model_dir: Path) -> None:
    """The app's check, before the first frame: the model's config says its positions."""
    if asked is None:
        return
    _refuse_beyond(int(asked), positions_in_config(model_dir))


def _refuse_beyond(asked: int, limit: int | None) -> None:
    if limit is not None and asked > limit:
        raise UserError(
            f"--context-len {asked} is beyond the model's {limit:,} positions (activations past them are wrong)",
            f"Pass --context-len {limit} or less",
        )
