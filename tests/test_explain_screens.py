"""Screens: `t` opens the probe shaded by the page's feature, `#` shades by id, `/` searches,
explanations beside feature ids (App.run_test)."""

from __future__ import annotations

from textual.widgets import Input, OptionList

from test_feature_screen import make_app, open_feature_screen, show, wait_for

from saetui.screens.feature_search import FeatureSearch
from saetui.screens.probe import ProbeScreen


async def test_t_opens_the_probe_shaded_by_the_page_feature(tiny_setup):
    app = make_app(tiny_setup)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_feature_screen(pilot, app)
        index = app.engine.session.index if app.engine.session else None
        live = index.live_features().tolist()
        # A feature that is not the strongest on its own top context: the old probe shaded that one.
        fid = live[len(live) // 2]
        screen.show_feature(fid)
        await show(pilot, screen, fid)
        contexts = screen.query_one("#feature-contexts", OptionList)
        contexts.focus()
        contexts.highlighted = 0
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ProbeScreen), "the probe")
        probe = app.screen
        await wait_for(pilot, lambda: probe.result is not None and probe.result.n_tokens > 0, "a probe result")
        assert probe.selected == fid
        assert probe.result.has_feature(fid)
        acts = probe.result.activations_of(fid)
        assert acts.max() > 0  # the context the feature fired in lights up by it
        # #: shade by any feature id, typed into a prompt.
        other = live[0] if live[0] != fid else live[1]
        await pilot.press("escape")
        await pilot.press("number_sign")
        await wait_for(pilot, lambda: app.screen.query(Input), "the id prompt")
        app.screen.query_one(Input).value = str(other)
        await pilot.press("enter")
        await wait_for(pilot, lambda: probe.selected == other and probe.result.has_feature(other), "shading by the typed id")


async def test_search_and_explanations_beside_ids(tiny_setup):
    app = make_app(tiny_setup)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_feature_screen(pilot, app)
        await wait_for(pilot, lambda: app.engine.session is not None and app.engine.session.explanations, "explanations")
        fid, e = next((f, e) for f, e in sorted(app.engine.session.explanations.items()) if e.label and e.words and e.words[0].strip().isalpha())
        assert app.feature_name(fid) == f"{e.label} (auto)"  # marked automatic where a name would be
        await pilot.press("slash")
        await wait_for(pilot, lambda: isinstance(app.screen, FeatureSearch), "the search dialog")
        app.screen.query_one(Input).value = e.words[0].strip()
        await pilot.press("enter")
        results = app.screen.query_one("#search-results", OptionList)
        ids = [results.get_option_at_index(i).id for i in range(results.option_count)]
        assert f"hit-{fid}" in ids
        results.highlighted = ids.index(f"hit-{fid}")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.page is not None and screen.page.feature_id == fid, "the chosen feature")
