"""The registry screen: the user's named features, searchable and editable.

Add, edit and delete ask the app (`AddRegistryEntry`, `EditRegistryEntry`,
`DeleteRegistryEntry`), which shows its dialog, saves at once and announces the change;
the table follows every announced change. The file is re-read when the screen is shown,
so another saetui's edits appear too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from ..engine.errors import UserError
from ..messages import AddRegistryEntry, DeleteRegistryEntry, EditRegistryEntry, OpenFeature, RegistryChange
from ..ui.safe_text import literal, visible
from ..widgets.feature_table import NAME, FeatureTable
from .base import EngineScreen
from .edit_entry import SafeInput, editable, feature_density, restore

CONFIDENCE_STYLE = {"high": "green", "medium": "yellow", "low": "red"}


def home_relative(path: Path) -> str:
    """`path` with the home folder as ~ (the registry's path fits 80 columns)."""
    try:
        return str(Path("~") / Path(path).expanduser().relative_to(Path.home()))
    except (ValueError, RuntimeError):
        return str(path)


class RegistryScreen(EngineScreen):
    CSS_PATH = "registry.tcss"
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("d", "delete", "Delete"),
        Binding("w", "export", "Export"),
        Binding("f", "open_feature", "Open feature"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield SafeInput(placeholder="/ filter by id, name or description", id="registry-filter")
        yield Static("", id="registry-summary")
        # Enter edits the highlighted entry here (f opens the feature).
        yield FeatureTable((NAME, "confidence", "density"), open_on_enter=False, id="registry-table")
        yield Static("", id="registry-detail")

    def on_mount(self) -> None:
        self.app.registry_changed_signal.subscribe(self, self._registry_changed)
        self.refresh_entries()
        self.query_one(FeatureTable).focus()

    @property
    def registry(self):
        return self.app.registry

    # -- rows ---------------------------------------------------------------------------------

    def matching_entries(self) -> list[tuple[int, dict]]:
        query = self.query_one("#registry-filter", Input).value.strip().casefold()
        rows = []
        for fid, entry in self.registry.entries():
            if query:
                haystack = " ".join([str(fid), str(entry.get("name", "")), str(entry.get("description", ""))]).casefold()
                if query not in haystack and query not in visible(haystack):
                    continue
            rows.append((fid, entry))
        return rows

    def refresh_entries(self, keep: int | None = None) -> None:
        """Show the entries matching the filter; the cursor stays on `keep` (default: its entry)."""
        rows = self.matching_entries()
        self.query_one(FeatureTable).show_features(((fid, self._cells(fid, entry)) for fid, entry in rows), keep=keep)
        self._show_summary()
        self._show_detail()

    def _cells(self, fid: int, entry: dict) -> tuple[Text, Text]:
        confidence = entry.get("confidence")
        density, partial = feature_density(self.engine.session, fid)
        return (
            literal(str(confidence or ""), style=CONFIDENCE_STYLE.get(str(confidence), "")),
            # Dim: unknown, or counted so far while the index is still building.
            Text("—" if density is None else f"{100 * density:.3g}%", style="dim" if density is None or partial else ""),
        )

    def _show_summary(self) -> None:
        summary = Text(f"{self.query_one(FeatureTable).row_count} of {len(self.registry)} named features · ")
        summary.append_text(literal(home_relative(self.registry.path), style="dim"))
        if self.registry.read_only:
            summary.append("  READ-ONLY", style="bold red")
        self.query_one("#registry-summary", Static).update(summary)

    def _show_detail(self) -> None:
        detail = self.query_one("#registry-detail", Static)
        fid = self.query_one(FeatureTable).highlighted_feature
        if fid is None:
            empty = "No named features yet: press a to add one, or e on the probe or feature screen."
            detail.update(literal(empty if len(self.registry) == 0 else "No entry matches the filter."))
            return
        entry = self.registry.get(fid) or {}
        out = Text()
        out.append(f"#{fid} ", style="bold")
        out.append_text(literal(str(entry.get("description") or "(no description)"), inline=False))
        examples = entry.get("examples") if isinstance(entry.get("examples"), list) else []
        if examples:
            out.append("\nexamples: ", style="dim")
            out.append_text(literal(" | ".join(str(e) for e in examples)))
        detail.update(out)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    @on(FeatureTable.Chosen)
    def _entry_chosen(self, event: FeatureTable.Chosen) -> None:
        event.stop()
        self.post_message(EditRegistryEntry(event.feature_id))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "registry-filter":
            self.refresh_entries()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "registry-filter":
            self.query_one(FeatureTable).focus()

    def _registry_changed(self, change: RegistryChange) -> None:
        # After a save, the cursor goes to the saved entry (a new one included).
        self.refresh_entries(keep=change.feature_id if change.action == "saved" else None)

    def on_screen_resume(self) -> None:
        # Another saetui may have saved names meanwhile.
        self.registry.refresh()
        self.refresh_entries()

    # -- keys ---------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#registry-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one(FeatureTable).focus()

    def action_add(self) -> None:
        self.post_message(AddRegistryEntry())

    def action_edit(self) -> None:
        fid = self.query_one(FeatureTable).highlighted_feature
        if fid is None:
            self.notify("Nothing to edit: press a to add an entry")
            return
        self.post_message(EditRegistryEntry(fid))

    def action_delete(self) -> None:
        fid = self.query_one(FeatureTable).highlighted_feature
        if fid is None:
            self.notify("Nothing to delete")
            return
        self.post_message(DeleteRegistryEntry(fid))

    def action_export(self) -> None:
        default = str(Path.cwd() / self.registry.path.name)

        def chosen(path: str | None) -> None:
            if not path:
                return
            try:
                written = self.registry.export(path)
            except UserError as exc:
                self.notify(visible(exc.one_line()), severity="error", markup=False)
                return
            self.notify(visible(f"Exported {len(self.registry)} features to {written}"), markup=False)

        self.app.push_screen(ExportScreen(default), chosen)

    def action_open_feature(self) -> None:
        fid = self.query_one(FeatureTable).highlighted_feature
        if fid is not None:
            self.post_message(OpenFeature(fid))


class ExportScreen(ModalScreen[str | None]):
    """Asks where to write a copy of the registry."""

    CSS_PATH = "registry.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="registry-dialog"):
            yield Static("Export the registry to (enter: write, escape: cancel):")
            yield SafeInput(editable(self.default), id="export-path")

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(restore(event.value.strip(), self.default) or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
