"""An opened session: one SAE on one model's hook, over one dataset.

`Engine.open()` makes a `Session` on the engine's worker thread once everything is
checked (SAE read, model loaded, hook validated against the SAE's width, a BatchTopK
threshold calibrated), so a Session is never half-open and nothing re-validates or
re-runs a forward pass afterwards. Every engine function takes the Session typed, and
the Session owns what those functions share: the corpora cut so far, the open feature
index, its explanations and clusters, and the decoder's unit directions.

`Session.from_parts(...)` builds one from ready parts (the benchmark, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import mlx.core as mx
import numpy as np

from .corpus import DEFAULT_CONTEXT_LEN, Corpus, load_texts, tokenize_corpus
from .errors import UserError
from .model import Hook, ModelRunner
from .sae import BatchTopKSAE, SparseAutoencoder, ThresholdedBatchTopKSAE

if TYPE_CHECKING:
    from .clusters import Clustering
    from .engine import EngineSettings
    from .explain import Explanation
    from .index import FeatureIndex

THRESHOLD_CALIBRATED = "calibrated"
THRESHOLD_BATCH = "batch"


@dataclass(frozen=True, eq=False)
class DecoderGeometry:
    """Unit decoder directions and their norms: a nearest-feature lookup is one product."""

    sae: SparseAutoencoder  # the SAE they were computed from
    unit: mx.array  # (d_sae, d_model), rows of norm 1 (0 for a zero direction)
    norms: mx.array  # (d_sae,)

    @classmethod
    def of(cls, sae: SparseAutoencoder) -> "DecoderGeometry":
        directions = sae.decoder_directions.astype(mx.float32)
        norms = mx.linalg.norm(directions, axis=-1)
        unit = directions / mx.maximum(norms, 1e-12)[:, None]
        mx.eval(unit, norms)
        return cls(sae, unit, norms)


@dataclass(eq=False)
class Session:
    """What is open: typed parts every engine function takes, and the state they share."""

    settings: "EngineSettings"
    sae: SparseAutoencoder
    runner: ModelRunner
    hook: Hook
    model_name: str
    dataset_name: str
    sae_path: Path
    is_demo: bool = False
    context_len: int = DEFAULT_CONTEXT_LEN
    # BatchTopK: how features are computed ("calibrated" threshold or "batch"); None otherwise.
    threshold_mode: str | None = None
    notes: list[str] = field(default_factory=list)
    # What the session's functions share, filled in as they run:
    index: "FeatureIndex | None" = None  # the feature index open (complete or being built)
    explanations: "dict[int, Explanation]" = field(default_factory=dict)  # automatic, from the complete index
    clusters: "Clustering | None" = None  # the feature families last computed (engine/clusters.py)
    _texts: list[str] | None = field(default=None, repr=False)
    _corpora: dict[int | None, Corpus] = field(default_factory=dict, repr=False)
    _decoder: DecoderGeometry | None = field(default=None, repr=False)

    @classmethod
    def from_parts(
        cls,
        sae: SparseAutoencoder,
        runner: ModelRunner,
        hook: Hook,
        *,
        settings: "EngineSettings | None" = None,
        dataset: str | None = None,
        texts: list[str] | None = None,
        model_name: str | None = None,
        context_len: int | None = None,
        threshold_mode: str | None = None,
    ) -> "Session":
        """A session over ready parts; `texts` stand in for a dataset file."""
        from .engine import EngineSettings

        settings = settings or EngineSettings(dataset=dataset)
        session = cls(
            settings=settings,
            sae=sae,
            runner=runner,
            hook=hook,
            model_name=model_name or runner.name,
            dataset_name=dataset or settings.dataset or "texts",
            sae_path=Path(getattr(sae, "path", None) or settings.sae or "sae"),
            context_len=int(context_len or settings.context_len or model_context_len(runner)),
            threshold_mode=threshold_mode if isinstance(sae, (BatchTopKSAE, ThresholdedBatchTopKSAE)) else None,
        )
        session._texts = texts
        return session

    # -- the parts --------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self.runner.tokenizer

    @property
    def d_sae(self) -> int:
        return int(self.sae.d_sae)

    @property
    def decoder(self) -> DecoderGeometry:
        if self._decoder is None or self._decoder.sae is not self.sae:
            self._decoder = DecoderGeometry.of(self.sae)
        return self._decoder

    def describe(self) -> dict[str, Any]:
        """The header's summary: class, widths, k, hook, model."""
        return dict(
            sae="demo" if self.is_demo else str(self.sae_path),
            kind=self.sae.kind,
            d_model=self.sae.d_model,
            d_sae=self.sae.d_sae,
            k=self.sae.k,
            layer=self.hook.layer,
            component=self.hook.component,
            model=self.model_name,
            threshold=getattr(self.sae, "threshold", None),
            threshold_mode=self.threshold_mode,
        )

    def summary_line(self) -> str:
        return summary_line(self.sae, self.hook.layer, self.hook.component, "demo model" if self.is_demo else self.model_name, self.threshold_mode)

    # -- data ---------------------------------------------------------------------------------

    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = load_texts(self.dataset_name, self.settings.text_column, self.settings.download)
        return self._texts

    def corpus(self, max_tokens: int | None = None) -> Corpus:
        """The dataset cut into contexts, up to `max_tokens` (default: the settings')."""
        budget = max_tokens if max_tokens is not None else self.settings.max_tokens
        if budget not in self._corpora:
            self._corpora[budget] = tokenize_corpus(self.texts(), self.tokenizer, self.context_len, budget, name=self.dataset_name)
        return self._corpora[budget]

    def iter_activations(self, corpus: Corpus, batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray, mx.array]]:
        """(first context index, tokens (b, L), activations (b, L, d) float32) per batch."""
        batch_size = batch_size or self.settings.batch_size
        for start in range(0, corpus.n_contexts, batch_size):
            tokens = corpus.contexts[start : start + batch_size]
            yield start, tokens, self.runner.activations(mx.array(tokens), self.hook).astype(mx.float32)

    def encode(self, acts: mx.array) -> mx.array:
        """Features for activations, by the SAE the session holds (in its chosen mode)."""
        return self.sae.encode(acts)

    # -- caching ------------------------------------------------------------------------------

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
            model_path=str(self.runner.path) if self.runner.path else None,
            hook=[self.hook.layer, self.hook.component],
            dataset=dataset,
            dataset_stamp=stamp,
            text_column=self.settings.text_column,
            context_len=self.context_len,
            threshold_mode=self.threshold_mode,
            threshold=getattr(self.sae, "threshold", None),
            **extra,
        )


def model_context_len(runner: ModelRunner, requested: int | None = None) -> int:
    """The context length in force: the request, else 128 capped by the model's positions.

    A request beyond the model's positions would give wrong activations: refused.
    """
    limit = getattr(getattr(runner.model, "args", None), "max_position_embeddings", None)
    limit = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    if requested is not None:
        check_context_len(int(requested), limit)
        return int(requested)
    return min(DEFAULT_CONTEXT_LEN, limit) if limit else DEFAULT_CONTEXT_LEN


def check_context_len(requested: int, limit: int | None) -> None:
    """A --context-len the model can take (BOS included), or a UserError saying why not."""
    if requested < 2:
        raise UserError(f"--context-len {requested} is too short (BOS included)", "Pass --context-len 2 or more")
    if limit is not None and requested > limit:
        raise UserError(
            f"--context-len {requested} is beyond the model's {limit:,} positions (activations past them are wrong)",
            f"Pass --context-len {limit} or less",
        )


def summary_line(sae: SparseAutoencoder, layer: Any, component: Any, model: str | None, threshold_mode: str | None) -> str:
    """One line for the header: class, widths, k, hook, model (and a calibrated threshold)."""
    k = f" k={sae.k}" if sae.k is not None else ""
    line = f"{sae.kind} {sae.d_model}->{sae.d_sae}{k} | L{layer}/{component} | {model or 'model ?'}"
    threshold = getattr(sae, "threshold", None)
    if threshold_mode == THRESHOLD_CALIBRATED and threshold is not None:
        line += f" | threshold {threshold:.4g}"
    return line
