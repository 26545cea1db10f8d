"""Which features fire on a text, token by token (the probe screen's engine half).

The text is tokenised the way the corpus is (`[BOS] + tokens`, no other special
tokens), cut to the session's context length, run to the hook and encoded in the session's
mode. Position 0 (the BOS) is left out of every result, as in the feature statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import mlx.core as mx
import numpy as np

from .corpus import _encode_batch
from .session import Session
from .tokens import token_strings

# Features kept for the text's table, and per token.
TEXT_TOP = 50
TOKEN_TOP = 8


@dataclass(frozen=True)
class FeatureHit:
    """One feature on the whole text."""

    feature_id: int
    max_activation: float
    n_firing: int  # tokens where it is > 0
    argmax: int  # token index of its maximum


@dataclass
class ProbeResult:
    text: str
    token_ids: list[int]
    tokens: list[str]  # one display string per token (BOS not included)
    n_tokens_total: int  # tokens the whole text has (before truncation)
    context_limit: int  # most tokens of text that fit in one context
    top_features: list[FeatureHit]  # by max activation, strongest first
    feature_ids: np.ndarray  # int (F,): the columns of `activations`
    activations: np.ndarray  # float32 (n_tokens, F)
    token_top: list[list[tuple[int, float]]] = field(default_factory=list)  # per token, strongest first

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def truncated(self) -> bool:
        return self.n_tokens_total > self.n_tokens

    @property
    def notice(self) -> str | None:
        if not self.truncated:
            return None
        return (
            f"Text truncated: it has {self.n_tokens_total:,} tokens; the first {self.n_tokens:,} "
            f"fit the context limit and are shown"
        )

    def activations_of(self, feature_id: int | None) -> np.ndarray:
        """The feature's activation at every token (zeros when it is not among the columns)."""
        if feature_id is not None:
            hits = np.nonzero(self.feature_ids == int(feature_id))[0]
            if hits.size:
                return self.activations[:, int(hits[0])]
        return np.zeros(self.n_tokens, dtype=np.float32)

    def has_feature(self, feature_id: int | None) -> bool:
        return feature_id is not None and bool(np.any(self.feature_ids == int(feature_id)))


def empty_result(text: str, context_limit: int) -> ProbeResult:
    return ProbeResult(
        text=text,
        token_ids=[],
        tokens=[],
        n_tokens_total=0,
        context_limit=context_limit,
        top_features=[],
        feature_ids=np.zeros(0, dtype=np.int64),
        activations=np.zeros((0, 0), dtype=np.float32),
    )


def probe_text(session: Session, text: str, features: Iterable[int] = (), text_top: int = TEXT_TOP, token_top: int = TOKEN_TOP) -> ProbeResult:
    """The features of `text`; `features` are always given a column (e.g. the one shaded).

    One forward pass to the hook and one encode, on the engine's worker thread.
    """
    tokenizer = session.tokenizer
    bos_id = getattr(tokenizer, "bos_token_id", None)
    first = 1 if bos_id is not None else 0
    limit = max(1, session.context_len - first)
    ids = _encode_batch(tokenizer, [text])[0] if text else []
    total = len(ids)
    ids = ids[:limit]
    if not ids:
        result = empty_result(text, limit)
        result.n_tokens_total = total
        return result
    context = ([int(bos_id)] if bos_id is not None else []) + [int(i) for i in ids]
    acts = session.runner.activations(mx.array([context]), session.hook).astype(mx.float32)
    feats = session.encode(acts[:, first:, :])[0].astype(mx.float32)  # (T, d_sae)
    return _summarise(text, ids, token_strings(tokenizer, context)[first:], total, limit, feats, features, text_top, token_top)


def _summarise(
    text: str,
    ids: Sequence[int],
    tokens: list[str],
    total: int,
    limit: int,
    feats: mx.array,
    extra: Iterable[int],
    text_top: int,
    token_top: int,
) -> ProbeResult:
    n_tokens, d_sae = feats.shape
    peak = np.array(mx.max(feats, axis=0))
    firing = np.array(mx.sum(feats > 0, axis=0))
    argmax = np.array(mx.argmax(feats, axis=0))
    live = np.nonzero(peak > 0)[0]
    # Strongest first; ties by feature id so the order never flickers.
    order = live[np.lexsort((live, -peak[live]))][:text_top]
    top = [FeatureHit(int(f), float(peak[f]), int(firing[f]), int(argmax[f])) for f in order]
    columns = [int(f) for f in order]
    for f in extra:
        if f is not None and 0 <= int(f) < d_sae and int(f) not in columns:
            columns.append(int(f))
    column_ids = np.asarray(columns, dtype=np.int64)
    if columns:
        activations = np.array(mx.take(feats, mx.array(column_ids.astype(np.int32)), axis=1))
    else:
        activations = np.zeros((n_tokens, 0), dtype=np.float32)
    # Per token: its strongest features (a TopK SAE has at most k non-zero per token).
    kth = min(token_top, d_sae)
    part = np.array(mx.argpartition(-feats, kth=kth - 1, axis=-1)[:, :kth])
    values = np.array(mx.take_along_axis(feats, mx.array(part), axis=-1))
    token_lists: list[list[tuple[int, float]]] = []
    for row_ids, row_vals in zip(part, values):
        keep = row_vals > 0
        pairs = sorted(zip(row_ids[keep].tolist(), row_vals[keep].tolist()), key=lambda p: (-p[1], p[0]))
        token_lists.append([(int(f), float(v)) for f, v in pairs])
    return ProbeResult(
        text=text,
        token_ids=[int(i) for i in ids],
        tokens=tokens,
        n_tokens_total=total,
        context_limit=limit,
        top_features=top,
        feature_ids=column_ids,
        activations=activations.astype(np.float32, copy=False),
        token_top=token_lists,
    )
