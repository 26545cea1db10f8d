"""Tests for saetui.engine.blas (fast BLAS for MLX on Linux). No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from saetui.engine import blas

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
    from saetui.engine import blas
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


def _run_child(mode: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != blas.ENV_VAR}
    env["SAETUI_CACHE_DIR"] = str(tmp_path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(blas.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
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
