"""Tests for saetui.blas (fast BLAS for MLX on Linux). No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saetui import blas

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def fresh(monkeypatch):
    """Forget any earlier enable_fast_blas() result; pretend mlx.core is not loaded."""
    monkeypatch.setattr(blas, "_status", None)
    monkeypatch.delitem(sys.modules, "mlx.core", raising=False)
    monkeypatch.delenv(blas.ENV_VAR, raising=False)
    return blas


# What the child process checks: status, the library now supplying cblas_sgemm
# to the global scope, and MLX's BLAS/LAPACK results against numpy.
_CHILD = textwrap.dedent(
    """
    import json, sys
    from saetui import blas
    if sys.argv[1] == "pypi":
        blas.SYSTEM_CANDIDATES[:] = []  # force the scipy-openblas32 route
    st = blas.enable_fast_blas()
    out = {"active": st.active, "library": st.library, "source": st.source,
           "notice": st.notice, "detail": st.detail}
    if st.active:
        out["provider"] = blas._file_of(blas._global_symbol("cblas_sgemm"))
        import numpy as np
        import mlx.core as mx
        rng = np.random.default_rng(0)
        errs = {}
        for n in (1, 7, 64, 257, 1024):
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            got = np.array(mx.matmul(mx.array(a), mx.array(b), stream=mx.cpu))
            ref = a.astype(np.float64) @ b.astype(np.float64)
            errs[f"matmul{n}"] = float(np.abs(got - ref).max() / np.sqrt(n))
        # non-square, transposed operand, batched
        a = rng.standard_normal((3, 65, 130), dtype=np.float32)
        b = rng.standard_normal((130, 33), dtype=np.float32)
        got = np.array(mx.matmul(mx.array(a), mx.array(b).T.T, stream=mx.cpu))
        errs["batched"] = float(np.abs(got - a @ b).max())
        got = np.array(mx.matmul(mx.array(b).T, mx.array(a[0]).T, stream=mx.cpu))
        errs["transposed"] = float(np.abs(got - b.T @ a[0].T).max())
        # LAPACK routines now come from the same library
        m = rng.standard_normal((48, 48), dtype=np.float32)
        spd = m @ m.T + 48 * np.eye(48, dtype=np.float32)
        inv = np.array(mx.linalg.inv(mx.array(spd), stream=mx.cpu))
        errs["inv"] = float(np.abs(inv @ spd - np.eye(48)).max())
        L = np.array(mx.linalg.cholesky(mx.array(spd), stream=mx.cpu))
        errs["cholesky"] = float(np.abs(L @ L.T - spd).max() / np.abs(spd).max())
        s = np.array(mx.linalg.svd(mx.array(m), compute_uv=False, stream=mx.cpu))
        errs["svd"] = float(np.abs(s - np.linalg.svd(m, compute_uv=False)).max())
        w = np.array(mx.linalg.eigvalsh(mx.array(spd), stream=mx.cpu))
        errs["eigvalsh"] = float(np.abs(w - np.linalg.eigvalsh(spd)).max() / w.max())
        out["errs"] = errs
    print(json.dumps(out))
    """
)

_TOL = {"batched": 1e-3, "transposed": 1e-3, "inv": 1e-4, "cholesky": 1e-5,
        "svd": 1e-3, "eigvalsh": 1e-5}


def _run_child(mode: str, tmp_path, extra_env: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != blas.ENV_VAR}
    env["SAETUI_CACHE_DIR"] = str(tmp_path)
    env.update(extra_env or {})
    repo = os.path.dirname(os.path.dirname(os.path.abspath(blas.__file__)))  # saetui/blas.py
    env["PYTHONPATH"] = os.pathsep.join(
        [repo] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_child(out: dict) -> None:
    assert out["notice"] is None
    assert out["library"] and os.path.exists(out["library"])
    # libmlx.so will bind cblas_sgemm to this library, not its vendored reference BLAS
    assert out["provider"] == out["library"]
    assert "mlx_cpu.libs" not in out["provider"]
    for key, err in out["errs"].items():
        tol = _TOL.get(key, 1e-4)
        assert err < tol, (key, err, out)


@pytest.mark.skipif(not LINUX, reason="Linux only")
def test_fast_blas_matches_numpy_in_fresh_process(tmp_path):
    out = _run_child("auto", tmp_path)
    if not out["active"]:
        pytest.skip(f"no optimized BLAS on this machine: {out['detail']}")
    _check_child(out)


@pytest.mark.skipif(not LINUX, reason="Linux only")
def test_scipy_openblas32_route_in_fresh_process(tmp_path):
    if importlib.util.find_spec("scipy_openblas32") is None:
        pytest.skip("scipy-openblas32 not installed")
    try:
        blas._patchelf()
    except blas._Unavailable:
        pytest.skip("patchelf not installed")
    out = _run_child("pypi", tmp_path)
    assert out["active"], out
    assert out["source"] == "scipy-openblas32"
    assert out["library"].startswith(str(tmp_path))
    _check_child(out)
    # a second process reuses the cached renamed copy
    again = _run_child("pypi", tmp_path)
    assert again["library"] == out["library"]


def test_fallback_when_nothing_found(fresh, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(blas, "SYSTEM_CANDIDATES", ["libsaetui-no-such-blas.so.9"])

    def unavailable():
        raise blas._Unavailable("not installed")

    monkeypatch.setattr(blas, "_renamed_scipy_openblas", unavailable)
    handles = list(blas._handles)
    st = blas.enable_fast_blas()
    assert st.active is False and st.library is None
    assert st.notice and "\n" not in st.notice
    assert "pip install scipy-openblas32" in st.notice
    assert "libsaetui-no-such-blas.so.9" in st.detail
    assert blas._handles == handles


def test_candidate_without_cblas_is_skipped(fresh, monkeypatch):
    if not LINUX:
        pytest.skip("Linux only")
    # libm loads fine but has no cblas_sgemm: it must not count as a BLAS
    monkeypatch.setattr(blas, "SYSTEM_CANDIDATES", ["libm.so.6"])
    monkeypatch.setattr(
        blas, "_renamed_scipy_openblas",
        lambda: (_ for _ in ()).throw(blas._Unavailable("not installed")),
    )
    st = blas.enable_fast_blas()
    assert not st.active and st.notice
    assert "no cblas_sgemm" in st.detail


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_noop_off_linux(fresh, monkeypatch, platform):
    monkeypatch.setattr(sys, "platform", platform)

    def boom(*a, **k):
        raise AssertionError("must not load anything")

    monkeypatch.setattr(blas, "_try_load", boom)
    st = blas.enable_fast_blas()
    assert st == blas.BlasStatus(False, None, None, detail=f"nothing to do on {platform}")
    assert blas.enable_fast_blas() is st  # idempotent
    assert blas.blas_status() is st


def test_mlx_already_imported_is_reported(fresh, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "mlx.core", object())
    monkeypatch.setattr(blas, "_try_load", lambda *a: pytest.fail("must not load"))
    st = blas.enable_fast_blas()
    assert not st.active
    assert "imported before" in st.notice and "enable_fast_blas()" in st.notice


def test_env_off_keeps_reference_blas_quietly(fresh, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv(blas.ENV_VAR, "off")
    monkeypatch.setattr(blas, "_try_load", lambda *a: pytest.fail("must not load"))
    st = blas.enable_fast_blas()
    assert not st.active and st.notice is None


def test_env_bad_path_gives_notice(fresh, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv(blas.ENV_VAR, "/nonexistent/libblas.so")
    st = blas.enable_fast_blas()
    assert not st.active and "SAETUI_BLAS=/nonexistent/libblas.so" in st.notice


def test_setup_failure_never_raises(fresh, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")

    def broken(_):
        raise RuntimeError("kaput")

    monkeypatch.setattr(blas, "_expand", broken)
    st = blas.enable_fast_blas()
    assert not st.active and "kaput" in st.notice


@pytest.mark.skipif(not LINUX, reason="Linux only")
def test_elf_dynsym_reader_finds_libc_symbols():
    import ctypes.util

    path = None
    for cand in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6",
                 "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib/libc.so.6"):
        if os.path.exists(cand):
            path = cand
            break
    if path is None or not ctypes.util.find_library("c"):
        pytest.skip("libc not at a known path")
    names = set(blas._elf_defined_dynsyms(__import__("pathlib").Path(path)))
    assert {"malloc", "free", "printf"} <= names


def test_measure_numpy_backend_and_bad_backend():
    assert blas.measure_matmul_gflops(64, "numpy", repeats=1, min_flops=1) > 0
    with pytest.raises(ValueError):
        blas.measure_matmul_gflops(8, "torch")


# -- the cached scipy-openblas32 copy: never foreign, never damaged ------------------------------


@pytest.fixture
def scipy_route(monkeypatch, tmp_path):
    """The scipy-openblas32 route with an empty private cache folder (nothing is loaded)."""
    if not LINUX:
        pytest.skip("Linux only")
    if importlib.util.find_spec("scipy_openblas32") is None:
        pytest.skip("scipy-openblas32 not installed")
    try:
        blas._patchelf()
    except blas._Unavailable:
        pytest.skip("patchelf not installed")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAETUI_CACHE_DIR", str(cache))
    return cache / "blas"


def _record(folder):
    (path,) = folder.glob("libsaetui_openblas-*.json")
    return path, json.loads(path.read_text())


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_copy_is_made_with_a_record_and_reused(scipy_route):
    path, private = blas._renamed_scipy_openblas()
    assert private is None and path.parent == scipy_route
    record_path, record = _record(scipy_route)
    assert record["file"] == path.name
    assert record["size"] == path.stat().st_size and record["sha256"] == _sha256(path)
    src, _ = blas._scipy_openblas_lib()
    assert record["source_sha256"] == _sha256(src)
    assert path.stat().st_mode & 0o022 == 0 and record_path.stat().st_mode & 0o022 == 0
    stamp = path.stat().st_ino
    again, _ = blas._renamed_scipy_openblas()
    assert again == path and again.stat().st_ino == stamp  # reused, not rebuilt


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "zeroed-4k", "text"])
def test_damaged_copy_is_rebuilt_not_loaded(scipy_route, damage):
    path, _ = blas._renamed_scipy_openblas()
    good = _sha256(path)
    data = path.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "garbage":
        data = os.urandom(len(data))
    elif damage == "zeroed-4k":
        mid = len(data) // 2 & ~4095
        data = data[:mid] + bytes(4096) + data[mid + 4096:]
    else:
        data = b"not a library\n" * 10
    path.write_bytes(data)
    assert _sha256(path) != good
    assert blas._verified_copy(scipy_route, blas._source_key(*blas._scipy_openblas_lib())) is None
    again, private = blas._renamed_scipy_openblas()
    assert private is None
    assert _sha256(again) == good  # rebuilt, identical to the first copy


def test_copy_writable_by_others_or_linked_is_not_trusted(scipy_route, tmp_path):
    path, _ = blas._renamed_scipy_openblas()
    key = blas._source_key(*blas._scipy_openblas_lib())
    os.chmod(path, 0o777)
    assert blas._verified_copy(scipy_route, key) is None
    os.chmod(path, 0o755)
    assert blas._verified_copy(scipy_route, key) == path
    record_path, _ = _record(scipy_route)
    os.chmod(record_path, 0o666)
    assert blas._verified_copy(scipy_route, key) is None
    os.chmod(record_path, 0o644)
    # a link in place of the copy (same bytes) is refused: it could point anywhere
    elsewhere = tmp_path / "elsewhere.so"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(elsewhere)
    assert blas._verified_copy(scipy_route, key) is None
    # a record naming a file outside the folder is refused
    path.unlink()
    record = json.loads(record_path.read_text())
    record["file"] = "../../elsewhere.so"
    record_path.write_text(json.dumps(record))
    assert blas._verified_copy(scipy_route, key) is None


def test_cache_folder_writable_by_others_is_not_used(scipy_route):
    scipy_route.mkdir(parents=True)
    os.chmod(scipy_route, 0o777)  # no sticky bit: anyone could replace the copy
    path, private = blas._renamed_scipy_openblas()
    try:
        assert private is not None and path.parent == private
        assert stat_mode(private) == 0o700
        assert not list(scipy_route.iterdir())
    finally:
        import shutil

        shutil.rmtree(private, ignore_errors=True)


def stat_mode(path):
    return os.stat(path).st_mode & 0o777


@pytest.mark.skipif(not LINUX or os.geteuid() != 0, reason="needs root to make a file owned by another user")
def test_copy_owned_by_another_user_is_not_trusted(scipy_route):
    path, _ = blas._renamed_scipy_openblas()
    key = blas._source_key(*blas._scipy_openblas_lib())
    os.chown(path, 65534, 65534)
    assert blas._verified_copy(scipy_route, key) is None
    os.chown(path, 0, 0)
    record_path, _ = _record(scipy_route)
    os.chown(record_path, 65534, 65534)
    assert blas._verified_copy(scipy_route, key) is None


def test_nothing_is_looked_up_in_the_shared_temp_folder(scipy_route, tmp_path, monkeypatch):
    """Another user can create $TMPDIR/saetui-<uid>/blas first: nothing there is ever used."""
    import tempfile

    shared = tmp_path / "shared-tmp"
    planted = shared / f"saetui-{os.getuid()}" / "blas"
    planted.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    src, version = blas._scipy_openblas_lib()
    st = src.stat()
    import hashlib

    old_key = hashlib.sha256(
        f"{blas._PATCH_VERSION}|{src.resolve()}|{version}|{st.st_size}|{st.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    (planted / f"libsaetui_openblas-{old_key}.so").write_bytes(b"planted")
    path, private = blas._renamed_scipy_openblas()
    assert path.parent == scipy_route and private is None
    assert _sha256(path) != _sha256(planted / f"libsaetui_openblas-{old_key}.so")


_PLANT_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *p = getenv("SAETUI_TEST_MARKER");
    if (p) { FILE *f = fopen(p, "w"); if (f) { fputs("ran", f); fclose(f); } }
}
void cblas_sgemm(void) {}
"""


@pytest.mark.skipif(not LINUX, reason="Linux only")
def test_planted_library_never_runs_and_truncated_copy_never_crashes(tmp_path):
    """In a fresh process: a library planted in the shared temp folder (under every name the
    old lookup used) never runs, and a truncated cached copy (SIGBUS before) is rebuilt."""
    import shutil

    if importlib.util.find_spec("scipy_openblas32") is None:
        pytest.skip("scipy-openblas32 not installed")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the planted library")
    src_c = tmp_path / "plant.c"
    src_c.write_text(_PLANT_C)
    lib = tmp_path / "plant.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src_c)], check=True, capture_output=True)
    shared = tmp_path / "shared-tmp"
    planted = shared / f"saetui-{os.getuid()}" / "blas"
    planted.mkdir(parents=True)
    os.chmod(shared, 0o1777)
    src, version = blas._scipy_openblas_lib()
    st = src.stat()
    import hashlib

    old_key = hashlib.sha256(
        f"{blas._PATCH_VERSION}|{src.resolve()}|{version}|{st.st_size}|{st.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    shutil.copy(lib, planted / f"libsaetui_openblas-{old_key}.so")
    marker = tmp_path / "marker"
    env = {"TMPDIR": str(shared), "SAETUI_TEST_MARKER": str(marker)}
    out = _run_child("pypi", tmp_path / "cache", env)
    assert not marker.exists(), "the planted library ran"
    assert out["active"] and out["library"].startswith(str(tmp_path / "cache")), out
    # truncate the cached copy: the next process rebuilds it instead of dying
    copy = Path(out["library"])
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 3])
    again = _run_child("pypi", tmp_path / "cache", env)
    assert again["active"] and again["library"] == out["library"]
    assert not marker.exists()


def test_copies_from_before_records_are_removed_when_a_copy_is_made(scipy_route):
    scipy_route.mkdir(parents=True)
    stale = scipy_route / "libsaetui_openblas-0123456789abcdef.so"
    stale.write_bytes(b"old unrecorded copy")
    other = scipy_route / "libsaetui_openblas-0123456789abcdef-fedcba9876543210.so"
    other.write_bytes(b"another environment's recorded copy")
    path, _ = blas._renamed_scipy_openblas()
    assert path.exists() and not stale.exists() and other.exists()
