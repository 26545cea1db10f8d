"""The registry screen: the user's named features, searchable and editable.

Every edit goes through the edit dialog (`edit_entry.py`) and is saved at once; the
file is re-read when the screen is shown, so another saetui's edits appear too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Static

from ..engine.errors import UserError
from ..messages import EditRegistryEntry, OpenFeature, RegistryChanged
from ..ui.safe_text import literal, visible
from .base import EngineScreen
from .edit_entry import SafeInput, delete_entry, editable, feature_density, open_entry_editor, restore

CONFIDENCE_STYLE = {"high": "green", "medium": "yellow", "low": "red"}


class RegistryTable(DataTable):
    """Registry entries; the row key is the feature id."""

    @property
    def highlighted_feature(self) -> int | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None


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
        table = RegistryTable(id="registry-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="registry-detail")

    def on_mount(self) -> None:
        table = self.query_one(RegistryTable)
        table.add_column("feature", key="feature")
        table.add_column("name", key="name")
        table.add_column("confidence", key="confidence")
        table.add_column("density", key="density")
        self.refresh_entries()
        table.focus()

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
        table = self.query_one(RegistryTable)
        keep = keep if keep is not None else table.highlighted_feature
        table.clear()
        rows = self.matching_entries()
        for fid, entry in rows:
            confidence = entry.get("confidence")
            density, partial = feature_density(self.engine.session, fid)
            table.add_row(
                Text(str(fid)),
                literal(str(entry.get("name", ""))),
                literal(str(confidence or ""), style=CONFIDENCE_STYLE.get(str(confidence), "")),
                # Dim: unknown, or counted so far while the index is still building.
                Text("—" if density is None else f"{100 * density:.3g}%", style="dim" if density is None or partial else ""),
                key=str(fid),
            )
        if keep is not None and any(fid == keep for fid, _ in rows):
            table.move_cursor(row=table.get_row_index(str(keep)))
        summary = Text(f"{len(rows)} of {len(self.registry)} named features · ")
        summary.append_text(literal(str(self.registry.path), style="dim"))
        if self.registry.read_only:
            summary.append("  READ-ONLY", style="bold red")
        self.query_one("#registry-summary", Static).update(summary)
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#registry-detail", Static)
        fid = self.query_one(RegistryTable).highlighted_feature
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

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "registry-filter":
            self.refresh_entries()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "registry-filter":
            self.query_one(RegistryTable).focus()

    def on_registry_changed(self, message: RegistryChanged) -> None:
        self.refresh_entries()

    def on_screen_resume(self) -> None:
        # Another saetui may have saved names meanwhile.
        self.registry.refresh()
        self.refresh_entries()

    # -- keys ---------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#registry-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one(RegistryTable).focus()

    def action_add(self) -> None:
        open_entry_editor(self.app, None, on_saved=lambda fid: self.refresh_entries(keep=fid))

    def action_edit(self) -> None:
        fid = self.query_one(RegistryTable).highlighted_feature
        if fid is None:
            self.notify("Nothing to edit: press a to add an entry")
            return
        self.post_message(EditRegistryEntry(fid))

    def action_delete(self) -> None:
        fid = self.query_one(RegistryTable).highlighted_feature
        if fid is None:
            self.notify("Nothing to delete")
            return
        if self.registry.read_only:
            self.notify(visible(self.registry.warning or "The registry is read-only"), severity="error", markup=False)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                delete_entry(self.app, fid)

        self.app.push_screen(ConfirmDeleteScreen(fid, self.registry.name(fid)), confirmed)

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
        fid = self.query_one(RegistryTable).highlighted_feature
        if fid is not None:
            self.post_message(OpenFeature(fid))


class ConfirmDeleteScreen(ModalScreen[bool]):
    """y deletes, n or escape keeps."""

    CSS_PATH = "registry.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Delete"),
        Binding("n,escape", "answer(False)", "Keep"),
    ]

    def __init__(self, feature_id: int, name: str | None) -> None:
        super().__init__()
        self.feature_id = feature_id
        self.feature_name = name

    def compose(self) -> ComposeResult:
        question = Text(f"Delete feature {self.feature_id}")
        if self.feature_name:
            question.append(" (")
            question.append_text(literal(self.feature_name))
            question.append(")")
        question.append(" from the registry?\n\ny: delete    n / escape: keep")
        with Vertical(id="confirm-dialog", classes="registry-dialog"):
            yield Static(question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Delete (y)", id="confirm-yes", variant="error")
                yield Button("Keep (n)", id="confirm-no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


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
