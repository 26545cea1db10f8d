"""`saetui steer` and `saetui ablate`: JSON shapes against the API, text output, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saetui.cli import main
from support import open_session

from saetui.engine.intervene import Intervention, steer, text_effects


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("saetui: note:")]
    assert len(lines) == 1 and lines[0].startswith("saetui: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def common(tiny_setup, positional):
    return [tiny_setup["sae"], positional, "--dataset", tiny_setup["dataset"], "--context-len", "32"]


@pytest.fixture(scope="module")
def engine(tiny_setup):
    eng = open_session(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=32)
    yield eng
    eng.close()


def test_steer_json_matches_the_api(capsys, tiny_setup, engine):
    argv = ["steer", *common(tiny_setup, "The cat sat"), "--feature", "3:add:40", "--feature", "5:ablate",
            "--max-new-tokens", "6", "--temperature", "0.8", "--seed", "7", "--samples", "2", "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"prompt", "interventions", "clean", "steered"}
    assert data["prompt"] == "The cat sat"
    assert data["interventions"] == [{"feature_id": 3, "mode": "add", "value": 40.0}, {"feature_id": 5, "mode": "ablate", "value": None}]
    assert len(data["clean"]) == len(data["steered"]) == 2
    assert all(set(entry) == {"text"} for entry in data["clean"] + data["steered"])
    expected = engine.job(steer, "The cat sat", [Intervention(3, "add", 40.0), Intervention(5, "ablate")], 6, 0.8, 7, 2)
    assert [e["text"] for e in data["clean"]] == expected.clean
    assert [e["text"] for e in data["steered"]] == expected.steered
    assert expected.clean != expected.steered  # a strong addition changes the continuation


def test_steer_text_output(capsys, tiny_setup):
    code, out, err = run(capsys, "steer", *common(tiny_setup, "The cat"), "--feature", "3:scale:1", "--max-new-tokens", "4")
    assert code == 0, err
    assert "clean:" in out and "steered:" in out and "scaled by 1" in out
    clean = next(line for line in out.splitlines() if line.startswith("clean:"))[len("clean:"):].strip()
    steered = next(line for line in out.splitlines() if line.startswith("steered:"))[len("steered:"):].strip()
    assert clean == steered  # scale:1 changes nothing


def test_ablate_json_matches_the_api(capsys, tiny_setup, engine):
    text = "Paris is the capital of France."
    code, out, err = run(capsys, "ablate", *common(tiny_setup, text), "--feature", "4", "--feature", "9:clamp:2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"text", "tokens", "total_loss_change"}
    assert data["text"] == text
    expected = engine(text_effects, text, [Intervention(4, "ablate"), Intervention(9, "clamp", 2.0)])
    assert [t["token"] for t in data["tokens"]] == expected.tokens
    assert "".join(t["token"] for t in data["tokens"]) == text
    for entry, c, i, k in zip(data["tokens"], expected.clean_logprob, expected.intervened_logprob, expected.kl):
        assert set(entry) == {"token", "clean_logprob", "intervened_logprob", "kl"}
        assert entry["clean_logprob"] == pytest.approx(c, abs=1e-5)
        assert entry["intervened_logprob"] == pytest.approx(i, abs=1e-5)
        assert entry["kl"] == pytest.approx(k, abs=1e-6) and entry["kl"] >= 0
    total = sum(t["clean_logprob"] - t["intervened_logprob"] for t in data["tokens"])
    assert data["total_loss_change"] == pytest.approx(total, abs=1e-4)
    assert np.isfinite(data["total_loss_change"])


def test_ablate_text_output(capsys, tiny_setup):
    code, out, err = run(capsys, "ablate", *common(tiny_setup, "The cat sat on the mat."), "--feature", "4")
    assert code == 0, err
    assert "Total loss change" in out and "ablated" in out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["steer", "PROMPT", "--feature", "3:boost:2"], ["Unknown intervention mode"]),
        (["steer", "PROMPT", "--feature", "3"], ["names no mode"]),
        (["steer", "PROMPT", "--feature", "3:clamp:inf"], ["not finite"]),
        (["steer", "PROMPT", "--feature", "3:clamp:x"], ["not a number"]),
        (["steer", "PROMPT", "--feature", "9999:ablate"], ["Unknown feature 9999", "256 features"]),
        (["steer", "PROMPT"], ["No intervention given"]),
        (["steer", " ", "--feature", "3:ablate"], ["prompt is empty"]),
        (["steer", "PROMPT", "--feature", "3:ablate", "--max-new-tokens", "0"], ["too small"]),
        (["steer", "PROMPT", "--feature", "3:ablate", "--max-new-tokens", "100000"], ["context of 512"]),
        (["ablate", "PROMPT", "--feature", "3:scale"], ["needs a value"]),
        (["ablate", "PROMPT", "--feature", "9999"], ["Unknown feature 9999"]),
        (["ablate", "", "--feature", "3"], ["text is empty"]),
    ],
)
def test_bad_input_is_one_line(capsys, tiny_setup, argv, needles):
    command, positional, *rest = argv
    code, out, err = run(capsys, command, *common(tiny_setup, positional.replace("PROMPT", "The cat")), *rest)
    one_line_error(code, err, *needles)
