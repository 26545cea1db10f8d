"""The quality evaluation: the guide's 0-5 report plus the field's model-behaviour metrics.

`evaluate(engine, max_tokens, job)` runs on the engine's worker thread. For each batch of
contexts it runs the real forward pass three times (clean, with the SAE's reconstruction
spliced in at the hook, with zeros spliced in) and folds the batch into streaming
accumulators (`metrics.py`), so memory is bounded by one batch, not by the budget.

Which tokens count: every position of every evaluation context except the BOS position
(`corpus.first_position`). The splice replaces only those positions; the BOS position
keeps its clean activation (its activation is huge and uninformative in most models, as
SAEBench also does). Cross-entropy and KL score every non-BOS target token: predictions
made at positions 0 .. L-2 for the tokens at 1 .. L-1.

A finished report is cached under the user cache directory, keyed by
`engine.cache_parts` (the SAE's content, model, hook, dataset, threshold mode) plus the
budget; a cancelled evaluation raises `Cancelled` before anything is written. The
registry-dependent part (features named with confidence high count as interpretable) is
applied each time a report is returned, so a cached report follows the registry.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import mlx.core as mx
import numpy as np

from . import cache, metrics
from .engine import THRESHOLD_BATCH, THRESHOLD_CALIBRATED
from .errors import UserError
from .sae import BATCH_TOPK
from .tokens import token_string
from .worker import Job

if TYPE_CHECKING:
    from .engine import Engine

DEFAULT_EVAL_TOKENS = 16_384
# Bump when the report's content or its definitions change: old cached reports are ignored.
REPORT_FORMAT = 1
DENSEST_LISTED = 20
DEAD_LISTED = 200


@dataclass
class EvaluationReport:
    """A finished evaluation: `data` is the JSON report (guide keys + saetui's sections)."""

    data: dict[str, Any]
    from_cache: bool = False
    cache_file: Path | None = None

    @property
    def score(self) -> dict[str, Any]:
        return self.data["score"]

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    @property
    def budget(self) -> int:
        return int(self.settings["budget"])

    def to_json(self) -> dict[str, Any]:
        return metrics.finite_or_none(self.data)


# -- the entry points (worker thread) --------------------------------------------------------


def evaluation_budget(engine: "Engine", max_tokens: int | None = None) -> int:
    """The token budget (BOS included): the argument, the settings', or the default."""
    budget = max_tokens if max_tokens is not None else engine.settings.max_tokens
    budget = int(budget) if budget is not None else DEFAULT_EVAL_TOKENS
    if budget <= 0:
        raise UserError(f"A budget of {budget} tokens leaves nothing to evaluate", "Pass --max-tokens with a positive number")
    return budget


def report_cache_file(engine: "Engine", budget: int) -> Path:
    parts = engine.cache_parts(purpose="evaluation", budget=budget, format=REPORT_FORMAT, batch_size=engine.settings.batch_size)
    return cache.cache_path("report", cache.cache_key(**parts), ".json")


def cached_report(engine: "Engine", max_tokens: int | None = None, registry: Any = None) -> EvaluationReport | None:
    """The finished report for these settings, if one is cached (no model run)."""
    _ensure_open(engine)
    path = report_cache_file(engine, evaluation_budget(engine, max_tokens))
    data = cache.read_json(path)
    if not isinstance(data, dict) or data.get("saetui", {}).get("report_format") != REPORT_FORMAT:
        return None
    apply_registry(data, registry_high_confidence(engine, registry))
    return EvaluationReport(data, from_cache=True, cache_file=path)


def evaluate(
    engine: "Engine",
    max_tokens: int | None = None,
    job: Job | None = None,
    use_cache: bool = True,
    registry: Any = None,
) -> EvaluationReport:
    """The quality report over `max_tokens` of the engine's dataset (cached when finished).

    `registry`: the app's `Registry`, or {id: name} of its high-confidence entries;
    default: read the engine's registry file.
    """
    job = job or Job("evaluating")
    _ensure_open(engine, job)
    budget = evaluation_budget(engine, max_tokens)
    path = report_cache_file(engine, budget)
    if use_cache:
        hit = cached_report(engine, budget, registry)
        if hit is not None:
            return hit
    data = _measure(engine, budget, job)
    # Only a finished evaluation reaches this line; a cancelled one raised Cancelled above.
    cache.atomic_write_json(path, metrics.finite_or_none(data))
    data = cache.read_json(path) or data
    apply_registry(data, registry_high_confidence(engine, registry))
    return EvaluationReport(data, from_cache=False, cache_file=path)


def apply_registry(data: dict[str, Any], registry_high: dict[int, str]) -> None:
    """Count the registry's high-confidence features, then redo bands, score and advice."""
    interp = data["interpretability"]
    counted = {int(f["feature"]) for f in interp["token_features"]}
    extra = [{"feature": fid, "name": name} for fid, name in sorted(registry_high.items()) if fid not in counted]
    interp["registry_features"] = extra
    interp["count"] = len(interp["token_features"]) + len(extra)
    apply_rubric(data)


def apply_rubric(data: dict[str, Any]) -> None:
    """Bands, the guide's score and rating, and advice, from the measured numbers."""
    rec, spa = data["reconstruction"], data["sparsity"]
    n_interp = int(data["interpretability"]["count"])
    bands = {
        "mse": metrics.band("mse", rec["mse"]),
        "cosine_similarity": metrics.band("cosine_similarity", rec["cosine_similarity"]),
        "explained_variance": metrics.band("explained_variance", rec["explained_variance"]),
        "l0": metrics.l0_band(_num(spa["l0_mean"]), int(data["architecture"]["k"])),
        "dead_fraction": metrics.band("dead_fraction", spa["dead_fraction"]),
        "interpretability": metrics.band("interpretability", n_interp),
    }
    score = metrics.quality_score(_num(rec["cosine_similarity"]), float(spa["dead_fraction"]), n_interp)
    data["bands"] = bands
    data["score"] = score
    data["quality_score"] = score["total"]
    data["max_score"] = metrics.MAX_SCORE
    data["advice"] = metrics.advice(bands, float(spa["dead_fraction"]))


# -- the measurement ---------------------------------------------------------------------------


def _ensure_open(engine: "Engine", job: Job | None = None) -> None:
    if not engine.state.ready:
        engine.open(job)


class _TopActivations:
    """Per feature, the `k` strongest activations seen so far and their token ids (MLX).

    Kept as (d_sae, k): partitioning along the last, contiguous axis is several times
    faster than along the token axis.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: mx.array | None = None
        self.tokens: mx.array | None = None

    def add(self, z: mx.array, token_ids: mx.array) -> None:
        """z: (T, d_sae) features of T tokens; token_ids: (T,)."""
        m = min(self.k, z.shape[0])
        if m == 0:
            return
        zt = z.T
        idx = mx.argpartition(-zt, kth=m - 1, axis=-1)[:, :m]
        values = mx.take_along_axis(zt, idx, axis=-1)
        tokens = token_ids[idx]
        if self.values is not None:
            values = mx.concatenate([self.values, values], axis=-1)
            tokens = mx.concatenate([self.tokens, tokens], axis=-1)
            if values.shape[-1] > self.k:
                keep = mx.argpartition(-values, kth=self.k - 1, axis=-1)[:, : self.k]
                values = mx.take_along_axis(values, keep, axis=-1)
                tokens = mx.take_along_axis(tokens, keep, axis=-1)
        self.values, self.tokens = values, tokens
        mx.eval(self.values, self.tokens)

    def token_ids(self, features: Iterable[int]) -> dict[int, list[int]]:
        """For each feature, the token ids of its positive top activations, strongest first."""
        if self.values is None:
            return {}
        fids = [int(f) for f in features]
        if not fids:
            return {}
        sel = mx.array(fids)
        values = np.array(self.values[sel])
        tokens = np.array(self.tokens[sel])
        out: dict[int, list[int]] = {}
        for j, fid in enumerate(fids):
            order = np.argsort(-values[j], kind="stable")
            out[fid] = [int(tokens[j, i]) for i in order if values[j, i] > 0]
        return out


def _measure(engine: "Engine", budget: int, job: Job) -> dict[str, Any]:
    """Run the evaluation: per batch, every statistic is reduced on the MLX device to scalars
    and small vectors; the next batch's passes are queued (`mx.async_eval`) before the
    host reads back and merges the previous batch's."""
    from .sparse import session_codes

    sae, runner, hook = engine.sae, engine.runner, engine.hook
    corpus = engine.corpus(budget)
    first = corpus.first_position
    n_eval_tokens = corpus.n_contexts * (corpus.context_len - first)
    if n_eval_tokens <= 0:
        raise UserError(
            f"The evaluation contexts of {corpus.name} hold no tokens besides BOS",
            "Use a dataset with more text, or a longer --context-len",
        )
    batch_size = max(1, int(engine.settings.batch_size))
    recon = metrics.ReconstructionAccumulator()
    sparsity = metrics.SparsityAccumulator(sae.d_sae, sae.k)
    behaviour = metrics.BehaviourAccumulator()
    top = metrics.TopTokenActivations(sae.d_sae, metrics.INTERP_TOP_EXAMPLES)
    notes = list(corpus.notes)
    behaviour_off: str | None = None
    vocab = _vocab_size(runner)
    done = 0
    per_context = corpus.context_len - first

    def fold(batch: dict[str, Any]) -> None:
        nonlocal done
        start = batch["start"]
        for key, what, fix in (
            ("finite_x", "The model's activations at the hook", "Check the model's weights and dtype (float16 overflow gives inf); try another layer or model"),
            ("finite_hat", "The SAE's reconstruction", "The SAE's weights or normalisation (input_std) are broken or its training diverged; use another checkpoint"),
        ):
            finite = np.asarray(batch[key])
            if not finite.all():
                bad = start + int(np.argmin(finite))
                raise UserError(f"{what} contain NaN or infinite values (evaluation context {bad} of {corpus.n_contexts})", fix)
        recon.add_sums(batch["recon"])
        sparsity.add_sums(batch["sparsity"])
        top.fold(batch["top"])
        if batch["behaviour"] is not None:
            n, *sums = batch["behaviour"]
            values = [float(v.item()) for v in sums]
            for name, v in zip(("clean", "SAE", "zero-ablated"), values[:3]):
                if not np.isfinite(v):
                    raise UserError(
                        f"The model's {name} logits are NaN or infinite, so cross-entropy cannot be computed",
                        "Check the model's weights and dtype (float16 overflow), or the SAE's reconstruction scale",
                    )
            behaviour.add(n, *values)
        done += batch["tokens"]
        job.report(done, corpus.n_tokens, "tokens")

    job.report(0, corpus.n_tokens, "tokens", force=True)
    pending: dict[str, Any] | None = None
    for start in range(0, corpus.n_contexts, batch_size):
        job.check()
        tokens_np = corpus.contexts[start : start + batch_size]
        tokens = mx.array(tokens_np)
        clean_logits = None
        clean = None
        if behaviour_off is None:
            try:
                clean = runner.clean_pass(tokens, hook)
                clean_logits, x_full = clean.logits, clean.activations
                behaviour_off = _logits_problem(clean_logits, vocab, tokens)
            except Exception as exc:  # noqa: BLE001 - a model with no usable head: skip CE/KL, say why
                behaviour_off = _first_line(exc)
            if behaviour_off is not None:
                clean_logits = None
        if clean_logits is None:
            x_full = runner.activations(tokens, hook)
        x = x_full.astype(mx.float32)[:, first:, :]
        codes = session_codes(engine, x)
        x_hat = sae.decode(codes.dense())
        batch = {
            "start": start,
            "tokens": int(tokens_np.size),
            "finite_x": mx.isfinite(x).all(axis=(1, 2)),
            "finite_hat": mx.isfinite(x_hat).all(axis=(1, 2)),
            "recon": metrics.reconstruction_sums(x, x_hat),
            "sparsity": metrics.sparsity_sums(codes.features, codes.values, sae.d_sae),
            "top": top.queue(codes.features.reshape(-1, codes.width), codes.values.reshape(-1, codes.width), mx.array(tokens_np[:, first:].reshape(-1)), start * per_context),
            "behaviour": _behaviour_sums(runner, hook, tokens, clean, x_hat, first) if clean_logits is not None else None,
        }
        queued = [batch["finite_x"], batch["finite_hat"], *batch["recon"].arrays(), *batch["sparsity"].arrays(), batch["top"][2]]
        if batch["behaviour"] is not None:
            queued += list(batch["behaviour"][1:])
        mx.async_eval(*queued)
        if pending is not None:
            fold(pending)
        pending = batch
    if pending is not None:
        fold(pending)
    job.check()  # a cancel pressed during the last batch still cancels: nothing gets cached
    return _assemble(engine, corpus, budget, batch_size, recon, sparsity, behaviour, top, behaviour_off, notes)


def _behaviour_sums(runner, hook, tokens: mx.array, clean, x_hat: mx.array, first: int):
    """(positions, then CE clean/SAE/zero and KL SAE/zero summed over the batch as MLX scalars).

    Lazy: nothing is evaluated here, so the caller queues it with the batch's other work.
    The SAE-spliced and zero-ablated passes run as one batch that replays the clean
    pass's hidden state up to the hooked layer (ModelRunner.variant_logits), so only the
    layers from the hook on run again.
    """
    clean_logits = clean.logits

    def splice(replacement: mx.array):
        def replace(a: mx.array) -> mx.array:
            # The BOS position (if any) keeps its clean activation.
            return mx.concatenate([a[:, :first], replacement.astype(a.dtype)], axis=1) if first else replacement.astype(a.dtype)

        return replace

    targets = tokens[:, 1:, None]
    lp_clean = _log_probs(clean_logits[:, :-1])
    p_clean = mx.exp(lp_clean)
    ce_clean = -mx.take_along_axis(lp_clean, targets, axis=-1)

    variants = runner.variant_logits(tokens, hook, clean, [splice(x_hat), splice(mx.zeros_like(x_hat))])

    def against(logits: mx.array) -> tuple[mx.array, mx.array]:
        lp = _log_probs(logits[:, :-1])
        ce = -mx.take_along_axis(lp, targets, axis=-1)
        kl = (p_clean * (lp_clean - lp)).sum(axis=-1)
        return ce.sum(), kl.sum()

    ce_sae, kl_sae = against(variants[0])
    ce_zero, kl_zero = against(variants[1])
    return (int(tokens.shape[0] * (tokens.shape[1] - 1)), ce_clean.sum(), ce_sae, ce_zero, kl_sae, kl_zero)


def _log_probs(logits: mx.array) -> mx.array:
    z = logits.astype(mx.float32)
    return z - mx.logsumexp(z, axis=-1, keepdims=True)


def _vocab_size(runner) -> int | None:
    """The model's own vocabulary size (its config's), or None when it does not say."""
    size = getattr(getattr(runner.model, "args", None), "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else None


def _logits_problem(logits: Any, vocab: int | None, tokens: mx.array) -> str | None:
    """Why these are not next-token logits, or None when they are."""
    shape = tuple(getattr(logits, "shape", ()))
    if len(shape) != 3 or shape[:2] != tuple(tokens.shape):
        return f"the model's forward pass returns shape {shape}, not (batch, length, vocabulary) logits"
    if vocab is not None and shape[-1] != vocab:
        return f"the model's output has width {shape[-1]}, not its vocabulary size {vocab} (no unembedding reachable)"
    if shape[-1] <= int(tokens.max().item()):
        return f"the model's output has width {shape[-1]}, smaller than its token ids (no unembedding reachable)"
    return None


def _check_finite(a: mx.array, what: str, start: int, corpus, fix: str) -> None:
    finite = mx.isfinite(a).all(axis=(1, 2))
    if bool(finite.all().item()):
        return
    bad = start + int(np.argmin(np.array(finite)))
    raise UserError(f"{what} contain NaN or infinite values (evaluation context {bad} of {corpus.n_contexts})", fix)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _assemble(engine, corpus, budget, batch_size, recon, sparsity, behaviour, top, behaviour_off, notes) -> dict[str, Any]:
    sae = engine.sae
    described = engine.describe()
    r = recon.result()
    s = sparsity.result()
    counts = sparsity.counts
    n_tokens = sparsity.n_tokens

    # Interpretability: the token-dominance criterion on the most frequent live features.
    candidates = [int(f) for f in np.argsort(-counts, kind="stable")[: metrics.INTERP_CANDIDATES] if counts[f] > 0]
    ids_by_feature = top.token_ids(candidates)
    strings: dict[int, str] = {}

    def string_of(tid: int) -> str:
        if tid not in strings:
            strings[tid] = token_string(engine.runner.tokenizer, tid)
        return strings[tid]

    top_strings = {fid: [string_of(t) for t in ids] for fid, ids in ids_by_feature.items()}
    token_features = metrics.interpretable_features(counts, top_strings)

    densest = [int(f) for f in np.argsort(-counts, kind="stable")[:DENSEST_LISTED] if counts[f] > 0]
    dead_ids = np.nonzero(counts == 0)[0]
    if s["guide"]["dead_features"] == sae.d_sae:
        notes.append(
            "Every feature is dead on these tokens: the SAE outputs only its decoder bias. "
            "Check the hook (--layer, --component) and the model the SAE was trained on"
        )
    if behaviour_off is not None:
        notes.append(f"CE loss and KL are not computed: {behaviour_off}")
    threshold_mode = engine.threshold_mode
    threshold = getattr(sae, "threshold", None)
    if sae.kind == BATCH_TOPK and threshold_mode == THRESHOLD_CALIBRATED:
        notes.append(
            f"BatchTopK features use the calibrated per-token threshold ({threshold:.4g}); "
            "pass --batch-semantics for mlxterp's batch-dependent encoding"
        )
    elif sae.kind == BATCH_TOPK and threshold_mode == THRESHOLD_BATCH:
        notes.append(
            f"BatchTopK features use mlxterp's batch semantics: top k x tokens over each batch of "
            f"{batch_size} contexts, so they depend on the batch"
        )
    first = corpus.first_position
    notes.append(
        "The BOS position of each context is excluded from every metric and keeps its clean activation in the splice"
        if first
        else "The tokenizer has no BOS token: every position counts"
    )

    behaviour_section: dict[str, Any] = {"available": behaviour_off is None}
    if behaviour_off is None:
        behaviour_section.update(behaviour.result())
    else:
        behaviour_section["reason"] = behaviour_off

    d_model, d_sae = sae.d_model, sae.d_sae
    data: dict[str, Any] = {
        # -- the guide's keys (examples/evaluate_sae.py) --
        "sae_path": "demo" if engine.is_demo else str(engine.sae_path),
        "model": engine.model_name,
        "layer": described.get("layer"),
        "component": described.get("component"),
        "architecture": {
            "type": sae.kind,
            "d_model": int(d_model),
            "d_hidden": int(d_sae),
            "expansion": float(d_sae / d_model),
            "k": int(sae.k),
        },
        "reconstruction": {
            "mse": r["mse"],
            "cosine_similarity": r["cosine_similarity"],
            "explained_variance": r["explained_variance"],
        },
        "sparsity": s["guide"],
        "quality_score": 0.0,
        "max_score": metrics.MAX_SCORE,
        # -- saetui's sections --
        "reconstruction_extra": {
            "explained_variance_saebench": r["explained_variance_saebench"],
            "l2_ratio": r["l2_ratio"],
        },
        "model_behaviour": behaviour_section,
        "l0_distribution": s["l0_distribution"],
        "dead_features": {
            "strict": s["guide"]["dead_features"],
            "strict_fraction": s["dead_fraction_strict"],
            "practical": s["guide"]["dead_features_practical"],
            "practical_fraction": s["guide"]["dead_fraction"],
            "rare_threshold": s["guide"]["rare_threshold"],
            "strict_ids": [int(f) for f in dead_ids[:DEAD_LISTED]],
        },
        "feature_density": dict(
            s["density"],
            densest=[{"feature": f, "count": int(counts[f]), "density": float(counts[f] / n_tokens)} for f in densest],
        ),
        "interpretability": {
            "criterion": metrics.DEFINITIONS["interpretability"],
            "candidates": len(candidates),
            "token_features": token_features,
            "registry_features": [],
            "count": len(token_features),
        },
        "settings": {
            "dataset": corpus.name,
            "budget": int(budget),
            "tokens_total": int(corpus.n_tokens),
            "tokens_evaluated": int(n_tokens),
            "contexts": int(corpus.n_contexts),
            "context_len": int(corpus.context_len),
            "bos_excluded": bool(first),
            "seed": None,
            "selection": "the first contexts of the dataset, in order (deterministic, no sampling)",
            "threshold_mode": threshold_mode,
            "threshold": threshold,
            "batch_size": batch_size,
            "splice": "the SAE's reconstruction replaces the hook's output at every non-BOS position inside the model's forward pass",
        },
        "notes": notes,
        "definitions": dict(metrics.DEFINITIONS),
        "saetui": {
            "report_format": REPORT_FORMAT,
            "version": _version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    apply_rubric(data)
    return data


def registry_high_confidence(engine: "Engine", registry: Any = None) -> dict[int, str]:
    """Features named in the registry with confidence high: {id: name}.

    `registry`: a loaded `Registry`, an {id: name} mapping already worked out, or None
    (read the engine's registry file).
    """
    if isinstance(registry, dict):
        return {int(k): str(v) for k, v in registry.items() if 0 <= int(k) < engine.sae.d_sae}
    if registry is None:
        try:
            from .registry import Registry, registry_path_for

            registry = Registry.load(registry_path_for(engine))
        except Exception:  # noqa: BLE001 - a registry problem must not stop the evaluation
            return {}
    out: dict[int, str] = {}
    try:
        for fid, entry in registry.entries():
            name = entry.get("name")
            if str(entry.get("confidence", "")).lower() == "high" and isinstance(name, str) and name.strip() and 0 <= fid < engine.sae.d_sae:
                out[int(fid)] = name
    except Exception:  # noqa: BLE001
        return {}
    return out


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _version() -> str:
    from .. import __version__

    return __version__


# -- the JSON file ----------------------------------------------------------------------------


def default_json_path(engine: "Engine") -> Path:
    """The guide's `<sae>_evaluation.json` beside the SAE; the demo's (which lives inside the
    installed package) is `demo_sae_evaluation.json` in the current folder."""
    sae_path = Path(engine.sae_path)
    name = sae_path.name[: -len(".mlx")] if sae_path.name.endswith(".mlx") else sae_path.name
    filename = f"{name or 'sae'}_evaluation.json"
    if engine.is_demo:
        return Path.cwd() / "demo_sae_evaluation.json"
    return sae_path.parent / filename


def write_report_json(report: EvaluationReport, engine: "Engine", path: str | Path | None = None) -> Path:
    """Write the report atomically; the default path falls back to the current folder."""
    data = report.to_json()
    if path is not None:
        target = Path(path).expanduser()
        if target.is_dir():
            raise UserError(f"--json {target} is a directory", "Pass a file path, e.g. report.json")
        try:
            cache.atomic_write_json(target, data)
        except OSError as exc:
            raise UserError(f"Cannot write the report to {target} ({exc.strerror or exc})", "Pass --json with a writable path") from None
        return target
    target = default_json_path(engine)
    candidates = [target]
    if target.parent.resolve() != Path.cwd().resolve():
        candidates.append(Path.cwd() / target.name)
    last: OSError | None = None
    for candidate in candidates:
        if not os.access(candidate.parent, os.W_OK):
            continue
        try:
            cache.atomic_write_json(candidate, data)
            return candidate
        except OSError as exc:
            last = exc
    where = " or ".join(str(c.parent) for c in candidates)
    raise UserError(
        f"Cannot write the report JSON in {where}" + (f" ({last.strerror})" if last and last.strerror else ""),
        "Pass --json with a writable path",
    )


# -- benchmark hook -----------------------------------------------------------------------------


def evaluation_throughput(engine: "Engine", max_tokens: int | None = None) -> dict[str, float]:
    """Evaluation tokens/s (uncached) and its time relative to a bare forward pass over the same tokens.

    For the benchmark script (worker thread); not used by tests, which never time things.
    """
    _ensure_open(engine)
    budget = evaluation_budget(engine, max_tokens)
    corpus = engine.corpus(budget)
    batch = max(1, int(engine.settings.batch_size))
    t0 = time.perf_counter()
    for startn in range(0, corpus.n_contexts, batch):
        mx.eval(engine.runner.logits(mx.array(corpus.contexts[startn : startn + batch])))
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(engine, budget, use_cache=False)
    full = time.perf_counter() - t0
    return {
        "tokens": float(corpus.n_tokens),
        "evaluation_s": full,
        "forward_s": bare,
        "tokens_per_s": corpus.n_tokens / full if full > 0 else float("inf"),
        "ratio_to_forward": full / bare if bare > 0 else float("inf"),
    }


# -- what the terminal report and the screen show ------------------------------------------------

# Band colours shared by `saetui eval` and the report screen.
BAND_STYLES = {
    metrics.EXCELLENT: "bold green",
    metrics.GOOD: "green",
    metrics.FAIR: "yellow",
    metrics.POOR: "bold red",
}


@dataclass(frozen=True)
class Row:
    """One line of the report: a metric, its value, its band (if any) and a detail."""

    section: str
    label: str
    value: str
    band: str | None = None
    detail: str = ""
    definition: str = ""  # key into metrics.DEFINITIONS


def _f(v: Any, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def summary_rows(data: dict[str, Any]) -> list[Row]:
    """The report's metrics as rows of text, in the order both front ends show them."""
    rec, spa, bands = data["reconstruction"], data["sparsity"], data["bands"]
    extra, l0d, dead = data["reconstruction_extra"], data["l0_distribution"], data["dead_features"]
    dens, interp, mb = data["feature_density"], data["interpretability"], data["model_behaviour"]
    d_sae = data["architecture"]["d_hidden"]
    rows = [
        Row("Reconstruction", "MSE", _f(rec["mse"], ".4g"), bands["mse"], "", "mse"),
        Row("Reconstruction", "Cosine similarity", _f(rec["cosine_similarity"], ".4f"), bands["cosine_similarity"], "", "cosine_similarity"),
        Row("Reconstruction", "Explained variance", _f(rec["explained_variance"], ".1%"), bands["explained_variance"],
            f"SAEBench form {_f(extra['explained_variance_saebench'], '.1%')}", "explained_variance"),
        Row("Reconstruction", "L2 ratio |x̂|/|x|", _f(extra["l2_ratio"], ".3f"), None, "below 1: shrinkage", "l2_ratio"),
        Row("Sparsity", "L0 mean", f"{_f(spa['l0_mean'], '.1f')} (k {data['architecture']['k']})", bands["l0"],
            f"median {_f(l0d['median'], 'g')}, p10 {_f(l0d['p10'], 'g')}, p90 {_f(l0d['p90'], 'g')}", "l0"),
        Row("Sparsity", "Dead (practical)", f"{spa['dead_features_practical']:,}/{d_sae:,} ({spa['dead_fraction']:.1%})",
            bands["dead_fraction"], f"< {spa['rare_threshold']:,} firings", "dead_features"),
        Row("Sparsity", "Dead (strict)", f"{spa['dead_features']:,}/{d_sae:,} ({dead['strict_fraction']:.1%})", None, "never fire", "dead_features"),
        Row("Sparsity", "Dense features", f"{dens['dense_features']:,} ({dens['dense_fraction']:.1%})", None,
            f"fire on > {dens['dense_threshold']:.0%} of tokens", "density"),
        Row("Interpretability", "Interpretable", f"{interp['count']}", bands["interpretability"],
            f"{len(interp['token_features'])} token-dominated, {len(interp['registry_features'])} named (high)", "interpretability"),
    ]
    if mb.get("available"):
        rows += [
            Row("Model behaviour", "CE clean/SAE/zero",
                f"{_f(mb['ce_loss_clean'], '.3f')} / {_f(mb['ce_loss_sae'], '.3f')} / {_f(mb['ce_loss_zero'], '.3f')}", None, "nats", "ce_loss"),
            Row("Model behaviour", "CE loss recovered", _f(mb["ce_loss_recovered"], ".3f"), None,
                "1 is perfect" if mb["ce_loss_recovered"] is not None else "undefined: zero ablation changes nothing", "ce_loss_recovered"),
            Row("Model behaviour", "KL SAE / zero", f"{_f(mb['kl_div_sae'], '.4f')} / {_f(mb['kl_div_zero'], '.4f')}", None, "nats", "kl"),
            Row("Model behaviour", "KL score", _f(mb["kl_score"], ".3f"), None,
                "1 is perfect" if mb["kl_score"] is not None else "undefined: zero ablation changes nothing", "kl"),
        ]
    else:
        rows.append(Row("Model behaviour", "CE loss / KL", "not computed", None, str(mb.get("reason", "")), "ce_loss"))
    return rows


def describe_settings(data: dict[str, Any]) -> str:
    """One line: how many tokens of which dataset, BOS policy, threshold mode."""
    s = data["settings"]
    line = (
        f"{s['tokens_evaluated']:,} tokens ({s['contexts']:,} contexts of {s['context_len']}"
        f"{', BOS excluded' if s['bos_excluded'] else ''}) of {Path(str(s['dataset'])).name}, budget {s['budget']:,}"
    )
    if s.get("threshold_mode"):
        line += f"; BatchTopK {s['threshold_mode']} threshold"
    return line
