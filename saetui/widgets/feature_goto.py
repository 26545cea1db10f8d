"""The go-to-feature dialog: type an id, enter to open it, escape to close."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class GotoFeature(ModalScreen[str | None]):
    """Returns what was typed (checked by the caller), or None when dismissed."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    GotoFeature { align: center middle; }
    GotoFeature > Vertical { width: 44; height: auto; border: round $accent; background: $surface; padding: 0 1; }
    GotoFeature Input { width: 100%; }
    """

    def __init__(self, d_sae: int | None) -> None:
        super().__init__()
        self.d_sae = d_sae

    def compose(self) -> ComposeResult:
        with Vertical():
            hint = f"Feature id (0-{self.d_sae - 1})" if self.d_sae else "Feature id"
            yield Label(f"{hint}, enter to open, escape to close")
            yield Input(placeholder="e.g. 42", id="goto-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_close(self) -> None:
        self.dismiss(None)
