"""`saetui eval`: the quality report in the terminal, and the JSON report written.

The report is the same one the app's first screen shows (`engine.evaluate`), printed
with the same Rich rendering (`saetui.ui.report`): each metric with its band, the
guide's 0-5 score and rating, its next step, the troubleshooting advice for whatever
is poor, and the two distributions. Progress goes to stderr (`saetui.ui.progress`). The
JSON goes to `--json PATH`, or beside the SAE as the guide's `<sae>_evaluation.json`
(the current folder for the demo, or when the SAE's folder is not writable); it is
written atomically, so a failed or interrupted run never leaves half a file.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from ..ui.progress import cli_progress
from ..ui.report import render_report
from ..ui.safe_text import visible


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..engine.evaluate import DEFAULT_EVAL_TOKENS

    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help=f"evaluation budget in tokens, BOS included (default {DEFAULT_EVAL_TOKENS:,})",
    )
    parser.add_argument("--json", metavar="PATH", help="where to write the JSON report (default: <sae>_evaluation.json beside the SAE)")
    parser.add_argument("--no-cache", action="store_true", help="recompute even if this report is cached")


def run(args: argparse.Namespace, engine) -> int:
    from ..engine.errors import UserError
    from ..engine.evaluate import evaluate, write_report_json

    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UserError(f"--max-tokens {args.max_tokens} leaves nothing to evaluate", "Pass a positive number of tokens")
    if args.json:
        check_json_target(args.json)  # before the evaluation, not after it
    with cli_progress(Console(stderr=True, highlight=False)) as progress:
        session = engine.call_job("loading", engine.opening, on_progress=progress)
        report = engine.call_job("evaluating", evaluate, session, args.max_tokens, not args.no_cache, on_progress=progress)
    out = Console(highlight=False)
    out.print(render_report(report))
    path = write_report_json(report, session, args.json)
    out.print(Text.assemble(("JSON report: ", "bold"), visible(str(path))), soft_wrap=True)
    return 0


def check_json_target(path: str) -> None:
    from pathlib import Path

    from ..engine.cache import check_writable_file
    from ..engine.errors import UserError

    target = Path(path).expanduser()
    try:
        check_writable_file(target)
    except OSError as exc:
        raise UserError(f"Cannot write the report to {target} ({exc.strerror})", "Pass --json with a writable file path") from None
