"""The engine: one SAE on one model's hook, a corpus, and the worker thread they run on.

Screens and commands hold an `Engine` and await its methods; every method that touches
MLX runs on `Engine.worker`. Opening is staged so the app can paint first: settings
are resolved, then the SAE is read (fast), then the model (slow), then the hook is
checked against the SAE and, for a BatchTopK SAE, its per-token threshold is
calibrated (or read from the cache).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import numpy as np

from . import cache
from .corpus import DEFAULT_CONTEXT_LEN, DEFAULT_DATASET, Corpus, load_texts, tokenize_corpus
from .errors import UserError
from .model import DEMO_MODEL_NAME, Hook, ModelRunner, canonical_component, load_model
from .sae import BATCH_TOPK, MlxterpSAE, SparseAutoencoder, ThresholdCalibrator, load_sae
from .worker import EngineWorker, Job, ProgressCallback

CALIBRATION_TOKENS = 16_384
THRESHOLD_CALIBRATED = "calibrated"
THRESHOLD_BATCH = "batch"


@dataclass
class EngineSettings:
    """What the user asked for on the command line (None: use the SAE's metadata)."""

    sae: str | None = None
    model: str | None = None
    dataset: str | None = None
    layer: int | None = None
    component: str | None = None
    registry: str | None = None
    text_column: str | None = None
    max_tokens: int | None = None
    context_len: int | None = None
    batch_size: int = 8
    download: bool = False
    threshold_mode: str = THRESHOLD_CALIBRATED
    norm_scaling_factor: float | None = None
    debug: bool = False


@dataclass
class OpenState:
    """What has been opened so far, for the header and the report."""

    sae_loaded: bool = False
    model_loaded: bool = False
    ready: bool = False
    notes: list[str] = field(default_factory=list)


class Engine:
    def __init__(self, settings: EngineSettings | None = None, worker: EngineWorker | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.worker = worker or EngineWorker()
        self.sae: SparseAutoencoder | None = None
        self.runner: ModelRunner | None = None
        self.hook: Hook | None = None
        self.state = OpenState()
        self._texts: list[str] | None = None
        self._corpora: dict[int | None, Corpus] = {}

    # -- what is open --------------------------------------------------------------------

    @property
    def is_demo(self) -> bool:
        return self.settings.sae is None

    @property
    def sae_path(self) -> Path:
        if self.settings.sae is None:
            from ..demo import demo_sae_path

            return demo_sae_path()
        path = Path(self.settings.sae).expanduser()
        if not path.exists() and self.sae is not None and self.sae.path is not None:
            return self.sae.path  # an SAE named as repo:folder: its folder in the Hugging Face cache
        return path

    @property
    def model_name(self) -> str | None:
        if self.settings.model:
            return self.settings.model
        if self.sae is not None and self.sae.metadata.model_name:
            return self.sae.metadata.model_name
        return DEMO_MODEL_NAME if self.is_demo else None

    @property
    def dataset_name(self) -> str:
        if self.settings.dataset:
            return self.settings.dataset
        if self.is_demo:
            from ..demo import demo_corpus_path

            return str(demo_corpus_path())
        return DEFAULT_DATASET

    @property
    def context_len(self) -> int:
        if self.settings.context_len:
            return int(self.settings.context_len)
        limit = None
        if self.runner is not None:
            limit = getattr(getattr(self.runner.model, "args", None), "max_position_embeddings", None)
        return int(min(DEFAULT_CONTEXT_LEN, limit)) if limit else DEFAULT_CONTEXT_LEN

    @property
    def threshold_mode(self) -> str | None:
        """How BatchTopK features were computed (None for TopK SAEs)."""
        if self.sae is None or self.sae.kind != BATCH_TOPK:
            return None
        return self.settings.threshold_mode

    def describe(self) -> dict[str, Any]:
        """The header's summary: class, widths, k, hook, model."""
        sae = self.sae
        out: dict[str, Any] = {"sae": str(self.sae_path) if not self.is_demo else "demo"}
        if sae is not None:
            md = sae.metadata
            layer = self.settings.layer if self.settings.layer is not None else md.layer
            comp = self.settings.component or md.component
            out.update(
                kind=sae.kind,
                d_model=sae.d_model,
                d_sae=sae.d_sae,
                k=sae.k,
                layer=layer,
                component=comp,
                model=self.model_name,
                threshold=getattr(sae, "threshold", None),
                threshold_mode=self.threshold_mode,
            )
        return out

    def summary_line(self) -> str:
        d = self.describe()
        if "kind" not in d:
            return "loading SAE..."
        hook = f"L{d['layer']}/{d['component']}"
        model = "demo model" if self.is_demo else (d["model"] or "model ?")
        k = f" k={d['k']}" if d["k"] is not None else ""
        line = f"{d['kind']} {d['d_model']}->{d['d_sae']}{k} | {hook} | {model}"
        if d.get("threshold_mode") == THRESHOLD_CALIBRATED and d.get("threshold") is not None:
            line += f" | threshold {d['threshold']:.4g}"
        return line

    # -- opening (worker thread) -----------------------------------------------------------

    def open_sae(self) -> SparseAutoencoder:
        """Read the SAE and check the flags that need no model."""
        if self.sae is None:
            self.sae = load_sae(
                self.settings.sae if self.settings.sae is not None else self.sae_path,
                allow_download=self.settings.download,
                norm_scaling_factor=self.settings.norm_scaling_factor,
            )
            self.state.notes.extend(self.sae.metadata.notes)
            self.state.sae_loaded = True
        md = self.sae.metadata
        component = self.settings.component or md.component
        if component is None:
            raise UserError(f"{self.sae_path} names no component in its metadata", "Pass --component mlp, attn or resid")
        canonical_component(component)
        if (self.settings.layer if self.settings.layer is not None else md.layer) is None:
            raise UserError(f"{self.sae_path} names no layer in its metadata", "Pass --layer N")
        if self.model_name is None:
            raise UserError(f"{self.sae_path} names no model in its metadata", "Pass --model with a local mlx-lm model directory or a Hugging Face id")
        return self.sae

    def open_model(self) -> ModelRunner:
        """Load the model and check the hook against the SAE."""
        sae = self.open_sae()
        if self.runner is None:
            self.runner = load_model(self.model_name, allow_download=self.settings.download)
            self.state.model_loaded = True
        md = sae.metadata
        layer = self.settings.layer if self.settings.layer is not None else md.layer
        component = self.settings.component or md.component
        self.hook = self.runner.check_hook(layer, component, post_norm=getattr(md, "post_norm", False))
        width = self.runner.hook_width(self.hook)
        if width != sae.d_model:
            raise UserError(
                f"The SAE expects d_model={sae.d_model} but {self.model_name} gives width {width} at {self.hook}",
                "Pass the --model, --layer and --component the SAE was trained on",
            )
        return self.runner

    def open(self, job: Job | None = None) -> None:
        """Everything up to ready: SAE, model, hook, and BatchTopK calibration."""
        job = job or Job("opening")
        job.report(0, 3, "steps", force=True)
        self.open_sae()
        job.report(1, 3, "steps", force=True)
        self.open_model()
        job.report(2, 3, "steps", force=True)
        if self.sae.kind == BATCH_TOPK and self.settings.threshold_mode == THRESHOLD_CALIBRATED:
            self.calibrate_threshold(job)
        job.report(3, 3, "steps", force=True)
        self.state.ready = True

    async def open_async(self, on_progress: ProgressCallback | None = None) -> None:
        await self.worker.run(self.open, Job("loading", on_progress))

    # -- corpus and activations (worker thread) ------------------------------------------

    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = load_texts(self.dataset_name, self.settings.text_column, self.settings.download)
        return self._texts

    def corpus(self, max_tokens: int | None = None) -> Corpus:
        """The dataset cut into contexts, up to `max_tokens` (default: the settings')."""
        budget = max_tokens if max_tokens is not None else self.settings.max_tokens
        if budget not in self._corpora:
            self.open_model()
            self._corpora[budget] = tokenize_corpus(
                self.texts(), self.runner.tokenizer, self.context_len, budget, name=self.dataset_name
            )
        return self._corpora[budget]

    def iter_activations(self, corpus: Corpus, job: Job | None = None, batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray, mx.array]]:
        """(first context index, tokens (b, L), activations (b, L, d)) per batch, with progress."""
        self.open_model()
        batch_size = batch_size or self.settings.batch_size
        done = 0
        for start in range(0, corpus.n_contexts, batch_size):
            if job is not None:
                job.check()
            tokens = corpus.contexts[start : start + batch_size]
            acts = self.runner.activations(mx.array(tokens), self.hook).astype(mx.float32)
            yield start, tokens, acts
            done += tokens.size
            if job is not None:
                job.report(done, corpus.n_tokens, "tokens")

    def encode(self, acts: mx.array) -> mx.array:
        """Features for activations in the engine's mode (per-token unless mode is batch)."""
        return self.sae.encode(acts, batch=self.threshold_mode == THRESHOLD_BATCH)

    def cache_parts(self, **extra: Any) -> dict[str, Any]:
        """What a cached result for this SAE, model, hook and dataset depends on."""
        dataset = self.dataset_name
        stamp: Any = None
        p = Path(dataset)
        if p.exists():
            st = p.stat()
            stamp = [str(p.resolve()), st.st_size, int(st.st_mtime)]
        return dict(
            sae=self.sae.content_hash,
            model=self.model_name,
            model_path=str(self.runner.path) if self.runner and self.runner.path else None,
            hook=[self.hook.layer, self.hook.component] if self.hook else None,
            dataset=dataset,
            dataset_stamp=stamp,
            text_column=self.settings.text_column,
            context_len=self.context_len,
            threshold_mode=self.threshold_mode,
            threshold=getattr(self.sae, "threshold", None),
            **extra,
        )

    def calibrate_threshold(self, job: Job | None = None) -> float:
        """BatchTopK: the global threshold giving mean L0 = k on the dataset (cached)."""
        sae = self.sae
        assert isinstance(sae, MlxterpSAE)
        self.open_model()
        parts = self.cache_parts(purpose="threshold", tokens=CALIBRATION_TOKENS)
        parts.pop("threshold")
        path = cache.cache_path("threshold", cache.cache_key(**parts), ".json")
        cached = cache.read_json(path)
        if isinstance(cached, dict) and isinstance(cached.get("threshold"), (int, float)):
            sae.threshold = float(cached["threshold"])
            return sae.threshold
        corpus = self.corpus(max(CALIBRATION_TOKENS, self.context_len))
        first = corpus.first_position
        calibrator = ThresholdCalibrator(sae, corpus.n_contexts * (corpus.context_len - first))
        sub = Job("calibrating threshold", getattr(job, "_on_progress", None)) if job else None
        for _, _, acts in self.iter_activations(corpus, sub):
            calibrator.add(acts[:, first:, :])
        sae.threshold = calibrator.threshold()
        cache.atomic_write_json(path, {"threshold": sae.threshold, "tokens": calibrator.n_tokens, "k": sae.k})
        return sae.threshold

    # -- helpers for screens -------------------------------------------------------------

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await any engine function on the worker thread."""
        return await self.worker.run(fn, *args, **kwargs)

    def close(self) -> None:
        self.worker.shutdown()
