"""The app shell: header summary, screen switching, help from bindings, quitting, load errors."""

from __future__ import annotations

import pytest
from support import write_sae
from textual.widgets import DataTable

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.screens.help import HelpScreen


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
