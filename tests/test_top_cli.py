"""`saetui top-features` and `saetui top-texts`: output, JSON, cache use, bad input."""

from __future__ import annotations

import json

import pytest

from saetui.cli import main
from support import open_session

from saetui.engine.features import get_top_activating_features, get_top_activating_texts
from saetui.engine.index import build_index

CONTEXT = "48"
BUDGET = str(48 * 24)


def common(tiny_setup, *positional, dataset=None):
    """SAE and the command's positional argument first, as the usage line shows."""
    return [tiny_setup["sae"], *positional, "--dataset", dataset or tiny_setup["dataset"], "--context-len", CONTEXT]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("saetui: note:")]
    assert len(lines) == 1 and lines[0].startswith("saetui: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def engine(tiny_setup):
    eng = open_session(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=int(CONTEXT), max_tokens=int(BUDGET))
    yield eng
    eng.close()


def test_top_texts_json_matches_the_api_and_uses_the_cache(capsys, tiny_setup, engine):
    index = engine.job(build_index)  # the API's index, in this test's cache folder
    fid = int(index.live_features()[0])
    code, out, err = run(capsys, "top-texts", *common(tiny_setup, str(fid)), "--max-tokens", BUDGET, "--top-k", "4", "--json")
    assert code == 0, err
    data = json.loads(out)
    expected = engine(get_top_activating_texts, fid, 4, index)
    assert data["feature_id"] == fid and data["budget"] == int(BUDGET)
    assert [(r["text"], r["activation"], r["token_position"]) for r in data["results"]] == [(t, a, p) for t, a, p in expected]
    assert data["count"] == index.feature(fid).count and data["max_activation"] == index.feature(fid).max_activation
    assert "indexing" not in err  # the API's cached index was used: no build
    for r in data["results"]:
        assert r["token"] in r["window"] and r["window"] in r["text"]


def test_top_texts_builds_with_progress_then_reuses(capsys, tiny_setup, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich draws progress only on a terminal: stderr counts as one
    argv = ["top-texts", *common(tiny_setup, "5"), "--max-tokens", BUDGET, "--top-k", "3"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "indexing" in err and "tokens/s" in err  # the progress bar, on stderr
    lines = out.splitlines()
    assert lines[0].startswith("Feature 5") and "density" in lines[0] and "built in" in lines[0]
    if "never fired" not in out:
        ranked = [line for line in lines if line.lstrip()[:2] in ("1.", "2.", "3.")]
        assert len(ranked) == 3 and all("⟦" in line and "⟧" in line for line in ranked)
    code, out2, err2 = run(capsys, *argv)
    assert code == 0 and "indexing" not in err2 and "cached" in out2.splitlines()[0]


def test_top_features_human_and_json(capsys, tiny_setup, engine):
    text = "Paris is the capital of France."
    # --rank activation is the guide's order (the default ranks by distinctiveness: test_explain_cli.py).
    code, out, err = run(capsys, "top-features", *common(tiny_setup, text), "--top-k", "5", "--rank", "activation", "--json")
    assert code == 0, err
    data = json.loads(out)
    expected = engine(get_top_activating_features, text, 5)
    assert [(f["feature_id"], f["activation"]) for f in data["features"]] == expected
    code, out, err = run(capsys, "top-features", *common(tiny_setup, text), "--top-k", "5", "--rank", "activation")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [(int(r[0]), float(r[2])) for r in rows] == [(f, round(a, 4)) for f, a in expected]


def test_output_never_carries_raw_control_characters(capsys, tiny_setup, tmp_path):
    dataset = tmp_path / "ctl.jsonl"
    lines = ["\x1b[31mred\x1b[0m and [bold]b[/] bell\x07 ok", "more \x1b]8;;http://x\x07link\x1b]8;;\x07 text"] * 100
    dataset.write_text("\n".join(json.dumps({"text": t}) for t in lines) + "\n")
    for fid in ("1", "2", "3"):
        code, out, err = run(capsys, "top-texts", *common(tiny_setup, fid, dataset=str(dataset)), "--max-tokens", BUDGET, "--top-k", "5")
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out
    code, out, err = run(capsys, "top-features", *common(tiny_setup, "\x1b[2Jwiped?", dataset=str(dataset)), "--top-k", "3")
    assert code == 0 and "\x1b" not in out and "\\x1b[2Jwiped?" in out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["top-texts", "abc"], ["'abc' is not a feature id", "0 to 255"]),
        (["top-texts", "256"], ["Feature 256 is out of range", "0 to 255"]),
        (["top-texts", "-3"], ["out of range"]),
        (["top-texts", "1", "--top-k", "0"], ["--top-k 0", "1 to 100"]),
        (["top-texts", "1", "--top-k", "101"], ["--top-k 101", "1 to 100"]),
        (["top-texts", "1", "--max-tokens", "10"], ["smaller than one context", "--max-tokens 48"]),
        (["top-features", "hello", "--top-k", "0"], ["--top-k 0"]),
        (["top-features", "   "], ["The text is empty"]),
    ],
)
def test_bad_input_is_one_line(capsys, tiny_setup, argv, needles):
    name, positional, rest = argv[0], argv[1], argv[2:]
    one_line_error(*run(capsys, name, *common(tiny_setup, positional), *rest)[::2], *needles)


def test_empty_dataset_is_one_line(capsys, tiny_setup, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    one_line_error(*run(capsys, "top-texts", *common(tiny_setup, "1", dataset=str(empty)))[::2], "no non-empty text")
