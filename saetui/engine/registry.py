"""The feature registry: the user's names for features, in the guide's JSON format.

    {"1234": {"name": "...", "description": "...", "examples": ["..."], "confidence": "high"}}

Where it lives: beside the SAE (`my_sae.mlx` -> `my_sae.features.json`) when that folder
is writable, otherwise in the user data folder keyed by the SAE (the demo SAE sits inside
the installed package, so its registry always goes there); `--registry` overrides both.

Nothing is ever lost:
- saves are atomic (temporary file, flush, fsync, rename) and the previous version is
  kept as `<file>.bak`;
- fields and entries saetui does not know (written by other tools) are kept as they are;
- a file that cannot be read (invalid JSON, nested too deeply, not a regular file, too
  large) or that the user made read-only (no write permission) opens read-only, with a
  warning saying why, and is never overwritten;
- keys that are not feature ids (including digit strings too long to be one) are kept
  as other tools' data and never crash anything;
- the lock file is opened without following links (a planted link cannot make saetui
  create a file elsewhere);
- two processes editing one registry do not lose each other's edits: a save takes a
  lock, re-reads the file and applies only this process's changes (field by field) on
  top of what is there.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import platformdirs

from .cache import atomic_write_bytes
from ..ui.safe_text import dumps_json_safe
from .errors import UserError

if TYPE_CHECKING:
    from .engine import Engine
    from .session import Session

CONFIDENCES = ("high", "medium", "low")
KNOWN_FIELDS = ("name", "description", "examples", "confidence")
SUFFIX = ".features.json"
BACKUP_SUFFIX = ".bak"
LOCK_SUFFIX = ".lock"
LOCK_TIMEOUT_S = 10.0


def data_dir() -> Path:
    """The user data folder (`SAETUI_DATA_DIR` overrides it; tests set it)."""
    override = os.environ.get("SAETUI_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir("saetui"))


def default_registry_path(sae_path: str | Path, is_demo: bool = False) -> Path:
    """Beside the SAE when its folder is writable, else the data folder keyed by the SAE."""
    sae_path = Path(sae_path).expanduser()
    stem = sae_path.name[: -len(".mlx")] if sae_path.name.endswith(".mlx") else sae_path.name
    stem = stem or "sae"
    if not is_demo:
        beside = sae_path.parent / f"{stem}{SUFFIX}"
        if _writable_dir(sae_path.parent):
            return beside
    folder = data_dir() / "registries"
    if is_demo:
        # Keyed by name, not path: reinstalling the package must not lose the demo's names.
        return folder / f"demo{SUFFIX}"
    key = hashlib.sha256(str(sae_path.resolve()).encode("utf-8")).hexdigest()[:12]
    return folder / f"{stem}-{key}{SUFFIX}"


def registry_path_for(where: "Engine | Session") -> Path:
    """The registry the settings point at (`--registry`, or the default beside the SAE)."""
    if where.settings.registry:
        return Path(where.settings.registry).expanduser()
    return default_registry_path(where.sae_path, where.is_demo)


def _writable_dir(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def feature_key(feature_id: int) -> str:
    fid = int(feature_id)
    if fid < 0:
        raise UserError(f"Feature id {fid} is negative", "Use a feature id from 0 up")
    return str(fid)


class Registry:
    """One registry file. Edits (`set`, `delete`) take effect in memory; `save()` writes them."""

    def __init__(
        self, path: Path, data: dict[str, Any] | None = None, problem: str | None = None, write_protected: bool = False
    ) -> None:
        self.path = Path(path)
        # Why the file could not be read (then it is read-only), e.g. "invalid JSON: ...".
        self.problem = problem
        # The user made the file read-only: it is shown, never rewritten.
        self.write_protected = write_protected and problem is None
        self.read_only = problem is not None or self.write_protected
        if problem is not None:
            self.warning: str | None = f"Registry {self.path} cannot be read ({problem}); it is open read-only and will not be overwritten"
        elif self.write_protected:
            self.warning = f"Registry {self.path} is a read-only file; it is open read-only (make the file writable to save names)"
        else:
            self.warning = None
        self._data: dict[str, Any] = data if data is not None else {}
        # What the file held when last read or written: a save applies only what changed since.
        self._base: dict[str, Any] = copy.deepcopy(self._data)
        self._stamp = _stamp(self.path)

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "Registry":
        """Open a registry; a missing file is an empty registry, an unreadable one is read-only."""
        path = Path(path).expanduser()
        try:
            data = _read(path)
        except _Unreadable as exc:
            return cls(path, {}, problem=str(exc))
        return cls(path, data, write_protected=_write_protected(path))

    def name(self, feature_id: int) -> str | None:
        entry = self._data.get(str(int(feature_id)))
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"].strip():
            return entry["name"]
        if isinstance(entry, str) and entry.strip():  # a bare name written by another tool
            return entry
        return None

    def get(self, feature_id: int) -> dict[str, Any] | None:
        """A copy of the entry (every field, known or not), or None."""
        entry = self._data.get(str(int(feature_id)))
        if entry is None:
            return None
        if not isinstance(entry, dict):
            return {"name": str(entry)}
        return copy.deepcopy(entry)

    def __contains__(self, feature_id: object) -> bool:
        try:
            return str(int(feature_id)) in self._data  # type: ignore[call-overload]  # any object may be asked; int() errors are caught
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self.feature_ids())

    def feature_ids(self) -> list[int]:
        """Ids of the entries keyed by a feature id, ascending."""
        return sorted(int(k) for k in self._data if _is_id(k))

    def entries(self) -> list[tuple[int, dict[str, Any]]]:
        return [(fid, self.get(fid) or {}) for fid in self.feature_ids()]

    def to_json(self) -> dict[str, Any]:
        """Everything in the registry, unknown entries included, as the file holds it."""
        return copy.deepcopy(self._data)

    @property
    def dirty(self) -> bool:
        return self._data != self._base

    def refresh(self) -> bool:
        """Re-read the file if another process changed it and nothing here is unsaved."""
        if self.read_only or self.dirty or _stamp(self.path) == self._stamp:
            return False
        try:
            data = _read(self.path)
        except _Unreadable:
            return False
        changed = data != self._data
        self._data = data
        self._base = copy.deepcopy(data)
        self._stamp = _stamp(self.path)
        return changed

    # -- editing -----------------------------------------------------------------------------

    def set(self, feature_id: int, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Update a feature's entry with these fields; fields not given are kept."""
        key = feature_key(feature_id)
        current = self._data.get(key)
        merged: dict[str, Any] = dict(current) if isinstance(current, dict) else ({"name": str(current)} if current is not None else {})
        merged.update(validate_entry(entry))
        for field_name, default in (("name", ""), ("description", ""), ("examples", []), ("confidence", "low")):
            merged.setdefault(field_name, copy.deepcopy(default))
        self._data[key] = merged
        return copy.deepcopy(merged)

    def delete(self, feature_id: int) -> bool:
        return self._data.pop(feature_key(feature_id), None) is not None

    def revert(self) -> None:
        """Drop unsaved edits (after a save failed), so memory matches the file again."""
        self._data = copy.deepcopy(self._base)

    # -- writing -----------------------------------------------------------------------------

    def save(self) -> None:
        """Write this process's edits atomically, merged over whatever the file holds now."""
        if self.write_protected:
            raise UserError(
                f"Registry {self.path} is a read-only file, so saetui will not overwrite it",
                "Make the file writable and reopen, or pass --registry with another path",
            )
        if self.read_only:
            raise UserError(
                f"Registry {self.path} could not be read when it was opened, so saetui will not overwrite it",
                "Fix or move the file away and reopen, or pass --registry with another path",
            )
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the folder {folder} for the registry ({exc.strerror})", "Pass --registry with a writable path") from exc
        with _locked(self.path):
            try:
                on_disk = _read(self.path)
            except _Unreadable as exc:
                raise UserError(
                    f"Registry {self.path} was changed by something else and cannot be read now ({exc}); not overwriting it",
                    "Fix the file, then save again",
                ) from exc
            merged = _merge(self._base, self._data, on_disk)
            self._write(merged)
            self._data = merged
            self._base = copy.deepcopy(merged)
            self._stamp = _stamp(self.path)

    def _write(self, data: dict[str, Any]) -> None:
        blob = _dumps(data)
        try:
            previous = self.path.read_bytes() if self.path.exists() else None
            mode = _mode(self.path)
            if previous is not None and previous != blob:
                atomic_write_bytes(self.path.with_name(self.path.name + BACKUP_SUFFIX), previous, mode)
            atomic_write_bytes(self.path, blob, mode)
        except OSError as exc:
            raise UserError(f"Cannot write the registry {self.path} ({exc.strerror or exc})", "Pass --registry with a writable path") from exc
        _remove_stale_temporaries(self.path)

    def export(self, path: str | Path) -> Path:
        """Write a copy of the registry (as saved) to `path`, atomically."""
        target = Path(path).expanduser()
        if target.is_dir():
            target = target / self.path.name
        if target.resolve() == self.path.resolve():
            raise UserError(f"{target} is the registry itself", "Choose another path to export to")
        try:
            atomic_write_bytes(target, _dumps(self._data), _mode(target))
        except OSError as exc:
            raise UserError(f"Cannot write {target} ({exc.strerror or exc})", "Choose a writable path") from exc
        return target


def validate_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The known fields of `entry`, checked; other fields pass through untouched."""
    out = dict(entry)
    if "name" in out:
        if not isinstance(out["name"], str):
            raise UserError("A feature's name must be text", "Give the name as a string")
        out["name"] = out["name"].strip()
    if "description" in out:
        if not isinstance(out["description"], str):
            raise UserError("A feature's description must be text", "Give the description as a string")
        out["description"] = out["description"].strip()
    if "examples" in out:
        examples = out["examples"]
        if isinstance(examples, str) or not all(isinstance(e, str) for e in examples):
            raise UserError("A feature's examples must be a list of texts", "Give one example per line")
        out["examples"] = [e for e in examples if e.strip()]
    if "interventions" in out:
        # Notes of interventions tried on the feature (the Steer screen's experiments).
        notes = out["interventions"]
        if not isinstance(notes, list) or not all(isinstance(n, dict) and isinstance(n.get("spec"), str) and isinstance(n.get("effect", ""), str) for n in notes):
            raise UserError("A feature's interventions must be a list of {spec, effect} notes", "Write one per line: ID:MODE[:VALUE] — what you saw")
    if "confidence" in out and out["confidence"] not in CONFIDENCES:
        raise UserError(f"Confidence {out['confidence']!r} is not one of {', '.join(CONFIDENCES)}", "Choose high, medium or low")
    return out


# -- file helpers ----------------------------------------------------------------------------


class _Unreadable(Exception):
    pass


# A feature id fits in 18 digits; a longer digit string is another tool's key, not an id
# (int() of thousands of digits raises, and no SAE has that many features).
MAX_ID_DIGITS = 18
MAX_REGISTRY_BYTES = 64 * 1024 * 1024


def _is_id(key: str) -> bool:
    return key.isascii() and key.isdigit() and len(key) <= MAX_ID_DIGITS


def _write_protected(path: Path) -> bool:
    """The user took write permission away (mode 444): respected even where root could write."""
    try:
        st = path.stat()
    except OSError:
        return False
    return not (st.st_mode & 0o222) or not os.access(path, os.W_OK)


def _read(path: Path) -> dict[str, Any]:
    import stat as stat_

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat_.S_ISREG(st.st_mode):
            raise _Unreadable("not a regular file")
        if st.st_size > MAX_REGISTRY_BYTES:
            raise _Unreadable(f"larger than {MAX_REGISTRY_BYTES // (1024 * 1024)} MiB")
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read(MAX_REGISTRY_BYTES + 1)
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Unreadable("not UTF-8") from exc
    except RecursionError as exc:
        raise _Unreadable("nested too deeply") from exc
    except ValueError as exc:
        raise _Unreadable(f"invalid JSON: {exc}") from exc
    try:
        copy.deepcopy(data)  # what every edit does; a structure too deep for it is unreadable
    except RecursionError as exc:
        raise _Unreadable("nested too deeply") from exc
    if not isinstance(data, dict):
        raise _Unreadable(f"a JSON {type(data).__name__}, not an object of feature ids")
    return data


def _dumps(data: dict[str, Any]) -> bytes:
    # Feature ids in numeric order, other keys after them in their own order.
    ids = sorted((k for k in data if _is_id(k)), key=int)
    ordered = {k: data[k] for k in ids}
    ordered.update((k, v) for k, v in data.items() if not _is_id(k))
    return (dumps_json_safe(ordered, indent=2) + "\n").encode("utf-8")


def _mode(path: Path) -> int | None:
    """The file's permissions, to keep them; None for a new file (the umask decides)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


_MISSING = object()


def _merge(base: dict[str, Any], mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """`theirs` with the changes from `base` to `mine` applied, field by field."""
    out = copy.deepcopy(theirs)
    for key in set(base) | set(mine):
        b, m = base.get(key, _MISSING), mine.get(key, _MISSING)
        if b == m:
            continue  # not changed here: whatever is on disk wins
        if m is _MISSING:
            out.pop(key, None)  # deleted here
            continue
        t = out.get(key, _MISSING)
        if not (isinstance(m, dict) and isinstance(t, dict) and isinstance(b, dict)):
            out[key] = copy.deepcopy(m)  # new here, or not an entry both sides agree on
            continue
        merged = dict(t)
        for field_name in set(b) | set(m):
            bf, mf = b.get(field_name, _MISSING), m.get(field_name, _MISSING)
            if bf == mf:
                continue
            if mf is _MISSING:
                merged.pop(field_name, None)
            else:
                merged[field_name] = copy.deepcopy(mf)
        out[key] = merged
    return out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `<registry>.lock`, shared by every saetui process."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the merge still applies
        yield
        return
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    try:
        # O_NOFOLLOW: a link planted as the lock file must not make us create its target.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(
                f"The registry's lock file {lock_path} is a link, which saetui does not follow",
                "Remove that link, then save again",
            ) from exc
        raise UserError(f"Cannot write in {path.parent} ({exc.strerror})", "Pass --registry with a writable path") from exc
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"Registry {path} is locked by another process", "Try again in a moment") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files left by a save that crashed before its rename (we hold the lock)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            pass
