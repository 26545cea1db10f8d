"""The go-to-feature dialog: type an id, enter to open it, escape to close.

It checks what was typed itself: a whole number from 0 to d_sae - 1 closes the dialog
with that id; anything else says what is wrong under the box, and the dialog stays open.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, Static

from ..ui.safe_text import literal


class FeatureId(Validator):
    """A feature id of an SAE with `d_sae` features."""

    def __init__(self, d_sae: int) -> None:
        super().__init__()
        self.d_sae = d_sae

    def validate(self, value: str) -> ValidationResult:
        text = value.strip()
        last = self.d_sae - 1
        try:
            fid = int(text)
        except ValueError:
            return self.failure(f"{text!r} is not a feature id: type a whole number from 0 to {last}")
        if not 0 <= fid <= last:
            return self.failure(f"Feature {fid} is out of range: the SAE has {self.d_sae:,} features, 0 to {last}")
        return self.success()


class GotoFeature(ModalScreen[int | None]):
    """Returns the feature id typed (always in range), or None when closed."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    GotoFeature { align: center middle; }
    GotoFeature > Vertical { width: 50; max-width: 100%; height: auto; border: round $accent; background: $surface; padding: 0 1; }
    GotoFeature > Vertical > Label { width: 100%; }
    GotoFeature #goto-keys { color: $text-muted; }
    GotoFeature Input { width: 100%; }
    GotoFeature #goto-problem { color: $error; height: auto; display: none; }
    GotoFeature #goto-problem.-shown { display: block; }
    """

    def __init__(self, d_sae: int) -> None:
        super().__init__()
        self.d_sae = d_sae

    def compose(self) -> ComposeResult:
        with Vertical():
            # Two short lines, so that the prompt fits whole in the 50-column box.
            yield Label(f"Go to feature: an id from 0 to {self.d_sae - 1}", id="goto-prompt")
            yield Label("enter opens it · escape closes", id="goto-keys")
            yield Input(placeholder="e.g. 42", id="goto-input", validators=[FeatureId(self.d_sae)], validate_on=["submitted"])
            yield Static("", id="goto-problem")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    async def on_key(self, event: events.Key) -> None:
        # Keys typed in the same burst as the key that opened the dialog ("g17" enter) reach
        # the dialog before its box has focus (focus is set after mounting): they are typed
        # into the box here, in order, rather than lost.
        box = self.query_one(Input)
        if self.focused is box:
            return
        if event.is_printable and event.character:
            event.stop()
            box.insert_text_at_cursor(event.character)
            box.focus()
        elif event.key == "enter":
            event.stop()
            await box.action_submit()

    def _show_problem(self, problem: str) -> None:
        line = self.query_one("#goto-problem", Static)
        line.update(literal(problem))
        line.set_class(bool(problem), "-shown")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._show_problem("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        result = event.validation_result
        if result is not None and not result.is_valid:
            self._show_problem(" ".join(result.failure_descriptions))
            return
        self.dismiss(int(event.value.strip()))

    def action_close(self) -> None:
        self.dismiss(None)
