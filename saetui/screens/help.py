"""The help screen: every key that works where `?` was pressed, built from the bindings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


def binding_rows(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, what it does, where it is bound) for the active bindings of `screen`."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for key, active in screen.active_bindings.items():
        binding = active.binding
        description = binding.description or binding.action
        if binding.action in ("help_quit",) or key in seen:
            continue
        seen.add(key)
        owner = type(active.node).__name__
        rows.append((screen.app.get_key_display(binding), description, owner))
    rows.sort(key=lambda r: (r[2] != type(screen).__name__, r[2], r[0]))
    return rows


class HelpScreen(ModalScreen[None]):
    """Keys of the screen below, with what they do. Any of escape, q or ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close help"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 80%; max-width: 90; height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    HelpScreen DataTable { height: auto; }
    """

    def __init__(self, rows: list[tuple[str, str, str]], title: str) -> None:
        super().__init__()
        self.rows = rows
        self.title_text = title

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(f"Keys on the {self.title_text} screen (escape closes)", classes="help-title")
            table: DataTable = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "does", "bound on")
            from rich.text import Text

            for key, what, owner in self.rows:
                table.add_row(Text(key, style="bold"), Text(what), Text(owner, style="dim"))
            yield table

    async def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)
