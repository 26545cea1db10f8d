"""Automatic explanations for every live feature, and a measured score for each.

Computed from the feature index alone (no model run), right after it is built:

- **explanation**: the words at the peaks of the feature's strongest contexts that most
  characterise it relative to their frequency in the corpus (count x log lift), up to
  four, as a short label ("Chicago, Paris, Tokyo, Berlin"). When the peaks' words are
  scattered but the token just before the peak is the same in most of them, the label is
  that preceding token instead ("after ' = '").
- **detection score** (SAEBench's detection, with the explanation as a deterministic
  predictor): an explanation "predicts" that a context activates the feature when the
  context's window holds one of its tokens (for an "after" label: one of its preceding
  tokens followed by another token). Positives are held out: the explanation is made from
  the top contexts at even ranks (0, 2, 4...) and scored on those at odd ranks plus the
  index's quantile samples; negatives are as many random corpus windows (at least
  `MIN_NEGATIVES`), from contexts the index does not list for the feature, chosen by a
  seed derived from the feature id. The score is the balanced accuracy
  (true-positive rate + true-negative rate) / 2: 0.5 is chance, 1 is perfect. A dense
  feature whose explanation ("the") is everywhere scores near 0.5, however tidy its top 20.
- **explained features** (the report's figure): live features whose score is at least
  `EXPLAINED_BAR` (0.7: well above the 0.5 of chance; a concept feature of the demo scores about 0.7-0.9 with a token-list explanation, the dense punctuation feature 0.56).

Index data used (public accessors): `FeatureIndex.live_features()`, `.feature(f)`
(`top`, `samples`: `context_id`, `activation`, `window_tokens`, `window_acts`,
`max_index`, `window_start`), `.contexts`, `.first_position`, `.complete`, `.meta["key"]`.

Explanations are cached beside the index (`cache.cache_path("explanations", key)`, keyed
by the index's key and this module's format) and only for a complete index.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Iterable

import numpy as np

from . import cache
from .index import ContextExample, FeatureIndex
from .tokens import token_string
from .worker import Progress, drive

if TYPE_CHECKING:
    from .session import Session

EXPLAIN_FORMAT = 1
EXPLAINED_BAR = 0.7
LABEL_WORDS = 4
MIN_NEGATIVES = 20
# A window token counts towards the explanation when its activation is at least this
# fraction of its context's peak.
STRONG = 0.5
# Tokens per detection window (positives end just after the peak; negatives are random).
DETECTION_WIDTH = 8
AFTER_SHARE = 0.8  # the preceding token must be the same in this share of the peaks...
TOKEN_SHARE = 0.4  # ...while no single peak word covers this share.
SOURCE_AUTO = "auto"


@dataclass
class Explanation:
    """A feature's explanation and how well it predicts the feature's activations."""

    feature_id: int
    label: str  # short, e.g. "Chicago, Paris, Tokyo" or "after ' = '"
    words: list[str]  # the words of the label (the preceding tokens for an "after" label)
    tokens: list[int]  # token ids the predictor looks for
    view: str  # "token": fires on these; "after": fires on the token after these
    score: float | None  # detection balanced accuracy on held-out contexts (None: too few)
    positives: int = 0
    negatives: int = 0
    source: str = SOURCE_AUTO  # "auto", or "model:<name>" for a language model's
    top_words: list[list[Any]] = field(default_factory=list)  # [[word, contexts, mean activation]] over all kept contexts

    @property
    def explained(self) -> bool:
        return self.score is not None and self.score >= EXPLAINED_BAR

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Explanation":
        return cls(
            feature_id=int(d["feature_id"]),
            label=str(d["label"]),
            words=[str(w) for w in d["words"]],
            tokens=[int(t) for t in d["tokens"]],
            view=str(d["view"]),
            score=None if d.get("score") is None else float(d["score"]),
            positives=int(d.get("positives", 0)),
            negatives=int(d.get("negatives", 0)),
            source=str(d.get("source", SOURCE_AUTO)),
            top_words=[[str(w), int(n), float(a)] for w, n, a in d.get("top_words", [])],
        )


# -- words ------------------------------------------------------------------------------


class TokenText:
    """Display strings of token ids, computed once each."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._strings: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        t = int(token_id)
        s = self._strings.get(t)
        if s is None:
            s = token_string(self.tokenizer, t) if self.tokenizer is not None else f"<{t}>"
            self._strings[t] = s
        return s


def _joins_previous(piece: str) -> bool:
    """Whether a token continues the word before it (no leading space or punctuation)."""
    return bool(piece) and (piece[0].isalnum() or piece[0] in "'_")


def peak_word(text: TokenText, tokens: np.ndarray, i: int) -> str:
    """The word the token at `i` belongs to (tokens joined while they continue a word)."""
    pieces = [text(t) for t in tokens]
    if not pieces[i].strip():
        return pieces[i]
    start = i
    while start > 0 and _joins_previous(pieces[start]) and pieces[start - 1][-1:].isalnum():
        start -= 1
    end = i
    while end + 1 < len(pieces) and _joins_previous(pieces[end + 1]) and pieces[end][-1:].isalnum():
        end += 1
    word = "".join(pieces[start : end + 1]).strip()
    return word or pieces[i]


def quoted(s: str) -> str:
    return "'" + s.replace("\n", "\\n") + "'"


# -- one feature ------------------------------------------------------------------------


def explain_feature(feature_id: int, top: list[ContextExample], samples: list[ContextExample], unigram: np.ndarray, text: TokenText) -> Explanation:
    """An explanation from `top` (the contexts it is made from), unscored.

    Every token of a context's window with at least STRONG x the context's peak counts
    (once per context and word), so a context with two foods teaches both.
    """
    total = float(unigram.sum()) or 1.0
    by_word: dict[str, list] = {}  # word -> [contexts, summed activation, {token ids}]
    after: dict[int, int] = {}
    n = 0
    for e in top:
        if e.activation <= 0:
            continue
        n += 1
        strong = np.flatnonzero(e.window_acts >= STRONG * e.activation)
        seen: set[str] = set()
        for i in strong.tolist():
            w = peak_word(text, e.window_tokens, i)
            entry = by_word.setdefault(w, [0, 0.0, set()])
            if w not in seen:
                entry[0] += 1
                entry[1] += float(e.window_acts[i])
                seen.add(w)
            entry[2].add(int(e.window_tokens[i]))
        i = e.max_index
        if i > 0:
            prev = int(e.window_tokens[i - 1])
            after[prev] = after.get(prev, 0) + 1
    if n == 0:
        return Explanation(feature_id, "", [], [], "token", None)

    def lift_weight(count: int, toks) -> float:
        freq = max(sum(float(unigram[t]) for t in toks if t < unigram.size), 0.5) / total
        return count * float(np.log(max((count / n) / freq, 1.0)))

    weights = {w: lift_weight(v[0], v[2]) for w, v in by_word.items()}
    ranked = sorted(by_word.items(), key=lambda item: (-weights[item[0]], -item[1][0], item[0]))
    chosen = [(w, v) for w, v in ranked if weights[w] > 0] or ranked[:1]
    chosen_weight = sum(weights[w] for w, _ in chosen)
    if after:
        prev, count = max(after.items(), key=lambda kv: (kv[1], -kv[0]))
        top_share = max(v[0] for v in by_word.values()) / n
        if count / n >= AFTER_SHARE and top_share < TOKEN_SHARE and lift_weight(count, [prev]) > chosen_weight:
            s = text(prev)
            return Explanation(feature_id, f"after {quoted(s)}", [s], [prev], "after", None)
    words = [w for w, _ in chosen]
    tokens = sorted({t for _, v in chosen for t in v[2]})
    shown = [quoted(w) if not w.strip() or not any(ch.isalnum() for ch in w) else w for w in words[:LABEL_WORDS]]
    label = ", ".join(shown) + (f" +{len(words) - LABEL_WORDS}" if len(words) > LABEL_WORDS else "")
    return Explanation(feature_id, label, words, tokens, "token", None)


def predicts(explanation: Explanation, windows: np.ndarray) -> np.ndarray:
    """Whether the explanation predicts activation in each window (rows of token ids)."""
    windows = np.atleast_2d(windows)
    if not explanation.tokens:
        return np.zeros(windows.shape[0], dtype=bool)
    hit = np.isin(windows, np.asarray(explanation.tokens))
    if explanation.view == "after":
        hit[:, -1] = False  # the token after must be inside the window
    return np.asarray(hit.any(axis=1))  # numpy stubs type any(axis=...) as a scalar or an array


def balanced_accuracy(pos_pred: np.ndarray, neg_pred: np.ndarray) -> float | None:
    if pos_pred.size == 0 or neg_pred.size == 0:
        return None
    return 0.5 * (float(np.mean(pos_pred)) + float(np.mean(~neg_pred)))


def negative_windows(index: FeatureIndex, feature_id: int, exclude: Iterable[int], n: int, width: int, seed: int = 0) -> np.ndarray:
    """`n` random corpus windows of `width` tokens (BOS excluded) from contexts not in `exclude`."""
    contexts = index.contexts
    first = index.first_position
    usable = contexts.shape[1] - first - width
    excluded = np.zeros(contexts.shape[0], dtype=bool)
    excluded[[c for c in exclude if 0 <= c < contexts.shape[0]]] = True
    pool = np.flatnonzero(~excluded[: index.contexts_done]) if index.contexts_done else np.flatnonzero(~excluded)
    if pool.size == 0 or usable < 0:
        return np.zeros((0, width), dtype=np.int64)
    rng = np.random.default_rng([seed, int(feature_id)])
    rows = pool[rng.integers(0, pool.size, size=n)]
    starts = first + rng.integers(0, usable + 1, size=n)
    return contexts[rows[:, None], starts[:, None] + np.arange(width)[None, :]]


def score_explanation(explanation: Explanation, index: FeatureIndex, positives: list[ContextExample], exclude: Iterable[int], seed: int = 0) -> Explanation:
    """Set the explanation's detection score (balanced accuracy) from held-out contexts."""
    positives = [e for e in positives if e.activation > 0]
    if len(positives) < 2:
        explanation.score = None
        return explanation
    width = int(min(DETECTION_WIDTH, *(len(e.window_tokens) for e in positives)))
    pos = np.stack([_window_at_peak(e, width) for e in positives])
    n_neg = max(MIN_NEGATIVES, len(positives))
    neg = negative_windows(index, explanation.feature_id, exclude, n_neg, width, seed)
    explanation.score = balanced_accuracy(predicts(explanation, pos), predicts(explanation, neg))
    explanation.positives, explanation.negatives = len(positives), int(neg.shape[0])
    return explanation


def _window_at_peak(e: ContextExample, width: int) -> np.ndarray:
    """`width` tokens of the example's window with the peak second to last (or as near as fits)."""
    start = int(np.clip(e.max_index - width + 2, 0, len(e.window_tokens) - width))
    return e.window_tokens[start : start + width]


def _top_words(feature_id: int, examples: list[ContextExample], text: TokenText, n: int = 8) -> list[list[Any]]:
    acc: dict[str, list[float]] = {}
    for e in examples:
        if e.activation <= 0:
            continue
        w = peak_word(text, e.window_tokens, e.max_index)
        a = acc.setdefault(w, [0, 0.0])
        a[0] += 1
        a[1] += e.activation
    ranked = sorted(acc.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:n]
    return [[w, int(c), s / c] for w, (c, s) in ranked]


def unigram_counts(index: FeatureIndex) -> np.ndarray:
    """How often each token id occurs in the indexed corpus (BOS excluded)."""
    body = index.contexts[: index.contexts_done or index.n_contexts, index.first_position :]
    return np.bincount(body.reshape(-1).astype(np.int64), minlength=int(body.max(initial=0)) + 1).astype(np.float64)


def explain_one(index: FeatureIndex, feature_id: int, unigram: np.ndarray, text: TokenText, seed: int = 0) -> Explanation:
    stats = index.feature(feature_id)
    train, held = stats.top[0::2], stats.top[1::2]
    explanation = explain_feature(feature_id, train, stats.samples, unigram, text)
    exclude = {e.context_id for e in stats.top} | {e.context_id for e in stats.samples}
    score_explanation(explanation, index, held + list(stats.samples), exclude, seed)
    explanation.top_words = _top_words(feature_id, list(stats.top) + list(stats.samples), text)
    return explanation


def iter_explanations(index: FeatureIndex, tokenizer: Any, features: Iterable[int] | None = None, label: str = "explaining features") -> Generator[Progress, None, dict[int, Explanation]]:
    """Explain and score features (default: every live one); yields Progress, returns {id: Explanation}."""
    feature_ids = [int(f) for f in (index.live_features() if features is None else features)]
    unigram = unigram_counts(index)
    text = TokenText(tokenizer)
    out: dict[int, Explanation] = {}
    began = time.perf_counter()
    last = 0.0
    for i, f in enumerate(feature_ids):
        out[f] = explain_one(index, f, unigram, text)
        now = time.perf_counter()
        if now - last >= 0.1:
            last = now
            yield Progress(label, i + 1, len(feature_ids), "features", now - began)
    yield Progress(label, len(feature_ids), len(feature_ids), "features", time.perf_counter() - began)
    return out


# -- the cache --------------------------------------------------------------------------


def explanations_path(index: FeatureIndex, source: str = SOURCE_AUTO):
    key = cache.cache_key(purpose="explanations", index=index.meta.get("key"), format=EXPLAIN_FORMAT, source=source)
    return cache.cache_path("explanations", key, ".json"), key


def read_explanations(index: FeatureIndex, source: str = SOURCE_AUTO) -> dict[int, Explanation] | None:
    """Cached explanations for this (complete) index, or None (missing, damaged, other key)."""
    if not index.complete:
        return None
    path, key = explanations_path(index, source)
    data = cache.read_json(path)
    if not isinstance(data, dict) or data.get("key") != key or data.get("format") != EXPLAIN_FORMAT:
        return None
    try:
        out = {int(f): Explanation.from_dict(d) for f, d in data["features"].items()}
    except (KeyError, TypeError, ValueError):
        return None
    if any(f < 0 or f >= index.d_sae or e.feature_id != f for f, e in out.items()):
        return None
    return out


def write_explanations(index: FeatureIndex, explanations: dict[int, Explanation], source: str = SOURCE_AUTO, extra: dict[str, Any] | None = None) -> None:
    if not index.complete:
        return
    path, key = explanations_path(index, source)
    blob = {"key": key, "format": EXPLAIN_FORMAT, "source": source, "features": {str(f): e.as_dict() for f, e in sorted(explanations.items())}}
    if extra:
        blob.update(extra)
    cache.write_entry(path, blob)  # checksummed; one that cannot be written only costs a recomputation


def explain_index(session: "Session", index: FeatureIndex, use_cache: bool = True) -> Generator[Progress, None, dict[int, Explanation]]:
    """Every live feature's explanation and score: from the cache, or computed now (and cached)."""
    if use_cache:
        cached = read_explanations(index)
        if cached is not None:
            return cached
    out = yield from iter_explanations(index, session.tokenizer)
    if use_cache:
        write_explanations(index, out)
    return out


def load_explanations(session: "Session", index: FeatureIndex, on_progress=None) -> dict[int, Explanation]:
    """`explain_index` driven to the end (plain synchronous code, for the worker or the CLI)."""
    return drive(explain_index(session, index), on_progress)


# -- the report's figure ---------------------------------------------------------------


def explained_summary(explanations: dict[int, Explanation], live: int | None = None, bar: float = EXPLAINED_BAR) -> dict[str, Any]:
    """The report's "explained features": live features whose detection score is >= bar."""
    scored = [e.score for e in explanations.values() if e.score is not None]
    explained = sum(1 for score in scored if score >= bar)
    live = len(explanations) if live is None else int(live)
    return {
        "explained": explained,
        "scored": len(scored),
        "live": live,
        "fraction": explained / live if live else 0.0,
        "bar": bar,
        "how": (
            "detection balanced accuracy of the automatic explanation on held-out contexts "
            f"(index top contexts at odd ranks and quantile samples vs random contexts) >= {bar}"
        ),
    }


def display_label(explanation: Explanation | None, registry_name: str | None = None) -> str | None:
    """What to show beside a feature id: the registry's name wins; else the automatic label, marked."""
    if registry_name:
        return registry_name
    if explanation is None or not explanation.label:
        return None
    mark = "auto" if explanation.source == SOURCE_AUTO else explanation.source
    return f"{explanation.label} ({mark})"


# -- the benchmark ------------------------------------------------------------------------


def benchmark(session: "Session", index: FeatureIndex, estimate_features: int = 32_768) -> dict[str, Any]:
    """Seconds to explain and score every live feature of `index` (no cache), against its build.

    For saetui.bench: `ratio` is explanation seconds / the index's recorded build seconds
    (target <= 0.5); `estimate_seconds` scales the per-feature time to `estimate_features`
    (the work per feature depends on K and the window, not on d_sae).
    """
    tokenizer = getattr(session, "tokenizer", None) or session.runner.tokenizer
    began = time.perf_counter()
    out = drive(iter_explanations(index, tokenizer))
    seconds = time.perf_counter() - began
    build = float(index.meta.get("build_seconds") or 0.0)
    per_feature = seconds / max(len(out), 1)
    return {
        "figure": "explanations and detection scores, all live features",
        "features": len(out),
        "seconds": seconds,
        "per_feature_ms": per_feature * 1e3,
        "index_build_seconds": build,
        "ratio_to_build": seconds / build if build else None,
        "target_ratio": 0.5,
        "estimate_features": int(estimate_features),
        "estimate_seconds": per_feature * estimate_features,
        "explained": explained_summary(out, len(out))["explained"],
    }
