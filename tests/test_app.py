"""The app shell: header summary, screen switching, help from bindings, quitting, load errors."""

from __future__ import annotations

import json

from support import wait_until, write_sae
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Static, TextArea

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.screens import SCREENS
from saetui.screens.edit_entry import ConfirmDeleteScreen, EditEntryScreen
from saetui.screens.feature import FeatureScreen
from saetui.screens.help import HelpScreen
from saetui.screens.probe import ProbeInput, ProbeScreen
from saetui.screens.registry import RegistryScreen
from saetui.widgets.screen_tabs import ScreenTabs


def _app(**settings) -> SaetuiApp:
    return SaetuiApp(Engine(EngineSettings(**settings)))


async def test_header_summary_and_screen_switching(tiny_setup):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"])
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        await pilot.pause()
        assert app.sub_title.startswith("SAE 64->256 k=8 | L1/mlp")
        assert app.current_mode == "report"
        for key, mode in (("2", "feature"), ("3", "probe"), ("4", "registry"), ("1", "report")):
            if app.focused is not None:
                await pilot.press("escape")
            await pilot.press(key)
            await pilot.pause()
            assert app.current_mode == mode
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_help_screen_lists_the_bindings(tiny_setup):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"])
    async with app.run_test(size=(80, 24)) as pilot:
        await app.wait_ready()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        described = {r[1] for r in rows}
        assert {"Report", "Feature", "Probe", "Registry", "Quit"} <= described
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_first_frame_paints_before_the_model_is_loaded(tiny_setup):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"])
    async with app.run_test(size=(80, 24)) as pilot:
        # The app is mounted and showing its first screen while loading goes on.
        assert app.screen is not None and app.current_mode == "report"
        await app.wait_ready()
        await pilot.press("q")


async def test_load_failure_exits_with_status_2(tmp_path, tiny_setup):
    sae = write_sae(tmp_path / "w.mlx", d_model=80, d_hidden=160, metadata={"layer": 1, "component": "mlp", "model_name": tiny_setup["model"]})
    app = _app(sae=str(sae), dataset=tiny_setup["dataset"])
    async with app.run_test(size=(80, 24)) as pilot:
        assert not await app.wait_ready()
        await pilot.pause()
    assert app.return_code == 2
    assert "expects d_model=80" in app.fatal_error and "--model" in app.fatal_error


async def test_command_palette_switches_screens(tiny_setup):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"])
    async with app.run_test(size=(80, 24)) as pilot:
        await app.wait_ready()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Registry screen")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.current_mode == "registry"


async def test_every_screen_in_the_table_has_its_key_its_tab_and_its_command(tiny_setup):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"])
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        for entry in (*SCREENS[1:], SCREENS[0]):
            if app.focused is not None:
                await pilot.press("escape")  # out of the probe's text box
            await pilot.press(entry.key)
            await wait_until(pilot, lambda: app.current_mode == entry.mode, f"the {entry.mode} screen")
            assert isinstance(app.screen, entry.screen)
            assert app.title == f"saetui · {entry.title}"
            # The strip lists every screen with its key, and lights this one.
            strip = app.screen.query_one(ScreenTabs).render()
            for other in SCREENS:
                assert f"{other.key} {other.title}" in strip.plain
            lit = [strip.plain[span.start : span.end].strip() for span in strip.spans if "reverse" in str(span.style)]
            assert lit == [entry.title]
            assert f"{entry.title} screen" in commands
        # The palette's screen commands switch screens too.
        for entry in reversed(SCREENS):
            commands[f"{entry.title} screen"].callback()
            await wait_until(pilot, lambda: app.current_mode == entry.mode, f"{entry.mode} from the palette")
            assert isinstance(app.screen, entry.screen)


def _title(screen) -> str:
    return screen.query_one("#feature-title", Static).content.plain


async def test_a_save_on_the_registry_screen_renames_the_feature_on_the_feature_screen(tiny_setup, tmp_path):
    path = tmp_path / "names.json"
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], registry=str(path), context_len=48, max_tokens=48 * 24)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        await pilot.press("2")
        await wait_until(pilot, lambda: isinstance(app.screen, FeatureScreen), "the feature screen")
        feature = app.screen
        feature.show_feature(5)
        await wait_until(pilot, lambda: _title(feature).startswith("Feature 5 of 256"), "feature 5")
        assert "fox_and_bird" not in _title(feature)

        await pilot.press("4")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen), "the registry screen")
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen), "the add dialog")
        app.screen.query_one("#edit-id", Input).value = "5"
        app.screen.query_one("#edit-name", Input).value = "fox_and_bird"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen), "back on the registry")
        assert json.loads(path.read_text())["5"]["name"] == "fox_and_bird"
        # The feature screen, in the background, was told: its title names the feature now.
        await wait_until(pilot, lambda: "· fox_and_bird" in _title(feature), "the name on the feature screen")

        # A delete is announced too.
        await pilot.press("4")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen), "the registry screen")
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDeleteScreen), "the delete question")
        await pilot.press("y")
        await wait_until(pilot, lambda: "5" not in json.loads(path.read_text()), "the entry deleted")
        await wait_until(pilot, lambda: "fox_and_bird" not in _title(feature), "the name gone from the feature screen")


async def test_help_on_the_probe_lists_its_keys_and_token_keys_not_textual_internals(tiny_setup, tmp_path):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], registry=str(tmp_path / "names.json"))
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        await pilot.press("3")
        await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen), "the probe screen")
        assert isinstance(app.focused, ProbeInput)  # typing: a text box with Textual's editing keys
        await pilot.press("escape", "question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        table = app.screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        described = {r[1] for r in rows}
        assert {"Done typing", "Type", "Open feature", "Name feature", "Shade by id (#)", "Steer with feature"} <= described
        assert {"Previous token", "Next token", "First token", "Last token"} <= described
        assert {"Report", "Feature", "Probe", "Registry", "Help", "Cancel job", "Quit"} <= described
        keys = {r[1]: r[0] for r in rows}
        assert keys["Previous token"] == "←" and keys["Steer with feature"] == "s" and keys["Shade by id (#)"] == "#"
        # Textual's own keys (text editing, tables, scrolling) are not listed.
        internal = {b.description for cls in (TextArea, DataTable, VerticalScroll) for b in Binding.make_bindings(cls.BINDINGS)} - {""}
        assert not described & internal, described & internal
        assert len(rows) == len({(r[0], r[1]) for r in rows})  # each key once


def _footer(app) -> str:
    return " | ".join(str(key.render()) for key in app.screen.query("FooterKey"))


async def test_probe_footer_shows_done_typing_only_while_typing(tiny_setup, tmp_path):
    app = _app(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], registry=str(tmp_path / "names.json"))
    async with app.run_test(size=(100, 24)) as pilot:
        assert await app.wait_ready()
        await pilot.press("3")
        await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen), "the probe screen")
        await wait_until(pilot, lambda: "Done typing" in _footer(app), "esc in the footer while typing")
        assert "Open feature" not in _footer(app)  # f types an f here
        await pilot.press("escape")
        await wait_until(pilot, lambda: "Done typing" not in _footer(app), "esc gone after typing")
        assert "Type" in _footer(app) and "Open feature" in _footer(app)
        await pilot.press("i")
        await wait_until(pilot, lambda: "Done typing" in _footer(app), "esc back while typing")
