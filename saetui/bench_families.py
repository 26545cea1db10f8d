"""Benchmark figures for feature families (issue 14), one measurement per fresh process:

    python -m saetui.bench_families clusters [N_FEATURES [D_MODEL]]   # seconds, peak memory
    python -m saetui.bench_families compare [N_FEATURES [D_MODEL]]    # seconds, peak memory

Prints one JSON line. saetui.bench can call `measure(kind, ...)` to run it in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def measure(kind: str = "clusters", n_features: int = 32768, d_model: int = 2048, timeout: float = 600) -> dict:
    """Run one benchmark in a fresh interpreter (so the peak memory is its own) and return its
    figures: {"seconds", "peak_memory_mb", ...}."""
    out = subprocess.run([sys.executable, "-m", "saetui.bench_families", kind, str(n_features), str(d_model)],
                         capture_output=True, text=True, timeout=timeout, env=dict(os.environ), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    from .blas import enable_fast_blas

    enable_fast_blas()  # before mlx.core is imported
    kind = argv[0] if argv else "clusters"
    n_features = int(argv[1]) if len(argv) > 1 else 32768
    d_model = int(argv[2]) if len(argv) > 2 else 2048
    from .bench import peak_rss_mb
    from .engine.clusters import benchmark_clustering

    if kind == "clusters":
        figures = benchmark_clustering(n_features, d_model)
    elif kind == "compare":
        from .engine.compare import benchmark_compare

        figures = benchmark_compare(n_features, d_model)
    else:
        print(f"unknown benchmark {kind!r}: clusters or compare", file=sys.stderr)
        return 2
    figures["peak_memory_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
