"""The probe screen: type text, see its tokens shaded by a feature, and which features fire.

Typing recomputes after a short pause, on the engine's worker thread; a result that
arrives after the text changed again is dropped. Escape leaves the text box, so the
screen's keys (and 1-4) work; `i` goes back to typing.
"""

from __future__ import annotations

from typing import Iterable

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static, TextArea

from ..engine.errors import UserError
from ..engine.probe import TEXT_TOP, ProbeResult, probe_text
from ..engine.ranking import RANK_ACTIVATION, RANK_DISTINCTIVE, RankedFeature, rank_text
from ..messages import EditRegistryEntry, OpenFeature, RegistryChange
from ..ui.safe_text import literal, visible
from ..ui.shading import shade_color, shaded_tokens
from ..widgets.feature_table import FeatureTable
from .base import EngineScreen
from .edit_entry import SafeTextArea, editable

# Seconds of no typing before the text is probed again.
DEBOUNCE_S = 0.25
# "At once" for a probe asked for by a key (a short timer, so typing still coalesces).
NOW_S = 0.01
SEPARATOR = "│"
EMPTY_HINT = "Type or paste text above; its tokens appear here, shaded by the selected feature."


class ProbeInput(SafeTextArea):
    """The text box. Escape is left to the screen (it moves focus to the tokens)."""


class TokenStrip(VerticalScroll, can_focus=True):
    """The text's tokens, shaded; left/right move the token cursor."""

    BINDINGS = [
        Binding("left", "screen.token_move(-1)", "Previous token", show=False),
        Binding("right", "screen.token_move(1)", "Next token", show=False),
        Binding("home", "screen.token_to(0)", "First token", show=False),
        Binding("end", "screen.token_to(-1)", "Last token", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static(literal(EMPTY_HINT), id="probe-tokens-text")


class ProbeFeatureTable(FeatureTable):
    """A feature table where left/right still move the token cursor; the shaded feature is marked."""

    BINDINGS = [
        Binding("left", "screen.token_move(-1)", "Previous token", show=False),
        Binding("right", "screen.token_move(1)", "Next token", show=False),
    ]


class ProbeScreen(EngineScreen):
    CSS_PATH = "probe.tcss"
    BINDINGS = [
        Binding("escape", "leave_text", "Done typing"),
        Binding("i", "edit_text", "Type"),
        Binding("f", "open_feature", "Open feature"),
        Binding("e", "edit_entry", "Name feature"),
        Binding("number_sign", "shade_by_id", "Shade by id (#)"),
        Binding("s", "steer", "Steer with feature", show=False),
        Binding("o", "toggle_rank", "Order", tooltip="Order the text's features: distinctive (how unusual for the feature) or raw activation"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: ProbeResult | None = None
        # The text's features in the order shown: distinctive (needs the feature index) or raw.
        self.rank_mode = RANK_DISTINCTIVE
        self.ranked: list[RankedFeature] = []
        self.selected: int | None = None  # the feature the tokens are shaded by
        self._selected_by_user = False
        self.cursor = 0
        self._generation = 0
        self._debounce: Timer | None = None
        # Text handed over by another screen, exactly (control characters included); the box
        # shows it with escapes, and it is probed as given until the user edits it.
        self._given_text: str | None = None

    def compose_body(self) -> Iterable[Widget]:
        box = ProbeInput(id="probe-input", soft_wrap=True)
        box.border_title = "text (esc: done typing)"
        yield box
        yield Static("", id="probe-status")
        yield Static("", id="probe-notice")
        # While the steer list holds interventions: each token's loss change under them.
        yield Static("", id="probe-effects")
        strip = TokenStrip(id="probe-tokens")
        strip.border_title = "tokens (←/→ move)"
        yield strip
        with Horizontal(id="probe-tables"):
            text_table = ProbeFeatureTable(("max", "tokens", "peak"), open_on_enter=False, marks=True, id="probe-text-features")
            text_table.border_title = "top features of the text"
            yield text_table
            token_table = ProbeFeatureTable(("act",), open_on_enter=False, marks=True, id="probe-token-features")
            token_table.border_title = "features of this token"
            yield token_table

    def on_mount(self) -> None:
        self.app.registry_changed_signal.subscribe(self, self._registry_changed)
        self._render_all()
        if self._given_text is not None:
            self.set_text(self._given_text)

    # -- the text -----------------------------------------------------------------------------

    @property
    def text(self) -> str:
        shown = self.query_one(ProbeInput).text
        if self._given_text is not None and shown == editable(self._given_text, multiline=True):
            return self._given_text
        return shown

    def set_text(self, text: str, feature_id: int | None = None) -> None:
        """Probe this text (from another screen): it replaces what is in the box.

        `feature_id`: shade the tokens by this feature (the one the text was opened from).
        """
        self._given_text = text
        if feature_id is not None:
            self.selected = int(feature_id)
            self._selected_by_user = True
        try:
            box = self.query_one(ProbeInput)
        except NoMatches:  # called before the screen is composed: on_mount loads it
            return
        box.load_text(editable(text, multiline=True))
        self._schedule(now=True)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id == "probe-input":
            self._schedule()

    def _schedule(self, now: bool = False) -> None:
        self._generation += 1
        if self._debounce is not None:
            self._debounce.stop()
        generation = self._generation
        # Never a 0-second timer: Textual's timer divides by its interval when the loop runs late.
        self._debounce = self.set_timer(NOW_S if now else DEBOUNCE_S, lambda: self._start_probe(generation))

    def _start_probe(self, generation: int) -> None:
        if generation != self._generation:
            return
        self.run_worker(self._probe(generation, self.text), group="probe", exclusive=True)

    async def _probe(self, generation: int, text: str) -> None:
        if not text:
            self._show(None)
            return
        if not self.app.is_ready:
            self._status(literal("Loading the model..."))
            if not await self.wait_ready():
                return
        extra = [self.selected] if self.selected is not None and self._selected_by_user else []
        session = self.app.session
        try:
            # Every firing feature is kept, so the distinctive ranking sees them all.
            result = await self.engine.run(probe_text, session, text, extra, session.d_sae)
            ranked = await self.engine.run(rank_text, session.index, result, self.rank_mode, TEXT_TOP)
        except UserError as exc:
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            return
        if generation != self._generation:
            return  # the text changed while this ran: a newer result is coming
        self.ranked = ranked
        self._show(result)
        await self._show_effects(generation, text)

    async def _show_effects(self, generation: int, text: str) -> None:
        """The steer list's effect on this text's tokens (loss change per token), or nothing."""
        from ..engine.intervene import text_effects
        from .steer import shaded_by_loss, steer_list

        view = self.query_one("#probe-effects", Static)
        interventions = list(steer_list(self.app))
        if not interventions or not text:
            view.set_class(False, "-shown")
            return
        try:
            effects = await self.engine.run(text_effects, self.app.session, text, interventions)
        except UserError as exc:
            view.update(literal(f"steer list: {exc.one_line()}"))
            view.set_class(True, "-shown")
            return
        if generation != self._generation:
            return
        line = Text(f"with {len(interventions)} intervention(s) (5: steer): loss change {effects.total_loss_change:+.3f} nats  ", style="dim")
        line.append_text(shaded_by_loss(effects))
        view.update(line)
        view.set_class(True, "-shown")

    def action_toggle_rank(self) -> None:
        self.rank_mode = RANK_ACTIVATION if self.rank_mode == RANK_DISTINCTIVE else RANK_DISTINCTIVE
        session = self.engine.session
        how = "by how unusual each activation is for its feature" if self.rank_mode == RANK_DISTINCTIVE else "by raw activation (the guide's order)"
        if self.rank_mode == RANK_DISTINCTIVE and (session is None or session.index is None):
            how += ": the feature index is not built yet (2: the feature screen builds it), so raw until then"
        self.notify(f"Features of the text ordered {how}")
        self._schedule(now=True)

    # -- showing a result -----------------------------------------------------------------------

    def _show(self, result: ProbeResult | None) -> None:
        self.result = result
        if result is None or result.n_tokens == 0:
            self.cursor = 0
        else:
            self.cursor = min(self.cursor, result.n_tokens - 1)
        if result is not None and result.top_features:
            if not self._selected_by_user or self.selected is None:
                self.selected = self.ranked[0].feature_id if self.ranked else result.top_features[0].feature_id
        elif not self._selected_by_user:
            self.selected = None
        self._render_all()

    def _render_all(self) -> None:
        self._render_text_table()
        self._render_tokens()
        self._render_token_table()
        self._render_status()

    def _render_text_table(self) -> None:
        rows = self.ranked if self.result is not None else []
        table = self.query_one("#probe-text-features", FeatureTable)
        table.show_features(
            (
                (r.feature_id, (Text(f"{r.max_activation:.3g}", justify="right"), Text(str(r.n_firing), justify="right"), literal(r.peak_token)))
                for r in rows
            ),
            marked=self.selected,
        )
        session = self.engine.session
        distinctive = self.rank_mode == RANK_DISTINCTIVE and session is not None and session.index is not None
        table.border_title = "top features of the text, " + ("most distinctive first" if distinctive else "by activation") + " (o: order)"

    def _render_token_table(self) -> None:
        table = self.query_one("#probe-token-features", FeatureTable)
        result = self.result
        if result is None or result.n_tokens == 0:
            table.show_features([])
            return
        table.show_features(((fid, (Text(f"{value:.3g}", justify="right"),)) for fid, value in result.token_top[self.cursor]), marked=self.selected)
        table.border_title = f"features of token {self.cursor + 1}"

    def _render_tokens(self) -> None:
        view = self.query_one("#probe-tokens-text", Static)
        result = self.result
        if result is None or result.n_tokens == 0:
            view.update(literal(EMPTY_HINT))
            return
        acts = result.activations_of(self.selected)
        mark = int(acts.argmax()) if acts.size and acts.max() > 0 else None
        text = shaded_tokens(result.tokens, acts, mark=mark, cursor=self.cursor, separator=SEPARATOR)
        # Dim the separators so they read as boundaries, not text.
        offset = 0
        for token in result.tokens:
            offset += len(visible(token) or "∅")
            text.stylize(Style(color="grey42"), offset, offset + 1)
            offset += 1
        view.update(text)
        self.call_after_refresh(self._scroll_to_cursor, text)

    def _scroll_to_cursor(self, text: Text) -> None:
        """Keep the cursor's line of the wrapped tokens in view."""
        strip = self.query_one(TokenStrip)
        width = strip.scrollable_content_region.width
        if width <= 0 or self.result is None:
            return
        start = sum(len(visible(t) or "∅") + 1 for t in self.result.tokens[: self.cursor])
        lines = text.wrap(self.app.console, width)
        seen = 0
        for line_no, line in enumerate(lines):
            seen += len(line.plain)
            if start < seen:
                strip.scroll_to(y=max(0, line_no - 1), animate=False)
                return

    def _render_status(self) -> None:
        result = self.result
        if result is None or result.n_tokens == 0:
            self._status(literal("No text yet." if result is None else "No tokens."))
            self._notice(None)
            return
        status = Text(f"{result.n_tokens} tokens")
        if self.selected is not None:
            acts = result.activations_of(self.selected)
            peak = float(acts.max()) if acts.size else 0.0
            status.append("  shading ")
            status.append(f"#{self.selected}", style="bold")
            name = self.app.feature_name(self.selected)
            if name:
                status.append(" ")
                status.append_text(literal(name[:24]))
            status.append("  0 ")
            for step in range(4):
                status.append(" ", Style(bgcolor=shade_color((step + 1) / 4)))
            status.append(f" {peak:.3g}" if peak > 0 else " (silent here)")
        token = result.tokens[self.cursor]
        status.append(f"  token {self.cursor + 1}: ")
        status.append_text(literal(repr_token(token)))
        self._status(status)
        self._notice(result.notice)

    def _status(self, text: Text) -> None:
        self.query_one("#probe-status", Static).update(text)

    def _notice(self, notice: str | None) -> None:
        widget = self.query_one("#probe-notice", Static)
        widget.update(literal(notice or ""))
        widget.set_class(bool(notice), "-shown")

    # -- keys -------------------------------------------------------------------------------------

    # While typing, letters go into the text box: the footer then shows only how to stop.
    TYPING_ONLY = {"leave_text"}
    NOT_WHILE_TYPING = {"edit_text", "open_feature", "edit_entry", "shade"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, ProbeInput)
        if action in self.TYPING_ONLY:
            return typing
        if action in self.NOT_WHILE_TYPING:
            return not typing
        return True

    def action_leave_text(self) -> None:
        if isinstance(self.focused, ProbeInput):
            self.query_one(TokenStrip).focus()

    def action_edit_text(self) -> None:
        self.query_one(ProbeInput).focus()

    def action_token_move(self, step: int) -> None:
        self._move_cursor(self.cursor + step)

    def action_token_to(self, index: int) -> None:
        n = self.result.n_tokens if self.result else 0
        self._move_cursor(index if index >= 0 else n + index)

    def _move_cursor(self, index: int) -> None:
        if self.result is None or self.result.n_tokens == 0:
            return
        self.cursor = max(0, min(self.result.n_tokens - 1, index))
        self._render_tokens()
        self._render_token_table()
        self._render_status()

    def _current_feature(self) -> int | None:
        """The feature a key acts on: the table row under the cursor, else the shaded one."""
        focused = self.focused
        if isinstance(focused, FeatureTable) and focused.highlighted_feature is not None:
            return focused.highlighted_feature
        return self.selected

    @on(FeatureTable.Chosen)
    def _feature_chosen(self, event: FeatureTable.Chosen) -> None:
        event.stop()
        self.select_feature(event.feature_id)

    def action_shade(self) -> None:
        feature = self._current_feature()
        if feature is not None:
            self.select_feature(feature)

    def action_shade_by_id(self) -> None:
        """Ask for a feature id (the dialog checks it) and shade the tokens by it."""
        from ..widgets.feature_goto import GotoFeature

        sae = self.engine.sae
        if sae is None:
            self.notify("The SAE is still loading", severity="warning")
            return

        def chosen(feature_id: int | None) -> None:
            if feature_id is not None:
                self.select_feature(feature_id)

        self.app.push_screen(GotoFeature(sae.d_sae), chosen)

    def select_feature(self, feature_id: int) -> None:
        """Shade the tokens by this feature (recomputing if the result has no column for it)."""
        self.selected = feature_id
        self._selected_by_user = True
        if self.result is not None and self.result.n_tokens and not self.result.has_feature(feature_id):
            self._schedule(now=True)
        self._render_all()

    def action_steer(self) -> None:
        """Add the feature under the cursor (else the shaded one) to the steer list."""
        from .steer import add_to_steer

        feature = self._current_feature()
        if feature is None:
            self.notify("No feature to steer with: type some text first")
            return
        hit = next((h for h in self.result.top_features if h.feature_id == feature), None) if self.result else None
        add_to_steer(self.app, feature, hit.max_activation if hit is not None else None)
        self._schedule(now=True)  # the tokens' loss changes under the new steer list

    def action_open_feature(self) -> None:
        feature = self._current_feature()
        if feature is None:
            self.notify("No feature to open: type some text first")
            return
        self.post_message(OpenFeature(feature))

    def action_edit_entry(self) -> None:
        feature = self._current_feature()
        if feature is None:
            self.notify("No feature to name: type some text first")
            return
        self.post_message(EditRegistryEntry(feature))

    def _registry_changed(self, change: RegistryChange) -> None:
        self._render_all()

    def on_screen_resume(self) -> None:
        # Names may have been edited meanwhile, here or by another saetui on the same file.
        self.app.registry.refresh()
        self._render_all()
        # The steer list may have changed on the Steer screen: show its effect on this text.
        if self.result is not None and self.result.n_tokens:
            self._schedule(now=True)


def repr_token(token: str) -> str:
    """A token quoted, so leading and trailing spaces show."""
    return f"'{token}'" if token else "''"
