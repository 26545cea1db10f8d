"""Explanations written and scored by a local language model (`--explainer MODEL`), offline.

As SAEBench's auto-interp does with a hosted model, but with any mlx-lm chat model in
the local cache:

1. **explain**: the model reads the feature's top contexts (from the index, the even
   ranks, as the automatic explanations use) with the strongest token of each marked
   `<<like this>>`, and answers with a short label;
2. **detect**: for each held-out context (the top contexts at odd ranks and the quantile
   samples) and as many random corpus windows, the model is asked whether the label
   describes something in the text; the score is the balanced accuracy of its yes/no
   answers, as in `explain.py`.

Prompts are batched (`mlx_lm.batch_generate`), features are done in chunks, and after
each chunk the results so far are checkpointed in the cache, so an interrupted run
(closing the generator, Ctrl-C) resumes where it stopped. Progress (with ETA) is yielded
as `Progress`. The model is reached through a `Completer`: anything with
`complete(prompts) -> replies` (tests use a deterministic stand-in).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Generator, Iterable, Protocol, Sequence

import numpy as np

from . import cache
from .errors import UserError
from .explain import Explanation, balanced_accuracy, negative_windows, _window_at_peak, DETECTION_WIDTH, MIN_NEGATIVES
from .index import FeatureIndex
from .worker import Progress

MODEL_FORMAT = 1
CONTEXTS_SHOWN = 10
CHUNK_FEATURES = 8
LABEL_CHARS = 80
MARK_OPEN, MARK_CLOSE = "<<", ">>"

EXPLAIN_PROMPT = (
    "We are studying one feature of a neural network. Below are texts where it is active; "
    "the token where it is most active is marked {open}like this{close}.\n\n{examples}\n\n"
    "In a few words, what does the feature detect? Answer with the short description only."
)
DETECT_PROMPT = (
    "A neural network feature is described as: {label}\n\nText: {text}\n\n"
    "Does the description apply to something in the text? Answer yes or no."
)


class Completer(Protocol):
    name: str

    def complete(self, prompts: Sequence[str], max_tokens: int) -> list[str]: ...


class ChatModel:
    """An mlx-lm chat model from a local folder or the local Hugging Face cache."""

    def __init__(self, model: str, allow_download: bool = False) -> None:
        from mlx_lm import load

        from .model import resolve_model_path

        path = resolve_model_path(model, allow_download=allow_download) if not Path(model).expanduser().is_dir() else Path(model).expanduser()
        self.model, self.tokenizer = load(str(path))  # type: ignore[misc]  # mlx_lm types load() as a 2- or 3-tuple; 2 without return_config
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"The explainer model {model} has no chat template", "Pass an instruction-tuned (chat) mlx-lm model to --explainer")
        self.name = str(model)
        config = Path(path) / "config.json"
        self.identity = [str(Path(path).resolve()), hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.exists() else None]

    def complete(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        from mlx_lm.generate import batch_generate

        ids = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts]
        return list(batch_generate(self.model, self.tokenizer, ids, max_tokens=max_tokens).texts)


def _decode(tokenizer: Any, ids: Iterable[int]) -> str:
    try:
        return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
    except TypeError:
        return tokenizer.decode([int(i) for i in ids])


def marked_text(tokenizer: Any, tokens: np.ndarray, peak: int) -> str:
    """The window's text with its peak token marked."""
    return _decode(tokenizer, tokens[:peak]) + MARK_OPEN + _decode(tokenizer, tokens[peak : peak + 1]) + MARK_CLOSE + _decode(tokenizer, tokens[peak + 1 :])


def clean_label(reply: str) -> str:
    """The first non-empty line of a reply, unquoted and cut to LABEL_CHARS."""
    from ..ui.safe_text import visible

    for line in reply.splitlines():
        line = line.strip().strip("\"'`*").strip()
        if line:
            return visible(line)[:LABEL_CHARS]
    return ""


def says_yes(reply: str) -> bool:
    words = reply.strip().lower().lstrip("\"'*` ").split()
    return bool(words) and words[0].rstrip(".,!:;") in ("yes", "y", "true")


def model_cache_path(index: FeatureIndex, completer: Completer) -> tuple[Path, str]:
    key = cache.cache_key(purpose="model-explanations", index=index.meta.get("key"), format=MODEL_FORMAT, model=getattr(completer, "identity", completer.name), prompts=[EXPLAIN_PROMPT, DETECT_PROMPT, CONTEXTS_SHOWN, DETECTION_WIDTH])
    return cache.cache_path("explanations", key, ".model.json"), key


def _read(path: Path, key: str) -> tuple[dict[int, Explanation], bool]:
    data = cache.read_json(path)
    if not isinstance(data, dict) or data.get("key") != key:
        return {}, False
    try:
        return {int(f): Explanation.from_dict(d) for f, d in data["features"].items()}, bool(data.get("complete"))
    except (KeyError, TypeError, ValueError):
        return {}, False


def _write(path: Path, key: str, done: dict[int, Explanation], complete: bool) -> None:
    blob = {"key": key, "format": MODEL_FORMAT, "complete": complete, "features": {str(f): e.as_dict() for f, e in sorted(done.items())}}
    cache.write_entry(path, blob)  # checksummed; one that cannot be written only costs a recomputation


def iter_model_explanations(
    index: FeatureIndex,
    tokenizer: Any,
    completer: Completer,
    features: Sequence[int] | None = None,
    batch_size: int = 8,
    max_tokens: int = 24,
    use_cache: bool = True,
) -> Generator[Progress, None, dict[int, Explanation]]:
    """Model-written, model-scored explanations (see the module's doc); resumable through the cache."""
    feature_ids = [int(f) for f in (index.live_features() if features is None else features)]
    path, key = model_cache_path(index, completer)
    done, _ = _read(path, key) if use_cache else ({}, False)
    done = {f: e for f, e in done.items() if f in set(feature_ids)}
    todo = [f for f in feature_ids if f not in done]
    source = f"model:{completer.name}"
    began = time.perf_counter()
    resumed = len(done)
    title = f"explaining with {completer.name}" + (f" (resumed at {resumed:,})" if resumed else "")
    total = len(feature_ids) - resumed  # progress and ETA count this run's work
    yield Progress(title, 0, total, "features", 0.0)

    def ask(prompts: list[str]) -> list[str]:
        replies: list[str] = []
        for s in range(0, len(prompts), batch_size):
            replies.extend(completer.complete(prompts[s : s + batch_size], max_tokens))
        return replies

    try:
        for c in range(0, len(todo), CHUNK_FEATURES):
            chunk = todo[c : c + CHUNK_FEATURES]
            stats = {f: index.feature(f) for f in chunk}
            prompts = []
            for f in chunk:
                shown = stats[f].top[0::2][:CONTEXTS_SHOWN]
                examples = "\n".join(f"{i + 1}. {marked_text(tokenizer, e.window_tokens, e.max_index)}" for i, e in enumerate(shown))
                prompts.append(EXPLAIN_PROMPT.format(open=MARK_OPEN, close=MARK_CLOSE, examples=examples))
            labels = [clean_label(r) for r in ask(prompts)]
            detect: list[str] = []
            plan: list[tuple[int, int, int]] = []  # (feature, positives, negatives)
            for f, label in zip(chunk, labels):
                st = stats[f]
                positives = [e for e in st.top[1::2] + st.samples if e.activation > 0]
                if not label or len(positives) < 2:
                    plan.append((f, 0, 0))
                    continue
                width = int(min(DETECTION_WIDTH, *(len(e.window_tokens) for e in positives)))
                exclude = {e.context_id for e in st.top} | {e.context_id for e in st.samples}
                neg = negative_windows(index, f, exclude, max(MIN_NEGATIVES, len(positives)), width)
                texts = [_decode(tokenizer, _window_at_peak(e, width)) for e in positives] + [_decode(tokenizer, row) for row in neg]
                detect.extend(DETECT_PROMPT.format(label=label, text=t) for t in texts)
                plan.append((f, len(positives), int(neg.shape[0])))
            answers = [says_yes(r) for r in ask(detect)] if detect else []
            at = 0
            for (f, n_pos, n_neg), label in zip(plan, labels):
                pos = np.array(answers[at : at + n_pos], dtype=bool)
                neg = np.array(answers[at + n_pos : at + n_pos + n_neg], dtype=bool)
                at += n_pos + n_neg
                score = balanced_accuracy(pos, neg) if n_pos else None
                words = [w.strip() for w in label.split(",") if w.strip()]
                done[f] = Explanation(f, label, words, [], "model", score, n_pos, n_neg, source)
            if use_cache:
                _write(path, key, done, complete=False)
            yield Progress(title, len(done) - resumed, total, "features", time.perf_counter() - began)
    finally:
        if use_cache and len(done) > resumed:
            _write(path, key, done, complete=len(done) == len(feature_ids))
    return done
