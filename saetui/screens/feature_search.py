"""The search dialog of the feature screen (`/`): type words, enter lists the matching
features (registry name, description, automatic explanation, top tokens), enter on one
opens it. Results come from engine/search.py over the app's explanations."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from ..engine.search import search_features
from ..ui.safe_text import literal


class FeatureSearch(ModalScreen[int | None]):
    """Returns the chosen feature id, or None when dismissed."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    FeatureSearch { align: center middle; }
    FeatureSearch > Vertical { width: 76; height: auto; max-height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    FeatureSearch Input { width: 100%; }
    FeatureSearch OptionList { height: auto; max-height: 16; }
    """

    def __init__(self, explanations: dict, names: dict[int, str], descriptions: dict[int, str]) -> None:
        super().__init__()
        self.explanations = explanations
        self.names = names
        self.descriptions = descriptions

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Search features (name, description, explanation, top tokens); enter, escape closes")
            yield Input(placeholder="e.g. rabbit", id="search-input")
            yield OptionList(id="search-results")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        results = self.query_one(OptionList)
        results.clear_options()
        hits = search_features(event.value, self.explanations, self.names, self.descriptions, limit=30)
        if not hits:
            results.add_option(Option(literal(f"No feature matches {event.value!r}"), disabled=True))
            return
        for h in hits:
            label = h.name or (f"{h.explanation} (auto)" if h.explanation else "")
            score = f" {h.explanation_score:.2f}" if h.explanation_score is not None else ""
            results.add_option(Option(literal(f"#{h.feature_id:<6}{score}  {label}"), id=f"hit-{h.feature_id}"))
        results.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id and event.option.id.startswith("hit-"):
            self.dismiss(int(event.option.id.split("-", 1)[1]))

    def action_close(self) -> None:
        self.dismiss(None)
