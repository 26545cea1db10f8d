"""Search features: by registry name, description, automatic explanation or top tokens,
and "which features fire most on this token string", from the index and explanations.

Matching is case-insensitive on whole words first, then substrings. Weights: registry
name 4, explanation label or words 3, registry description 2, a top token of the
feature's kept contexts 1 (times the share of kept contexts peaking on it). Ties go to
the better explained feature (detection score), then the smaller id.
"""

from __future__ import annotations

from typing import Any

import re
from dataclasses import dataclass, field

from .explain import Explanation


@dataclass
class SearchHit:
    feature_id: int
    score: float
    matched: list[str] = field(default_factory=list)  # where the query matched: name, description, explanation, tokens
    name: str | None = None
    explanation: str | None = None
    explanation_score: float | None = None


@dataclass
class TokenHit:
    """A feature that fires on a token string, from its kept contexts in the index."""

    feature_id: int
    contexts: int  # kept contexts (top and samples) whose peak is that word
    mean_activation: float
    share: float  # of the feature's kept contexts
    explanation: str | None = None


def _match(query: str, text: str | None) -> float:
    """1 for a whole-word match, 0.5 for a substring, else 0 (case-insensitive)."""
    if not text or not query:
        return 0.0
    t, q = text.casefold(), query.casefold().strip()
    if not q:
        return 0.0
    if re.search(r"(?<!\w)" + re.escape(q) + r"(?!\w)", t):
        return 1.0
    return 0.5 if q in t else 0.0


def search_features(
    query: str,
    explanations: dict[int, Explanation] | None = None,
    names: dict[int, str] | None = None,
    descriptions: dict[int, str] | None = None,
    limit: int = 50,
) -> list[SearchHit]:
    """Features matching `query`, best first (see the module's doc for the weights)."""
    explanations = explanations or {}
    names = names or {}
    descriptions = descriptions or {}
    hits: dict[int, SearchHit] = {}
    ids = set(explanations) | set(names) | set(descriptions)
    for f in ids:
        e = explanations.get(f)
        score = 0.0
        matched: list[str] = []
        m = _match(query, names.get(f))
        if m:
            score += 4 * m
            matched.append("name")
        m = _match(query, descriptions.get(f))
        if m:
            score += 2 * m
            matched.append("description")
        if e is not None:
            m = max([_match(query, e.label)] + [_match(query, w) for w in e.words])
            if m:
                score += 3 * m
                matched.append("explanation")
            kept = sum(n for _, n, _ in e.top_words) or 1
            m_tok = max([_match(query, w) * n / kept for w, n, _ in e.top_words] or [0.0])
            if m_tok:
                score += m_tok
                matched.append("tokens")
        if score > 0:
            hits[f] = SearchHit(f, score, matched, names.get(f), e.label if e else None, e.score if e else None)
    ranked = sorted(hits.values(), key=lambda h: (-h.score, -(h.explanation_score or 0.0), h.feature_id))
    return ranked[: int(limit)]


def features_on_token(token: str, explanations: dict[int, Explanation], limit: int = 20) -> list[TokenHit]:
    """Features whose kept contexts (top and samples) peak most on the word `token`.

    Ranked by contexts x mean activation there. The word is compared stripped and
    case-insensitively (" Paris" and "paris" are the same).
    """
    q = token.strip().casefold()
    out = []
    for f, e in explanations.items():
        kept = sum(n for _, n, _ in e.top_words) or 1
        for w, n, a in e.top_words:
            if w.strip().casefold() == q and n > 0:
                out.append(TokenHit(f, int(n), float(a), n / kept, e.label))
                break
    out.sort(key=lambda h: (-h.contexts * h.mean_activation, h.feature_id))
    return out[: int(limit)]


def registry_texts(registry: Any) -> tuple[dict[int, str], dict[int, str]]:
    """(names, descriptions) by feature id from a loaded `Registry` ({} when there is none)."""
    names: dict[int, str] = {}
    descriptions: dict[int, str] = {}
    if registry is None:
        return names, descriptions
    for fid in registry.feature_ids():
        if name := registry.name(fid):
            names[fid] = name
        entry = registry.get(fid) or {}
        if isinstance(entry.get("description"), str) and entry["description"].strip():
            descriptions[fid] = entry["description"]
    return names, descriptions
