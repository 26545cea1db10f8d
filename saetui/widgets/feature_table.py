"""A table of features: one row per feature id, with the feature's name in its own column.

The report (densest and dead features), the probe (features of the text and of a token)
and the registry list features with it. The row key is the feature id. Enter opens the
highlighted feature on the feature screen (posts `OpenFeature`); a screen where enter means
something else creates the table with `open_on_enter=False` and handles `FeatureTable.Chosen`.

The name column shows the app's name for each feature (`app.feature_name`: the registry's),
literally, and is refreshed whenever the app announces a registry change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from rich.console import RenderableType
from rich.text import Text
from textual import on
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from ..messages import OpenFeature, RegistryChange
from ..ui.safe_text import literal

FEATURE = "feature"
NAME = "name"
# Marks the row of the feature a screen has selected (the probe's shaded feature).
MARK = "▶"


class FeatureTable(DataTable):
    """Features by id. `columns` are the other columns, in order; "name" is filled in here."""

    @dataclass
    class Chosen(Message):
        """Enter (or a click) on a row of a table made with `open_on_enter=False`."""

        table: "FeatureTable"
        feature_id: int

        @property
        def control(self) -> "FeatureTable":
            return self.table

    def __init__(
        self,
        columns: Sequence[str] = (),
        *,
        open_on_enter: bool = True,
        marks: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.open_on_enter = open_on_enter
        # With marks, one feature's id can be marked (the ids are indented to line up).
        self.marks = marks
        # The name column goes where `columns` puts it, else last.
        self.value_columns = [c for c in columns if c != NAME]
        order = [FEATURE, *columns] if NAME in columns else [FEATURE, *columns, NAME]
        self._column_order = order
        self._columns_added = False
        self.marked: int | None = None

    def _ensure_columns(self) -> None:
        # Column widths are measured with the app's console: added once the app is reachable.
        if not self._columns_added:
            for column in self._column_order:
                self.add_column(column, key=column)
            self._columns_added = True

    def on_mount(self) -> None:
        self._ensure_columns()
        signal = getattr(self.app, "registry_changed_signal", None)
        if signal is not None:
            signal.subscribe(self, self._registry_changed)

    # -- rows -------------------------------------------------------------------------------------

    def show_features(self, rows: Iterable[tuple[int, Sequence[RenderableType]]], marked: int | None = None, keep: int | None = None) -> None:
        """Replace the rows: (feature id, the cells of `columns` other than the name).

        A table made with `marks` marks the id of `marked`. The cursor stays on `keep`
        (default: the feature it is on) if that is still listed.
        """
        self._ensure_columns()
        keep = keep if keep is not None else self.highlighted_feature
        self.marked = marked
        self.clear()
        ids: set[int] = set()
        for fid, cells in rows:
            fid = int(fid)
            # A plain string is shown as it is (DataTable would parse it as markup).
            values = {c: Text(v) if isinstance(v, str) else v for c, v in zip(self.value_columns, cells)}
            row = [self._id_cell(fid) if c == FEATURE else self.name_cell(fid) if c == NAME else values.get(c, Text("")) for c in self._column_order]
            self.add_row(*row, key=str(fid))
            ids.add(fid)
        if keep is not None and keep in ids:
            self.move_cursor(row=self.get_row_index(str(keep)))

    def _id_cell(self, fid: int) -> Text:
        if not self.marks:
            return Text(str(fid))
        return Text(f"{MARK if fid == self.marked else ' '}{fid}")

    def name_cell(self, fid: int) -> Text:
        name = self.app.feature_name(fid) if hasattr(self.app, "feature_name") else None
        return literal(name) if name else Text("")

    @property
    def feature_ids(self) -> list[int]:
        """The listed features, top to bottom."""
        return [int(self.coordinate_to_cell_key(Coordinate(r, 0)).row_key.value or 0) for r in range(self.row_count)]

    @property
    def highlighted_feature(self) -> int | None:
        """The feature under the cursor, or None when the table is empty."""
        if self.row_count == 0 or not self.is_valid_coordinate(self.cursor_coordinate):
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None

    def refresh_names(self) -> None:
        """Show the current names (after the registry changed)."""
        if not self._columns_added:
            return
        for fid in self.feature_ids:
            self.update_cell(str(fid), NAME, self.name_cell(fid), update_width=True)

    def _registry_changed(self, change: RegistryChange) -> None:
        self.refresh_names()

    # -- enter --------------------------------------------------------------------------------------

    @on(DataTable.RowSelected)
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        if event.data_table is not self or event.row_key.value is None:
            return
        event.stop()
        fid = int(event.row_key.value)
        self.post_message(OpenFeature(fid) if self.open_on_enter else self.Chosen(self, fid))
