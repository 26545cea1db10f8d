"""`saetui top-features --rank`, its JSON rows, `top-texts` explanations, `saetui search`."""

from __future__ import annotations

import json

from test_top_cli import BUDGET, common, engine, one_line_error, run  # noqa: F401 - fixtures

from saetui.engine.explain import load_explanations
from saetui.engine.features import get_top_activating_features
from saetui.engine.index import build_index
from saetui.engine.probe import probe_text
from saetui.engine.ranking import rank_text

TEXT = "Paris is the capital of France."


def test_top_features_json_rows(capsys, tiny_setup, engine):  # noqa: F811
    index = engine.job(build_index)
    explanations = engine(load_explanations, index)
    for rank in ("activation", "distinctive"):
        code, out, err = run(capsys, "top-features", *common(tiny_setup, TEXT), "--max-tokens", BUDGET, "--top-k", "5", "--rank", rank, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["rank"] == rank
        result = engine(probe_text, TEXT, (), engine.session.d_sae)
        expected = rank_text(index, result, rank, 5)
        assert [r["feature_id"] for r in data["features"]] == [r.feature_id for r in expected]
        for row, r in zip(data["features"], expected):
            assert row["peak_token"] == result.tokens[r.peak_index]
            assert row["peak_position"] == r.peak_index + 1  # BOS is position 0
            assert row["score"] == r.score
            e = explanations.get(r.feature_id)
            assert row["explanation"] == (None if e is None else {"label": e.label, "score": e.score, "source": e.source, "view": e.view, "words": e.words})
    # The raw ranking is the guide's function's order.
    guide = engine(get_top_activating_features, TEXT, 5)
    code, out, _ = run(capsys, "top-features", *common(tiny_setup, TEXT), "--max-tokens", BUDGET, "--top-k", "5", "--rank", "activation", "--json")
    assert [(r["feature_id"], r["activation"]) for r in json.loads(out)["features"]] == guide


def test_top_texts_json_has_the_explanation(capsys, tiny_setup, engine):  # noqa: F811
    index = engine.job(build_index)
    explanations = engine(load_explanations, index)
    fid = int(index.live_features()[0])
    code, out, err = run(capsys, "top-texts", *common(tiny_setup, str(fid)), "--max-tokens", BUDGET, "--json")
    assert code == 0, err
    assert json.loads(out)["explanation"]["label"] == explanations[fid].label
    assert json.loads(out)["explanation"]["score"] == explanations[fid].score


def test_search_json_and_bad_input(capsys, tiny_setup, engine):  # noqa: F811
    index = engine.job(build_index)
    explanations = engine(load_explanations, index)
    fid, e = next((f, e) for f, e in sorted(explanations.items()) if e.words and e.words[0].strip().isalpha())
    word = e.words[0].strip()
    code, out, err = run(capsys, "search", *common(tiny_setup, word), "--max-tokens", BUDGET, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert fid in [m["feature_id"] for m in data["matches"]]
    for m in data["matches"]:
        ex = explanations[m["feature_id"]]
        assert word.casefold() in (ex.label + " " + " ".join(ex.words) + " " + " ".join(w for w, _, _ in ex.top_words)).casefold()
    code, _, err = run(capsys, "search", *common(tiny_setup, "  "))
    one_line_error(code, err, "query is empty")


def test_explain_command_json_and_explainer(capsys, tiny_setup, engine, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # progress is drawn only on a terminal
    from support import make_model_dir

    index = engine.job(build_index)
    explanations = engine(load_explanations, index)
    code, out, err = run(capsys, "explain", *common(tiny_setup), "--max-tokens", BUDGET, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {r["feature_id"]: r["label"] for r in data["features"]} == {f: e.label for f, e in explanations.items()}
    assert data["summary"]["explained"] == sum(1 for e in explanations.values() if e.score is not None and e.score >= data["summary"]["bar"])
    folder = make_model_dir(tmp_path / "chat", layers=1)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    code, out, err = run(capsys, "explain", *common(tiny_setup), "--max-tokens", BUDGET, "--explainer", str(folder), "--features", "2", "--batch-size", "4", "--json")
    assert code == 0, err
    rows = json.loads(out)["features"]
    assert len(rows) == 2 and all(r["source"] == f"model:{folder}" for r in rows)
    assert "explaining with" in err
    code, _, err = run(capsys, "explain", *common(tiny_setup), "--explainer", tiny_setup["model"])
    one_line_error(code, err, "chat template")
