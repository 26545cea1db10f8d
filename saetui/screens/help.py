"""The help screen: the keys saetui defines where `?` was pressed, built from the bindings.

Listed: the screen's own keys, those of saetui's widgets on it (the probe's token cursor,
say, even while typing), then the keys that work on every screen. Textual's built-in keys
(scrolling, moving in a table, editing text) are left out: they work as everywhere else.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


def own_bindings(node: DOMNode) -> list[Binding]:
    """The bindings saetui's classes declare for `node` (not those inherited from Textual's)."""
    out: list[Binding] = []
    for cls in type(node).__mro__:
        if cls.__module__.startswith("saetui.") and "BINDINGS" in cls.__dict__:
            out.extend(Binding.make_bindings(cls.__dict__["BINDINGS"]))
    return out


def binding_rows(screen: Screen) -> list[tuple[str, str, str]]:
    """(keys, what they do, where they work) for the keys saetui defines on `screen`."""
    app: App = screen.app
    rows: list[tuple[str, str, str]] = []
    listed: set[tuple[str, str]] = set()

    def add(node: DOMNode, where: str) -> None:
        # Keys bound to the same action (n and ], say) share one row.
        grouped: dict[str, tuple[list[str], str]] = {}
        for binding in own_bindings(node):
            # The tooltip is the long form of a description kept short for the footer.
            keys, _ = grouped.setdefault(binding.action, ([], binding.tooltip or binding.description or binding.action))
            key = app.get_key_display(binding)
            if key not in keys:
                keys.append(key)
        for action, (keys, description) in grouped.items():
            if (action, description) in listed:  # a second table of the same kind
                continue
            listed.add((action, description))
            rows.append((" / ".join(keys), description, where))

    add(screen, "this screen")
    for widget in screen.query("*"):
        add(widget, _widget_name(widget))
    add(app, "every screen")
    if app.ENABLE_COMMAND_PALETTE:
        rows.append((app.get_key_display(Binding(app.COMMAND_PALETTE_BINDING, "command_palette")), "Commands (screens, help, theme)", "every screen"))
    return rows


def _widget_name(widget: DOMNode) -> str:
    """What the user sees a widget as: its border title, else its class name."""
    title = getattr(widget, "border_title", None)
    return str(title) if title else type(widget).__name__


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
            table.add_columns("key", "does", "where")
            for key, what, where in self.rows:
                table.add_row(Text(key, style="bold"), Text(what), Text(where, style="dim"))
            yield table

    async def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)
