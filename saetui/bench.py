"""saetui's benchmark: speed and memory figures, one JSON line each, with the machine's details.

    python -m saetui.bench              # every figure but the families' (minutes on 2 CPU cores)
    python -m saetui.bench --quick      # tiny sizes of every figure, a smoke run
    python -m saetui.bench --only matmul first-frame
    python -m saetui.bench --full       # also the 1M-token index memory figure and clustering /
                                        # comparing 32,768-feature SAEs (tens of minutes)

This is the one place saetui's speed and memory figures are measured. Every session it
measures is built from ready parts (`Session.from_parts`) or opened by an `Engine`, and runs
on the engine's worker as the app runs it. Targets (issues 6, 10-14) are printed beside each
figure as `target` and `met`; nothing here is a test, and the test suite never times anything.
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
    "steer",
    "explain",
    "families",
)
# Only with --full or --only: minutes each at 32,768 features (a small version with --quick).
FULL_ONLY = ("families",)


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
    # The 1-minute load average beside every figure: on a shared machine the numbers are noisy.
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    line = {"figure": figure, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in fields.items()}, "load_1min": load, "machine": _MACHINE}
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


# -- sessions to measure (each from ready parts: nothing in the engine is patched) ------------


class _Demo:
    """The demo session, opened once per run and shared by the figures that read it."""

    engine: Any = None

    @classmethod
    def open(cls):
        from .engine.engine import Engine, EngineSettings

        if cls.engine is None:
            cls.engine = Engine(EngineSettings())
            cls.engine.call(cls.engine.open)
        return cls.engine, cls.engine.session

    @classmethod
    def close(cls) -> None:
        if cls.engine is not None:
            cls.engine.close()
            cls.engine = None


def random_sae(d_model: int, d_sae: int, k: int, seed: int = 0, metadata: dict | None = None):
    """A random TopK SAE (mlxterp's `SAE` class) drawn by MLX in float32 (a float64 numpy
    draw would inflate the peak memory figure)."""
    import mlx.core as mx

    from .engine.saes.mlxterp import mlxterp_sae

    mx.random.seed(seed)
    weights = {
        "encoder.weight": mx.random.normal((d_sae, d_model)) * d_model**-0.5,
        "encoder.bias": mx.zeros((d_sae,)),
        "decoder.weight": mx.random.normal((d_model, d_sae)) * d_sae**-0.5,
        "decoder.bias": mx.zeros((d_model,)),
    }
    mx.eval(weights)
    config = {"class": "SAE", "d_model": d_model, "d_hidden": d_sae, "k": k, "metadata": metadata or {}}
    sae = mlxterp_sae(config, weights, content_hash=f"random-{d_model}-{d_sae}-{k}-{seed}")
    # Evaluated here: a lazy array is tied to the stream of the thread that made it, and the
    # session may be built on one thread and run on the engine's worker.
    mx.eval(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)
    return sae


def demo_random_sae_session(d_sae: int, k: int):
    """The demo model and corpus with a random TopK SAE of `d_sae` features at the demo's hook."""
    from .engine.session import Session

    _, demo = _Demo.open()
    md = demo.sae.metadata
    sae = random_sae(demo.sae.d_model, d_sae, k, metadata={"layer": md.layer, "component": md.component, "model_name": demo.model_name})
    return Session.from_parts(
        sae, demo.runner, demo.hook, dataset=demo.dataset_name, texts=demo.texts(), model_name=demo.model_name, context_len=demo.context_len
    )


class SyntheticTokenizer:
    """Token ids written as words `t<id>`: the synthetic corpus is random ids (throughput
    does not depend on what the tokens say)."""

    bos_token_id = 1
    eos_token_id = 2

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(w[1:]) for w in text.split()]

    def decode(self, ids, **_: Any) -> str:
        return " ".join(f"t{int(i)}" for i in ids)


def synthetic_session(hidden: int = 2048, d_sae: int = 32_768, k: int = 64, context_len: int = 128, tokens: int = 65_536, vocab: int = 32_000):
    """A randomly initialised llama (one layer: the hook's), a random TopK SAE at its MLP, and
    `tokens` random token ids as the dataset."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models import llama

    from .engine.engine import EngineSettings
    from .engine.model import Hook, ModelRunner
    from .engine.session import Session

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
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    runner = ModelRunner(model, SyntheticTokenizer(), name=f"synthetic-llama-{hidden}")
    sae = random_sae(hidden, d_sae, k, metadata={"layer": 0, "component": "mlp", "model_name": runner.name})
    ids = np.random.default_rng(1).integers(3, vocab, size=tokens + tokens // 512 + context_len)
    texts = [" ".join(f"t{i}" for i in ids[s : s + 4096]) for s in range(0, ids.size, 4096)]
    settings = EngineSettings(sae="synthetic", dataset="random tokens", batch_size=8, context_len=context_len)
    return Session.from_parts(sae, runner, Hook(0, "mlp"), settings=settings, dataset="random tokens", texts=texts, context_len=context_len)


# -- index build and evaluation against their floors ------------------------------------------


def _bare_forward_to_hook(session, corpus) -> float:
    import mlx.core as mx

    t0 = time.perf_counter()
    for _, _, acts in session.iter_activations(corpus):
        mx.eval(acts)
    return time.perf_counter() - t0


def _bare_floor(session, corpus) -> float:
    """The floor of an index build: forward to the hook plus the bare SAE encode (matmul, top-k)."""
    import mlx.core as mx

    sae, first = session.sae, corpus.first_position
    t0 = time.perf_counter()
    for _, _, acts in session.iter_activations(corpus):
        pre = sae.pre_activations(acts[:, first:, :])
        mx.eval(mx.argpartition(-pre, kth=sae.k - 1, axis=-1)[..., : sae.k])
    return time.perf_counter() - t0


def index_throughput(engine, session, label: str, tokens: int) -> None:
    """Index build (from scratch, no cache) as the app runs it (long work on the worker), vs
    the forward pass to the hook and vs the floor (forward + bare encode + top-k)."""
    from .engine.index import build_index

    def floors():
        warm = session.corpus(session.context_len)
        _bare_forward_to_hook(session, warm)
        _bare_floor(session, warm)
        corpus = session.corpus(tokens)
        return corpus.n_tokens, _bare_forward_to_hook(session, corpus), _bare_floor(session, corpus)

    n, bare, floor = engine.call(floors)
    t0 = time.perf_counter()
    engine.call_job("indexing", build_index, session, budget=tokens, use_cache=False)
    built = time.perf_counter() - t0
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


def eval_throughput(engine, session, label: str, tokens: int) -> None:
    from .engine.evaluate import evaluation_throughput

    out = engine.call(evaluation_throughput, session, tokens)
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


def bench_demo(quick: bool) -> None:
    engine, session = _Demo.open()
    index_throughput(engine, session, "demo", 4096 if quick else 65_536)
    eval_throughput(engine, session, "demo", 2048 if quick else 16_384)


def bench_demo_32k(quick: bool) -> None:
    """The demo model with a random 32,768-feature TopK SAE (k 32), on the demo's worker."""
    d_sae = 4096 if quick else 32_768
    demo_engine, _ = _Demo.open()
    session = demo_engine.call(demo_random_sae_session, d_sae, 32)
    label = f"demo model, random SAE {d_sae} k=32"
    index_throughput(demo_engine, session, label, 2048 if quick else 32_768)
    eval_throughput(demo_engine, session, label, 1024 if quick else 8192)


def bench_synthetic(quick: bool) -> None:
    from .engine.engine import Engine

    hidden, d_sae = (256, 4096) if quick else (2048, 32_768)
    tokens = 2048 if quick else 32_768
    engine = Engine.for_session(synthetic_session(hidden=hidden, d_sae=d_sae, tokens=tokens))
    label = f"synthetic llama hidden {hidden}, 1 layer, SAE {d_sae} k=64, hook L0/mlp"
    try:
        index_throughput(engine, engine.session, label, tokens)
        eval_throughput(engine, engine.session, label, 1024 if quick else 8192)
    finally:
        engine.close()


def bench_index_memory(quick: bool, tokens: int) -> None:
    """Peak resident memory of an index build (synthetic 2048-wide model, 32,768 features),
    measured in a fresh process."""
    hidden, d_sae = (256, 4096) if quick else (2048, 32_768)
    code = (
        "import json,time;from saetui.blas import enable_fast_blas;enable_fast_blas();"
        "from saetui import bench;from saetui.engine.index import build_index;from saetui.engine.worker import drive;"
        f"s=bench.synthetic_session(hidden={hidden}, d_sae={d_sae}, tokens={tokens});s.corpus({tokens});"
        "before=bench.peak_rss_mb();t=time.perf_counter();"
        f"drive(build_index(s, budget={tokens}, use_cache=False));"
        "print(json.dumps({'before':before,'after':bench.peak_rss_mb(),'s':time.perf_counter()-t}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
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


# -- the index's and the evaluation's own work, alone ------------------------------------------


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
    if pending is not None:
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
    if pending is not None:
        acc.add_sums(pending)
    acc.result()
    seconds = time.perf_counter() - t0
    n = n_batches * tokens_per_batch
    emit("eval_accumulators", d_model=d_model, tokens=n, seconds=seconds, tokens_per_s=n / seconds, target=">= 500,000 tokens/s", met=n / seconds >= 500_000)


def bench_decoder_facts(quick: bool) -> None:
    """Logit effects and nearest features of every feature (2048-wide model, 32k vocabulary).

    Measured on 8,192 features (1,024 with --quick) of a random SAE; the 32,768-feature time
    is projected from the measured rate: the work is matrix products of
    2 x d_sae x d_model x (vocab + d_sae) flops, quadratic in d_sae.
    """
    from .engine import decoder_facts
    from .engine.engine import Engine
    from .engine.worker import drive

    d_sae, full, vocab, d_model = (1024 if quick else 8192), 32_768, 32_000, 2048
    engine = Engine.for_session(synthetic_session(hidden=d_model, d_sae=d_sae, tokens=256, vocab=vocab))
    try:
        def work(session):
            t0 = time.perf_counter()
            drive(decoder_facts.compute(session))
            return time.perf_counter() - t0

        seconds = engine.call(work, engine.session)
    finally:
        engine.close()
    flops = 2.0 * d_sae * d_model * (vocab + d_sae)
    rate = flops / seconds
    projected = 2.0 * full * d_model * (vocab + full) / rate
    emit("decoder_facts", d_sae=d_sae, d_model=d_model, vocab=vocab, seconds=seconds, gflops=rate / 1e9, projected_32768_s=projected, target="< 30 s for 32,768 features", met=projected < 30)


# -- what the user waits for on screen ----------------------------------------------------------


def _demo_index(quick: bool):
    """The demo session with an index built from scratch (the quick run: 4,096 tokens)."""
    from .engine.index import DEMO_BUDGET, build_index

    engine, session = _Demo.open()
    budget = 4096 if quick else DEMO_BUDGET
    index = session.index
    if index is None or not index.complete or index.budget != budget:  # else the demo figure's build
        engine.call_job("indexing", build_index, session, budget=budget, use_cache=False)
    return engine, session, session.index


def bench_lookup(quick: bool) -> None:
    import numpy as np

    from .engine.features import PAGE_CONTEXTS, feature_page

    engine, session, _ = _demo_index(quick)

    def work(session):
        # The page as the feature screen first asks for it (its first contexts; `m` adds more).
        ids = np.random.default_rng(0).integers(0, session.d_sae, size=20 if quick else 200)
        feature_page(session, int(ids[0]), PAGE_CONTEXTS)  # warm
        times = []
        for fid in ids:
            t0 = time.perf_counter()
            feature_page(session, int(fid), PAGE_CONTEXTS)
            times.append((time.perf_counter() - t0) * 1000)
        return times

    p50, p95 = percentiles(engine.call(work, session))
    emit("feature_lookup_ms", p50=p50, p95=p95, what="feature page: stats, top contexts, logit effects, neighbours", target="p95 < 20", met=p95 < 20)


def bench_probe(quick: bool) -> None:
    from .engine.probe import probe_text

    engine, session = _Demo.open()

    def work(session):
        tok = session.tokenizer
        ids = tok.encode(" ".join(session.texts()[:20]), add_special_tokens=False)[:64]  # a 64-token text
        text = tok.decode(ids)
        probe_text(session, text)
        times = []
        for i in range(10 if quick else 100):
            t0 = time.perf_counter()
            probe_text(session, text + ("" if i % 2 else " "))
            times.append((time.perf_counter() - t0) * 1000)
        return len(ids), times

    n, times = engine.call(work, session)
    p50, p95 = percentiles(times)
    emit("probe_latency_ms", tokens=n, p50=p50, p95=p95, what="probe_text on the engine thread (the screen adds its debounce)", target="p95 < 150", met=p95 < 150)


def bench_steer(quick: bool) -> None:
    """Generation tokens/s clean vs with 3 interventions; ablate latency on a 64-token text."""
    from .engine.intervene import steer_benchmark

    engine, session = _Demo.open()
    out = engine.call(steer_benchmark, session, 8 if quick else 48, 1 if quick else 5, 5 if quick else 30)
    for fig in out:
        what = fig.pop("figure")
        if "ratio" in fig:
            emit("steer_generation_tokens_per_s", what=what, **fig, met=fig["ratio"] >= 0.9)
        else:
            emit("ablate_latency_ms", what=what, **fig, met=fig["p95_ms"] < 150)


def bench_explain(quick: bool) -> None:
    """Explanations and detection scores for all live features of the demo, against its index build."""
    from .engine import explain

    engine, session, index = _demo_index(quick)
    out = engine.call(explain.benchmark, session, index)
    what = out.pop("figure")
    ratio = out.get("ratio_to_build")
    emit("explanations", what=what, **out, target="<= 0.5 x index build", met=ratio is not None and ratio <= 0.5)


def bench_families(quick: bool) -> None:
    """Clustering all features (seconds, peak memory) and comparing two SAEs of that width,
    each in a fresh process (saetui.bench_families)."""
    from .bench_families import measure

    n, d_model = (1024, 256) if quick else (32_768, 2048)
    out = measure("clusters", n_features=n, d_model=d_model, timeout=1800)
    met = out["seconds"] < 60 and (out.get("peak_memory_mb") or 0) < 2048
    emit("clustering", **out, target="< 60 s and < 2048 MB", met=met)
    out = measure("compare", n_features=n, d_model=d_model, timeout=1800)
    emit("compare_two_saes", **out, target="seconds (no target)")


def bench_first_frame(quick: bool) -> None:
    """Process start to the app's first painted frame, in a pseudo-terminal."""
    import pty
    import select

    samples = []
    screen = b""
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
                    ready, _, _ = select.select([master], [], [], 0.1)
                    if ready:
                        screen = (screen + os.read(master, 65536))[-4096:]
                except OSError:
                    break
            if proc.poll() is None:
                proc.kill()
            os.close(master)
            if stamp.exists():
                samples.append(float(stamp.read_text()) - t0)
    if not samples:
        # What the app printed last (its one-line error, if any), made printable.
        last = [ln for ln in screen.decode("utf-8", "replace").splitlines() if ln.strip()][-1:]
        emit("first_frame_s", error="the app never painted a frame", app_said="".join(ch for ch in "".join(last) if ch.isprintable())[:300])
        return
    best = sorted(samples)[len(samples) // 2]
    emit("first_frame_s", median=best, runs=len(samples), target="< 1.0", met=best < 1.0)


def bench_rescan(quick: bool) -> None:
    """The guide's approach (re-run the model over every text for every feature) vs the index."""
    import mlx.core as mx
    import numpy as np

    from .engine.engine import Engine, EngineSettings
    from .engine.index import build_index

    n_texts, n_features = (20, 2) if quick else (1000, 20)
    _, demo = _Demo.open()
    texts = demo.texts()[:n_texts]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.jsonl"
        path.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
        engine = Engine(EngineSettings(dataset=str(path)))
        try:
            session = engine.call(engine.open)
            t0 = time.perf_counter()
            index = engine.call_job("indexing", build_index, session, budget=10**9, use_cache=False)
            build_s = time.perf_counter() - t0

            def work(session):
                live = index.live_features()
                counts = np.array([index.feature(int(f)).count for f in live])
                features = [int(f) for f in live[np.argsort(-counts)][:n_features]]
                t0 = time.perf_counter()
                for f in features:
                    index.feature(f)
                lookup_s = time.perf_counter() - t0
                tok = session.tokenizer
                limit = session.context_len
                t0 = time.perf_counter()
                for f in features:  # the guide: for each feature, run the model over every text
                    best = []
                    for text in texts:
                        ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)[: limit - 1]
                        acts = session.runner.activations(mx.array([ids]), session.hook)
                        z = session.encode(acts)[0, 1:, f]
                        best.append(float(z.max()))
                    sorted(best, reverse=True)[:20]
                return lookup_s, time.perf_counter() - t0

            lookup_s, rescan_s = engine.call(work, session)
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
    parser.add_argument("--full", action="store_true", help="the index memory figure at 1M tokens and the families' figures at 32,768 features (slow: tens of minutes on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    parser.add_argument("--index-tokens", type=int, help="tokens for the index memory figure (default 262,144; --full: 1,048,576)")
    args = parser.parse_args(argv)
    _MACHINE.update(machine())
    tokens = args.index_tokens or (1_048_576 if args.full else (4096 if args.quick else 262_144))
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
        "steer": lambda: bench_steer(args.quick),
        "explain": lambda: bench_explain(args.quick),
        "families": lambda: bench_families(args.quick),
    }
    chosen = args.only or [f for f in FIGURES if f not in FULL_ONLY or args.full or args.quick]
    try:
        for name in chosen:
            try:
                runs[name]()
            except Exception as exc:  # one failed figure must not hide the others
                emit(name, error=f"{type(exc).__name__}: {exc}")
    finally:
        _Demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
