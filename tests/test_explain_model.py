"""`--explainer MODEL`: the logic with a deterministic stand-in, the plumbing with a tiny random chat model."""

from __future__ import annotations

import json
import re

import pytest

from support import make_model_dir
from test_explain import TOKENS, _planted_index

from saetui.engine.worker import drive
from saetui.engine.explain_model import MARK_CLOSE, MARK_OPEN, ChatModel, iter_model_explanations, model_cache_path


class StandIn:
    """Labels a feature by its first marked token; says yes when the label's word is in the text."""

    name = "stand-in"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.prompts = 0
        self.fail_after = fail_after

    def complete(self, prompts, max_tokens):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        self.prompts += len(prompts)
        out = []
        for p in prompts:
            if p.startswith("A neural network feature is described as: "):
                label = p.split(": ", 1)[1].split("\n", 1)[0]
                text = p.split("Text: ", 1)[1].rsplit("\n\nDoes", 1)[0]
                out.append("Yes." if label and label in text else "No")
            else:
                marked = re.findall(re.escape(MARK_OPEN) + r"(.*?)" + re.escape(MARK_CLOSE), p)[1:]  # [0]: the instructions' example
                out.append(marked[0].strip() + "\nmore text" if marked else "")
        return out


def test_stand_in_explains_and_scores_by_detection():
    index = _planted_index()
    ex = drive(iter_model_explanations(index, TOKENS, StandIn(), batch_size=5))
    assert set(ex) == set(index.live_features().tolist())
    city = ex[0]
    assert city.label in {"Paris", "Tokyo", "Berlin"} and city.source == "model:stand-in"
    # Its label is one city of three: it detects that city's contexts and no random ones.
    assert city.score is not None and 0.5 < city.score < 1.0
    for e in ex.values():
        assert e.score is None or 0.0 <= e.score <= 1.0


def test_interrupted_run_resumes_from_the_cache(monkeypatch):
    from saetui.engine import explain_model

    monkeypatch.setattr(explain_model, "CHUNK_FEATURES", 1)  # a checkpoint after each feature
    index = _planted_index()
    first = StandIn(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        drive(iter_model_explanations(index, TOKENS, first, batch_size=64))
    path, key = model_cache_path(index, first)
    saved = json.loads(path.read_text())["data"]  # the cache's checksummed envelope
    assert saved["key"] == key and not saved["complete"] and saved["features"]
    second = StandIn()
    progress = []
    ex = drive(iter_model_explanations(index, TOKENS, second, batch_size=64), progress.append)
    assert set(ex) == set(index.live_features().tolist())
    assert "resumed" in progress[-1].label and progress[-1].done == progress[-1].total
    full = StandIn()
    drive(iter_model_explanations(index, TOKENS, full, batch_size=64, use_cache=False))
    assert second.prompts < full.prompts  # the saved features were not asked again
    third = StandIn()
    drive(iter_model_explanations(index, TOKENS, third, batch_size=64))
    assert third.calls == 0  # all cached


def test_tiny_random_chat_model_plumbing(tmp_path, tiny_setup):
    folder = make_model_dir(tmp_path / "chat", layers=1)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}Answer:{% endif %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    chat = ChatModel(str(folder))
    replies = chat.complete(["Is this a test?", "Say something."], max_tokens=4)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    index = _planted_index()
    # The synthetic index's token ids decode with the chat model's own tokenizer here.
    ex = drive(iter_model_explanations(index, chat.tokenizer, chat, features=[0, 1], batch_size=4, max_tokens=3))
    assert set(ex) == {0, 1}
    for e in ex.values():
        assert e.source == f"model:{folder}" and (e.score is None or 0 <= e.score <= 1)


def test_a_model_without_chat_template_is_a_user_error(tiny_model_dir):
    from saetui.engine.errors import UserError

    with pytest.raises(UserError, match="chat template"):
        ChatModel(str(tiny_model_dir))
