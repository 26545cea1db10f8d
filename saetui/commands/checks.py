"""The app's up-front check of --context-len, before the first frame (no model loaded).

The rule is `engine.session.check_context_len`, which the session applies again once the
model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path


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
    from ..engine.session import check_context_len

    if asked is not None:
        check_context_len(int(asked), positions_in_config(model_dir))
