"""`saetui eval`: the quality report in the terminal, and the JSON report written.

The report is the same one the app's first screen shows (`engine.evaluate`), printed
with Rich: each metric with its band, the guide's 0-5 score and rating, its next step,
the troubleshooting advice for whatever is poor, and the two distributions. The JSON
goes to `--json PATH`, or beside the SAE as the guide's `<sae>_evaluation.json` (the
current folder for the demo, or when the SAE's folder is not writable); it is written
atomically, so a failed or interrupted run never leaves half a file.
"""

from __future__ import annotations

import argparse

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..ui.safe_text import visible
from .checks import check_context_len


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
    from ..engine.worker import Job

    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UserError(f"--max-tokens {args.max_tokens} leaves nothing to evaluate", "Pass a positive number of tokens")
    if args.json:
        check_json_target(args.json)  # before the evaluation, not after it
    err = Console(stderr=True, highlight=False)
    progress = _ProgressLine(err)
    job = Job("evaluating", progress)
    try:
        engine.worker.call(engine.open_model)
        check_context_len(engine)  # before any work at that length
        engine.worker.call(engine.open, Job("loading", progress))
        report = engine.worker.call(evaluate, engine, args.max_tokens, job, not args.no_cache)
    finally:
        progress.done()
    out = Console(highlight=False)
    out.print(render_report(report.data, cached=report.from_cache))
    path = write_report_json(report, engine, args.json)
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


class _ProgressLine:
    """Progress on stderr: one rewritten line on a terminal, nothing when redirected."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.shown = False

    def __call__(self, progress) -> None:
        if not self.console.is_terminal:
            return
        self.console.file.write("\r\x1b[2K" + progress.describe())
        self.console.file.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.console.file.write("\r\x1b[2K")
            self.console.file.flush()


def render_report(data: dict, cached: bool = False):
    """The whole report as one Rich renderable (also what tests read)."""
    parts: list = [header_text(data, cached), Text(""), metrics_table(data)]
    found = token_features_text(data)
    if found.plain:
        parts.append(found)
    parts += [Text(""), score_text(data)]
    advice = advice_text(data)
    if advice.plain:
        parts += [Text(""), advice]
    parts += [Text(""), density_plot(data, 60), Text(""), l0_plot(data, 60)]
    notes = notes_text(data)
    if notes.plain:
        parts += [Text(""), notes]
    return Group(*parts)


def header_text(data: dict, cached: bool = False) -> Text:
    from ..engine.evaluate import describe_settings

    arch = data["architecture"]
    head = Text()
    head.append("SAE quality report", style="bold")
    head.append(f"  {visible(str(data['sae_path']))}\n")
    head.append(
        f"{arch['type']} {arch['d_model']}->{arch['d_hidden']} (x{arch['expansion']:g}) k={arch['k']}, "
        f"layer {data['layer']} {data['component']}, model {visible(str(data['model']))}\n",
        style="dim",
    )
    head.append(visible(describe_settings(data)) + (" (cached)" if cached else ""), style="dim")
    return head


def metrics_table(data: dict) -> Table:
    """Every metric with its value, band (coloured) and a detail, grouped by section."""
    from ..engine.evaluate import BAND_STYLES, summary_rows

    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("band", no_wrap=True)
    table.add_column("detail", style="dim")
    section = None
    for row in summary_rows(data):
        if row.section != section:
            section = row.section
            table.add_row(Text(section, style="bold underline"), "", "", "")
        band = Text(row.band, style=BAND_STYLES.get(row.band, "")) if row.band else Text("")
        table.add_row("  " + row.label, row.value, band, Text(visible(row.detail)))
    return table


def token_features_text(data: dict, limit: int = 8) -> Text:
    found = data["interpretability"]["token_features"]
    if not found:
        return Text("")
    shown = ", ".join(f"{f['feature']} {visible(repr(f['token']))} {f['share']:.0%}" for f in found[:limit])
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return Text(f"  token-dominated: {shown}{more}", style="dim")


def score_text(data: dict) -> Text:
    """The score as a gauge, its rating, its parts and the guide's next step."""
    from ..engine.evaluate import BAND_STYLES

    score = data["score"]
    style = BAND_STYLES[score["rating"]]
    out = Text()
    out.append("Score ", style="bold")
    out.append(f"{score['total']:.1f} / {score['max']}  ", style="bold")
    out.append_text(score_gauge(score["total"], score["max"], style))
    out.append(f"  {score['rating'].upper()}\n", style=style)
    out.append(f"  {score['verdict']}\n", style=style)
    out.append(
        f"  reconstruction {score['reconstruction']:g}/2, sparsity {score['sparsity']:g}/2, "
        f"interpretability {score['interpretability']:g}/1\n",
        style="dim",
    )
    out.append(f"  Next step: {score['next_step']}")
    return out


def density_plot(data: dict, width: int, height: int = 5) -> Text:
    from ..widgets.histogram import render_histogram

    dens = data["feature_density"]
    return render_histogram(
        dens["counts"],
        dens["log10_bin_edges"],
        width=width,
        height=height,
        title=f"Feature density, log10: {dens['live']:,} live, {dens['dead']:,} dead apart",
        markers={-1.0: "|"},
        x_label="| = dense line (10 % of tokens)",
    )


def constant_l0(data: dict) -> float | None:
    """The L0 every token has, when all have the same (TopK: k), else None."""
    hist = data["l0_distribution"]["histogram"]
    counts, edges = hist["counts"], hist["bin_edges"]
    filled = [i for i, c in enumerate(counts) if c > 0]
    if len(filled) != 1 or edges[filled[0] + 1] - edges[filled[0]] > 1:
        return None
    return float(edges[filled[0]])


def l0_plot(data: dict, width: int, height: int = 5) -> Text:
    from ..widgets.histogram import render_histogram

    l0 = data["l0_distribution"]
    hist = l0["histogram"]
    value = constant_l0(data)
    if value is not None:
        # One bar, said in words: a full-height block across the plot would read as a spread.
        tokens = int(sum(hist["counts"]))
        out = Text()
        what = f"L0 = k = {value:g}" if value == l0["k"] else f"L0 = {value:g}"
        out.append(f"L0 per token: {what} for every token", style="bold")
        label = f"{value:g} "
        bar = max(1, min(40, width - len(label) - 20))
        out.append(f"\n{label}│")
        out.append("█" * bar, style="cyan")
        out.append(f" {tokens:,} tokens (all)", style="dim")
        return out
    return render_histogram(
        hist["counts"],
        hist["bin_edges"],
        width=width,
        height=height,
        title=f"L0 per token: median {l0['median']:g}, p10 {l0['p10']:g}, p90 {l0['p90']:g}",
        markers={l0["k"] + 0.5: "k"},
        x_label=f"k = {l0['k']}",
    )


def notes_text(data: dict) -> Text:
    notes = Text()
    for note in data.get("notes", []):
        notes.append("note: ", style="bold")
        notes.append(visible(str(note)) + "\n", style="dim")
    notes.rstrip()
    return notes


def score_gauge(total: float, maximum: float, style: str, width: int = 20) -> Text:
    """A bar of `width` cells filled in proportion to the score (half cells shown)."""
    filled = max(0.0, min(1.0, total / maximum if maximum else 0.0)) * width
    full = int(filled)
    half = filled - full >= 0.5
    bar = Text()
    bar.append("█" * full, style=style)
    if half:
        bar.append("▌", style=style)
    bar.append("░" * (width - full - int(half)), style="dim")
    return bar


def advice_text(data: dict) -> Text:
    """The guide's troubleshooting for whatever is poor."""
    out = Text()
    for item in data.get("advice", []):
        out.append(f"Advice: {item['title']}", style="bold yellow")
        out.append(f" ({', '.join(item['triggered_by'])} poor)\n", style="dim")
        if "note" in item:
            out.append(f"  {item['note']}\n")
            continue
        out.append(f"  Symptoms: {item['symptoms']}\n")
        out.append(f"  Possible causes: {'; '.join(item['causes'])}\n")
        out.append(f"  Try: {'; '.join(item['solutions'])}\n")
    out.rstrip()
    return out

