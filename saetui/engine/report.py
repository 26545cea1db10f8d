"""The quality report as typed data: one dataclass per section of the JSON report.

`EvaluationReport.to_json()` writes exactly the report's keys in the report's order: the
guide's keys (`sae_path` ... `max_score`, as in its examples/evaluate_sae.py) first, then
saetui's sections. `EvaluationReport.from_json(data)` reads one back (the cache) and raises
`ValueError` naming the first key that is missing, unexpected or of the wrong type, so a
damaged or foreign file is a cache miss, never a crash later in a reader.

Attributes carry the JSON's key names, except the `saetui` section, which is `meta`.
JSON has no NaN: a measured number that is not finite is written as null, which is why
those fields are `float | None` (None also reads as "undefined", e.g. CE loss recovered
when zero ablation changes nothing). Measurement lives in `evaluate.py`, the rubric
(bands, score, advice) in `rubric.py`, and the rendering in `saetui/ui/report.py`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .metrics import finite_or_none

# -- reading and writing sections --------------------------------------------------------------


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _json_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("json", True)]


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _dump(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _load(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against the annotation `tp` (ValueError naming `where` if it does not fit)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [t for t in options if t is not type(None)]
        return _load(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_kind(value)}")
        (inner,) = typing.get_args(tp)
        return [_load(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        _, inner = typing.get_args(tp)
        return {str(k): _load(inner, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Section):
        return tp.from_json(value, where)
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {_kind(value)}")
        return None
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        # JSON writes 2.0 as 2.0, but a float field may hold a whole number written as 2.
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field annotated with a type this reader does not know
        raise TypeError(f"{where}: cannot read a {tp!r}")
    if not ok:
        raise ValueError(f"{where}: expected {tp.__name__}, got {_kind(value)}")
    return value


def _read(cls: type, data: Any, where: str, names: list[str] | None = None) -> dict[str, Any]:
    """The attributes of `cls` named in `names` (default: all its JSON fields), from `data`,
    which must hold exactly their keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(data)}")
    wanted = [f for f in _json_fields(cls) if names is None or f.name in names]
    keys = {_key(f) for f in wanted}
    missing = [_key(f) for f in wanted if _key(f) not in data and not f.metadata.get("optional")]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    extra = [str(k) for k in data if k not in keys]
    if extra:
        raise ValueError(f"{where}: unexpected {', '.join(extra)}")
    hints = _hints(cls)
    return {f.name: _load(hints[f.name], data[_key(f)], f"{where}.{_key(f)}") for f in wanted if _key(f) in data}


class Section:
    """A part of the report: written as a JSON object with its fields' keys, in their order."""

    def to_json(self) -> dict[str, Any]:
        # An optional field is written only when it has a value.
        return {
            _key(f): _dump(getattr(self, f.name))
            for f in _json_fields(type(self))
            if not (f.metadata.get("optional") and getattr(self, f.name) is None)
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "report") -> Any:
        return cls(**_read(cls, data, where))


# -- the guide's sections ------------------------------------------------------------------------


@dataclass
class Architecture(Section):
    type: str
    d_model: int
    d_hidden: int
    expansion: float
    k: int | None  # None: the SAE has no k (JumpReLU, ReLU, gated)
    # For SAEs without k: the release's target L0 where it names one (Gemma Scope's average_l0_N).
    l0_target: int | None = field(default=None, metadata={"optional": True})

    @property
    def l0_reference(self) -> int | None:
        """What the mean L0 is compared with: k, else the release's target L0."""
        return self.k if self.k is not None else self.l0_target

    def l0_reference_text(self) -> str:
        if self.k is not None:
            return f"k {self.k}"
        if self.l0_target is not None:
            return f"no k; release's target L0 {self.l0_target}"
        return "no k: L0 varies by token"


@dataclass
class Reconstruction(Section):
    mse: float | None
    cosine_similarity: float | None
    explained_variance: float | None  # the guide's form (pooled variance)


@dataclass
class Sparsity(Section):
    l0_mean: float | None
    l0_fraction: float | None
    dead_features: int  # strict: never fire
    dead_features_practical: int  # fire fewer than rare_threshold times
    dead_fraction: float  # practical
    rare_threshold: int
    max_feature_activations: int
    min_feature_activations: int


# -- saetui's sections -----------------------------------------------------------------------------


@dataclass
class ReconstructionExtra(Section):
    explained_variance_saebench: float | None
    l2_ratio: float | None


@dataclass
class ModelBehaviour(Section):
    """CE loss and KL with the SAE spliced in; when not `available`, `reason` says why.

    The JSON holds `available` and either the measured numbers or `reason`.
    """

    available: bool
    ce_loss_clean: float | None = None
    ce_loss_sae: float | None = None
    ce_loss_zero: float | None = None
    ce_loss_recovered: float | None = None  # None: undefined (zero ablation changes nothing)
    kl_div_sae: float | None = None
    kl_div_zero: float | None = None
    kl_score: float | None = None  # None: undefined
    positions: int = 0
    # True when CE loss recovered cannot be read as 0..1 on this dataset (the notes say why).
    ce_loss_recovered_unreliable: bool = False
    reason: str = ""

    MEASURED: ClassVar[list[str]] = [
        "ce_loss_clean", "ce_loss_sae", "ce_loss_zero", "ce_loss_recovered", "kl_div_sae", "kl_div_zero", "kl_score", "positions",
        "ce_loss_recovered_unreliable",
    ]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"available": self.available}
        if self.available:
            out.update((name, getattr(self, name)) for name in self.MEASURED)
        else:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "model_behaviour") -> ModelBehaviour:
        available = data.get("available") if isinstance(data, dict) else None
        names = ["available", *cls.MEASURED] if available is True else ["available", "reason"]
        return cls(**_read(cls, data, where, names))


@dataclass
class HistogramBins(Section):
    """Counts per bin between consecutive edges."""

    bin_edges: list[float]
    counts: list[int]


@dataclass
class L0Distribution(Section):
    mean: float | None
    median: float | None
    p10: float | None
    p90: float | None
    k: int | None
    histogram: HistogramBins


@dataclass
class DeadFeatures(Section):
    strict: int
    strict_fraction: float
    practical: int
    practical_fraction: float
    rare_threshold: int
    strict_ids: list[int]  # the first DEAD_LISTED of them


@dataclass
class DenseFeature(Section):
    feature: int
    count: int
    density: float


@dataclass
class FeatureDensity(Section):
    log10_bin_edges: list[float]
    counts: list[int]
    dead: int
    live: int
    dense_threshold: float
    dense_features: int
    dense_fraction: float
    densest: list[DenseFeature]


@dataclass
class TokenFeature(Section):
    """A feature whose strongest activations are dominated by one token string."""

    feature: int
    token: str
    share: float


@dataclass
class NamedFeature(Section):
    """A feature named in the registry with confidence high."""

    feature: int
    name: str


@dataclass
class Interpretability(Section):
    criterion: str
    candidates: int
    token_features: list[TokenFeature]
    registry_features: list[NamedFeature]
    count: int


@dataclass
class Settings(Section):
    dataset: str
    budget: int
    tokens_total: int
    tokens_evaluated: int
    contexts: int
    context_len: int
    bos_excluded: bool
    seed: None
    selection: str
    threshold_mode: str | None
    threshold: float | None
    batch_size: int
    splice: str


@dataclass
class Meta(Section):
    report_format: int
    version: str
    created: str


@dataclass
class Bands(Section):
    mse: str | None
    cosine_similarity: str | None
    explained_variance: str | None
    l0: str | None
    dead_fraction: str | None
    interpretability: str | None


@dataclass
class Score(Section):
    reconstruction: float
    sparsity: float
    interpretability: float
    total: float
    max: int
    rating: str
    verdict: str
    next_step: str
    proceed: bool


@dataclass
class Advice(Section):
    """One troubleshooting entry: the guide's symptoms, causes and solutions, or a `note`."""

    topic: str
    title: str
    triggered_by: list[str]
    symptoms: str | None = None
    causes: list[str] | None = None
    solutions: list[str] | None = None
    note: str | None = None

    GUIDE: ClassVar[list[str]] = ["title", "symptoms", "causes", "solutions", "topic", "triggered_by"]
    NOTE: ClassVar[list[str]] = ["topic", "title", "note", "triggered_by"]

    def to_json(self) -> dict[str, Any]:
        return {name: _dump(getattr(self, name)) for name in (self.NOTE if self.note is not None else self.GUIDE)}

    @classmethod
    def from_json(cls, data: Any, where: str = "advice") -> Advice:
        names = cls.NOTE if isinstance(data, dict) and "note" in data else cls.GUIDE
        values = _read(cls, data, where, names)
        for name in names:
            if values[name] is None:
                raise ValueError(f"{where}.{name}: expected a value, got null")
        return cls(**values)


# -- the whole report ----------------------------------------------------------------------------


@dataclass
class EvaluationReport(Section):
    """A finished evaluation. Field order is the JSON's: the guide's keys, then saetui's.

    `from_cache` and `cache_file` say where this copy came from; they are not written.
    """

    # -- the guide's keys (examples/evaluate_sae.py) --
    sae_path: str
    model: str | None
    layer: int | None
    component: str | None
    architecture: Architecture
    reconstruction: Reconstruction
    sparsity: Sparsity
    quality_score: float
    max_score: int
    # -- saetui's sections --
    reconstruction_extra: ReconstructionExtra
    model_behaviour: ModelBehaviour
    l0_distribution: L0Distribution
    dead_features: DeadFeatures
    feature_density: FeatureDensity
    interpretability: Interpretability
    settings: Settings
    notes: list[str]
    definitions: dict[str, str]
    meta: Meta = field(metadata={"key": "saetui"})
    bands: Bands
    score: Score
    advice: list[Advice]
    # -- not written --
    from_cache: bool = field(default=False, compare=False, metadata={"json": False})
    cache_file: Path | None = field(default=None, compare=False, metadata={"json": False})

    def to_json(self) -> dict[str, Any]:
        """The JSON report (non-finite numbers as null)."""
        return finite_or_none(super().to_json())

    @classmethod
    def from_json(cls, data: Any, where: str = "report") -> EvaluationReport:
        return cls(**_read(cls, data, where))

    @property
    def budget(self) -> int:
        return self.settings.budget

    @property
    def data(self) -> dict[str, Any]:
        """The report as the JSON file has it (`to_json()`): for checks against the file format.
        Code that shows the report reads the attributes."""
        return self.to_json()
