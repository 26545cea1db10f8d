"""Corpora: texts read through `datasets`, tokenised into fixed-length contexts.

BOS policy: every context starts with the tokenizer's BOS token (when it has one)
followed by `context_len - 1` tokens cut from the stream of all documents, each
document followed by EOS. Documents are tokenised without special tokens, so a
context is `[BOS] + tokens`, whatever the tokenizer's own defaults are. Position 0
(the BOS) is excluded from metrics and feature statistics unless asked otherwise:
activations there are huge and uninformative in most models.

A budget (`max_tokens`) counts every token of every context, BOS included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UserError

LOCAL_LOADERS = {
    ".txt": "text",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}
DEFAULT_DATASET = "wikitext:wikitext-2-raw-v1:validation"
DEFAULT_CONTEXT_LEN = 128


def load_texts(spec: str, text_column: str | None = None, allow_download: bool = False) -> list[str]:
    """Texts from a local file or a cached Hugging Face dataset `name[:config[:split]]`."""
    path = Path(spec).expanduser()
    if path.suffix.lower() in LOCAL_LOADERS or path.exists():
        dataset = _load_local(path)
    else:
        dataset = _load_hub(spec, allow_download)
    column = _text_column(dataset, text_column, spec)
    texts = [t for t in dataset[column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserError(
            f"Dataset {spec} has no non-empty text in column {column!r}",
            "Use a dataset with text, or name the right column with --text-column",
        )
    return texts


def check_dataset(spec: str) -> None:
    """Cheap checks of a dataset spec, without reading it (for the command line, up front)."""
    path = Path(spec).expanduser()
    if path.suffix.lower() in LOCAL_LOADERS or path.exists():
        _check_local(path)


def _check_local(path: Path) -> None:
    if not path.exists():
        raise UserError(f"Dataset file not found: {path}", "Check the path given to --dataset")
    if path.is_dir():
        raise UserError(
            f"{path} is a directory",
            "Pass --dataset a .txt, .jsonl, .json, .csv or .parquet file, or a Hugging Face name",
        )
    loader = LOCAL_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UserError(
            f"saetui cannot read {path.suffix or 'extension-less'} files as a dataset ({path})",
            "Use a .txt, .jsonl, .json, .csv or .parquet file",
        )
    if path.stat().st_size == 0:
        raise UserError(f"Dataset file {path} is empty", "Pass a file with some text in it")
    if not os.access(path, os.R_OK):
        raise UserError(f"Dataset file {path} is not readable", "Check its permissions")


def _load_local(path: Path) -> Any:
    import datasets

    _check_local(path)
    loader = LOCAL_LOADERS[path.suffix.lower()]
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(loader, data_files=str(path), split="train")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"Could not read dataset {path} as {loader} ({first[:200]})",
            "Check that the file is valid for its extension",
        ) from None


def _load_hub(spec: str, allow_download: bool) -> Any:
    import datasets

    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UserError(
            f"Bad dataset name {spec!r}",
            "Use a local file or a Hugging Face dataset as name[:config[:split]], e.g. wikitext:wikitext-2-raw-v1:validation",
        )
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else None
    datasets.disable_progress_bars()
    if not allow_download:
        # `datasets` reads this at import time in some versions, at call time in others.
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
        _set_offline(datasets)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        how = (
            f"Run once with network: python -c \"import datasets; datasets.load_dataset('{name}', {config!r})\", "
            "or pass --dataset with a local .txt/.jsonl/.csv/.parquet file"
        )
        if allow_download:
            how = "Check the dataset name, config and split"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"Dataset {spec} is not available offline ({first[:160]})", how) from None
    if isinstance(ds, datasets.DatasetDict):
        split = "validation" if "validation" in ds else ("test" if "test" in ds else next(iter(ds)))
        ds = ds[split]
    return ds


def _set_offline(datasets_module: Any) -> None:
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover - older hub versions
        pass
    if hasattr(datasets_module, "config"):
        datasets_module.config.HF_HUB_OFFLINE = True
        if hasattr(datasets_module.config, "HF_DATASETS_OFFLINE"):
            datasets_module.config.HF_DATASETS_OFFLINE = True


def _text_column(dataset: Any, requested: str | None, spec: str) -> str:
    columns = list(dataset.column_names)
    if requested:
        if requested not in columns:
            raise UserError(
                f"Dataset {spec} has no column {requested!r} (columns: {', '.join(columns)})",
                "Pass --text-column with one of those",
            )
        return requested
    if "text" in columns:
        return "text"
    features = getattr(dataset, "features", {}) or {}
    for col in columns:
        feat = features.get(col)
        if getattr(feat, "dtype", None) in ("string", "large_string"):
            return col
    raise UserError(
        f"Dataset {spec} has no text column (columns: {', '.join(columns) or 'none'})",
        "Pass --text-column NAME",
    )


@dataclass
class Corpus:
    """Tokenised contexts (n_contexts, context_len) from a list of texts."""

    name: str
    contexts: np.ndarray  # int32 (n_contexts, context_len)
    bos_id: int | None
    texts_used: int
    tokens_available: int  # tokens the texts held when tokenisation stopped
    budget: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_contexts(self) -> int:
        return int(self.contexts.shape[0])

    @property
    def context_len(self) -> int:
        return int(self.contexts.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.contexts.size)

    @property
    def first_position(self) -> int:
        """The first position that counts in statistics (1 when position 0 is BOS)."""
        return 1 if self.bos_id is not None else 0

    def batches(self, batch_size: int) -> "Sequence[np.ndarray]":
        return [self.contexts[i : i + batch_size] for i in range(0, self.n_contexts, batch_size)]


def tokenize_corpus(
    texts: Sequence[str],
    tokenizer: Any,
    context_len: int = DEFAULT_CONTEXT_LEN,
    max_tokens: int | None = None,
    name: str = "corpus",
) -> Corpus:
    """Cut texts into `[BOS] + tokens` contexts of `context_len`, up to `max_tokens` in all."""
    if context_len < 2:
        raise UserError(f"Context length {context_len} is too short", "Use at least 2 tokens per context")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    body = context_len - (1 if bos_id is not None else 0)
    if max_tokens is not None and max_tokens < context_len:
        raise UserError(
            f"A budget of {max_tokens} tokens is smaller than one context ({context_len} tokens)",
            f"Pass --max-tokens {context_len} or more",
        )
    want_contexts = None if max_tokens is None else max_tokens // context_len
    stream: list[int] = []
    texts_used = 0
    chunk = 256
    for start in range(0, len(texts), chunk):
        batch = list(texts[start : start + chunk])
        encoded = _encode_batch(tokenizer, batch)
        for ids in encoded:
            stream.extend(ids)
            if eos_id is not None:
                stream.append(int(eos_id))
            texts_used += 1
            if want_contexts is not None and len(stream) >= want_contexts * body:
                break
        if want_contexts is not None and len(stream) >= want_contexts * body:
            break
    n = len(stream) // body
    if want_contexts is not None:
        n = min(n, want_contexts)
    notes: list[str] = []
    if n == 0:
        raise UserError(
            f"Dataset {name} has {len(stream)} tokens, fewer than one context of {context_len}",
            "Use a dataset with more text",
        )
    if want_contexts is not None and n < want_contexts:
        notes.append(
            f"The dataset holds {n * context_len:,} tokens in whole contexts, fewer than the budget of "
            f"{max_tokens:,}; using all of them"
        )
    body_tokens = np.asarray(stream[: n * body], dtype=np.int32).reshape(n, body)
    if bos_id is not None:
        contexts = np.concatenate([np.full((n, 1), bos_id, dtype=np.int32), body_tokens], axis=1)
    else:
        contexts = body_tokens
    return Corpus(
        name=name,
        contexts=np.ascontiguousarray(contexts),
        bos_id=None if bos_id is None else int(bos_id),
        texts_used=texts_used,
        tokens_available=len(stream),
        budget=max_tokens,
        notes=notes,
    )


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    inner = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx-lm's TokenizerWrapper
    try:
        out = inner(texts, add_special_tokens=False)["input_ids"]
        return [list(map(int, ids)) for ids in out]
    except TypeError:
        return [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
