"""The engine: the user's settings, the worker thread, and the Session it opens.

Screens and commands hold an `Engine`. Everything that touches MLX runs on its one
worker thread: the UI enters with `await engine.run(fn, session, ...)`, the command
line with `engine.call(fn, session, ...)`, and long work (opening, evaluation, the
index build) is a generator started with `engine.start(...)`, which the worker
advances, reports and cancels (`engine.cancel_jobs()`, the app's `x`).

Opening is staged so the app can paint first: `read_sae()` (fast, also the command
line's up-front check), then `opening()`, which loads the model, checks the hook
against the SAE's width, calibrates a BatchTopK threshold (or reads it from the
cache) and returns the `Session`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, TypeVar

from . import cache
from .corpus import DEFAULT_DATASET
from .errors import UserError
from .model import DEMO_MODEL_NAME, Hook, ModelRunner, canonical_component, load_model
from .sae import BatchTopKSAE, SparseAutoencoder, ThresholdCalibrator, ThresholdedBatchTopKSAE, load_sae
from .session import THRESHOLD_BATCH, THRESHOLD_CALIBRATED, Session, model_context_len, summary_line
from .worker import EngineWorker, Job, LongWork, Progress, ProgressListener, drive

__all__ = ["Engine", "EngineSettings", "THRESHOLD_BATCH", "THRESHOLD_CALIBRATED"]

CALIBRATION_TOKENS = 16_384
T = TypeVar("T")


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

    @property
    def is_demo(self) -> bool:
        return self.sae is None

    @property
    def sae_path(self) -> Path:
        if self.sae is None:
            from ..demo import demo_sae_path

            return demo_sae_path()
        return Path(self.sae).expanduser()

    @property
    def dataset_name(self) -> str:
        if self.dataset:
            return self.dataset
        if self.is_demo:
            from ..demo import demo_corpus_path

            return str(demo_corpus_path())
        return DEFAULT_DATASET


class Engine:
    """Settings, the worker, and (once opened) the Session."""

    def __init__(self, settings: EngineSettings | None = None, worker: EngineWorker | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.worker = worker or EngineWorker()
        self.session: Session | None = None
        # Where long work reports progress when its starter names no listener (the app sets it).
        self.on_progress: ProgressListener | None = None
        self._sae: SparseAutoencoder | None = None

    @classmethod
    def for_session(cls, session: Session) -> "Engine":
        """An engine already open on a ready session (benchmark, tests)."""
        engine = cls(session.settings)
        engine.session = session
        engine._sae = session.sae
        return engine

    # -- what the settings name ---------------------------------------------------------------

    @property
    def is_demo(self) -> bool:
        return self.settings.is_demo

    @property
    def sae_path(self) -> Path:
        path = self.settings.sae_path
        if not path.exists() and self._sae is not None and self._sae.path is not None:
            return Path(self._sae.path)  # an SAE named as repo:folder: its folder in the Hugging Face cache
        return path

    @property
    def dataset_name(self) -> str:
        return self.settings.dataset_name

    @property
    def sae(self) -> SparseAutoencoder | None:
        """The SAE once read (before the model is loaded), for the header."""
        return self.session.sae if self.session is not None else self._sae

    @property
    def model_name(self) -> str | None:
        if self.settings.model:
            return self.settings.model
        if self._sae is not None and self._sae.metadata.model_name:
            return self._sae.metadata.model_name
        return DEMO_MODEL_NAME if self.is_demo else None

    def summary_line(self) -> str:
        if self.session is not None:
            return self.session.summary_line()
        if self._sae is None:
            return "loading SAE..."
        md = self._sae.metadata
        layer = self.settings.layer if self.settings.layer is not None else md.layer
        component = self.settings.component or md.component
        return summary_line(self._sae, layer, component, "demo model" if self.is_demo else self.model_name, None)

    # -- opening (worker thread) ----------------------------------------------------------------

    def read_sae(self) -> SparseAutoencoder:
        """Read the SAE and check what needs no model (cheap; the command line's first check)."""
        if self._sae is None:
            self._sae = load_sae(
                self.settings.sae if self.settings.sae is not None else self.sae_path,
                allow_download=self.settings.download,
                norm_scaling_factor=self.settings.norm_scaling_factor,
            )
        md = self._sae.metadata
        component = self.settings.component or md.component
        if component is None:
            raise UserError(f"{self.sae_path} names no component in its metadata", "Pass --component mlp, attn or resid")
        canonical_component(component)
        if (self.settings.layer if self.settings.layer is not None else md.layer) is None:
            raise UserError(f"{self.sae_path} names no layer in its metadata", "Pass --layer N")
        if self.model_name is None:
            raise UserError(f"{self.sae_path} names no model in its metadata", "Pass --model with a local mlx-lm model directory or a Hugging Face id")
        return self._sae

    def opening(self) -> LongWork[Session]:
        """Open the session: SAE, model, hook, BatchTopK calibration (long work)."""
        if self.session is not None:
            return self.session
        yield Progress("loading the SAE", 0, 3, "steps")
        sae = self.read_sae()
        yield Progress("loading the model", 1, 3, "steps")
        assert self.model_name is not None  # read_sae() raises when there is none
        runner = load_model(self.model_name, allow_download=self.settings.download)
        md = sae.metadata
        layer = self.settings.layer if self.settings.layer is not None else md.layer
        hook = runner.check_hook(layer, self.settings.component or md.component, post_norm=getattr(md, "post_norm", False))
        yield Progress("checking the hook", 2, 3, "steps")
        check_width(runner, hook, sae, self.model_name)
        session = Session(
            settings=self.settings,
            sae=sae,
            runner=runner,
            hook=hook,
            model_name=str(self.model_name),
            dataset_name=self.dataset_name,
            sae_path=self.sae_path,
            is_demo=self.is_demo,
            context_len=model_context_len(runner, self.settings.context_len),
            threshold_mode=self.settings.threshold_mode if isinstance(sae, BatchTopKSAE) else None,
            notes=list(getattr(md, "notes", []) or []),
        )
        if session.threshold_mode == THRESHOLD_CALIBRATED:
            # The session holds the encoder in its chosen mode: the per-token threshold view.
            session.sae = yield from calibrate_threshold(session)
        yield Progress("ready", 3, 3, "steps")
        self.session = session
        return session

    def open(self, on_progress: Callable[[Progress], None] | None = None) -> Session:
        """Open on this thread (the worker's, or a test's): the command line's `call(engine.open)`."""
        return drive(self.opening(), on_progress)

    def require_session(self) -> Session:
        if self.session is None:
            raise UserError("The model is still loading", "Wait for it to load, then try again")
        return self.session

    # -- the ways onto the worker -----------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await a plain engine function on the worker thread (the UI's way in)."""
        return await self.worker.run(fn, *args, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain engine function on the worker and wait (the command line's way in)."""
        return self.worker.call(fn, *args, **kwargs)

    def start(self, label: str, fn: Callable[..., Generator[Progress, None, T]], *args: Any, listener: ProgressListener | None = None, **kwargs: Any) -> Job:
        """Start long work on the worker; progress goes to `listener` or `on_progress`."""
        return self.worker.start(label, fn, *args, listener=listener or self.on_progress, **kwargs)

    def call_job(self, label: str, fn: Callable[..., Generator[Progress, None, T]], *args: Any, on_progress: Callable[[Progress], None] | None = None, **kwargs: Any) -> T:
        """Long work from the command line: start it and wait for its result."""

        def listener(job: Job, progress: Progress | None) -> None:
            if progress is not None and on_progress is not None:
                on_progress(progress)

        job = self.worker.start(label, fn, *args, listener=listener, **kwargs)
        try:
            return job.result()
        except KeyboardInterrupt:
            # Let the work close (an index build checkpoints) before the interrupt goes on.
            job.cancel()
            self.worker.cancel_jobs()
            try:
                job.future.exception(timeout=60)
            except Exception:  # noqa: BLE001 - only waiting for it to end
                pass
            raise

    def find_job(self, label: str) -> Job | None:
        """Long work with this label still running or waiting (to follow it, not start it again)."""
        return self.worker.find_job(label)

    def cancel_jobs(self) -> int:
        return self.worker.cancel_jobs()

    def close(self) -> None:
        self.worker.shutdown()


def check_width(runner: ModelRunner, hook: Hook, sae: SparseAutoencoder, model_name: Any) -> None:
    """The SAE's d_model against the activation width at the hook (one one-token pass, at open)."""
    width = runner.hook_width(hook)
    if width != sae.d_model:
        raise UserError(
            f"The SAE expects d_model={sae.d_model} but {model_name} gives width {width} at {hook}",
            "Pass the --model, --layer and --component the SAE was trained on",
        )


def calibrate_threshold(session: Session) -> LongWork[ThresholdedBatchTopKSAE]:
    """BatchTopK: the per-token view whose global threshold gives mean L0 = k on the
    dataset (the threshold is cached)."""
    sae = session.sae
    if isinstance(sae, ThresholdedBatchTopKSAE):
        sae = sae.base
    assert isinstance(sae, BatchTopKSAE)
    parts = session.cache_parts(purpose="threshold", tokens=CALIBRATION_TOKENS)
    parts.pop("threshold")
    parts["sae"] = sae.content_hash
    path = cache.cache_path("threshold", cache.cache_key(**parts), ".json")
    cached = cache.read_json(path)
    if isinstance(cached, dict) and isinstance(cached.get("threshold"), (int, float)):
        return sae.with_threshold(float(cached["threshold"]))
    corpus = session.corpus(max(CALIBRATION_TOKENS, session.context_len))
    first = corpus.first_position
    calibrator = ThresholdCalibrator(sae, corpus.n_contexts * (corpus.context_len - first))
    done = 0
    yield Progress("calibrating threshold", 0, corpus.n_tokens)
    for _, tokens, acts in session.iter_activations(corpus):
        calibrator.add(acts[:, first:, :])
        done += tokens.size
        yield Progress("calibrating threshold", done, corpus.n_tokens)
    view = calibrator.view()
    cache.atomic_write_json(path, {"threshold": view.threshold, "tokens": calibrator.n_tokens, "k": sae.k})
    return view
