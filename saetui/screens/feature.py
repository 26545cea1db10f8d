"""The feature screen: everything about one feature, from the feature index.

The index is built (or read from the cache) the first time this screen is shown, as
long work on the engine's worker, which serves this screen's page requests between
batches, so the UI stays responsive; `x` cancels it (what was built is kept, labelled
PARTIAL, and `b` resumes). A feature opened meanwhile shows what is known so far, refreshed as the build
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
from ..engine.evaluate import evaluation_budget
from ..engine.features import PAGE_CONTEXTS, FeaturePage, feature_page
from ..engine.index import DEFAULT_TOP_K, FeatureIndex, build_index, default_budget, histogram_edges
from ..engine.worker import Job
from ..messages import EditRegistryEntry, OpenFeature, ProbeText, RegistryChange
from ..ui.safe_text import literal, visible
from ..ui.shading import legend
from ..widgets.feature_contexts import context_prompt
from ..widgets.feature_goto import GotoFeature
from ..widgets.feature_histogram import FeatureHistogram
from .base import EngineScreen

# Contexts shown at first, and added by each `m`.
CONTEXTS_STEP = PAGE_CONTEXTS
# The label of the index build on the engine's worker.
INDEX_JOB = "indexing"
# Seconds between refreshes of a feature's page while the index builds.
PARTIAL_REFRESH_S = 1.0


def report_budget(app) -> int | None:
    """The token budget of the report (screen 1): the one shown, else the one it will use."""
    shown = getattr(app, "report_budget", None)
    if shown is not None:
        return int(shown)
    session = app.engine.session
    if session is None:
        return None
    try:
        return evaluation_budget(session)
    except UserError:
        return None


def index_line(index: FeatureIndex, report: int | None) -> str:
    """What the index is, and its budget beside the report's: they count on different tokens."""
    indexed = index.n_contexts * (index.context_len - index.first_position)
    line = f"index: {indexed:,} tokens, budget {index.budget:,}"
    if report is not None and report != index.budget:
        line += f" (the report's: {report:,})"
    return line + f" · top {index.top_k}"


class FeatureScreen(EngineScreen):
    CSS_PATH = "feature.tcss"
    # Short descriptions: the footer must show every key below at 80 columns (help says more).
    BINDINGS = [
        # Priority: the dialog opens as g arrives, so the id typed right after it goes there.
        Binding("g", "goto", "Go to", tooltip="Go to a feature by id", priority=True),
        Binding("n,right_square_bracket", "step(1)", "Next", tooltip="Next feature"),
        Binding("p,left_square_bracket", "step(-1)", "Prev", tooltip="Previous feature"),
        Binding("r", "random_feature", "Random", tooltip="A random live feature"),
        Binding("m", "more_contexts", "More", tooltip="More contexts"),
        Binding("t", "probe_context", "Probe", tooltip="Probe the selected context"),
        Binding("e", "edit_entry", "Name", tooltip="Name this feature in the registry"),
        Binding("b", "build_index", "Resume index", show=False),
        Binding("slash", "search", "Search", tooltip="Search features"),
        Binding("s", "steer", "Steer", tooltip="Add it to the steer list"),
        Binding("a", "removal_effect", "Ablate", show=False, tooltip="Ablate it on its top contexts"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.feature_id: int | None = None
        self.n_shown = CONTEXTS_STEP
        self.page: FeaturePage | None = None
        self.build_job: Job | None = None
        # "What happens when you remove it", per feature, once measured (a).
        self.removal: dict = {}
        self.build_error: str | None = None
        self._mounted = False
        self._last_refresh = 0.0
        self._reset_next = False

    # -- layout ---------------------------------------------------------------------------

    def compose_body(self) -> Iterable[Widget]:
        # Contexts first: at 80x24 the name, density and the first contexts fit without
        # scrolling; the histogram, output tokens and neighbours follow.
        with VerticalScroll(id="feature-body"):
            yield Static(Text("Loading the model...", style="dim"), id="feature-title")
            yield Static("", id="feature-description")
            yield Static("", id="feature-family")
            yield Static("", id="feature-stats")
            yield Static("", id="contexts-heading")
            yield OptionList(id="feature-contexts")
            yield Static(Text("Activation histogram", style="bold"), id="histogram-heading")
            yield FeatureHistogram(id="feature-histogram")
            yield Static("", id="feature-logits")
            yield Static(Text("Nearest features by decoder cosine (enter opens one)", style="bold"), id="neighbours-heading")
            yield OptionList(id="feature-neighbours")

    def on_mount(self) -> None:
        self._mounted = True
        self.app.registry_changed_signal.subscribe(self, self._registry_changed)
        self.run_worker(self._start, group="feature-start")  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    async def _start(self) -> None:
        if not await self.wait_ready():
            return
        if self.feature_id is None:
            self.feature_id = 0
        self._show_pending()
        self._load_page()
        self.action_build_index()

    # -- the index ----------------------------------------------------------------------------

    @property
    def index(self) -> FeatureIndex | None:
        session = self.engine.session
        return session.index if session is not None else None

    def action_build_index(self) -> None:
        """Build, load or resume the index (once at a time)."""
        index = self.index
        if index is not None and index.complete:
            self.notify("The feature index is complete")
            return
        if self.build_job is not None and not self.build_job.done:
            return
        self.run_worker(self._build, group="feature-index", exclusive=True)  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    async def _build(self) -> None:
        if not await self.wait_ready():
            return
        session = self.app.session
        notes: list[str] = []
        # A build already under way (started elsewhere) is followed, not started twice.
        job = self.engine.find_job(INDEX_JOB) or self.engine.start(INDEX_JOB, build_index, session, default_budget(session), DEFAULT_TOP_K, None, notes)
        self.build_job = job
        self.build_error = None
        # While it builds, pages show what is known so far, refreshed now and then.
        refresher = self.set_interval(PARTIAL_REFRESH_S, self._refresh_partial)
        try:
            index = await self.app.wait_job(job)
        except Cancelled:
            index = self.index
            done = index.tokens_seen if index is not None else 0
            self.notify(f"Index build cancelled at {done:,} tokens: pages show what is known (PARTIAL); b resumes", timeout=8)
        except UserError as exc:
            self.build_error = exc.one_line()
            self.notify(visible(exc.one_line()), severity="error", markup=False, timeout=10)
        else:
            seconds = float(index.meta.get("build_seconds", 0.0))
            if job.last is not None and seconds > 0:
                self.notify(f"Feature index ready: {index.describe()} in {seconds:.1f}s")
            await self._explain(index)
        finally:
            refresher.stop()
            for note in notes:
                self.notify(visible(note), markup=False, timeout=8)
            self.build_job = None
            self._load_page()

    def _refresh_partial(self) -> None:
        if self.index is not None and time.perf_counter() - self._last_refresh >= PARTIAL_REFRESH_S:
            self._load_page()

    async def _explain(self, index: FeatureIndex) -> None:
        """Explanations of every live feature (cached beside the index), for names and search."""
        from ..engine.explain import explain_index

        if index is None or not index.complete:
            return
        session = self.app.session
        try:
            session.explanations = await self.app.wait_job(self.engine.start("explaining", explain_index, session, index))
        except Cancelled:
            return
        self.app.refresh_names()

    def action_search(self) -> None:
        from ..engine.search import registry_texts
        from .feature_search import FeatureSearch

        session = self.engine.session
        explanations = session.explanations if session is not None else {}
        if not explanations:
            self.notify("Explanations come with the feature index: wait for it to finish (search covers registry names meanwhile)")
        names, descriptions = registry_texts(self.app.registry)

        def chosen(fid: int | None) -> None:
            if fid is not None:
                self.show_feature(fid)

        self.app.push_screen(FeatureSearch(explanations, names, descriptions), chosen)

    # -- showing a feature -------------------------------------------------------------------

    def show_feature(self, feature_id: int) -> None:
        """Show this feature (from the app's OpenFeature, or this screen's keys)."""
        self.feature_id = int(feature_id)
        self.n_shown = CONTEXTS_STEP
        if self._mounted:
            self._load_page(reset=True)

    def _show_pending(self) -> None:
        """The title while a page is on its way: the model is loaded, the worker may be busy."""
        if self.page is not None or self.feature_id is None:
            return
        session = self.engine.session
        title = Text()
        title.append(f"Feature {self.feature_id}", Style(bold=True))
        if session is not None:
            title.append(f" of {session.d_sae:,}", Style(dim=True))
        busy = self.app.job_progress
        # The page is read between two steps of the engine's current work, if any.
        waiting = f" · reading its page after the current step of {busy.label}" if busy is not None and not busy.finished else " · reading its page"
        title.append_text(literal(waiting, style="dim"))
        self.query_one("#feature-title", Static).update(title)

    def _load_page(self, reset: bool = False) -> None:
        if self.feature_id is None or not self.app.is_ready:
            return
        self._last_refresh = time.perf_counter()
        # A later refresh may replace this fetch (workers are exclusive): keep its reset.
        self._reset_next = self._reset_next or reset
        # A callable, not a coroutine: a worker that never starts (app exiting) leaves nothing un-awaited.
        self.run_worker(partial(self._fetch, self.feature_id), group="feature-page", exclusive=True)  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    async def _fetch(self, feature_id: int) -> None:
        known = self.page if self.page is not None and self.page.feature_id == feature_id else None
        try:
            page = await self.engine.run(feature_page, self.app.session, feature_id, self.n_shown, known)
        except UserError as exc:
            self.notify(visible(exc.one_line()), severity="error", markup=False)
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
        elif getattr(self.app, "registry", None) is not None:
            title.append(" · unnamed (e names it)", Style(dim=True))
        if stats is not None and stats.partial:
            title.append("  ")
            total = stats.n_contexts * (index.context_len - index.first_position) if index else 0
            title.append(f" PARTIAL: {stats.tokens:,} of {total:,} tokens indexed ", Style(bold=True, color="black", bgcolor="yellow"))
        self.query_one("#feature-title", Static).update(title)
        description = self._description(fid)
        described = self.query_one("#feature-description", Static)
        described.update(description)
        described.display = bool(description.plain)
        family = self._family(fid)
        family_view = self.query_one("#feature-family", Static)
        family_view.update(family)
        family_view.display = bool(family.plain)
        self.query_one("#feature-stats", Static).update(self._stats_text(page))
        histogram = self.query_one(FeatureHistogram)
        fires = stats is not None and stats.fires
        if stats is not None and stats.fires:
            histogram.show(stats.histogram, histogram_edges(), stats.max_activation)
        else:
            histogram.show(None, None)
        histogram.display = fires
        self.query_one("#histogram-heading", Static).display = fires
        self._render_contexts(page, reset)
        self.query_one("#feature-logits", Static).update(self._logits_text(page))
        self._render_neighbours(page, reset)
        if reset:
            self.query_one("#feature-body", VerticalScroll).scroll_home(animate=False)

    def _description(self, fid: int) -> Text:
        registry = getattr(self.app, "registry", None)
        entry = registry.get(fid) if registry is not None else None
        if not entry:
            return Text("")  # the title says "unnamed (e names it)"
        out = Text()
        description = entry.get("description")
        if isinstance(description, str) and description.strip():
            out.append_text(literal(description, inline=False))
        confidence = entry.get("confidence")
        if isinstance(confidence, str) and confidence:
            out.append("  confidence: ", Style(dim=True))
            out.append_text(literal(confidence))
        return out

    def _family(self, fid: int) -> Text:
        """Its cluster and siblings, once the session is clustered (the clusters screen, key 6)."""
        from ..engine.clusters import feature_family
        from ..ui.feature_map import family_line

        session = self.engine.session
        if session is None or session.clusters is None:
            return Text("")
        cluster, siblings = feature_family(session.clusters, fid)
        return family_line(cluster, siblings, {f: name for f in siblings if (name := self.app.feature_name(f))})

    def _stats_text(self, page: FeaturePage) -> Text:
        """Two short lines: what the index says of the feature, and what the index is."""
        stats = page.stats
        index = self.index
        out = Text()
        if stats is None:
            if self.build_error:
                out.append_text(literal(f"No feature index: {self.build_error}", style="red"))
            else:
                job, busy = self.build_job, self.app.job_progress
                if job is not None and job.last is None and busy is not None and not busy.finished:
                    # One long job runs at a time: the build waits for the one running.
                    when = literal(f"it is built once the {busy.label} ends", style="dim")
                else:
                    when = Text("it is being built (x cancels)", style="dim")
                out.append("No feature index yet: ", Style(dim=True))
                out.append_text(when)
                out.append(". Decoder facts below need none.", Style(dim=True))
            return out
        if not stats.fires:
            where = "so far " if stats.partial else ""
            out.append(f"Never fired {where}on the {stats.tokens:,} indexed tokens", Style(bold=True, color="red"))
            out.append(" (dead here; its decoder facts below still apply)\n", Style(dim=True))
        else:
            out.append("density ", Style(dim=True))
            out.append(f"{stats.density:.3%}", Style(bold=True))
            out.append(f" ({stats.count:,} of {stats.tokens:,} tokens) · ", Style(dim=True))
            out.append("max ", Style(dim=True))
            out.append(f"{stats.max_activation:.4g}", Style(bold=True, color="orange1"))
            out.append(" · mean when firing ", Style(dim=True))
            out.append(f"{stats.mean_activation:.4g}")
            out.append(f" · s steers at {2 * stats.max_activation:.3g} (2x max)\n", Style(dim=True))
            removal = self.removal.get(stats.feature_id)
            if removal is not None:
                out.append_text(removal_text(removal))
        if index is not None:
            out.append_text(literal(index_line(index, report_budget(self.app)), style="dim"))
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
        head.append("  (m more, t probe, up/down to pick)\n", Style(dim=True))
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
        out.append_text(literal(f"how: {page.logits.how}; decoder norm {page.decoder_norm:.3g}", style="dim italic"))
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

    def _registry_changed(self, change: RegistryChange) -> None:
        # The title, the description and the neighbours' names may have changed.
        if self.page is not None:
            self._render_page(self.page, reset=False)

    # -- keys ------------------------------------------------------------------------------

    def _d_sae(self) -> int | None:
        session = self.engine.session
        return session.d_sae if session is not None else None

    def action_goto(self) -> None:
        def opened(feature_id: int | None) -> None:
            if feature_id is not None:
                self.show_feature(feature_id)

        d_sae = self._d_sae()
        if d_sae is None:
            self.notify("The SAE is still loading", severity="warning")
            return
        # The dialog checks the id itself and returns only one in range.
        self.app.push_screen(GotoFeature(d_sae), opened)

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
        self.post_message(ProbeText(text, self.feature_id))

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
        self.run_worker(partial(self._removal, self.feature_id), group="feature-removal", exclusive=True)  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    async def _removal(self, feature_id: int) -> None:
        from ..engine.intervene import removal_effect

        session = self.app.session
        try:
            effect = await self.app.wait_job(self.engine.start("ablating on top contexts", removal_effect, session, self.index, feature_id))
        except Cancelled:
            self.notify("Cancelled")
            return
        except UserError as exc:
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            return
        self.removal[feature_id] = effect
        if self.page is not None and self.page.feature_id == feature_id:
            self.query_one("#feature-stats", Static).update(self._stats_text(self.page))


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
