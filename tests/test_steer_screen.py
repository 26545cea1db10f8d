"""The steer screen through App.run_test: the list, generation streamed, effects, cancel, `s`."""

from __future__ import annotations

from textual.widgets import Input, Static

from support import wait_until

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.engine.intervene import Intervention, steer, text_effects
from saetui.screens.probe import ProbeInput, ProbeScreen
from saetui.screens.steer import InterventionTable, SteerScreen


def _app(tiny_setup, tmp_path):
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], registry=str(tmp_path / "names.json"), context_len=32))
    return SaetuiApp(engine)


async def _open_steer(app, pilot) -> SteerScreen:
    assert await app.wait_ready()
    await pilot.press("5")
    await wait_until(pilot, lambda: isinstance(app.screen, SteerScreen), "steer screen")
    return app.screen


def _rows(screen):
    table = screen.query_one(InterventionTable)
    return [[str(cell) for cell in table.get_row_at(r)] for r in range(table.row_count)]


async def test_add_edit_remove_and_generate(tiny_setup, tmp_path):
    app = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open_steer(app, pilot)
        # Add: a, type the spec, Enter.
        await pilot.press("a", *"3:add:40", "enter")
        await wait_until(pilot, lambda: app.interventions == [Intervention(3, "add", 40.0)], "added intervention")
        # A malformed spec is refused with a notice; what was typed stays in the box.
        await pilot.press("a", *"4:boost:2", "enter")
        await pilot.pause()
        assert app.interventions == [Intervention(3, "add", 40.0)]
        assert screen.query_one("#steer-spec", Input).value == "4:boost:2"
        await pilot.press("escape")
        await pilot.press("a", *"5:ablate", "enter")
        await wait_until(pilot, lambda: len(app.interventions) == 2, "second intervention")
        assert _rows(screen) == [["3", "", "add", "40"], ["5", "", "ablate", ""]]
        # Edit the second row, then remove it.
        table = screen.query_one(InterventionTable)
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("e")
        assert screen.query_one("#steer-spec", Input).value == "5:ablate"
        screen.query_one("#steer-spec", Input).value = ""
        await pilot.press(*"5:scale:2", "enter")
        await wait_until(pilot, lambda: app.interventions[1] == Intervention(5, "scale", 2.0), "edited intervention")
        table.move_cursor(row=1)
        await pilot.press("d")
        await wait_until(pilot, lambda: len(app.interventions) == 1, "removed intervention")
        # Generate: the panes end with exactly what the engine gives.
        screen.query_one("#steer-prompt", Input).value = "The cat sat"
        table.focus()
        await pilot.press("g")
        expected = await app.wait_job(app.engine.start("check", steer, app.engine.session, "The cat sat", [Intervention(3, "add", 40.0)], screen.max_new_tokens))
        await wait_until(pilot, lambda: screen.job is None and screen.steered_text == expected.steered[0], "streamed continuation", tries=1500)
        assert screen.clean_text == expected.clean[0]
        effects = await app.engine.run(text_effects, app.engine.session, "The cat sat", [Intervention(3, "add", 40.0)])
        assert screen.effects.tokens == effects.tokens
        shown = str(screen.query_one("#steer-effects", Static).render())
        assert shown.startswith("".join(effects.tokens)) and "loss change" in shown


async def test_cancel_keeps_everything(tiny_setup, tmp_path, monkeypatch):
    app = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open_steer(app, pilot)
        app.interventions.append(Intervention(3, "add", 40.0))
        screen.max_new_tokens = 400
        screen.query_one("#steer-prompt", Input).value = "The cat"
        screen.query_one(InterventionTable).focus()
        await pilot.press("g")
        await wait_until(pilot, lambda: screen.job is not None and screen.steered_text, "generation started", tries=1500)
        await pilot.press("x")
        await wait_until(pilot, lambda: screen.job is None, "generation cancelled", tries=1500)
        assert len(screen.steered_text) > 0 and "Cancelled" in str(screen.query_one("#steer-status", Static).render())
        assert app.interventions == [Intervention(3, "add", 40.0)]
        assert screen.query_one("#steer-prompt", Input).value == "The cat"
        # The model is left unhooked.
        layer = app.engine.session.runner.layers[app.engine.session.hook.layer]
        assert type(layer.mlp).__name__ != "_HookedModule"


async def test_s_on_the_probe_screen_adds_the_feature(tiny_setup, tmp_path):
    app = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        assert await app.wait_ready()
        await pilot.press("3")
        await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen), "probe screen")
        probe = app.screen
        assert isinstance(app.focused, ProbeInput)
        await pilot.press(*"The cat sat")
        await wait_until(pilot, lambda: probe.result is not None and probe.result.text == "The cat sat", "probe result", tries=1500)
        await pilot.press("escape")
        await pilot.press("s")
        top = probe.result.top_features[0]
        assert app.interventions == [Intervention(top.feature_id, "clamp", round(2 * top.max_activation, 3))]
        # While interventions are active, the probe shows each token's loss change under them.
        expected = await app.engine.run(text_effects, app.engine.session, "The cat sat", list(app.interventions))
        effects = probe.query_one("#probe-effects", Static)
        await wait_until(pilot, lambda: "intervention(s)" in str(effects.render()), "the loss changes", tries=1500)
        assert f"loss change {expected.total_loss_change:+.3f} nats" in str(effects.render())
        screen = await _open_steer(app, pilot)
        assert _rows(screen)[0][:3] == [str(top.feature_id), "", "clamp"]


async def test_feature_screen_s_adds_and_a_shows_the_removal_effect(tiny_setup):
    from saetui.engine.intervene import removal_effect
    from saetui.screens.feature import FeatureScreen

    settings = EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=48, max_tokens=48 * 24)
    app = SaetuiApp(Engine(settings))
    async with app.run_test(size=(100, 40)) as pilot:
        assert await app.wait_ready()
        await pilot.press("2")
        await wait_until(pilot, lambda: isinstance(app.screen, FeatureScreen), "feature screen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.page is not None and screen.build_job is None and app.engine.session.index is not None and app.engine.session.index.complete and screen.page.stats is not None and not screen.page.stats.partial, "index", tries=3000)
        index = app.engine.session.index
        fid = int(index.live_features()[0])
        screen.show_feature(fid)
        await wait_until(pilot, lambda: screen.page.feature_id == fid and screen.page.stats is not None, "the page", tries=1500)
        stats = screen.page.stats
        assert f"s steers at {2 * stats.max_activation:.3g}" in str(screen.query_one("#feature-stats", Static).render())
        await pilot.press("s")
        assert app.interventions == [Intervention(fid, "clamp", round(2 * stats.max_activation, 3))]
        await pilot.press("a")
        await wait_until(pilot, lambda: fid in screen.removal, "removal effect", tries=1500)
        expected = await app.wait_job(app.engine.start("check", removal_effect, app.engine.session, index, fid, use_cache=False))
        assert screen.removal[fid].to_json() == expected.to_json()
        assert "Removed on its top contexts" in str(screen.query_one("#feature-stats", Static).render())


async def test_the_registry_notes_an_intervention_and_what_it_did(tiny_setup, tmp_path):
    """The edit dialog offers the steer list's interventions on the feature as notes; the
    effect typed beside one is saved in the entry's `interventions` list (the guide's keys
    stay as they are); a malformed spec is refused and nothing is written."""
    import json

    from textual.widgets import TextArea

    from saetui.messages import EditRegistryEntry
    from saetui.screens.edit_entry import EditEntryScreen

    app = _app(tiny_setup, tmp_path)
    registry = tmp_path / "names.json"
    async with app.run_test(size=(100, 40)) as pilot:
        assert await app.wait_ready()
        app.interventions[:] = [Intervention(7, "add", 20.0), Intervention(9, "ablate")]
        app.post_message(EditRegistryEntry(7))
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen), "the edit dialog")
        dialog = app.screen
        notes = dialog.query_one("#edit-interventions", TextArea)
        assert notes.text == "7:add:20 — "  # only this feature's, left to complete
        dialog.query_one("#edit-name", Input).value = "cities"
        notes.text = "7:add:20 — city names appear\n7:bogus — nothing"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, EditEntryScreen) and not registry.exists()  # refused: nothing written
        notes.text = "7:add:20 — city names appear\n7:ablate — loss rises on 'Paris'"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, EditEntryScreen), "saved")
    entry = json.loads(registry.read_text())["7"]
    assert entry["name"] == "cities" and entry["confidence"] == "low" and entry["examples"] is not None
    assert entry["interventions"] == [
        {"spec": "7:add:20", "effect": "city names appear"},
        {"spec": "7:ablate", "effect": "loss rises on 'Paris'"},
    ]
