"""The strip under the header: every screen with its key, the current one lit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

if TYPE_CHECKING:
    from ..screens import ScreenEntry


class ScreenTabs(Static):
    """Shows `screens` (the app's table of screens) in order; `active` is the current mode."""

    DEFAULT_CSS = """
    ScreenTabs { height: 1; padding: 0 1; background: $panel; }
    """

    active: reactive[str] = reactive("")

    def __init__(self, screens: Sequence["ScreenEntry"]) -> None:
        super().__init__()
        self.screens = tuple(screens)

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        for entry in self.screens:
            out.append(entry.key, "bold")
            out.append(f" {entry.title} ", "bold reverse" if entry.mode == self.active else "")
            out.append(" ")
        out.append(" ? help  q quit", "dim")
        return out
