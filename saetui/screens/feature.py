"""The feature screen: everything about one feature, from the feature index.

The index is built (or read from the cache) the first time this screen is shown, in
slices on the engine's worker, so the UI stays responsive and other engine work runs
between slices; `x` cancels it (what was built is kept, labelled PARTIAL, and `b`
resumes). A feature opened meanwhile shows what is known so far, refreshed as the build
goes on. Decoder facts (output tokens, nearest features) need no index.
"""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Iterable

from rich.style import Style
from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ..engine.errors import Cancelled, UserError
from ..engine.features import FeaturePage, check_feature_id, feature_page
from ..engine.index import DEFAULT_TOP_K, FeatureIndex, IndexBuilder, default_budget, histogram_edges, open_index
from ..engine.worker import Job
from ..messages import EditRegistryEntry, OpenFeature, ProbeText, RegistryChanged
from ..ui.safe_text import literal, visible
from ..ui.shading import legend
from ..widgets.feature_contexts import context_prompt
from ..widgets.feature_goto import GotoFeature
from ..widgets.feature_histogram import FeatureHistogram
from .base import EngineScreen

# Contexts shown at first, and added by each `m`.
CONTEXTS_STEP = 5
# Seconds between refreshes of a feature's page while the index builds.
PARTIAL_REFRESH_S = 1.0
# Seconds of index building per worker slice (other engine work runs between slices).
BUILD_SLICE_S = 0.25


class FeatureScreen(EngineScreen):
    CSS_PATH = "feature.tcss"
    BINDINGS = [
        Binding("g", "goto", "Go to"),
        Binding("n,right_square_bracket", "step(1)", "Next"),
        Binding("p,left_square_bracket", "step(-1)", "Previous"),
        Binding("r", "random_feature", "Random live"),
        Binding("m", "more_contexts", "More contexts"),
        Binding("t", "probe_context", "Probe context"),
        Binding("e", "edit_entry", "Edit name"),
        Binding("b", "build_index", "Resume index", show=False),
        Binding("s", "steer", "Steer"),
        Binding("a", "removal_effect", "Ablate on top contexts"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.feature_id: int | None = None
        self.n_shown = CONTEXTS_STEP
        self.page: FeaturePage | None = None
        self.build_job: Job | None = None
        self.build_error: str | None = None
        self._mounted = False
        self._last_refresh = 0.0
        self._reset_next = False

    # -- layout ---------------------------------------------------------------------------

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="feature-body"):
            yield Static(Text("Loading the model...", style="dim"), id="feature-title")
            yield Static("", id="feature-description")
            yield Static("", id="feature-stats")
            yield FeatureHistogram(id="feature-histogram")
            yield Static("", id="contexts-heading")
            yield OptionList(id="feature-contexts")
            yield Static("", id="feature-logits")
            yield Static(Text("Nearest features by decoder cosine (enter opens one)", style="bold"), id="neighbours-heading")
            yield OptionList(id="feature-neighbours")

    def on_mount(self) -> None:
        self._mounted = True
        self.run_worker(self._start, group="feature-start")

    async def _start(self) -> None:
        if not await self.wait_ready():
            return
        if self.feature_id is None:
            self.feature_id = 0
        self._load_page()
        self.action_build_index()

    # -- the index ----------------------------------------------------------------------------

    @property
    def index(self) -> FeatureIndex | None:
        return open_index(self.engine)

    def action_build_index(self) -> None:
        """Build, load or resume the index (once at a time)."""
        index = self.index
        if index is not None and index.complete:
            self.notify("The feature index is complete")
            return
        if self.build_job is not None and not self.build_job.cancelled:
            return
        self.run_worker(self._build, group="feature-index", exclusive=True)

    async def _build(self) -> None:
        if not await self.wait_ready():
            return
        engine = self.engine
        budget = default_budget(engine)
        job = Job("indexing", self.app.progress_callback("indexing"))
        self.build_job = job
        self.build_error = None
        self.app.track_job(job)
        builder = IndexBuilder(engine, budget, DEFAULT_TOP_K)
        try:
            await engine.run(builder.prepare, job)
            for note in builder.notes:
                self.notify(visible(note), markup=False, timeout=8)
            builder.notes.clear()
            self._load_page()
            while not await engine.run(builder.step, job, BUILD_SLICE_S):
                if time.perf_counter() - self._last_refresh >= PARTIAL_REFRESH_S:
                    self._load_page()
        except Cancelled:
            index = self.index
            done = index.tokens_seen if index is not None else 0
            self.notify(f"Index build cancelled at {done:,} tokens: pages show what is known (PARTIAL); b resumes", timeout=8)
        except UserError as exc:
            self.build_error = exc.one_line()
            self.notify(exc.one_line(), severity="error", markup=False, timeout=10)
        else:
            for note in builder.notes:
                self.notify(visible(note), markup=False, timeout=8)
            if builder.seconds > 0:
                self.notify(f"Feature index ready: {builder.index.describe()} in {builder.seconds:.1f}s")
        finally:
            self.build_job = None
            self.app.clear_progress()
            self._load_page()

    # -- showing a feature -------------------------------------------------------------------

    def show_feature(self, feature_id: int) -> None:
        """Show this feature (from the app's OpenFeature, or this screen's keys)."""
        self.feature_id = int(feature_id)
        self.n_shown = CONTEXTS_STEP
        if self._mounted:
            self._load_page(reset=True)

    def _load_page(self, reset: bool = False) -> None:
        if self.feature_id is None or not self.app.is_ready:
            return
        self._last_refresh = time.perf_counter()
        # A later refresh may replace this fetch (workers are exclusive): keep its reset.
        self._reset_next = self._reset_next or reset
        # A callable, not a coroutine: a worker that never starts (app exiting) leaves nothing un-awaited.
        self.run_worker(partial(self._fetch, self.feature_id), group="feature-page", exclusive=True)

    async def _fetch(self, feature_id: int) -> None:
        known = self.page if self.page is not None and self.page.feature_id == feature_id else None
        try:
            page = await self.engine.run(feature_page, self.engine, feature_id, self.index, self.n_shown, known)
        except UserError as exc:
            self.notify(exc.one_line(), severity="error", markup=False)
            return
        if feature_id != self.feature_id:
            return  # another feature was asked for meanwhile
        self.page = page
        reset, self._reset_next = self._reset_next, False
        self._render_page(page, reset)

    # -- rendering -------------------------------------------------------------------------------

    def _render_page(self, page: FeaturePage, reset: bool) -> None:
        fid = page.feature_id
        stats = page.stats
        index = self.index
        title = Text()
        title.append(f"Feature {fid}", Style(bold=True))
        title.append(f" of {page.d_sae:,}", Style(dim=True))
        name = self.app.feature_name(fid)
        if name:
            title.append(" · ")
            title.append_text(literal(name, style="bold cyan"))
        if stats is not None and stats.partial:
            title.append("  ")
            total = stats.n_contexts * (index.context_len - index.first_position) if index else 0
            title.append(f" PARTIAL: {stats.tokens:,} of {total:,} tokens indexed ", Style(bold=True, color="black", bgcolor="yellow"))
        self.query_one("#feature-title", Static).update(title)
        self.query_one("#feature-description", Static).update(self._description(fid))
        self.query_one("#feature-stats", Static).update(self._stats_text(page))
        histogram = self.query_one(FeatureHistogram)
        if stats is not None and stats.fires:
            histogram.show(stats.histogram, histogram_edges(), stats.max_activation)
        else:
            histogram.show(None, None)
        self._render_contexts(page, reset)
        self.query_one("#feature-logits", Static).update(self._logits_text(page))
        self._render_neighbours(page, reset)
        if reset:
            self.query_one("#feature-body", VerticalScroll).scroll_home(animate=False)

    def _description(self, fid: int) -> Text:
        registry = getattr(self.app, "registry", None)
        entry = registry.get(fid) if registry is not None else None
        if not entry:
            return Text("not in the registry (e names it)", style="dim") if registry is not None else Text("")
        out = Text()
        description = entry.get("description")
        if isinstance(description, str) and description.strip():
            out.append_text(literal(description, inline=False))
        confidence = entry.get("confidence")
        if isinstance(confidence, str) and confidence:
            out.append("  confidence: ", Style(dim=True))
            out.append_text(literal(confidence))
        return out

    def _stats_text(self, page: FeaturePage) -> Text:
        stats = page.stats
        index = self.index
        out = Text()
        if stats is None:
            if self.build_error:
                out.append_text(literal(f"No feature index: {self.build_error}", style="red"))
            else:
                out.append("No feature index yet: it is being built (x cancels). Decoder facts below need none.", Style(dim=True))
            return out
        if not stats.fires:
            where = "so far " if stats.partial else ""
            out.append(f"Never fired {where}on the {stats.tokens:,} indexed tokens", Style(bold=True, color="red"))
            out.append(" (dead here). Its decoder facts below still apply.\n", Style(dim=True))
        else:
            out.append("density ", Style(dim=True))
            out.append(f"{stats.density:.3%}", Style(bold=True))
            out.append(f" ({stats.count:,} of {stats.tokens:,} tokens)  ", Style(dim=True))
            out.append("max ", Style(dim=True))
            out.append(f"{stats.max_activation:.4g}", Style(bold=True, color="orange1"))
            out.append("  mean when firing ", Style(dim=True))
            out.append(f"{stats.mean_activation:.4g}")
            out.append(f"  steer: s clamps to {2 * stats.max_activation:.3g} (2x max)\n", Style(dim=True))
            removal = getattr(self, "removal", {}).get(stats.feature_id)
            if removal is not None:
                out.append_text(removal_text(removal))
        if index is not None:
            out.append_text(literal(f"{index.describe()}; budget {index.budget:,} tokens; decoder norm {page.decoder_norm:.3g}", style="dim"))
        job = self.build_job
        if job is not None and job.last is not None and job.last.unit == "tokens" and not job.cancelled:
            # The job bar at the bottom may be cut at 80 columns: the rate and ETA are here too.
            out.append("\n")
            out.append_text(literal(f"{job.last.describe()} · x cancels", style="yellow"))
        return out

    def _render_contexts(self, page: FeaturePage, reset: bool) -> None:
        stats = page.stats
        heading = self.query_one("#contexts-heading", Static)
        contexts = self.query_one("#feature-contexts", OptionList)
        keep = None if reset else contexts.highlighted
        contexts.clear_options()
        if stats is None or not stats.fires:
            heading.update(Text("Top contexts: none" + (" yet" if stats is None or stats.partial else ""), style="bold"))
            contexts.display = False
            return
        contexts.display = True
        head = Text()
        head.append(f"Top contexts: {len(page.top)} of {len(stats.top)} kept", Style(bold=True))
        head.append("  (m more, t probe)\n", Style(dim=True))
        head.append_text(legend(stats.max_activation))
        heading.update(head)
        options: list[Option] = []
        for rank, shown in enumerate(page.top, 1):
            options.append(Option(context_prompt(f"#{rank}", shown, stats.max_activation), id=f"top-{rank - 1}"))
        if page.samples:
            options.append(Option(Text("Samples at lower activations (random firing contexts)", style="bold"), disabled=True))
            for i, shown in enumerate(page.samples):
                options.append(Option(context_prompt("·", shown, stats.max_activation), id=f"sample-{i}"))
        contexts.add_options(options)
        if keep is not None and keep < contexts.option_count:
            contexts.highlighted = keep

    def _logits_text(self, page: FeaturePage) -> Text:
        out = Text()
        for label, effects, colour in (("Promotes", page.logits.promoted, "green"), ("Suppresses", page.logits.suppressed, "red")):
            out.append(f"{label}: ", Style(bold=True))
            for i, effect in enumerate(effects):
                if i:
                    out.append("  ")
                out.append_text(literal(effect.token or "∅", style=Style(bgcolor="grey23")))
                out.append(f" {effect.value:+.3g}", Style(color=colour))
            out.append("\n")
        out.append_text(literal(f"how: {page.logits.how}", style="dim italic"))
        return out

    def _render_neighbours(self, page: FeaturePage, reset: bool) -> None:
        neighbours = self.query_one("#feature-neighbours", OptionList)
        keep = None if reset else neighbours.highlighted
        neighbours.clear_options()
        options = []
        for n in page.neighbours:
            prompt = Text()
            prompt.append(f"#{n.feature_id:<7}", Style(bold=True))
            prompt.append(f"cos {n.cosine:+.3f}  ")
            name = self.app.feature_name(n.feature_id)
            if name:
                prompt.append_text(literal(name, style="cyan"))
            options.append(Option(prompt, id=f"feature-{n.feature_id}"))
        neighbours.add_options(options)
        if keep is not None and keep < neighbours.option_count:
            neighbours.highlighted = keep

    def on_registry_changed(self, message: RegistryChanged) -> None:
        if self.page is not None:
            self._render_page(self.page, reset=False)

    # -- keys ------------------------------------------------------------------------------

    def _d_sae(self) -> int | None:
        sae = self.engine.sae
        return sae.d_sae if sae is not None else None

    def action_goto(self) -> None:
        def opened(value: str | None) -> None:
            if value is None:
                return
            try:
                fid = check_feature_id(self.engine, value)
            except UserError as exc:
                self.notify(exc.one_line(), severity="error", markup=False)
                return
            self.show_feature(fid)

        if self._d_sae() is None:
            self.notify("The SAE is still loading", severity="warning")
            return
        self.app.push_screen(GotoFeature(self._d_sae()), opened)

    def action_step(self, delta: int) -> None:
        d_sae = self._d_sae()
        if d_sae is None or self.feature_id is None:
            return
        self.show_feature((self.feature_id + delta) % d_sae)

    def action_random_feature(self) -> None:
        index = self.index
        if index is None:
            self.notify("No feature index yet to know which features fire", severity="warning")
            return
        live = index.live_features()
        if live.size == 0:
            self.notify("No feature has fired yet", severity="warning")
            return
        self.show_feature(int(random.choice(live.tolist())))

    def action_more_contexts(self) -> None:
        page = self.page
        if page is None or page.stats is None:
            self.notify("No contexts yet: the feature index is not ready", severity="warning")
            return
        kept = len(page.stats.top)
        if self.n_shown >= kept:
            top_k = self.index.top_k if self.index is not None else DEFAULT_TOP_K
            if kept < top_k:
                self.notify(f"All {kept} contexts this feature fired in are shown")
            else:
                self.notify(f"All {kept} kept contexts are shown (the index keeps the top {top_k}; saetui top-texts FEATURE --top-k 100 lists up to 100)")
            return
        self.n_shown += CONTEXTS_STEP
        self._load_page()

    def _selected_context_text(self) -> str | None:
        page = self.page
        contexts = self.query_one("#feature-contexts", OptionList)
        option = contexts.highlighted_option
        if page is None or option is None or option.id is None:
            return None
        kind, _, i = option.id.partition("-")
        shown = page.top if kind == "top" else page.samples
        return shown[int(i)].text if int(i) < len(shown) else None

    def action_probe_context(self) -> None:
        text = self._selected_context_text()
        if text is None:
            self.notify("Select a context first (up/down in the list)", severity="warning")
            return
        self.post_message(ProbeText(text))

    def action_edit_entry(self) -> None:
        if self.feature_id is not None:
            self.post_message(EditRegistryEntry(self.feature_id))

    @on(OptionList.OptionSelected, "#feature-contexts")
    def _context_chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_probe_context()

    @on(OptionList.OptionSelected, "#feature-neighbours")
    def _neighbour_chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id and event.option.id.startswith("feature-"):
            self.post_message(OpenFeature(int(event.option.id.split("-", 1)[1])))

    # -- steering (saetui/screens/steer.py) --------------------------------------------------

    def action_steer(self) -> None:
        from .steer import add_to_steer

        if self.feature_id is None:
            return
        stats = self.page.stats if self.page is not None and self.page.feature_id == self.feature_id else None
        add_to_steer(self.app, self.feature_id, stats.max_activation if stats is not None and stats.fires else None)

    def action_removal_effect(self) -> None:
        if self.feature_id is None or self.index is None:
            self.notify("No feature index yet: the effect of removing a feature is measured on its top contexts")
            return
        self.run_worker(partial(self._removal, self.feature_id), group="feature-removal", exclusive=True)

    async def _removal(self, feature_id: int) -> None:
        from ..engine.intervene import removal_effect

        job = Job("ablating on top contexts", self.app.progress_callback("ablating"))
        self.app.track_job(job)
        gen = await self.engine.run(removal_effect, self.engine, self.index, feature_id)
        try:
            while True:
                job.check()
                step = await self.engine.run(_advance_with_result, gen)
                if step[0] == "done":
                    effect = step[1]
                    break
                job.report(step[1].done, step[1].total, step[1].unit)
        except Cancelled:
            self.notify("Cancelled")
            return
        except UserError as exc:
            self.notify(exc.one_line(), severity="error", markup=False)
            return
        finally:
            await self.engine.run(gen.close)
            job.cancel()
            self.app.clear_progress()
        if not hasattr(self, "removal"):
            self.removal = {}
        self.removal[feature_id] = effect
        if self.page is not None and self.page.feature_id == feature_id:
            self.query_one("#feature-stats", Static).update(self._stats_text(self.page))


def _advance_with_result(gen):
    """("step", progress) or ("done", result): a generator's StopIteration cannot cross an await."""
    try:
        return ("step", next(gen))
    except StopIteration as stop:
        return ("done", stop.value)


def removal_text(effect) -> Text:
    """What happens when you remove the feature, in one or two lines."""
    out = Text()
    out.append("Removed on its top contexts: ", Style(bold=True))
    out.append(f"loss {effect.loss_change_firing:+.4f} nats where it fires, {effect.loss_change_after:+.4f} after")
    out.append(f" ({effect.n_firing} / {effect.n_after} positions, {effect.n_contexts} contexts)\n", Style(dim=True))
    if effect.drops:
        out.append("  next tokens that lose most: ", Style(dim=True))
        for n, d in enumerate(effect.drops[:5]):
            out.append(", " if n else "")
            out.append_text(literal(repr(d.token)))
            out.append(f" {d.clean_prob:.2f}→{d.intervened_prob:.2f}", Style(dim=True))
        out.append("\n")
    return out
