"""The quality evaluation: the guide's 0-5 report plus the field's model-behaviour metrics.

`evaluate(session, max_tokens)` is long work on the engine's worker thread (a generator
yielding progress, returning the report). For each batch of
contexts it runs the real forward pass three times (clean, with the SAE's reconstruction
spliced in at the hook, with zeros spliced in) and folds the batch into streaming
accumulators (`metrics.py`), so memory is bounded by one batch, not by the budget.

Which tokens count: every position of every evaluation context except the BOS position
(`corpus.first_position`). The splice replaces only those positions; the BOS position
keeps its clean activation (its activation is huge and uninformative in most models, as
SAEBench also does). Cross-entropy and KL score every non-BOS target token: predictions
made at positions 0 .. L-2 for the tokens at 1 .. L-1.

A finished report is cached under the user cache directory, keyed by
`session.cache_parts` (the SAE's content, model, hook, dataset, threshold mode) plus the
budget; a cancelled evaluation (the generator closed) writes nothing. The
registry-dependent part (features named with confidence high count as interpretable) is
applied each time a report is returned, so a cached report follows the registry.

The report itself is typed (`report.py`); the rubric that grades it is `rubric.py`.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from . import cache, metrics, rubric
from .errors import UserError
from .report import (
    Advice,
    Architecture,
    Bands,
    DeadFeatures,
    DenseFeature,
    EvaluationReport,
    FeatureDensity,
    HistogramBins,
    Interpretability,
    L0Distribution,
    Meta,
    ModelBehaviour,
    NamedFeature,
    Reconstruction,
    ReconstructionExtra,
    Score,
    Settings,
    Sparsity,
    TokenFeature,
)
from .session import THRESHOLD_BATCH, THRESHOLD_CALIBRATED, Session
from .tokens import token_string
from .worker import LongWork, Progress, drive

DEFAULT_EVAL_TOKENS = 16_384
# Bump when the report's content or its definitions change: old cached reports are ignored.
REPORT_FORMAT = 1
DENSEST_LISTED = 20
DEAD_LISTED = 200


# -- the entry points (worker thread) --------------------------------------------------------


def evaluation_budget(session: Session, max_tokens: int | None = None) -> int:
    """The token budget (BOS included): the argument, the settings', or the default."""
    budget = max_tokens if max_tokens is not None else session.settings.max_tokens
    budget = int(budget) if budget is not None else DEFAULT_EVAL_TOKENS
    if budget <= 0:
        raise UserError(f"A budget of {budget} tokens leaves nothing to evaluate", "Pass --max-tokens with a positive number")
    return budget


def report_cache_file(session: Session, budget: int) -> Path:
    parts = session.cache_parts(purpose="evaluation", budget=budget, format=REPORT_FORMAT, batch_size=session.settings.batch_size)
    return cache.cache_path("report", cache.cache_key(**parts), ".json")


def cached_report(session: Session, max_tokens: int | None = None, registry: Any = None) -> EvaluationReport | None:
    """The finished report for these settings, if one is cached (no model run)."""
    path = report_cache_file(session, evaluation_budget(session, max_tokens))
    report = _read_report(path)
    if report is None:
        return None
    report.from_cache, report.cache_file = True, path
    apply_registry(report, registry_high_confidence(session, registry))
    return report


def _read_report(path: Path) -> EvaluationReport | None:
    """The report in `path`, or None when it is missing, damaged or of another format."""
    data = cache.read_json(path)
    if data is None:
        return None
    try:
        report = EvaluationReport.from_json(data)
    except ValueError:
        return None
    return report if report.meta.report_format == REPORT_FORMAT else None


def evaluate(
    session: Session,
    max_tokens: int | None = None,
    use_cache: bool = True,
    registry: Any = None,
) -> LongWork[EvaluationReport]:
    """The quality report over `max_tokens` of the session's dataset (cached when finished).

    `registry`: the app's `Registry`, or {id: name} of its high-confidence entries;
    default: read the session's registry file.
    """
    budget = evaluation_budget(session, max_tokens)
    path = report_cache_file(session, budget)
    if use_cache:
        hit = cached_report(session, budget, registry)
        if hit is not None:
            return hit
    report = yield from _measure(session, budget)
    # Only a finished evaluation reaches this line; a cancelled one was closed above.
    cache.atomic_write_json(path, report.to_json())
    # What is shown is what was cached (non-finite numbers read back as None).
    report = _read_report(path) or report
    report.from_cache, report.cache_file = False, path
    apply_registry(report, registry_high_confidence(session, registry))
    return report


def ce_recovered_caveat(mb: dict[str, Any]) -> str | None:
    """Why CE loss recovered cannot be read as 0..1 on this dataset, or None when it can.

    It compares the SAE with zero ablation, so it assumes zero-ablating the hook hurts the
    loss. On text far from the model's training data zero ablation can lower the loss, and
    the SAE can beat the clean model: the ratio then leaves 0..1 and means little.
    """
    recovered, clean, sae, zero = (mb.get(k) for k in ("ce_loss_recovered", "ce_loss_clean", "ce_loss_sae", "ce_loss_zero"))
    if recovered is None or clean is None or sae is None or zero is None:
        return None
    if zero <= clean:
        return (
            f"CE loss recovered ({recovered:.3f}) is unreliable on this dataset: zero-ablating the hook lowers the loss "
            f"({zero:.3f} vs {clean:.3f} nats clean), as on text far from the model's training data; judge by KL score and MSE"
        )
    if recovered > 1:
        return (
            f"CE loss recovered ({recovered:.3f}) is above 1: the SAE's splice gives a lower loss than the clean model "
            f"({sae:.3f} vs {clean:.3f} nats), as on text far from the model's training data; read it as 1 and judge by KL score and MSE"
        )
    return None


def apply_registry(report: EvaluationReport, registry_high: dict[int, str]) -> None:
    """Count the registry's high-confidence features, then redo bands, score and advice."""
    interp = report.interpretability
    counted = {f.feature for f in interp.token_features}
    interp.registry_features = [NamedFeature(fid, name) for fid, name in sorted(registry_high.items()) if fid not in counted]
    interp.count = len(interp.token_features) + len(interp.registry_features)
    apply_rubric(report)


def apply_rubric(report: EvaluationReport) -> None:
    """Bands, the guide's score and rating, and advice, from the measured numbers."""
    report.bands, report.score, report.advice = _graded(
        report.reconstruction, report.sparsity, report.architecture.l0_reference, report.interpretability.count
    )
    report.quality_score = report.score.total
    report.max_score = rubric.MAX_SCORE


def _graded(rec: Reconstruction, spa: Sparsity, l0_reference: int | None, n_interp: int) -> tuple[Bands, Score, list[Advice]]:
    """The rubric applied to the measured numbers: bands, score, advice.

    `l0_reference`: k, or for SAEs without k the release's target L0; None: no L0 band."""
    bands = Bands(
        mse=rubric.band("mse", rec.mse),
        cosine_similarity=rubric.band("cosine_similarity", rec.cosine_similarity),
        explained_variance=rubric.band("explained_variance", rec.explained_variance),
        l0=rubric.l0_band(_num(spa.l0_mean), int(l0_reference)) if l0_reference else None,
        dead_fraction=rubric.band("dead_fraction", spa.dead_fraction),
        interpretability=rubric.band("interpretability", n_interp),
    )
    score = Score(**rubric.quality_score(_num(rec.cosine_similarity), float(spa.dead_fraction), n_interp))
    advice = [Advice.from_json(item) for item in rubric.advice(bands.to_json(), float(spa.dead_fraction))]
    return bands, score, advice


# -- the measurement ---------------------------------------------------------------------------


def _measure(session: Session, budget: int) -> LongWork[EvaluationReport]:
    """Run the evaluation: per batch, every statistic is reduced on the MLX device to scalars
    and small vectors; the next batch's passes are queued (`mx.async_eval`) before the
    host reads back and merges the previous batch's."""
    from .sparse import session_codes

    sae, runner, hook = session.sae, session.runner, session.hook
    corpus = session.corpus(budget)
    first = corpus.first_position
    n_eval_tokens = corpus.n_contexts * (corpus.context_len - first)
    if n_eval_tokens <= 0:
        raise UserError(
            f"The evaluation contexts of {corpus.name} hold no tokens besides BOS",
            "Use a dataset with more text, or a longer --context-len",
        )
    batch_size = max(1, int(session.settings.batch_size))
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

    yield Progress("evaluating", 0, corpus.n_tokens)
    pending: dict[str, Any] | None = None
    for start in range(0, corpus.n_contexts, batch_size):
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
        codes = session_codes(session, x)
        if getattr(getattr(sae, "norm", None), "token_dependent", False) or getattr(sae, "W_skip", None) is not None:
            sae.encode(x)  # decode reads these tokens' normalisation (or skip input) from their encode
        x_hat = sae.decode(codes.dense())
        batch: dict[str, Any] = {
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
            yield Progress("evaluating", done, corpus.n_tokens)
        pending = batch
    if pending is not None:
        fold(pending)
        yield Progress("evaluating", done, corpus.n_tokens)
    return _assemble(session, corpus, budget, batch_size, recon, sparsity, behaviour, top, behaviour_off, notes)


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
    if shape[-1] <= int(tokens.max().item()):  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        return f"the model's output has width {shape[-1]}, smaller than its token ids (no unembedding reachable)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _assemble(session: Session, corpus, budget, batch_size, recon, sparsity, behaviour, top, behaviour_off, notes) -> EvaluationReport:
    sae = session.sae
    described = session.describe()
    r = recon.result()
    s = sparsity.result()
    guide = s["guide"]
    counts = sparsity.counts
    n_tokens = sparsity.n_tokens

    # Interpretability: the token-dominance criterion on the most frequent live features.
    candidates = [int(f) for f in np.argsort(-counts, kind="stable")[: rubric.INTERP_CANDIDATES] if counts[f] > 0]
    ids_by_feature = top.token_ids(candidates)
    strings: dict[int, str] = {}

    def string_of(tid: int) -> str:
        if tid not in strings:
            strings[tid] = token_string(session.tokenizer, tid)
        return strings[tid]

    top_strings = {fid: [string_of(t) for t in ids] for fid, ids in ids_by_feature.items()}
    token_features = [TokenFeature(int(f["feature"]), str(f["token"]), float(f["share"]))
                      for f in metrics.interpretable_features(counts, top_strings)]

    densest = [int(f) for f in np.argsort(-counts, kind="stable")[:DENSEST_LISTED] if counts[f] > 0]
    dead_ids = np.nonzero(counts == 0)[0]
    if guide["dead_features"] == sae.d_sae:
        notes.append(
            "Every feature is dead on these tokens: the SAE outputs only its decoder bias. "
            "Check the hook (--layer, --component) and the model the SAE was trained on"
        )
    if behaviour_off is not None:
        notes.append(f"CE loss and KL are not computed: {behaviour_off}")
    threshold_mode = session.threshold_mode
    threshold = getattr(sae, "threshold", None)
    if threshold_mode == THRESHOLD_CALIBRATED:
        notes.append(
            f"BatchTopK features use the calibrated per-token threshold ({threshold:.4g}); "
            "pass --batch-semantics for mlxterp's batch-dependent encoding"
        )
    elif threshold_mode == THRESHOLD_BATCH:
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

    if behaviour_off is None:
        measured = behaviour.result()
        caveat = ce_recovered_caveat(measured)
        if caveat:
            notes.append(caveat)
        model_behaviour = ModelBehaviour(available=True, ce_loss_recovered_unreliable=caveat is not None, **measured)
    else:
        model_behaviour = ModelBehaviour(available=False, reason=behaviour_off)

    d_model, d_sae = sae.d_model, sae.d_sae
    reconstruction = Reconstruction(
        mse=r["mse"], cosine_similarity=r["cosine_similarity"], explained_variance=r["explained_variance"]
    )
    sparsity_section = Sparsity(**guide)
    architecture = Architecture(
        type=sae.kind,
        d_model=int(d_model),
        d_hidden=int(d_sae),
        expansion=float(d_sae / d_model),
        k=int(sae.k) if sae.k is not None else None,
        l0_target=getattr(sae.metadata, "l0_target", None) if sae.k is None else None,
    )
    interpretability = Interpretability(
        criterion=rubric.DEFINITIONS["interpretability"],
        candidates=len(candidates),
        token_features=token_features,
        registry_features=[],
        count=len(token_features),
    )
    l0d = s["l0_distribution"]
    density = s["density"]
    bands, score, advice = _graded(reconstruction, sparsity_section, architecture.l0_reference, interpretability.count)
    return EvaluationReport(
        # -- the guide's keys (examples/evaluate_sae.py) --
        sae_path="demo" if session.is_demo else str(session.sae_path),
        model=session.model_name,
        layer=described.get("layer"),
        component=described.get("component"),
        architecture=architecture,
        reconstruction=reconstruction,
        sparsity=sparsity_section,
        quality_score=score.total,
        max_score=rubric.MAX_SCORE,
        # -- saetui's sections --
        reconstruction_extra=ReconstructionExtra(
            explained_variance_saebench=r["explained_variance_saebench"], l2_ratio=r["l2_ratio"]
        ),
        model_behaviour=model_behaviour,
        l0_distribution=L0Distribution(
            mean=l0d["mean"], median=l0d["median"], p10=l0d["p10"], p90=l0d["p90"], k=int(l0d["k"]) if l0d["k"] is not None else None,
            histogram=HistogramBins(bin_edges=l0d["histogram"]["bin_edges"], counts=l0d["histogram"]["counts"]),
        ),
        dead_features=DeadFeatures(
            strict=guide["dead_features"],
            strict_fraction=s["dead_fraction_strict"],
            practical=guide["dead_features_practical"],
            practical_fraction=guide["dead_fraction"],
            rare_threshold=guide["rare_threshold"],
            strict_ids=[int(f) for f in dead_ids[:DEAD_LISTED]],
        ),
        feature_density=FeatureDensity(
            **density,
            densest=[DenseFeature(f, int(counts[f]), float(counts[f] / n_tokens)) for f in densest],
        ),
        interpretability=interpretability,
        settings=Settings(
            dataset=corpus.name,
            budget=int(budget),
            tokens_total=int(corpus.n_tokens),
            tokens_evaluated=int(n_tokens),
            contexts=int(corpus.n_contexts),
            context_len=int(corpus.context_len),
            bos_excluded=bool(first),
            seed=None,
            selection="the first contexts of the dataset, in order (deterministic, no sampling)",
            threshold_mode=threshold_mode,
            threshold=threshold,
            batch_size=batch_size,
            splice="the SAE's reconstruction replaces the hook's output at every non-BOS position inside the model's forward pass",
        ),
        notes=notes,
        definitions=dict(rubric.DEFINITIONS),
        meta=Meta(
            report_format=REPORT_FORMAT,
            version=_version(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        ),
        bands=bands,
        score=score,
        advice=advice,
    )


def registry_high_confidence(session: Session, registry: Any = None) -> dict[int, str]:
    """Features named in the registry with confidence high: {id: name}.

    `registry`: a loaded `Registry`, an {id: name} mapping already worked out, or None
    (read the session's registry file).
    """
    if isinstance(registry, dict):
        return {int(k): str(v) for k, v in registry.items() if 0 <= int(k) < session.d_sae}
    if registry is None:
        try:
            from .registry import Registry, registry_path_for

            registry = Registry.load(registry_path_for(session))
        except Exception:  # noqa: BLE001 - a registry problem must not stop the evaluation
            return {}
    out: dict[int, str] = {}
    try:
        for fid, entry in registry.entries():
            name = entry.get("name")
            if str(entry.get("confidence", "")).lower() == "high" and isinstance(name, str) and name.strip() and 0 <= fid < session.d_sae:
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


def default_json_path(session: Session) -> Path:
    """The guide's `<sae>_evaluation.json` beside the SAE; the demo's (which lives inside the
    installed package) is `demo_sae_evaluation.json` in the current folder."""
    sae_path = Path(session.sae_path)
    name = sae_path.name[: -len(".mlx")] if sae_path.name.endswith(".mlx") else sae_path.name
    filename = f"{name or 'sae'}_evaluation.json"
    if session.is_demo:
        return Path.cwd() / "demo_sae_evaluation.json"
    return sae_path.parent / filename


def write_report_json(report: EvaluationReport, session: Session, path: str | Path | None = None) -> Path:
    """Write the report atomically, the previous one kept as `<file>.bak` and the file's
    permissions kept; the default path falls back to the current folder."""
    from ..ui.safe_text import dumps_json_safe

    blob = dumps_json_safe(report.to_json(), indent=2) + "\n"
    if path is not None:
        target = Path(path).expanduser()
        if target.is_dir():
            raise UserError(f"--json {target} is a directory", "Pass a file path, e.g. report.json")
        try:
            cache.write_user_file(target, blob, backup=True)
        except OSError as exc:
            raise UserError(f"Cannot write the report to {target} ({exc.strerror or exc})", "Pass --json with a writable path") from None
        return target
    target = default_json_path(session)
    candidates = [target]
    if target.parent.resolve() != Path.cwd().resolve():
        candidates.append(Path.cwd() / target.name)
    last: OSError | None = None
    for candidate in candidates:
        if not os.access(candidate.parent, os.W_OK):
            continue
        try:
            cache.write_user_file(candidate, blob, backup=True)
            return candidate
        except OSError as exc:
            last = exc
    where = " or ".join(str(c.parent) for c in candidates)
    raise UserError(
        f"Cannot write the report JSON in {where}" + (f" ({last.strerror})" if last and last.strerror else ""),
        "Pass --json with a writable path",
    )


# -- benchmark hook -----------------------------------------------------------------------------


def evaluation_throughput(session: Session, max_tokens: int | None = None) -> dict[str, float]:
    """Evaluation tokens/s (uncached) and its time relative to a bare forward pass over the same tokens.

    For the benchmark script (worker thread); not used by tests, which never time things.
    """
    budget = evaluation_budget(session, max_tokens)
    corpus = session.corpus(budget)
    batch = max(1, int(session.settings.batch_size))
    t0 = time.perf_counter()
    for startn in range(0, corpus.n_contexts, batch):
        mx.eval(session.runner.logits(mx.array(corpus.contexts[startn : startn + batch])))
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    drive(evaluate(session, budget, use_cache=False))
    full = time.perf_counter() - t0
    return {
        "tokens": float(corpus.n_tokens),
        "evaluation_s": full,
        "forward_s": bare,
        "tokens_per_s": corpus.n_tokens / full if full > 0 else float("inf"),
        "ratio_to_forward": full / bare if bare > 0 else float("inf"),
    }
