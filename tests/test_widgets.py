"""saetui's own widgets in a bare Textual app: the feature table and the go-to dialog."""

from __future__ import annotations

from rich.text import Text
from support import rendered, wait_until
from textual.app import App, ComposeResult
from textual.signal import Signal
from textual.widgets import Input, Static

from saetui.messages import OpenFeature, RegistryChange
from saetui.widgets.feature_goto import GotoFeature
from saetui.widgets.feature_table import FeatureTable


class TableHost(App):
    """Just enough of saetui's app for a feature table: names, and the registry's signal."""

    def __init__(self, open_on_enter: bool = True) -> None:
        super().__init__()
        self.names: dict[int, str] = {7: "[b]seven[/b]\x1b[2J"}
        self.registry_changed_signal: Signal[RegistryChange] = Signal(self, "registry-changed")
        self.opened: list[int] = []
        self.chosen: list[int] = []
        self.open_on_enter = open_on_enter

    def compose(self) -> ComposeResult:
        yield FeatureTable(("density",), open_on_enter=self.open_on_enter, marks=True)

    def feature_name(self, feature_id: int) -> str | None:
        return self.names.get(feature_id)

    def on_open_feature(self, message: OpenFeature) -> None:
        self.opened.append(message.feature_id)

    def on_feature_table_chosen(self, message: FeatureTable.Chosen) -> None:
        self.chosen.append(message.feature_id)


def cells(table: FeatureTable) -> list[list[str]]:
    return [[cell.plain for cell in table.get_row_at(r)] for r in range(table.row_count)]


async def test_feature_table_rows_names_and_enter():
    app = TableHost()
    async with app.run_test() as pilot:
        table = app.query_one(FeatureTable)
        rows = {3: 0.5, 7: 0.25, 11: 0.125}
        table.show_features(((fid, [Text(f"{d:.0%}")]) for fid, d in rows.items()), marked=7)
        await pilot.pause()
        assert [str(c.label) for c in table.ordered_columns] == ["feature", "density", "name"]
        # Ids (the marked one marked), the given cells, and names shown literally.
        assert cells(table) == [[" 3", "50%", ""], ["▶7", "25%", "[b]seven[/b]\\x1b[2J"], [" 11", "12%", ""]]
        assert table.feature_ids == [3, 7, 11]
        # The cursor stays on its feature when the rows change.
        table.focus()
        await pilot.press("down")
        assert table.highlighted_feature == 7
        table.show_features([(1, ["x"]), (7, ["y"])])
        assert table.highlighted_feature == 7 and table.feature_ids == [1, 7]
        # Enter opens the feature.
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.opened == [7], "OpenFeature(7)")
        # A registry change renames it.
        app.names[1] = "one"
        app.registry_changed_signal.publish(RegistryChange(1, "saved"))
        await wait_until(pilot, lambda: cells(table)[0][2] == "one", "the new name")


async def test_feature_table_enter_can_mean_something_else():
    app = TableHost(open_on_enter=False)
    async with app.run_test() as pilot:
        table = app.query_one(FeatureTable)
        table.show_features([(4, ["a"]), (9, ["b"])])
        table.focus()
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: app.chosen == [9], "Chosen(9)")
        assert app.opened == []


class GotoHost(App):
    def __init__(self, d_sae: int) -> None:
        super().__init__()
        self.d_sae = d_sae
        self.results: list[int | None] = []

    def ask(self) -> None:
        self.push_screen(GotoFeature(self.d_sae), self.results.append)

    def on_mount(self) -> None:
        self.ask()


async def test_goto_returns_only_an_id_in_range_and_says_what_is_wrong_inline():
    d_sae = 300
    app = GotoHost(d_sae)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, GotoFeature), "the dialog")
        dialog = app.screen
        box = dialog.query_one("#goto-input", Input)
        problem = dialog.query_one("#goto-problem", Static)
        assert not problem.display
        for typed, says in (
            ("abc", "'abc' is not a feature id"),
            ("", "is not a feature id"),
            ("1.5", "'1.5' is not a feature id"),
            (str(d_sae), f"Feature {d_sae} is out of range"),
            ("-1", "Feature -1 is out of range"),
        ):
            box.value = typed
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is dialog and app.results == []  # stays open
            assert problem.display and says in rendered(problem) and f"0 to {d_sae - 1}" in rendered(problem)
        # Typing clears the problem; an id in range closes the dialog with it.
        box.value = ""
        await pilot.press(*str(d_sae - 1))
        assert not problem.display
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.results == [d_sae - 1], "the id returned")
        # Escape closes it with nothing.
        app.ask()
        await wait_until(pilot, lambda: isinstance(app.screen, GotoFeature), "the dialog again")
        await pilot.press(" ", "4", "2", " ", "enter")  # spaces around an id are fine
        await wait_until(pilot, lambda: app.results == [d_sae - 1, 42], "42")
        app.ask()
        await wait_until(pilot, lambda: isinstance(app.screen, GotoFeature), "the dialog again")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.results == [d_sae - 1, 42, None], "None")
