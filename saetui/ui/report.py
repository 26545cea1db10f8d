"""The quality report in Rich: what `saetui eval` prints and the report screen shows.

Plain Rich renderables built from the typed report (`engine.report.EvaluationReport`),
with no Textual in them, so the command line and the screen share one rendering and
neither imports the other. Text that comes from files (paths, model names, token
strings, notes) goes through `visible`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..engine.report import EvaluationReport
from ..engine.rubric import EXCELLENT, FAIR, GOOD, POOR
from .histogram import render_histogram
from .safe_text import visible

# Band colours shared by `saetui eval` and the report screen.
BAND_STYLES = {
    EXCELLENT: "bold green",
    GOOD: "green",
    FAIR: "yellow",
    POOR: "bold red",
}


@dataclass(frozen=True)
class Row:
    """One line of the report: a metric, its value, its band (if any) and a detail."""

    section: str
    label: str
    value: str
    band: str | None = None
    detail: str = ""
    definition: str = ""  # key into rubric.DEFINITIONS


def _f(v: Any, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def summary_rows(report: EvaluationReport) -> list[Row]:
    """The report's metrics as rows of text, in the order both front ends show them."""
    rec, spa, bands = report.reconstruction, report.sparsity, report.bands
    extra, l0d, dead = report.reconstruction_extra, report.l0_distribution, report.dead_features
    dens, interp, mb = report.feature_density, report.interpretability, report.model_behaviour
    d_sae = report.architecture.d_hidden
    rows = [
        Row("Reconstruction", "MSE", _f(rec.mse, ".4g"), bands.mse, "", "mse"),
        Row("Reconstruction", "Cosine similarity", _f(rec.cosine_similarity, ".4f"), bands.cosine_similarity, "", "cosine_similarity"),
        Row("Reconstruction", "Explained variance", _f(rec.explained_variance, ".1%"), bands.explained_variance,
            f"SAEBench form {_f(extra.explained_variance_saebench, '.1%')}", "explained_variance"),
        Row("Reconstruction", "L2 ratio |x̂|/|x|", _f(extra.l2_ratio, ".3f"), None, "below 1: shrinkage", "l2_ratio"),
        Row("Sparsity", "L0 mean", f"{_f(spa.l0_mean, '.1f')} ({report.architecture.l0_reference_text()})", bands.l0,
            f"median {_f(l0d.median, 'g')}, p10 {_f(l0d.p10, 'g')}, p90 {_f(l0d.p90, 'g')}", "l0"),
        Row("Sparsity", "Dead (practical)", f"{spa.dead_features_practical:,}/{d_sae:,} ({spa.dead_fraction:.1%})",
            bands.dead_fraction, f"< {spa.rare_threshold:,} firings", "dead_features"),
        Row("Sparsity", "Dead (strict)", f"{spa.dead_features:,}/{d_sae:,} ({dead.strict_fraction:.1%})", None, "never fire", "dead_features"),
        Row("Sparsity", "Dense features", f"{dens.dense_features:,} ({dens.dense_fraction:.1%})", None,
            f"fire on > {dens.dense_threshold:.0%} of tokens", "density"),
        Row("Interpretability", "Interpretable", f"{interp.count}", bands.interpretability,
            f"{len(interp.token_features)} token-dominated, {len(interp.registry_features)} named (high)", "interpretability"),
    ]
    if mb.available:
        rows += [
            Row("Model behaviour", "CE clean/SAE/zero",
                f"{_f(mb.ce_loss_clean, '.3f')} / {_f(mb.ce_loss_sae, '.3f')} / {_f(mb.ce_loss_zero, '.3f')}", None, "nats", "ce_loss"),
            Row("Model behaviour", "CE loss recovered", _f(mb.ce_loss_recovered, ".3f"), None,
                ("unreliable on this dataset (see the note)" if mb.ce_loss_recovered_unreliable else "1 is perfect")
                if mb.ce_loss_recovered is not None else "undefined: zero ablation changes nothing", "ce_loss_recovered"),
            Row("Model behaviour", "KL SAE / zero", f"{_f(mb.kl_div_sae, '.4f')} / {_f(mb.kl_div_zero, '.4f')}", None, "nats", "kl"),
            Row("Model behaviour", "KL score", _f(mb.kl_score, ".3f"), None,
                "1 is perfect" if mb.kl_score is not None else "undefined: zero ablation changes nothing", "kl"),
        ]
    else:
        rows.append(Row("Model behaviour", "CE loss / KL", "not computed", None, mb.reason, "ce_loss"))
    return rows


def describe_settings(report: EvaluationReport) -> str:
    """One line: how many tokens of which dataset, BOS policy, threshold mode."""
    s = report.settings
    line = (
        f"{s.tokens_evaluated:,} tokens ({s.contexts:,} contexts of {s.context_len}"
        f"{', BOS excluded' if s.bos_excluded else ''}) of {Path(s.dataset).name}, budget {s.budget:,}"
    )
    if s.threshold_mode:
        line += f"; BatchTopK {s.threshold_mode} threshold"
    return line


def render_report(report: EvaluationReport) -> RenderableType:
    """The whole report as one Rich renderable (what `saetui eval` prints; also what tests read)."""
    parts: list[RenderableType] = [header_text(report), Text(""), metrics_table(report)]
    found = token_features_text(report)
    if found.plain:
        parts.append(found)
    parts += [Text(""), score_text(report)]
    advice = advice_text(report)
    if advice.plain:
        parts += [Text(""), advice]
    parts += [Text(""), density_plot(report, 60), Text(""), l0_plot(report, 60)]
    notes = notes_text(report)
    if notes.plain:
        parts += [Text(""), notes]
    return Group(*parts)


def header_text(report: EvaluationReport) -> Text:
    """What was evaluated: the SAE, its shape and hook, the model, the tokens (and "(cached)")."""
    arch = report.architecture
    head = Text()
    head.append("SAE quality report", style="bold")
    head.append(f"  {visible(report.sae_path)}\n")
    k = f"k={arch.k}" if arch.k is not None else "no k"
    head.append(
        f"{visible(arch.type)} {arch.d_model}->{arch.d_hidden} (x{arch.expansion:g}) {k}, "
        f"layer {report.layer} {visible(str(report.component))}, model {visible(str(report.model))}\n",
        style="dim",
    )
    head.append(visible(describe_settings(report)) + (" (cached)" if report.from_cache else ""), style="dim")
    return head


def metrics_table(report: EvaluationReport) -> Table:
    """Every metric with its value, band (coloured) and a detail, grouped by section."""
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("band", no_wrap=True)
    table.add_column("detail", style="dim")
    section = None
    for row in summary_rows(report):
        if row.section != section:
            section = row.section
            table.add_row(Text(section, style="bold underline"), "", "", "")
        band = Text(row.band, style=BAND_STYLES.get(row.band, "")) if row.band else Text("")
        table.add_row("  " + row.label, row.value, band, Text(visible(row.detail)))
    return table


def token_features_text(report: EvaluationReport, limit: int = 8) -> Text:
    """The token-dominated features (the interpretability criterion's finds), first `limit` of them."""
    found = report.interpretability.token_features
    if not found:
        return Text("")
    shown = ", ".join(f"{f.feature} {visible(repr(f.token))} {f.share:.0%}" for f in found[:limit])
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return Text(f"  token-dominated: {shown}{more}", style="dim")


def score_text(report: EvaluationReport) -> Text:
    """The score as a gauge, its rating, its parts and the guide's next step."""
    score = report.score
    style = BAND_STYLES[score.rating]
    out = Text()
    out.append("Score ", style="bold")
    out.append(f"{score.total:.1f} / {score.max}  ", style="bold")
    out.append_text(score_gauge(score.total, score.max, style))
    out.append(f"  {score.rating.upper()}\n", style=style)
    out.append(f"  {score.verdict}\n", style=style)
    out.append(
        f"  reconstruction {score.reconstruction:g}/2, sparsity {score.sparsity:g}/2, "
        f"interpretability {score.interpretability:g}/1\n",
        style="dim",
    )
    out.append(f"  Next step: {score.next_step}")
    return out


def density_plot(report: EvaluationReport, width: int, height: int = 5) -> Text:
    """The histogram of log10 feature densities, with the dense line marked."""
    dens = report.feature_density
    return render_histogram(
        dens.counts,
        dens.log10_bin_edges,
        width=width,
        height=height,
        title=f"Feature density, log10: {dens.live:,} live, {dens.dead:,} dead apart",
        markers={-1.0: "|"},
        x_label="| = dense line (10 % of tokens)",
    )


def constant_l0(report: EvaluationReport) -> float | None:
    """The L0 every token has, when all have the same (TopK: k), else None."""
    hist = report.l0_distribution.histogram
    counts, edges = hist.counts, hist.bin_edges
    filled = [i for i, c in enumerate(counts) if c > 0]
    if len(filled) != 1 or edges[filled[0] + 1] - edges[filled[0]] > 1:
        return None
    return float(edges[filled[0]])


def l0_plot(report: EvaluationReport, width: int, height: int = 5) -> Text:
    """The histogram of per-token L0, with k marked; a constant L0 is one bar, said in words."""
    l0 = report.l0_distribution
    value = constant_l0(report)
    if value is not None:
        # One bar, said in words: a full-height block across the plot would read as a spread.
        tokens = int(sum(l0.histogram.counts))
        out = Text()
        what = f"L0 = k = {value:g}" if l0.k is not None and value == l0.k else f"L0 = {value:g}"
        out.append(f"L0 per token: {what} for every token", style="bold")
        label = f"{value:g} "
        bar = max(1, min(40, width - len(label) - 20))
        out.append(f"\n{label}│")
        out.append("█" * bar, style="cyan")
        out.append(f" {tokens:,} tokens (all)", style="dim")
        return out
    return render_histogram(
        l0.histogram.counts,
        l0.histogram.bin_edges,
        width=width,
        height=height,
        title=f"L0 per token: median {_f(l0.median, 'g')}, p10 {_f(l0.p10, 'g')}, p90 {_f(l0.p90, 'g')}",
        markers={l0.k + 0.5: "k"} if l0.k is not None else {},
        x_label=f"k = {l0.k}" if l0.k is not None else "no k",
    )


def notes_text(report: EvaluationReport) -> Text:
    notes = Text()
    for note in report.notes:
        notes.append("note: ", style="bold")
        notes.append(visible(note) + "\n", style="dim")
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


def advice_text(report: EvaluationReport) -> Text:
    """The guide's troubleshooting for whatever is poor."""
    out = Text()
    for item in report.advice:
        out.append(f"Advice: {item.title}", style="bold yellow")
        out.append(f" ({', '.join(item.triggered_by)} poor)\n", style="dim")
        if item.note is not None:
            out.append(f"  {item.note}\n")
            continue
        out.append(f"  Symptoms: {item.symptoms}\n")
        out.append(f"  Possible causes: {'; '.join(item.causes or [])}\n")
        out.append(f"  Try: {'; '.join(item.solutions or [])}\n")
    out.rstrip()
    return out
