"""The strip under the header: the four screens with their keys, the current one lit."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

SCREENS = (("1", "report", "Report"), ("2", "feature", "Feature"), ("3", "probe", "Probe"), ("4", "registry", "Registry"), ("6", "clusters", "Clusters"))


class ScreenTabs(Static):
    DEFAULT_CSS = """
    ScreenTabs { height: 1; padding: 0 1; background: $panel; }
    """

    active: reactive[str] = reactive("report")

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        for key, mode, name in SCREENS:
            style = "bold reverse" if mode == self.active else ""
            out.append(f" {key} ", "bold")
            out.append(f"{name} ", style)
            out.append(" ")
        out.append("  ? help  q quit", "dim")
        return out
