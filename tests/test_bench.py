"""The benchmark script runs (a smoke run on tiny sizes; no figure is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "saetui.bench", "--quick", "--only", "matmul", "bookkeeping", "eval-accumulators", "lookup", "probe"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "SAETUI_CACHE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    figures = {line["figure"] for line in lines}
    assert {"matmul_gflops", "index_bookkeeping", "eval_accumulators", "feature_lookup_ms", "probe_latency_ms"} <= figures
    assert not [line for line in lines if "error" in line]
    assert all("machine" in line and line["machine"]["cpus"] for line in lines)
