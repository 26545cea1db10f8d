"""The on-disk cache of computed things (thresholds, reports, feature indexes), and safe
writes of the user's own files.

Everything cached lives under the user cache directory (platformdirs; `SAETUI_CACHE_DIR`
overrides it, which tests use), keyed by a hash of what the result depends on plus this
code's cache format (`CACHE_FORMAT`, in every key). It is safe to delete at any time.

A cache can never serve wrong numbers: every JSON entry is written as an envelope
`{"saetui_cache": CACHE_FORMAT, "sha256": ..., "data": ...}` whose checksum covers the
data, and `read_entry` returns the data only when the file is a regular file of sane
size, parses, carries this format and checksum, and passes the caller's validator.
Anything else (damaged, edited, unparseable, a directory, unreadable) is a miss, which
the caller rebuilds; a cache write that fails is only a missed chance to cache.

Writes are atomic: a reader sees the old file or the new one, never half of one. The
user's files (reports, registries) keep their permissions when replaced; new ones get
the permissions the umask gives, as any other tool's files do.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import platformdirs

# Bump when what the code computes or stores changes: every cache key includes it, so
# entries made by other code versions are never found.
CACHE_FORMAT = 2
FORMAT_VERSION = CACHE_FORMAT  # the old name
MAX_ENTRY_BYTES = 256 * 1024 * 1024
BACKUP_SUFFIX = ".bak"


def cache_dir() -> Path:
    override = os.environ.get("SAETUI_CACHE_DIR")
    base = Path(override) if override else Path(platformdirs.user_cache_dir("saetui"))
    return base


def cache_key(**parts: Any) -> str:
    """A short stable hash of the named parts (anything JSON can encode) and CACHE_FORMAT."""
    blob = json.dumps({"cache_format": CACHE_FORMAT, "parts": parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def cache_path(kind: str, key: str, suffix: str) -> Path:
    """Where a cached `kind` (e.g. "report") with this key lives; the folder exists if it can."""
    folder = cache_dir() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # writing there will fail and count as not cached; reading is a miss
    return folder / f"{key}{suffix}"


# -- cache entries -----------------------------------------------------------------------------


def _checksum(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def write_entry(path: Path, data: Any) -> bool:
    """Cache `data` (JSON-encodable) at `path` with its format and checksum, atomically.

    Returns False when it could not be written (a directory in the way, a read-only
    cache folder): the caller goes on with its result, uncached.
    """
    envelope = {"saetui_cache": CACHE_FORMAT, "sha256": _checksum(data), "data": data}
    try:
        atomic_write_bytes(path, json.dumps(envelope, ensure_ascii=False).encode("utf-8"), mode=0o600)
    except (OSError, ValueError):
        return False
    return True


def read_entry(path: Path, validate: Callable[[Any], bool] | None = None) -> Any | None:
    """The data cached at `path`, or None (a miss) unless everything checks out.

    `validate(data)`: the caller's check of the structure and types it will use; a
    False or an exception is a miss.
    """
    raw = read_regular_file(path, MAX_ENTRY_BYTES)
    if raw is None:
        return None
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict) or envelope.get("saetui_cache") != CACHE_FORMAT or "data" not in envelope:
        return None
    data = envelope["data"]
    try:
        if envelope.get("sha256") != _checksum(data):
            return None
        if validate is not None and not validate(data):
            return None
    except Exception:  # noqa: BLE001 - whatever is wrong with an entry, it is a miss
        return None
    return data


# The names the engine used before entries had envelopes.
atomic_write_json = write_entry
read_json = read_entry


def has_shape(value: Any, shape: Any) -> bool:
    """Whether `value` has `shape`: a type (or tuple of types), a dict of key -> shape
    (those keys required, others allowed), or a one-item list [shape] for a list of them.
    bool never counts as int or float."""
    if isinstance(shape, dict):
        return isinstance(value, dict) and all(k in value and has_shape(value[k], s) for k, s in shape.items())
    if isinstance(shape, list):
        return isinstance(value, list) and all(has_shape(v, shape[0]) for v in value)
    if isinstance(value, bool) and not (shape is bool or (isinstance(shape, tuple) and bool in shape)):
        return False
    return isinstance(value, shape)


def read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else None.

    Never blocks on a FIFO, never reads a device or a directory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


# -- atomic writes ---------------------------------------------------------------------------


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`.

    `mode`: the permissions the file gets; None keeps an existing file's permissions and
    gives a new file what the umask allows (0666 & ~umask), like any other tool.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
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


def check_writable_file(path: Path) -> None:
    """Raise OSError (with a strerror) now if `path` could not be written later.

    For output paths given on the command line, checked before hours of work.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "it is a directory", str(path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(2, "its folder does not exist", str(folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(13, "its folder is not writable", str(folder))
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(13, "the file is read-only", str(path))


def write_user_file(path: Path, data: bytes | str, backup: bool = True) -> Path | None:
    """Replace (or create) a file the user owns, atomically, keeping its permissions.

    backup=True keeps the previous content (when there is one and it differs) as
    `<path>.bak`, with the same permissions. Returns the backup's path, or None.
    Raises OSError when it cannot write (the caller turns that into a UserError).
    """
    path = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    saved = None
    if backup:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            previous = path.read_bytes()
            if previous != blob:
                saved = path.with_name(path.name + BACKUP_SUFFIX)
                atomic_write_bytes(saved, previous, stat.S_IMODE(st.st_mode))
    atomic_write_bytes(path, blob)
    return saved


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
