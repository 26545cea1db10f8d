"""The report screen, the first thing the app shows: is this SAE any good?

It awaits `evaluate` on the engine's worker thread (a cached report appears at once)
and shows the guide's score as a gauge with its rating and next step, every metric
with its band, the troubleshooting advice for whatever is poor, the feature density
and per-token L0 distributions, and the densest and dead features, which open on the
feature screen with enter. `d` shows what each number means, `e` writes the JSON
report, `r` evaluates again on twice the tokens.
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Group
from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from ..engine.errors import Cancelled, UserError
from ..engine.evaluate import (
    apply_registry,
    evaluate,
    evaluation_budget,
    registry_high_confidence,
    write_report_json,
)
from ..engine.index import default_budget
from ..engine.report import EvaluationReport
from ..engine.worker import Job, Progress
from ..engine.rubric import DEFINITIONS
from ..messages import RegistryChange
from ..ui.report import advice_text, header_text, metrics_table, notes_text, score_text, token_features_text
from ..ui.safe_text import literal, visible
from ..widgets.feature_table import FeatureTable
from ..widgets.histogram import Histogram
from .base import EngineScreen

# How much larger each recompute's budget is.
RECOMPUTE_FACTOR = 2
DEFINITION_TITLES = {
    "tokens": "Tokens",
    "mse": "MSE",
    "cosine_similarity": "Cosine similarity",
    "explained_variance": "Explained variance",
    "l0": "L0",
    "dead_features": "Dead features",
    "interpretability": "Interpretable features",
    "score": "Score",
    "ce_loss": "CE loss",
    "ce_loss_recovered": "CE loss recovered",
    "kl": "KL divergence",
    "l2_ratio": "L2 ratio",
    "density": "Feature density",
}


class ReportScreen(EngineScreen):
    CSS_PATH = "report.tcss"
    BINDINGS = [
        Binding("d", "toggle_definitions", "Definitions"),
        Binding("e", "export_json", "Export JSON"),
        Binding("r", "recompute", "Recompute (2x tokens)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: EvaluationReport | None = None
        self.budget: int | None = None
        self.running = False
        # The evaluation this screen waits for (its progress is the job bar's while it runs).
        self.job: Job | None = None
        self.budget_asked = 0

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="report-body"):
            yield Static(literal("Waiting for the model to load..."), id="report-score")
            yield Static("", id="report-status")
            yield Static(_definitions_text(), id="report-definitions")
            yield Static("", id="report-metrics")
            yield Static("", id="report-advice")
            with Horizontal(id="report-plots"):
                yield Histogram("Feature density (log10)", id="report-density")
                yield Histogram("L0 per token", id="report-l0")
            with Horizontal(id="report-features"):
                densest = FeatureTable(("density",), id="report-densest")
                densest.border_title = "densest features (enter: open)"
                yield densest
                dead = FeatureTable(id="report-dead")
                dead.border_title = "dead features (enter: open)"
                yield dead
            yield Static("", id="report-notes")

    def on_mount(self) -> None:
        # Plots and feature lists stay hidden until there is a report to fill them.
        self.add_class("-no-report")
        self.app.registry_changed_signal.subscribe(self, self._registry_changed)
        self.query_one("#report-body").focus()
        self.watch(self.app, "job_progress", self._follow_progress)
        self.run_worker(self._first_evaluation(), group="evaluate", exclusive=True)

    def _follow_progress(self, progress: Progress | None) -> None:
        """Until the first report: say what the engine is doing now, step by step."""
        if self.report is None and progress is not None:
            self.query_one("#report-score", Static).update(literal(self._waiting_line(progress)))

    def _waiting_line(self, progress: Progress | None) -> str:
        job = self.job
        if job is None:
            if self.running or progress is None:
                return "Evaluating the SAE..."
            # Opening: reading the SAE, loading the model, calibrating a threshold.
            return "Opening the SAE: done" if progress.finished else f"Opening the SAE: {progress.label}..."
        what = f"Evaluating the SAE on {self.budget_asked:,} tokens"
        if job.last is None:
            busy = f" after the {progress.label}" if progress is not None and not progress.finished else ""
            return f"{what}: starting{busy} (x cancels)"
        return f"{what}: {job.last.done:,} done (x cancels)"

    # -- evaluation ---------------------------------------------------------------------------

    async def _first_evaluation(self) -> None:
        if not await self.wait_ready():
            return
        try:
            budget = evaluation_budget(self.app.session)
        except UserError as exc:
            self._error(exc)
            return
        await self._evaluate(budget)

    async def _evaluate(self, budget: int) -> None:
        self.running = True
        self.budget_asked = budget
        session = self.app.session
        high = registry_high_confidence(session, self.app.registry)
        self.job = self.engine.start(f"evaluating {budget:,} tokens", evaluate, session, budget, True, high)
        if self.report is None:
            self.query_one("#report-score", Static).update(literal(self._waiting_line(self.app.job_progress)))
        else:
            self._status_line(f"Recomputing on up to {budget:,} tokens... (x cancels)")
        try:
            report = await self.app.wait_job(self.job)
        except Cancelled:
            self.notify("Evaluation cancelled; nothing was cached. Press r to run it again.")
            if self.report is None:
                self.query_one("#report-score", Static).update(literal("Evaluation cancelled. Press r to run it."))
            else:
                self._show_report()
            return
        except UserError as exc:
            self._error(exc)
            return
        finally:
            self.running = False
            self.job = None
        self.report = report
        self.budget = report.budget
        self.app.report_budget = report.budget
        self._show_report()

    def _error(self, exc: UserError) -> None:
        self.notify(visible(exc.one_line()), severity="error", markup=False, timeout=15)
        if self.report is None:
            self.query_one("#report-score", Static).update(literal(f"No report: {exc.one_line()}"))

    # -- showing the report ---------------------------------------------------------------------

    def _show_report(self) -> None:
        report = self.report
        if report is None:
            return
        self.remove_class("-no-report")
        score = score_text(report)
        if report.score.proceed:
            score.append(" (2: the feature screen)", style="dim")
        self.query_one("#report-score", Static).update(score)
        self._status_line()
        found = token_features_text(report)
        table = metrics_table(report)
        parts = [table] + ([found] if found.plain else []) + [self._explained_text()]
        self.query_one("#report-metrics", Static).update(Group(*parts))
        advice = advice_text(report)
        self.query_one("#report-advice", Static).update(
            advice if advice.plain else Text("No advice: nothing is poor.", style="dim")
        )
        dens = report.feature_density
        self.query_one("#report-density", Histogram).plot(
            dens.counts, dens.log10_bin_edges, x_label=f"| = 10 %; {dens.dead:,} dead apart", markers={-1.0: "|"}
        )
        l0 = report.l0_distribution
        self.query_one("#report-l0", Histogram).plot(
            l0.histogram.counts,
            l0.histogram.bin_edges,
            x_label=f"median {l0.median:g} p10 {l0.p10:g} p90 {l0.p90:g}",
            markers={l0.k + 0.5: "k"} if l0.k is not None else {},
        )
        self._render_features()
        notes = notes_text(report)
        self.query_one("#report-notes", Static).update(notes)

    def _status_line(self, extra: str | None = None) -> None:
        report = self.report
        line = Text()
        if report is not None:
            line.append_text(header_text(report))
            line.append("\n")
        if extra:
            line.append(extra, style="bold")
        elif report is not None:
            if report.settings.tokens_total < report.budget:
                again = "the dataset is used up"
            else:
                again = f"r recompute on {report.budget * RECOMPUTE_FACTOR:,} tokens"
            line.append_text(literal(budgets_line(report, self.app), style="italic"))
            line.append("\n")
            line.append(f"d definitions · e export JSON · {again}", style="italic")
        self.query_one("#report-status", Static).update(line)

    def _render_features(self) -> None:
        report = self.report
        if report is None:
            return
        densest = self.query_one("#report-densest", FeatureTable)
        densest.show_features(
            (item.feature, [Text(f"{item.density:.2%}", justify="right")]) for item in report.feature_density.densest
        )
        dead = self.query_one("#report-dead", FeatureTable)
        ids = report.dead_features.strict_ids
        dead.show_features((int(fid), []) for fid in ids)
        total = report.dead_features.strict
        dead.border_title = f"dead features: {total:,}" + (f" (first {len(ids)})" if total > len(ids) else "")
        if total:
            dead.border_title += " (enter: open)"
        # Dead on these tokens only: the feature screen's index counts on its own (larger) budget.
        dead.border_subtitle = f"on the {report.settings.tokens_evaluated:,} evaluation tokens"

    # -- keys -------------------------------------------------------------------------------------

    def action_toggle_definitions(self) -> None:
        panel = self.query_one("#report-definitions", Static)
        panel.toggle_class("-shown")
        if panel.has_class("-shown"):
            self.query_one("#report-body", VerticalScroll).scroll_to_widget(panel, top=True, animate=False)

    def action_export_json(self) -> None:
        if self.report is None:
            self.notify("No report yet: wait for the evaluation to finish")
            return
        try:
            path = write_report_json(self.report, self.app.session)
        except UserError as exc:
            self._error(exc)
            return
        self.notify(visible(f"Report written to {path}"), markup=False)

    def action_recompute(self) -> None:
        if self.running:
            self.notify("An evaluation is already running (x cancels it)")
            return
        if not self.app.is_ready:
            self.notify("The model is still loading")
            return
        report = self.report
        if report is not None and report.settings.tokens_total < report.budget:
            self.notify(
                f"The dataset holds only {report.settings.tokens_total:,} tokens in whole contexts; "
                "the report already uses all of them"
            )
            return
        base = self.budget or evaluation_budget(self.app.session)
        budget = base * RECOMPUTE_FACTOR if report is not None else base
        self.run_worker(self._evaluate(budget), group="evaluate", exclusive=True)

    # -- the registry ------------------------------------------------------------------------------

    def _apply_registry(self) -> None:
        if self.report is None:
            return
        apply_registry(self.report, registry_high_confidence(self.app.session, self.app.registry))
        self._show_report()

    def _explained_text(self) -> Text:
        """Beside the guide's interpretability count: features whose automatic explanation
        predicts their activations (once the feature index has been explained)."""
        from ..engine.explain import explained_summary

        session = self.engine.session
        if session is None or not session.explanations:
            return Text("  explained features: when the feature index is built (2: the feature screen)", style="dim")
        summary = explained_summary(session.explanations, len(session.index.live_features()) if session.index is not None else None)
        out = Text("  explained features: ", style="dim")
        out.append(f"{summary['explained']:,} of {summary['live']:,} live ({summary['fraction']:.0%})", style="bold")
        out.append(f", detection score >= {summary['bar']:g} on the index's {session.index.tokens_seen if session.index else 0:,} tokens", style="dim")
        out.append("\n  (the guide's count above is token-dominated features, stop words included)", style="dim")
        return out

    def _registry_changed(self, change: RegistryChange) -> None:
        self._apply_registry()

    def on_screen_resume(self) -> None:
        # Names (and high-confidence entries, which count as interpretable) may have changed.
        self._apply_registry()


def budgets_line(report: EvaluationReport, app) -> str:
    """The report's budget beside the feature index's: they count features on different tokens."""
    line = f"This report: {report.settings.tokens_evaluated:,} tokens (budget {report.budget:,})"
    session = app.engine.session
    if session is None:
        return line
    index = session.index
    budget = index.budget if index is not None else default_budget(session)
    if budget != report.budget:
        line += f"; the feature screen's index: budget {budget:,}, so a feature dead here may fire there"
    return line


def _definitions_text() -> Text:
    out = Text()
    out.append("What the numbers mean (d hides this)\n", style="bold")
    for key, text in DEFINITIONS.items():
        out.append(f"{DEFINITION_TITLES.get(key, key)}: ", style="bold")
        out.append(text + "\n")
    out.rstrip()
    return out
