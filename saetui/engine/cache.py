"""The on-disk cache of computed things (thresholds, reports, feature indexes).

Everything lives under the user cache directory (platformdirs; `SAETUI_CACHE_DIR`
overrides it, which tests use), keyed by a hash of what the result depends on. It is
safe to delete at any time. Writes are atomic: a reader sees the old file or the new
one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import platformdirs

FORMAT_VERSION = 1


def cache_dir() -> Path:
    override = os.environ.get("SAETUI_CACHE_DIR")
    base = Path(override) if override else Path(platformdirs.user_cache_dir("saetui"))
    return base


def cache_key(**parts: Any) -> str:
    """A short stable hash of the named parts (anything JSON can encode)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def cache_path(kind: str, key: str, suffix: str) -> Path:
    """Where a cached `kind` (e.g. "report") with this key lives; the folder exists."""
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`.

    `mode`: the permissions the file gets (a temporary file is created 0600, fine for a
    cache, wrong for a file the user shares, such as the registry).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (a cache miss)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
