"""The test set-up is hermetic: nothing reads or writes the user's home (issue 16, item 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import _SESSION_HOME, ISOLATED_VARS


def test_home_caches_and_data_are_isolated_for_the_test_and_its_children(tmp_path_factory):
    base = Path(tmp_path_factory.getbasetemp()).resolve()
    for name in ISOLATED_VARS:
        value = os.environ.get(name)
        assert value, name
        assert Path(value).resolve().is_relative_to(base), (name, value)
    code = "import json, os; print(json.dumps({k: os.environ.get(k) for k in %r}))" % (ISOLATED_VARS,)
    child = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child == {k: os.environ[k] for k in ISOLATED_VARS}
    assert os.path.expanduser("~") == os.environ["HOME"]


def test_platformdirs_and_blas_use_the_isolated_folders():
    import platformdirs

    from saetui import blas
    from saetui.engine import cache, registry

    base = Path(os.environ["HOME"]).parent
    assert Path(platformdirs.user_cache_dir("saetui")).is_relative_to(base)
    assert cache.cache_dir() == Path(os.environ["SAETUI_CACHE_DIR"])
    assert registry.data_dir() == Path(os.environ["SAETUI_DATA_DIR"])
    assert blas._cache_dir() == Path(os.environ["SAETUI_CACHE_DIR"]) / "blas"
    status = blas.blas_status()
    if status is not None and status.active and status.source == "scipy-openblas32":
        # the session's own copy too was made in the session's temporary home, not ~/.cache
        assert Path(status.library).is_relative_to(_SESSION_HOME)
