"""`saetui index`: builds the index headless, prints a summary (or JSON), and `top-texts`
afterwards reads that very index instead of building one."""

from __future__ import annotations

import json
from pathlib import Path

from saetui.cli import main
from saetui.engine.index import read_index

CONTEXT = "48"
BUDGET = str(48 * 24)


def common(tiny_setup):
    return [tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT, "--max-tokens", BUDGET]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_index_json_then_top_texts_reads_it_without_building(capsys, tiny_setup):
    code, out, err = run(capsys, "index", *common(tiny_setup), "--json")
    assert code == 0, err
    data = json.loads(out)
    path = Path(data["cache_file"])
    index = read_index(path)  # a complete index file, as the summary says
    live = int((index.count > 0).sum())
    assert data["built"] is True and data["ranks"] == 1
    assert data["tokens_indexed"] == index.tokens_seen == index.n_contexts * (index.context_len - index.first_position)
    assert data["live_features"] == live and data["dead_features"] == index.d_sae - live and data["d_sae"] == index.d_sae
    assert data["contexts"] == index.n_contexts and data["budget"] == int(BUDGET) and data["top_k"] == 100
    assert data["seconds"] >= 0 and set(data) >= {"tokens_indexed", "live_features", "dead_features", "seconds", "cache_file"}
    mtime = path.stat().st_mtime_ns

    # A second `index` finds it; `top-texts` with the same settings answers from it.
    code, out, err = run(capsys, "index", *common(tiny_setup), "--json")
    assert code == 0 and json.loads(out)["built"] is False and json.loads(out)["cache_file"] == str(path)
    fid = int(index.live_features()[0])
    code, out, err = run(capsys, "top-texts", tiny_setup["sae"], str(fid), "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT, "--max-tokens", BUDGET, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["index"] == str(path) and path.stat().st_mtime_ns == mtime
    assert shown["count"] == int(index.count[fid])
    assert [r["activation"] for r in shown["results"]] == [e.activation for e in index.feature(fid).top[:20]]


def test_index_prints_a_summary(capsys, tiny_setup):
    code, out, err = run(capsys, "index", *common(tiny_setup))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("Indexed ") and "built in" in lines[0] and "tokens/s" in lines[0]
    assert "live" in lines[1] and "dead" in lines[1]
    path = Path(lines[2].removeprefix("Cache file: "))
    assert path.exists() and read_index(path).complete


def test_index_bad_arguments_are_one_line(capsys, tiny_setup):
    for flag, value, needle in (("--top-k", "0", "--top-k 0"), ("--max-tokens", "0", "--max-tokens 0")):
        code, out, err = run(capsys, "index", tiny_setup["sae"], "--dataset", tiny_setup["dataset"], flag, value)
        lines = [line for line in err.strip().splitlines() if not line.startswith("saetui: note:")]
        assert code == 2 and len(lines) == 1 and needle in lines[0] and out == ""
