"""The steer screen: change features inside the model and watch what it does.

A list of interventions (feature, name, mode, value; `a` adds, `e` edits, `d` removes;
`s` on the feature and probe screens adds the current feature), a prompt, and on `g`
(or Enter in the prompt) the clean and intervened continuations streamed side by side,
token by token, with mlx-lm's own generation step. The prompt's own tokens are shaded
by how much the interventions change their loss (red: less likely, green: more likely).
`x` cancels the generation; nothing typed is lost.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from textual import on
from textual.message import Message

from ..engine.errors import Cancelled, UserError
from ..engine.intervene import DEFAULT_MAX_NEW_TOKENS, MODE_HELP, Intervention, SteerProgress, TextEffects, parse_intervention, steer, text_effects
from ..engine.worker import Job, Progress
from ..messages import RegistryChange
from ..ui.safe_text import literal, visible
from .base import EngineScreen

DEFAULT_PROMPT = "We ate"
# Loss change (nats) that gets the strongest shade.
SHADE_SCALE = 1.0


def steer_list(app: Any) -> list[Intervention]:
    """The app's list of interventions (shared by every screen)."""
    interventions = getattr(app, "interventions", None)
    if interventions is None:
        interventions = []
        app.interventions = interventions
    return interventions


def add_to_steer(app: Any, feature_id: int, max_activation: float | None = None) -> Intervention:
    """Add a feature to the steer list (replacing its entry): clamped to a strong value
    (twice its max activation when known), else scaled by 4; tells the user."""
    if max_activation is not None and max_activation > 0:
        iv = Intervention(int(feature_id), "clamp", round(2.0 * float(max_activation), 3))
    else:
        iv = Intervention(int(feature_id), "scale", 4.0)
    items = steer_list(app)
    items[:] = [x for x in items if x.feature_id != iv.feature_id] + [iv]
    app.notify(f"Steer list: feature {iv.feature_id} {iv.describe()} ({len(items)} in the list; 5 opens Steer)")
    return iv


def loss_shade(change: float) -> Style:
    """Red when the token got less likely, green when more likely, by |change| / SHADE_SCALE."""
    f = max(0.0, min(1.0, abs(float(change)) / SHADE_SCALE))
    base = (40, 40, 40)
    hot = (200, 40, 40) if change > 0 else (40, 170, 60)
    rgb = tuple(int(round(b + (h - b) * f)) for b, h in zip(base, hot))
    return Style(bgcolor=Color.from_rgb(*rgb), color=Color.from_rgb(235, 235, 235))


def shaded_by_loss(effects: TextEffects) -> Text:
    out = Text(no_wrap=False)
    for i, (tok, change) in enumerate(zip(effects.tokens, effects.loss_change)):
        out.append(visible(tok) or "∅", loss_shade(change) if abs(change) > 1e-6 else Style(bgcolor=Color.from_rgb(*((40, 40, 40) if i % 2 else (52, 52, 52)))))
    return out


class InterventionTable(DataTable):
    def __init__(self, *, id: str) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)


class SteerScreen(EngineScreen):
    """Interventions, a prompt, and the clean and intervened continuations side by side."""

    class Streamed(Message):
        """A generation step (from the worker): the continuations so far."""

        def __init__(self, job: Job, progress: Progress) -> None:
            super().__init__()
            self.job = job
            self.progress = progress

    CSS_PATH = "steer.tcss"
    BINDINGS = [
        Binding("g", "generate", "Generate"),
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("d,delete", "remove", "Remove"),
        Binding("p", "edit_prompt", "Prompt"),
        Binding("escape", "leave_input", "Done typing", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.editing: int | None = None  # the row the spec box replaces (None: it adds)
        self.job: Job | None = None
        self.clean_text = ""
        self.steered_text = ""
        self.effects: TextEffects | None = None
        self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS

    def compose_body(self) -> Iterable[Widget]:
        table = InterventionTable(id="steer-list")
        table.border_title = "interventions (a add, e edit, d remove)"
        yield table
        spec = Input(placeholder=f"{MODE_HELP}, then Enter", id="steer-spec")
        spec.border_title = "intervention"
        yield spec
        prompt = Input(value=DEFAULT_PROMPT, placeholder="a prompt to continue, then Enter", id="steer-prompt")
        prompt.border_title = "prompt (Enter or g: generate)"
        yield prompt
        yield Static("", id="steer-status")
        effects = Static("", id="steer-effects")
        effects.border_title = "the prompt's tokens, by loss change (red: less likely)"
        yield effects
        with Horizontal(id="steer-panes"):
            clean = VerticalScroll(Static("", id="steer-clean-text"), id="steer-clean")
            clean.border_title = "clean"
            yield clean
            steered = VerticalScroll(Static("", id="steer-steered-text"), id="steer-steered")
            steered.border_title = "intervened"
            yield steered

    def on_mount(self) -> None:
        self.query_one(InterventionTable).add_columns("feature", "name", "mode", "value")
        self.query_one("#steer-spec", Input).display = False
        self._render_list()
        self._status(literal("Add an intervention (a), type a prompt, then g." if not steer_list(self.app) else "g generates."))
        self.app.registry_changed_signal.subscribe(self, self._registry_changed)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._render_list()

    # -- the list ------------------------------------------------------------------------------

    @property
    def interventions(self) -> list[Intervention]:
        return steer_list(self.app)

    def _render_list(self) -> None:
        table = self.query_one(InterventionTable)
        row = table.cursor_row
        table.clear()
        for i, iv in enumerate(self.interventions):
            name = self.app.feature_name(iv.feature_id) if hasattr(self.app, "feature_name") else None
            table.add_row(
                Text(str(iv.feature_id)),
                literal(name or ""),
                Text(iv.mode),
                Text("" if iv.value is None else f"{iv.value:g}", justify="right"),
                key=str(i),
            )
        if self.interventions:
            table.move_cursor(row=min(row, len(self.interventions) - 1))

    def action_add(self) -> None:
        self._open_spec(None)

    def action_edit(self) -> None:
        if not self.interventions:
            self.notify("Nothing to edit: add an intervention with a")
            return
        self._open_spec(self.query_one(InterventionTable).cursor_row)

    def _open_spec(self, row: int | None) -> None:
        self.editing = row
        box = self.query_one("#steer-spec", Input)
        box.value = self.interventions[row].spec if row is not None else ""
        box.border_title = "edit intervention" if row is not None else "add intervention"
        box.display = True
        box.focus()

    def action_remove(self) -> None:
        if not self.interventions or isinstance(self.focused, Input):
            return
        row = self.query_one(InterventionTable).cursor_row
        removed = self.interventions.pop(row)
        self.notify(f"Removed feature {removed.feature_id} {removed.describe()}")
        self._render_list()

    def action_edit_prompt(self) -> None:
        self.query_one("#steer-prompt", Input).focus()

    def action_leave_input(self) -> None:
        box = self.query_one("#steer-spec", Input)
        if box.display:
            box.display = False
        self.query_one(InterventionTable).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "steer-spec":
            self._submit_spec(event.value)
        elif event.input.id == "steer-prompt":
            self.action_generate()

    def _submit_spec(self, text: str) -> None:
        d_sae = self.engine.sae.d_sae if self.engine.sae is not None else None
        try:
            iv = parse_intervention(text, d_sae)
        except UserError as exc:
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            return  # the box keeps what was typed
        if self.editing is not None and self.editing < len(self.interventions):
            self.interventions[self.editing] = iv
        else:
            self.interventions.append(iv)
        box = self.query_one("#steer-spec", Input)
        box.value = ""
        box.display = False
        self.editing = None
        self._render_list()
        self.query_one(InterventionTable).focus()

    # -- generation -----------------------------------------------------------------------------

    @property
    def prompt(self) -> str:
        return self.query_one("#steer-prompt", Input).value

    def action_generate(self) -> None:
        if isinstance(self.focused, Input) and self.focused.id == "steer-spec":
            return
        if not self.interventions:
            self.notify("Add an intervention first (a, or s on the feature and probe screens)", severity="warning")
            return
        if not self.prompt.strip():
            self.notify("Type a prompt first (p)", severity="warning")
            return
        if self.job is not None and not self.job.done:
            self.job.cancel()
        self.run_worker(self._generate(self.prompt, list(self.interventions)), group="steer", exclusive=True)

    async def _generate(self, prompt: str, interventions: list[Intervention]) -> None:
        if not self.app.is_ready:
            self._status(literal("Loading the model..."))
            if not await self.wait_ready():
                return
        session = self.app.session
        try:
            self.effects = await self.engine.run(text_effects, session, prompt, interventions)
            self._render_effects()
            self._pane("", "")

            def streamed(job: Job, progress: Progress | None) -> None:
                # Worker thread: the job bar, and this screen's panes, by posted messages.
                self.app.post_job_progress(job, progress)
                if progress is not None:
                    self.post_message(self.Streamed(job, progress))

            job = self.engine.start("steering", steer, session, prompt, interventions, self.max_new_tokens, listener=streamed)
            self.job = job
            result = await self.app.wait_job(job)
            self._pane("\n\n".join(result.clean), "\n\n".join(result.steered))
            self._status(literal(f"Done: {len(interventions)} intervention(s). g generates again."))
        except Cancelled:
            self._status(literal("Cancelled. g generates again."))
        except UserError as exc:
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            self._status(literal(exc.one_line()))
        finally:
            self.job = None

    @on(Streamed)
    def _streamed(self, message: "SteerScreen.Streamed") -> None:
        if message.job is self.job and isinstance(message.progress, SteerProgress):
            self._pane(message.progress.clean_text, message.progress.steered_text)

    def _pane(self, clean: str, steered: str) -> None:
        self.clean_text, self.steered_text = clean, steered
        self.query_one("#steer-clean-text", Static).update(literal(clean, inline=False))
        self.query_one("#steer-steered-text", Static).update(literal(steered, inline=False))

    def _render_effects(self) -> None:
        effects = self.effects
        view = self.query_one("#steer-effects", Static)
        if effects is None:
            view.update("")
            return
        text = shaded_by_loss(effects)
        text.append(f"\nloss change {effects.total_loss_change:+.3f} nats over {effects.n_tokens} tokens")
        dependent = effects.most_dependent(3)
        if dependent:
            text.append("; most dependent: ")
            for n, j in enumerate(dependent):
                text.append(", " if n else "")
                text.append_text(literal(repr(effects.tokens[j])))
                text.append(f" {effects.loss_change[j]:+.2f}")
        view.update(text)

    def _status(self, text: Text) -> None:
        self.query_one("#steer-status", Static).update(text)

    def _registry_changed(self, change: RegistryChange) -> None:
        self._render_list()
