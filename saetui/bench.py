"""saetui's benchmark: speed and memory figures, one JSON line each, with the machine's details.

    python -m saetui.bench              # everything (several minutes on 2 CPU cores)
    python -m saetui.bench --quick      # tiny sizes, a smoke run (under a minute)
    python -m saetui.bench --only matmul first-frame
    python -m saetui.bench --full       # the 1M-token, 32k-feature index memory figure

Targets (issue 6) are printed beside each figure as `target` and `met`; nothing here is a
test, and the test suite never times anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

FIGURES = (
    "matmul",
    "bookkeeping",
    "eval-accumulators",
    "decoder-facts",
    "demo",
    "demo-32k",
    "synthetic",
    "index-memory",
    "lookup",
    "probe",
    "first-frame",
    "rescan",
)


def machine() -> dict[str, Any]:
    from .blas import blas_status

    status = blas_status()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "blas": (status.library if status and status.active else "mlx reference BLAS"),
    }
    try:
        import importlib.metadata as md

        info["mlx"] = md.version("mlx")
    except Exception:  # pragma: no cover
        pass
    return info


_MACHINE: dict[str, Any] = {}


def emit(figure: str, **fields: Any) -> None:
    line = {"figure": figure, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in fields.items()}, "machine": _MACHINE}
    print(json.dumps(line), flush=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(samples, dtype=np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def peak_rss_mb() -> float:
    # Linux: VmHWM, which exec resets; ru_maxrss can carry the parent's peak across fork+exec.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# -- figures ---------------------------------------------------------------------------


def bench_matmul(quick: bool) -> None:
    from .blas import measure_matmul_gflops

    for n in (256, 512) if quick else (1024, 2048, 4096):
        mlx_gf = measure_matmul_gflops(n, backend="mlx")
        np_gf = measure_matmul_gflops(n, backend="numpy")
        ratio = mlx_gf / np_gf if np_gf else 0.0
        emit("matmul_gflops", n=n, mlx=mlx_gf, numpy=np_gf, ratio=ratio, target=">= 0.8", met=ratio >= 0.8)


def _bare_forward_to_hook(engine, corpus) -> float:
    import mlx.core as mx

    t0 = time.perf_counter()
    for start in range(0, corpus.n_contexts, engine.settings.batch_size):
        tokens = mx.array(corpus.contexts[start : start + engine.settings.batch_size])
        mx.eval(engine.runner.activations(tokens, engine.hook))
    return time.perf_counter() - t0


def _bare_floor(engine, corpus) -> float:
    """The floor of an index build: forward to the hook plus the bare SAE encode (matmul, top-k)."""
    import mlx.core as mx

    sae, first = engine.sae, corpus.first_position
    t0 = time.perf_counter()
    for start in range(0, corpus.n_contexts, engine.settings.batch_size):
        tokens = mx.array(corpus.contexts[start : start + engine.settings.batch_size])
        acts = engine.runner.activations(tokens, engine.hook).astype(mx.float32)
        pre = sae.pre_activations(acts[:, first:, :])
        mx.eval(mx.argpartition(-pre, kth=sae.k - 1, axis=-1)[..., : sae.k])
    return time.perf_counter() - t0


def _index_throughput(engine, label: str, tokens: int) -> None:
    from .engine.index import build_index

    def work():
        engine.open()
        corpus = engine.corpus(tokens)
        _bare_forward_to_hook(engine, engine.corpus(engine.context_len))  # warm up
        _bare_floor(engine, engine.corpus(engine.context_len))
        bare = _bare_forward_to_hook(engine, corpus)
        floor = _bare_floor(engine, corpus)
        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get("SAETUI_CACHE_DIR")
            os.environ["SAETUI_CACHE_DIR"] = tmp  # build from scratch, never from the cache
            try:
                t0 = time.perf_counter()
                build_index(engine, budget=tokens)
                built = time.perf_counter() - t0
            finally:
                if old is None:
                    os.environ.pop("SAETUI_CACHE_DIR", None)
                else:
                    os.environ["SAETUI_CACHE_DIR"] = old
        return corpus.n_tokens, bare, floor, built

    n, bare, floor, built = engine.worker.call(work)
    ratio = built / floor if floor else float("inf")
    emit(
        "index_build",
        config=label,
        tokens=n,
        tokens_per_s=n / built,
        forward_to_hook_tokens_per_s=n / bare,
        floor_tokens_per_s=n / floor,
        ratio_to_forward=built / bare if bare else float("inf"),
        ratio_to_floor=ratio,
        floor="forward to the hook + bare encode (matmul, top-k)",
        target="<= 1.2 x floor",
        met=ratio <= 1.2,
    )


def _eval_throughput(engine, label: str, tokens: int) -> None:
    from .engine.evaluate import evaluation_throughput

    out = engine.worker.call(evaluation_throughput, engine, tokens)
    emit(
        "evaluation",
        config=label,
        tokens=int(out["tokens"]),
        tokens_per_s=out["tokens_per_s"],
        forward_tokens_per_s=out["tokens"] / out["forward_s"],
        ratio_to_forward=out["ratio_to_forward"],
        target="<= 3 x forward",
        met=out["ratio_to_forward"] <= 3.0,
    )


def demo_engine():
    from .engine.engine import Engine, EngineSettings

    return Engine(EngineSettings())


def bench_demo(quick: bool) -> None:
    engine = demo_engine()
    try:
        tokens = 4096 if quick else 65_536
        _index_throughput(engine, "demo", tokens)
        _eval_throughput(engine, "demo", 2048 if quick else 16_384)
    finally:
        engine.close()


def bench_demo_32k(quick: bool) -> None:
    """The demo model with a random 32,768-feature TopK SAE (k 32): the issue's hidden check."""
    engine = demo_engine()
    try:
        engine.worker.call(random_sae_on, engine, 4096 if quick else 32_768, 32)
        _index_throughput(engine, f"demo model, random SAE {engine.sae.d_sae} k=32", 4096 if quick else 32_768)
        _eval_throughput(engine, f"demo model, random SAE {engine.sae.d_sae} k=32", 2048 if quick else 8192)
    finally:
        engine.close()


def random_sae(d_model: int, d_sae: int, k: int, seed: int = 0, metadata: dict | None = None):
    """A random TopK SAE drawn by MLX in float32."""
    import mlx.core as mx

    from .engine.sae import MlxterpSAE

    mx.random.seed(seed)
    weights = {
        "encoder.weight": mx.random.normal((d_sae, d_model)) * d_model**-0.5,
        "encoder.bias": mx.zeros((d_sae,)),
        "decoder.weight": mx.random.normal((d_model, d_sae)) * d_sae**-0.5,
        "decoder.bias": mx.zeros((d_model,)),
    }
    mx.eval(weights)
    config = {"class": "SAE", "d_model": d_model, "d_hidden": d_sae, "k": k, "metadata": metadata or {}}
    return MlxterpSAE(config, weights, content_hash=f"random-{d_model}-{d_sae}-{k}-{seed}")


def random_sae_on(engine, d_sae: int, k: int) -> None:
    """Open the engine, then swap its SAE for a random one of the same width (worker thread)."""
    engine.open()
    md = engine.sae.metadata
    sae = random_sae(engine.sae.d_model, d_sae, k)
    sae.metadata = md
    engine.sae = sae


def random_sparse_codes(n_tokens: int, d_sae: int, k: int, seed: int = 0):
    """Sparse codes with k distinct features per token: f_j = (a + j * s) mod d_sae, s odd
    (distinct because d_sae is a power of two); lognormal values."""
    import mlx.core as mx

    from .engine.sparse import SparseCodes

    mx.random.seed(seed)
    a = mx.random.randint(0, d_sae, (n_tokens, 1))
    s = mx.random.randint(0, d_sae // 2, (n_tokens, 1)) * 2 + 1
    features = ((a + mx.arange(k)[None, :] * s) % d_sae).astype(mx.int32)
    values = mx.exp(mx.random.normal((n_tokens, k)) * 0.7).astype(mx.float32)
    mx.eval(features, values)
    return SparseCodes(features, values, d_sae)


def bench_bookkeeping(quick: bool) -> None:
    """Index bookkeeping alone, on precomputed sparse codes (d_sae 32,768, k 64)."""
    import numpy as np

    from .engine.index import FeatureIndex
    from .engine.index.bookkeeping import Bookkeeper
    from .engine.sparse import SparseCodes

    d_sae, k, context_len, batch = (4096 if quick else 32_768), 64, 128, 8
    n_ctx = 64 if quick else 1024
    length = context_len - 1
    codes = random_sparse_codes(n_ctx * length, d_sae, k)
    feats = codes.features.reshape(n_ctx, length, k)
    vals = codes.values.reshape(n_ctx, length, k)
    meta = dict(format=2, key="bench", complete=False, contexts_done=0, n_contexts=n_ctx, budget=0, top_k=100, window=32, samples=12, first_position=1)
    contexts = np.zeros((n_ctx, context_len), dtype=np.int32)
    index = FeatureIndex.empty(meta, contexts, d_sae)
    keeper = Bookkeeper(index)
    t0 = time.perf_counter()
    pending = None
    half_s = 0.0
    for start in range(0, n_ctx, batch):
        queued = keeper.queue(start, SparseCodes(feats[start : start + batch], vals[start : start + batch], d_sae))
        if pending is not None:
            keeper.fold(pending)
        pending = queued
        if start + batch == n_ctx // 2:
            half_s = time.perf_counter() - t0
    keeper.fold(pending)
    keeper.sync()
    seconds = time.perf_counter() - t0
    n = n_ctx * length
    kept = int((index.top.ctx >= 0).sum())
    # The first contexts fill every feature's K slots (each is offered, with its window);
    # afterwards only candidates above a feature's K-th best are.
    second = (n - n // 2) / max(seconds - half_s, 1e-9)
    emit("index_bookkeeping", d_sae=d_sae, k=k, top_k=100, tokens=n, seconds=seconds, tokens_per_s=n / seconds, second_half_tokens_per_s=second, entries_kept=kept, peak_rss_mb=peak_rss_mb(), target=">= 1,000,000 tokens/s", met=n / seconds >= 1_000_000)


def bench_eval_accumulators(quick: bool) -> None:
    """Evaluation accumulators alone, on precomputed x and x-hat (d_model 2048)."""
    import mlx.core as mx

    from .engine import metrics

    d_model, tokens_per_batch = 2048, 1016
    n_batches = 4 if quick else 64
    mx.random.seed(0)
    xs = [mx.random.normal((tokens_per_batch, d_model)) for _ in range(4)]
    hats = [x + 0.1 * mx.random.normal(x.shape) for x in xs]
    mx.eval(xs, hats)
    acc = metrics.ReconstructionAccumulator()
    t0 = time.perf_counter()
    pending = None
    for i in range(n_batches):
        sums = metrics.reconstruction_sums(xs[i % 4], hats[i % 4])
        mx.async_eval(*sums.arrays())
        if pending is not None:
            acc.add_sums(pending)
        pending = sums
    acc.add_sums(pending)
    acc.result()
    seconds = time.perf_counter() - t0
    n = n_batches * tokens_per_batch
    emit("eval_accumulators", d_model=d_model, tokens=n, seconds=seconds, tokens_per_s=n / seconds, target=">= 500,000 tokens/s", met=n / seconds >= 500_000)


def bench_decoder_facts(quick: bool) -> None:
    """Logit effects and nearest features of every feature (2048-wide model, 32k vocabulary).

    Measured on 8,192 features (2,048 with --quick) of a random 32,768-wide SAE's width; the
    32,768-feature time is projected from the measured rate: the work is matrix products of
    2 x d_sae x d_model x (vocab + d_sae) flops, quadratic in d_sae.
    """
    from .engine import decoder_facts
    from .engine.index import drive

    d_sae, full, vocab, d_model = (2048 if quick else 8192), 32_768, 32_000, 2048
    engine = synthetic_engine(hidden=d_model, d_sae=d_sae)
    try:
        def work():
            t0 = time.perf_counter()
            drive(decoder_facts.compute(engine))
            return time.perf_counter() - t0

        seconds = engine.worker.call(work)
        flops = 2.0 * d_sae * d_model * (vocab + d_sae)
        rate = flops / seconds
        projected = 2.0 * full * d_model * (vocab + full) / rate
        emit("decoder_facts", d_sae=d_sae, d_model=d_model, vocab=vocab, seconds=seconds, gflops=rate / 1e9, projected_32768_s=projected, target="< 30 s for 32,768 features", met=projected < 30)
    finally:
        engine.close()


def synthetic_engine(hidden: int = 2048, d_sae: int = 32_768, k: int = 64, context_len: int = 128):
    """A randomly initialised llama (only the layers the hook needs) and a random TopK SAE.

    The corpus is random token ids: throughput does not depend on what the tokens say.
    """
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models import llama

    from .engine.corpus import Corpus
    from .engine.engine import Engine, EngineSettings
    from .engine.model import Hook, ModelRunner
    from .engine.sae import MlxterpSAE

    vocab = 32_000
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=hidden,
        num_hidden_layers=1,
        intermediate_size=int(hidden * 2.75),
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        rms_norm_eps=1e-5,
        vocab_size=vocab,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    )
    engine = Engine(EngineSettings(sae="synthetic", batch_size=8, context_len=context_len))

    def build():
        mx.random.seed(0)
        model = llama.Model(args)
        mx.eval(model.parameters())

        class _Tok:
            bos_token_id = 1
            eos_token_id = 2

            def decode(self, ids, **_):
                return " ".join(f"t{i}" for i in ids)

        engine.runner = ModelRunner(model, _Tok(), name=f"synthetic-llama-{hidden}")
        # Drawn by MLX in float32: a float64 numpy draw would inflate the peak memory figure.
        weights = {
            "encoder.weight": mx.random.normal((d_sae, hidden)) * hidden**-0.5,
            "encoder.bias": mx.zeros((d_sae,)),
            "decoder.weight": mx.random.normal((hidden, d_sae)) * d_sae**-0.5,
            "decoder.bias": mx.zeros((hidden,)),
        }
        mx.eval(weights)
        config = {"class": "SAE", "d_model": hidden, "d_hidden": d_sae, "k": k, "metadata": {"layer": 0, "component": "mlp", "model_name": "synthetic"}}
        engine.sae = MlxterpSAE(config, weights, content_hash=f"synthetic-{hidden}-{d_sae}-{k}")
        engine.hook = Hook(0, "mlp")
        engine.state.ready = engine.state.sae_loaded = engine.state.model_loaded = True
        engine.open = lambda job=None: None  # type: ignore[assignment]
        engine.open_model = lambda: engine.runner  # type: ignore[assignment]
        engine.open_sae = lambda: engine.sae  # type: ignore[assignment]

        def corpus(max_tokens=None):
            n = max(1, (max_tokens or 65_536) // context_len)
            ids = np.random.default_rng(1).integers(3, vocab, size=(n, context_len), dtype=np.int32)
            ids[:, 0] = 1
            return Corpus("random tokens", ids, 1, n, ids.size, max_tokens)

        engine.corpus = corpus  # type: ignore[assignment]

    engine.worker.call(build)
    return engine


def bench_synthetic(quick: bool) -> None:
    hidden, d_sae = (256, 4096) if quick else (2048, 32_768)
    engine = synthetic_engine(hidden=hidden, d_sae=d_sae)
    label = f"synthetic llama hidden {hidden}, 1 layer, SAE {d_sae} k=64, hook L0/mlp"
    try:
        _index_throughput(engine, label, 2048 if quick else 32_768)
        _eval_throughput(engine, label, 1024 if quick else 8192)
    finally:
        engine.close()


def bench_index_memory(quick: bool, tokens: int) -> None:
    """Peak resident memory of an index build, measured in a fresh process."""
    hidden, d_sae = (256, 4096) if quick else (2048, 32_768)
    code = (
        "import json,sys;from saetui.blas import enable_fast_blas;enable_fast_blas();"
        "from saetui import bench;from saetui.engine.index import build_index;"
        f"e=bench.synthetic_engine(hidden={hidden}, d_sae={d_sae});"
        "before=bench.peak_rss_mb();import time;t=time.perf_counter();"
        f"build_index(e, budget={tokens});"
        "print(json.dumps({'before':before,'after':bench.peak_rss_mb(),'s':time.perf_counter()-t}))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SAETUI_CACHE_DIR": tmp}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        emit("index_build_peak_memory", error=proc.stderr.strip().splitlines()[-1:])
        return
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    emit(
        "index_build_peak_memory",
        tokens=tokens,
        d_sae=d_sae,
        hidden=hidden,
        peak_rss_mb=out["after"],
        rss_before_build_mb=out["before"],
        build_s=out["s"],
        target="< 2048 MB at 1M tokens, 32k features",
        met=out["after"] < 2048,
    )


def bench_lookup(quick: bool) -> None:
    import numpy as np

    from .engine.features import feature_page
    from .engine.index import build_index

    engine = demo_engine()
    try:
        def work():
            engine.open()
            index = build_index(engine, budget=4096 if quick else None)
            rng = np.random.default_rng(0)
            ids = rng.integers(0, engine.sae.d_sae, size=20 if quick else 200)
            feature_page(engine, int(ids[0]), index)  # warm
            times = []
            for fid in ids:
                t0 = time.perf_counter()
                feature_page(engine, int(fid), index)
                times.append((time.perf_counter() - t0) * 1000)
            return times

        p50, p95 = percentiles(engine.worker.call(work))
        emit("feature_lookup_ms", p50=p50, p95=p95, what="feature page: stats, top contexts, logit effects, neighbours", target="p95 < 20", met=p95 < 20)
    finally:
        engine.close()


def bench_probe(quick: bool) -> None:
    from .engine.probe import probe_text

    engine = demo_engine()
    try:
        def work():
            engine.open()
            texts = engine.texts()
            tok = engine.runner.tokenizer
            # A 64-token text from the corpus.
            ids = tok.encode(" ".join(texts[:20]), add_special_tokens=False)[:64]
            text = tok.decode(ids)
            probe_text(engine, text)
            times = []
            for i in range(10 if quick else 100):
                t0 = time.perf_counter()
                probe_text(engine, text + ("" if i % 2 else " "))
                times.append((time.perf_counter() - t0) * 1000)
            return len(ids), times

        n, times = engine.worker.call(work)
        p50, p95 = percentiles(times)
        emit("probe_latency_ms", tokens=n, p50=p50, p95=p95, what="probe_text on the engine thread (the screen adds its debounce)", target="p95 < 150", met=p95 < 150)
    finally:
        engine.close()


def bench_first_frame(quick: bool) -> None:
    """Process start to the app's first painted frame, in a pseudo-terminal."""
    import pty

    samples = []
    for _ in range(1 if quick else 3):
        with tempfile.TemporaryDirectory() as tmp:
            stamp = Path(tmp) / "frame"
            env = {**os.environ, "SAETUI_FIRST_FRAME_FILE": str(stamp), "SAETUI_EXIT_AFTER_FIRST_FRAME": "1", "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
            master, slave = pty.openpty()
            t0 = time.time()
            proc = subprocess.Popen([sys.executable, "-m", "saetui"], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
            os.close(slave)
            deadline = time.time() + 60
            while proc.poll() is None and time.time() < deadline:
                try:
                    import select

                    ready, _, _ = select.select([master], [], [], 0.1)
                    if ready:
                        os.read(master, 65536)
                except OSError:
                    break
            if proc.poll() is None:
                proc.kill()
            os.close(master)
            if stamp.exists():
                samples.append(float(stamp.read_text()) - t0)
    if not samples:
        emit("first_frame_s", error="the app never painted a frame")
        return
    best = sorted(samples)[len(samples) // 2]
    emit("first_frame_s", median=best, runs=len(samples), target="< 1.0", met=best < 1.0)


def bench_rescan(quick: bool) -> None:
    """The guide's approach (re-run the model over every text for every feature) vs the index."""
    import mlx.core as mx
    import numpy as np

    from .engine.engine import Engine, EngineSettings
    from .engine.index import build_index

    n_texts, n_features = (100, 5) if quick else (1000, 20)
    demo = demo_engine()
    texts = demo.worker.call(demo.texts)[:n_texts]
    demo.close()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.jsonl"
        path.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
        os.environ.setdefault("SAETUI_CACHE_DIR", tmp)
        engine = Engine(EngineSettings(dataset=str(path)))
        try:
            def work():
                engine.open()
                t0 = time.perf_counter()
                index = build_index(engine, budget=10**9)
                build_s = time.perf_counter() - t0
                live = index.live_features()
                counts = np.array([index.feature(int(f)).count for f in live])
                features = [int(f) for f in live[np.argsort(-counts)][:n_features]]
                t0 = time.perf_counter()
                for f in features:
                    index.feature(f)
                lookup_s = time.perf_counter() - t0
                tok = engine.runner.tokenizer
                limit = engine.context_len
                t0 = time.perf_counter()
                for f in features:  # the guide: for each feature, run the model over every text
                    best = []
                    for text in texts:
                        ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)[: limit - 1]
                        acts = engine.runner.activations(mx.array([ids]), engine.hook)
                        z = engine.encode(acts)[0, 1:, f]
                        best.append(float(z.max()))
                    sorted(best, reverse=True)[:20]
                rescan_s = time.perf_counter() - t0
                return build_s, lookup_s, rescan_s

            build_s, lookup_s, rescan_s = engine.worker.call(work)
        finally:
            engine.close()
    emit(
        "rescan_vs_index",
        texts=n_texts,
        features=n_features,
        rescan_s=rescan_s,
        index_build_s=build_s,
        index_lookup_s=lookup_s,
        ratio_vs_lookup=rescan_s / max(lookup_s, 1e-9),
        ratio_vs_build_and_lookup=rescan_s / (build_s + lookup_s),
        target=">= 20 (vs the index answer)",
        met=rescan_s / max(lookup_s, 1e-9) >= 20,
    )


def main(argv: list[str] | None = None) -> int:
    from .blas import enable_fast_blas

    enable_fast_blas()
    parser = argparse.ArgumentParser(prog="python -m saetui.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--full", action="store_true", help="the index memory figure at 1M tokens (slow: tens of minutes on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    parser.add_argument("--index-tokens", type=int, help="tokens for the index memory figure (default 262,144; --full: 1,048,576)")
    args = parser.parse_args(argv)
    _MACHINE.update(machine())
    tokens = args.index_tokens or (1_048_576 if args.full else (8192 if args.quick else 262_144))
    runs: dict[str, Callable[[], None]] = {
        "matmul": lambda: bench_matmul(args.quick),
        "bookkeeping": lambda: bench_bookkeeping(args.quick),
        "eval-accumulators": lambda: bench_eval_accumulators(args.quick),
        "decoder-facts": lambda: bench_decoder_facts(args.quick),
        "demo": lambda: bench_demo(args.quick),
        "demo-32k": lambda: bench_demo_32k(args.quick),
        "synthetic": lambda: bench_synthetic(args.quick),
        "index-memory": lambda: bench_index_memory(args.quick, tokens),
        "lookup": lambda: bench_lookup(args.quick),
        "probe": lambda: bench_probe(args.quick),
        "first-frame": lambda: bench_first_frame(args.quick),
        "rescan": lambda: bench_rescan(args.quick),
    }
    for name in args.only or FIGURES:
        try:
            runs[name]()
        except Exception as exc:  # one failed figure must not hide the others
            emit(name, error=f"{type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
