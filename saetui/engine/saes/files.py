"""Reading SAE files safely: regular files only, bounded JSON, safetensors and npz parsed
without pickle, every problem a `UserError`.

An SAE folder is untrusted input. `config.json` may be a FIFO (a plain read would hang),
a symlink to `/dev/zero` (a plain read would fill memory), a directory, or unreadable;
weights may be truncated or hold integer tensors. Each file is opened non-blocking and
checked with `fstat` *after* opening (so a swapped file cannot slip in between a check
and the read), then read with a size cap where one makes sense. Symlinks to regular
files are followed: the Hugging Face cache is made of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

# No SAE config is anywhere near this; a bigger one is not a config.
JSON_SIZE_CAP = 8 * 1024 * 1024
# A safetensors header is a few KiB per tensor.
SAFETENSORS_HEADER_CAP = 64 * 1024 * 1024

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 below
}


def shown(value: Any) -> str:
    """Untrusted text for an error line: quoted, with control and bidi characters escaped."""
    from ...ui.safe_text import visible

    text = value if isinstance(value, str) else repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return "'" + visible(text) + "'" if isinstance(value, str) else visible(text)


def _open_regular(path: Path) -> tuple[int, int]:
    """(file descriptor, size) of a regular file, or a UserError saying what it is instead."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a file", "Restore the file from the SAE's release") from None
    except FileNotFoundError:
        raise UserError(f"{path} does not exist", "Copy the whole SAE folder again") from None
    except PermissionError:
        raise UserError(f"{path} cannot be read (permission denied)", "Make it readable (chmod u+r), or copy the SAE again") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be opened ({exc.strerror or type(exc).__name__})", "Copy the SAE again") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or special file"
        raise UserError(f"{path} is {what}, not a regular file", "Point saetui at an SAE folder of ordinary files")
    # Back to blocking reads for a regular file.
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd, st.st_size


def read_bytes(path: Path, cap: int | None = None) -> bytes:
    """The whole content of a regular file, at most `cap` bytes (UserError beyond).

    `readall` sizes its buffer from fstat and returns one `bytes`, which BytesIO and
    numpy then share without copying (weights files are hundreds of MB)."""
    fd, size = _open_regular(path)
    try:
        if cap is not None and size > cap:
            raise UserError(f"{path} is {size:,} bytes, too large for an SAE file of its kind (limit {cap:,})", "Restore the file from the SAE's release")
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            data = f.readall()
        if cap is not None and len(data) > cap:  # grew while being read
            raise UserError(f"{path} is over {cap:,} bytes, too large for an SAE file of its kind", "Restore the file from the SAE's release")
        return data
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror or type(exc).__name__})", "Copy the SAE again") from None
    finally:
        os.close(fd)


def read_json_object(path: Path, fix: str = "Restore it from the SAE's release") -> tuple[dict[str, Any], bytes]:
    """A JSON object from a regular file of at most JSON_SIZE_CAP bytes, and its raw bytes."""
    raw = read_bytes(path, JSON_SIZE_CAP)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not valid JSON ({detail[:120]})", fix) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object", fix)
    return data, raw


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], bytes]:
    """Tensors (float ones widened as stored: F64/F32/F16, BF16 as float32), their on-disk
    dtypes, and the file's bytes (for the content hash).

    Parsed by hand (8-byte header length, JSON header, raw data) so that a bad file is a
    clear message and nothing but numbers is ever read.
    """
    raw = read_bytes(path)
    fix = "Copy the file again from the SAE's release"
    if len(raw) < 8:
        raise UserError(f"{path} cannot be read as safetensors (only {len(raw)} bytes)", fix)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > SAFETENSORS_HEADER_CAP or 8 + n > len(raw):
        raise UserError(f"{path} cannot be read as safetensors (bad header length {n})", fix)
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UserError(f"{path} cannot be read as safetensors (its header is not JSON)", fix) from None
    if not isinstance(header, dict):
        raise UserError(f"{path} cannot be read as safetensors (its header is not an object)", fix)
    data = memoryview(raw)[8 + n :]
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise UserError(f"{path} cannot be read as safetensors (entry {shown(name)} is malformed)", fix)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (
            not isinstance(dtype, str)
            or not isinstance(shape, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise UserError(f"{path} cannot be read as safetensors (entry {shown(name)} is malformed)", fix)
        dtypes[name] = dtype
        if dtype not in _SAFETENSORS_DTYPES:
            # Kept out of the tensors; the loader names it as an unusable dtype if it needs it.
            continue
        np_dtype = _SAFETENSORS_DTYPES[dtype]
        start, end = offsets
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= start <= end <= len(data) or end - start != count * np_dtype.itemsize:
            raise UserError(f"{path} cannot be read as safetensors (tensor {shown(name)} lies outside the file or has the wrong size)", fix)
        arr = np.frombuffer(data[start:end], dtype=np_dtype).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr
    return tensors, dtypes, raw


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], bytes]:
    """The arrays of a numpy .npz file (no pickles) and its bytes.

    Uncompressed members (np.savez, what Gemma Scope ships) are viewed in place, without
    a copy; compressed ones go through np.load."""
    raw = read_bytes(path)
    fix = "Copy the file again from the SAE's release"
    try:
        arrays = _npz_in_place(raw)
        if arrays is None:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, struct.error) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} cannot be read as a numpy .npz file ({detail[:120]})", fix) from None
    return arrays, raw


def _npz_in_place(raw: bytes) -> dict[str, np.ndarray] | None:
    """Arrays of an uncompressed .npz as views into `raw`; None if any member is compressed."""
    view = memoryview(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos = zf.infolist()
        if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
            return None
        out: dict[str, np.ndarray] = {}
        for info in infos:
            # The member's data follows its local header (30 bytes + name + extra).
            local = view[info.header_offset : info.header_offset + 30]
            if bytes(local[:4]) != b"PK\x03\x04":
                raise ValueError("bad zip member header")
            name_len, extra_len = struct.unpack("<HH", bytes(local[26:30]))
            start = info.header_offset + 30 + name_len + extra_len
            member = io.BytesIO(view[start : start + min(info.file_size, 1 << 20)])  # the .npy header
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                return None
            if dtype.hasobject:
                raise ValueError("object arrays are not read")
            offset = start + member.tell()
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if offset + count * dtype.itemsize > start + info.file_size:
                raise ValueError(f"member {info.filename} is truncated")
            arr = np.frombuffer(view[offset : offset + count * dtype.itemsize], dtype=dtype)
            arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
            key = info.filename.removesuffix(".npy")
            out[key] = arr
        return out


def digest(*parts: bytes | str) -> str:
    """A short sha256 over several byte strings, each length-prefixed (no ambiguity)."""
    h = hashlib.sha256()
    for part in parts:
        b = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]
