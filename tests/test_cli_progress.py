"""Progress on the command line: Rich's display on a terminal, nothing when stderr is redirected;
and the command line's modules import nothing from Textual."""

from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from saetui.cli import main
from saetui.engine.worker import Progress
from saetui.ui.progress import cli_progress


def _feed(console: Console) -> bool:
    with cli_progress(console) as progress:
        progress(Progress("loading", 0, 0, "steps", 0.0))
        progress(Progress("evaluating", 0, 1_000, "tokens", 0.0))
        progress(Progress("evaluating", 1_000, 1_000, "tokens", 0.5))
    return progress.reported


def test_redirected_stderr_gets_nothing():
    out = io.StringIO()
    assert _feed(Console(file=out, width=80))  # the progress arrived...
    assert out.getvalue() == ""  # ...and nothing was drawn


def test_a_terminal_gets_description_count_and_rate():
    out = io.StringIO()
    _feed(Console(file=out, width=80, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert "evaluating" in text and "1000/1000" in text
    assert "2,000 tokens/s" in text  # 1,000 tokens in 0.5 s, the job's own rate


def test_eval_shows_progress_on_a_terminal_only(tiny_setup, tmp_path, capsys, monkeypatch):
    args = ["eval", tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", "32", "--max-tokens", "256", "--no-cache"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    err = capsys.readouterr().err
    assert "evaluating" not in err and "tokens/s" not in err and "\x1b" not in err
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich treats stderr as a terminal
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    err = capsys.readouterr().err
    assert "evaluating" in err and "tokens/s" in err


def test_the_command_line_imports_nothing_from_textual():
    code = (
        "import sys\n"
        "import saetui.cli, saetui.commands.eval, saetui.commands.top_texts, saetui.commands.top_features\n"
        "import saetui.commands.registry, saetui.ui.report, saetui.ui.progress, saetui.ui.histogram\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual' or m.startswith(('saetui.widgets', 'saetui.screens'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
