"""`saetui registry [SAE] [--json]`."""

from __future__ import annotations

import json

from support import write_sae

from saetui.cli import main

ENTRIES = {
    "12": {"name": "cities", "description": "City names", "examples": ["Paris"], "confidence": "high"},
    "7": {"name": "[bold]loud[/bold] \x1b[31mred", "description": "[@click=app.quit]x[/]", "examples": [], "confidence": "low", "extra": 1},
    "meta": {"tool": "other"},
}


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_default_registry_beside_the_sae_as_a_table(capsys, tmp_path):
    sae = write_sae(tmp_path / "my_sae.mlx")
    (tmp_path / "my_sae.features.json").write_text(json.dumps(ENTRIES))
    code, out, err = _run(capsys, "registry", str(sae))
    assert code == 0, err
    assert "2 named features" in out and "my_sae.features.json" in out
    lines = out.splitlines()
    row7 = next(line for line in lines if line.lstrip("│ ").startswith("7 "))
    row12 = next(line for line in lines if "cities" in line)
    assert lines.index(row7) < lines.index(row12)  # by feature id
    assert "[bold]loud[/bold] \\x1b[31mred" in row7 and "\x1b" not in out
    assert "[@click=app.quit]x[/]" in row7
    assert "high" in row12 and "City names" in row12


def test_json_prints_the_whole_file(capsys, tmp_path):
    sae = write_sae(tmp_path / "my_sae.mlx")
    registry = tmp_path / "elsewhere.json"
    registry.write_text(json.dumps(ENTRIES))
    code, out, err = _run(capsys, "registry", str(sae), "--registry", str(registry), "--json")
    assert code == 0, err
    assert json.loads(out) == ENTRIES


def test_empty_registry_says_how_to_name_features(capsys, tmp_path):
    sae = write_sae(tmp_path / "my_sae.mlx")
    code, out, _ = _run(capsys, "registry", str(sae))
    assert code == 0
    assert "No named features" in out and "press e" in out
    code, out, _ = _run(capsys, "registry", str(sae), "--json")
    assert code == 0 and json.loads(out) == {}
    assert not (tmp_path / "my_sae.features.json").exists()  # listing never creates the file


def test_unreadable_registry_and_missing_sae_are_one_line_errors(capsys, tmp_path):
    sae = write_sae(tmp_path / "my_sae.mlx")
    bad = tmp_path / "my_sae.features.json"
    bad.write_text("{oops")
    code, out, err = _run(capsys, "registry", str(sae))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cannot be read" in err and "invalid JSON" in err
    assert bad.read_text() == "{oops"
    code, _, err = _run(capsys, "registry", str(tmp_path / "missing.mlx"))
    assert code == 2 and "SAE not found" in err and err.count("\n") == 1
