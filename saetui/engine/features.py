"""Facts about one feature, and the user's guide's two functions.

- logit effects: the feature's decoder direction, scaled by the final norm's weight,
  through the unembedding (the direct path to the output, as Neuronpedia shows it):
  the output tokens it promotes and suppresses most;
- nearest features: the features whose decoder directions have the highest cosine
  similarity with its own;
- `feature_page`: everything the feature screen shows, from the index (complete or
  still building) plus the decoder facts, with tokens turned into display strings;
- `get_top_activating_features(session, text, top_k)` and
  `get_top_activating_texts(session, feature_id, top_k)`: the guide's API, answered
  from one forward pass and from the feature index respectively.

Every function here is plain synchronous code that runs on the engine's worker thread
(`await engine.run(feature_page, session, 4251)`); each takes the opened `Session`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import UserError
from .index import DEFAULT_TOP_K, ContextExample, FeatureIndex, FeatureStats, build_index
from .session import Session
from .tokens import token_string, token_strings
from .worker import drive

LOGIT_TOKENS = 10
NEAREST = 10
# Top contexts a feature page shows at first (the feature screen's `m` adds as many again).
PAGE_CONTEXTS = 5

LOGIT_HOW = (
    "decoder direction x final norm weight, through the unembedding "
    "(direct path only: later layers and the norm's scaling are ignored)"
)


@dataclass
class TokenEffect:
    token_id: int
    token: str  # display string (not yet made visible/literal)
    value: float  # logit change per unit of feature activation


@dataclass
class LogitEffects:
    promoted: list[TokenEffect]
    suppressed: list[TokenEffect]
    how: str = LOGIT_HOW


@dataclass
class Neighbour:
    feature_id: int
    cosine: float


@dataclass
class ShownContext:
    """A context ready to show: its window's token strings and the whole context's text."""

    example: ContextExample
    tokens: list[str]  # one display string per window token
    text: str  # the whole context decoded (BOS left out), for probing it


@dataclass
class FeaturePage:
    feature_id: int
    d_sae: int
    decoder_norm: float
    logits: LogitEffects
    neighbours: list[Neighbour]
    stats: FeatureStats | None = None  # None while no index exists yet
    top: list[ShownContext] = field(default_factory=list)
    samples: list[ShownContext] = field(default_factory=list)


# -- checking input ------------------------------------------------------------------------


def check_feature_id(d_sae: int, value: Any) -> int:
    """A feature id from user input (str or int), or a UserError saying what is wrong."""
    d_sae = int(d_sae)
    text = str(value).strip()
    try:
        fid = int(text)
    except ValueError:
        raise UserError(f"{text!r} is not a feature id", f"Give a whole number from 0 to {d_sae - 1}") from None
    if not 0 <= fid < d_sae:
        raise UserError(f"Feature {fid} is out of range: the SAE has {d_sae:,} features (0-{d_sae - 1})", f"Give a feature id from 0 to {d_sae - 1}")
    return fid


# -- decoder facts ---------------------------------------------------------------------------

def _norm_gain(session: Session) -> mx.array | None:
    """What the final norm multiplies by (Gemma's RMSNorm uses 1 + weight)."""
    weight = session.runner.final_norm_weight()
    if weight is None:
        return None
    model = session.runner.model
    model_type = str(getattr(model, "model_type", None) or getattr(getattr(model, "args", None), "model_type", "") or "")
    return (1.0 + weight) if model_type.startswith("gemma") else weight


def logit_effects(session: Session, feature_id: int, n: int = LOGIT_TOKENS) -> LogitEffects:
    direction = session.sae.decoder_directions[int(feature_id)].astype(mx.float32)
    gain = _norm_gain(session)
    if gain is not None:
        direction = direction * gain.astype(mx.float32)
    logits = np.array(session.runner.unembed(direction[None, :]).astype(mx.float32))[0]
    vocab = _tokenizer_vocab_size(session)
    if vocab and vocab < logits.size:  # padded embedding rows are no tokens
        logits = logits[:vocab]
    order = np.lexsort((np.arange(logits.size), -logits))
    tokenizer = session.tokenizer

    def effects(ids: np.ndarray) -> list[TokenEffect]:
        return [TokenEffect(int(i), token_string(tokenizer, int(i)), float(logits[i])) for i in ids]

    n = min(n, logits.size)
    return LogitEffects(promoted=effects(order[:n]), suppressed=effects(order[::-1][:n]))


def _tokenizer_vocab_size(session: Session) -> int | None:
    tokenizer = session.tokenizer
    try:
        return len(tokenizer.get_vocab()) if hasattr(tokenizer, "get_vocab") else None
    except Exception:  # noqa: BLE001 - a tokenizer without a vocabulary listing
        return None


def nearest_features(session: Session, feature_id: int, n: int = NEAREST) -> list[Neighbour]:
    """The n features with the most similar decoder directions (cosine), most similar first."""
    unit, norms = session.decoder.unit, session.decoder.norms
    f = int(feature_id)
    cosines = np.array(unit @ unit[f])
    cosines[f] = -np.inf
    if float(np.array(norms[f])) == 0:
        return []
    n = min(n, cosines.size - 1)
    order = np.lexsort((np.arange(cosines.size), -cosines))[:n]
    return [Neighbour(int(j), float(cosines[j])) for j in order]


# -- the page -------------------------------------------------------------------------------------


def show_context(session: Session, index: FeatureIndex, example: ContextExample) -> ShownContext:
    tokenizer = session.tokenizer
    context = index.contexts[example.context_id]
    first = index.first_position
    end = example.window_start + len(example.window_tokens)
    # Decode from a few tokens before the window, so a token that completes a character
    # split across byte-level tokens shows it (at most 4 bytes, so 8 tokens is plenty).
    lead = max(first, example.window_start - 8)
    strings = token_strings(tokenizer, context[lead:end])
    return ShownContext(example, strings[example.window_start - lead :], _decode(tokenizer, context[first:]))


def _decode(tokenizer: Any, ids: np.ndarray) -> str:
    try:
        return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
    except TypeError:
        return tokenizer.decode([int(i) for i in ids])


def feature_page(session: Session, feature_id: int, n_top: int | None = None, known: FeaturePage | None = None) -> FeaturePage:
    """Everything the feature screen shows about one feature, from the session's index
    (complete, partial while it builds, or none yet).

    `known`: an earlier page of the same feature, whose decoder facts are reused (they
    do not change while the index builds).
    """
    fid = check_feature_id(session.d_sae, feature_id)
    if known is not None and known.feature_id == fid:
        page = FeaturePage(fid, known.d_sae, known.decoder_norm, known.logits, known.neighbours)
    else:
        page = FeaturePage(
            feature_id=fid,
            d_sae=session.d_sae,
            decoder_norm=float(np.array(session.decoder.norms[fid])),
            logits=logit_effects(session, fid),
            neighbours=nearest_features(session, fid),
        )
    index = session.index
    if index is not None:
        stats = index.feature(fid)
        page.stats = stats
        shown = stats.top if n_top is None else stats.top[:n_top]
        page.top = [show_context(session, index, e) for e in shown]
        page.samples = [show_context(session, index, e) for e in stats.samples]
    return page


# -- the guide's API ------------------------------------------------------------------------


def get_top_activating_features(session: Session, text: str, top_k: int = 10) -> list[tuple[int, float]]:
    """The guide's function: the features firing most on `text`, by their max over its tokens.

    The text is tokenised like the corpus (`[BOS] + tokens`, cut to one context); BOS is
    left out. Strongest first, ties by feature id; only features that fire.
    """
    from .probe import probe_text

    if int(top_k) < 1:
        raise UserError(f"--top-k {top_k} is too small", "Ask for at least 1 feature")
    result = probe_text(session, text, text_top=int(top_k))
    return [(hit.feature_id, hit.max_activation) for hit in result.top_features[: int(top_k)]]


def get_top_activating_texts(session: Session, feature_id: int, top_k: int = DEFAULT_TOP_K, index: FeatureIndex | None = None) -> list[tuple[str, float, int]]:
    """The guide's function: [(text, activation, token_position)], strongest first.

    Answered from the feature index (built now if none is cached). `text` is the whole
    context the feature fired in (BOS left out); `token_position` is the position of
    its strongest token in the context (the BOS, when there is one, is position 0).
    """
    fid = check_feature_id(session.d_sae, feature_id)
    if index is None:
        index = drive(build_index(session, top_k=max(int(top_k), 1)))
    stats = index.feature(fid)
    tokenizer = session.tokenizer
    first = index.first_position
    out = []
    for e in stats.top[: int(top_k)]:
        out.append((_decode(tokenizer, index.contexts[e.context_id, first:]), e.activation, e.position))
    return out
