"""Corpus engine: local files through datasets, text columns, the BOS policy and budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saetui.engine.corpus import load_texts, tokenize_corpus
from saetui.engine.errors import UserError
from saetui.engine.model import load_model

LINES = ["The cat sat on the mat.", "Paris is in France.", "", "2 + 2 = 4"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_model(str(tiny_model_dir)).tokenizer


def test_local_formats_give_the_same_texts(tmp_path):
    import pandas as pd

    (tmp_path / "a.txt").write_text("\n".join(LINES) + "\n")
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(LINES)))
    (tmp_path / "a.json").write_text(json.dumps([{"body": t, "n": i} for i, t in enumerate(LINES)]))
    pd.DataFrame({"n": range(len(LINES)), "content": LINES}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"text": LINES}).to_parquet(tmp_path / "a.parquet")
    want = [t for t in LINES if t]
    for name in ("a.txt", "a.jsonl", "a.json", "a.csv", "a.parquet"):
        assert load_texts(str(tmp_path / name)) == want, name


def test_text_column_named(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"a": t, "b": t.upper()}) for t in LINES if t))
    assert load_texts(str(tmp_path / "d.jsonl"), text_column="b")[0] == "THE CAT SAT ON THE MAT."
    with pytest.raises(UserError, match="no column 'c'.*--text-column"):
        load_texts(str(tmp_path / "d.jsonl"), text_column="c")


def test_no_text_column(tmp_path):
    (tmp_path / "n.jsonl").write_text("\n".join(json.dumps({"x": i}) for i in range(3)))
    with pytest.raises(UserError, match="no text column"):
        load_texts(str(tmp_path / "n.jsonl"))


def test_bad_datasets(tmp_path):
    with pytest.raises(UserError, match="Dataset file not found"):
        load_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_texts(str(tmp_path / "empty.txt"))
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(UserError, match="no non-empty text"):
        load_texts(str(tmp_path / "blank.txt"))
    (tmp_path / "x.docx").write_text("hello")
    with pytest.raises(UserError, match="cannot read .docx"):
        load_texts(str(tmp_path / "x.docx"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{broken\n')
    with pytest.raises(UserError, match="Could not read dataset"):
        load_texts(str(tmp_path / "broken.jsonl"))


def test_uncached_hub_dataset_is_a_clear_error():
    with pytest.raises(UserError, match="not available offline"):
        load_texts("saetui-no-such-dataset:cfg:validation")


def test_contexts_start_with_bos_and_follow_the_token_stream(tokenizer):
    texts = ["The cat sat on the mat. " * 3, "Paris is the capital of France."] * 10
    corpus = tokenize_corpus(texts, tokenizer, context_len=16, max_tokens=None)
    assert (corpus.contexts[:, 0] == tokenizer.bos_token_id).all()
    assert corpus.first_position == 1
    # Independent: plain tokens of each text, EOS after each, cut into 15-token bodies.
    stream = []
    for t in texts:
        stream += tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id]
    n = len(stream) // 15
    np.testing.assert_array_equal(corpus.contexts[:, 1:], np.array(stream[: n * 15]).reshape(n, 15))


def test_budget_limits_tokens_and_reports_shortfall(tokenizer):
    texts = ["The cat sat on the mat."] * 50
    corpus = tokenize_corpus(texts, tokenizer, context_len=16, max_tokens=64)
    assert corpus.n_tokens == 64 and corpus.notes == []
    big = tokenize_corpus(texts, tokenizer, context_len=16, max_tokens=10**6)
    assert big.n_tokens < 10**6 and "fewer than the budget" in big.notes[0]
    with pytest.raises(UserError, match="smaller than one context"):
        tokenize_corpus(texts, tokenizer, context_len=16, max_tokens=8)
    with pytest.raises(UserError, match="fewer than one context"):
        tokenize_corpus(["hi"], tokenizer, context_len=64)
