"""The probe screen through App.run_test: typing, cursor, selection, truncation, unicode, names."""

from __future__ import annotations

import json
import threading

from textual import events
from textual.widgets import Input, Static, TextArea

from support import wait_until

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.engine.probe import probe_text
from saetui.screens import probe as probe_screen
from saetui.screens.edit_entry import EditEntryScreen
from saetui.messages import RegistryChange
from saetui.screens.probe import ProbeInput, ProbeScreen, TokenStrip
from saetui.widgets.feature_table import FeatureTable

HOSTILE = "[bold red]loud[/] [@click=app.quit]quit[/] \x1b[31mred\x1b[0m"


def _app(tiny_setup, tmp_path, context_len=32):
    registry = tmp_path / "names.json"
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], registry=str(registry), context_len=context_len))
    return SaetuiApp(engine), registry


async def _open_probe(app, pilot) -> ProbeScreen:
    assert await app.wait_ready()
    await pilot.press("3")
    await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen), "probe screen")
    return app.screen


def _tokens_shown(screen) -> str:
    return str(screen.query_one("#probe-tokens-text", Static).render())


def _table_ids(screen, table_id) -> list[int]:
    table = screen.query_one(table_id, FeatureTable)
    return [int(table.coordinate_to_cell_key((r, 0)).row_key.value) for r in range(table.row_count)]


async def test_typing_shows_tokens_and_top_features(tiny_setup, tmp_path):
    app, _ = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_probe(app, pilot)
        assert isinstance(app.focused, ProbeInput)  # typing works straight away
        await pilot.press(*"The cat sat")
        await wait_until(pilot, lambda: screen.result is not None and screen.result.text == "The cat sat", "result for the typed text")
        expected = await app.engine.run(probe_text, app.engine.session, "The cat sat")
        assert screen.result.tokens == expected.tokens
        shown = _tokens_shown(screen)
        assert shown == "".join(t + probe_screen.SEPARATOR for t in expected.tokens)
        assert _table_ids(screen, "#probe-text-features") == [h.feature_id for h in expected.top_features]
        # The first feature is shaded by default; the cursor starts on the first token.
        assert screen.selected == expected.top_features[0].feature_id
        assert _table_ids(screen, "#probe-token-features") == [f for f, _ in expected.token_top[0]]
        status = str(screen.query_one("#probe-status", Static).render())
        assert f"{expected.n_tokens} tokens" in status and f"#{screen.selected}" in status


async def test_cursor_selection_and_open_feature(tiny_setup, tmp_path):
    app, _ = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_probe(app, pilot)
        screen.set_text("Paris is the capital of France.")
        await wait_until(pilot, lambda: screen.result is not None and screen.result.n_tokens > 3)
        result = screen.result
        await pilot.press("escape")
        assert isinstance(app.focused, TokenStrip)
        await pilot.press("right", "right", "right", "left")
        assert screen.cursor == 2
        assert _table_ids(screen, "#probe-token-features") == [f for f, _ in result.token_top[2]]
        assert "token 3:" in str(screen.query_one("#probe-status", Static).render())
        await pilot.press("end")
        assert screen.cursor == result.n_tokens - 1
        # Enter on the second row of the text's table shades the tokens by that feature.
        await pilot.press("tab")
        assert app.focused.id == "probe-text-features"
        await pilot.press("down", "enter")
        second = result.top_features[1].feature_id
        assert screen.selected == second
        strongest = result.top_features[1].argmax
        shown = screen.query_one("#probe-tokens-text", Static).render()
        # The strongest token of the selected feature is marked (bold + underline).
        start = sum(len(t) + 1 for t in result.tokens[:strongest])
        styles = [s.style for s in shown.spans if s.start <= start < s.end]
        assert any(getattr(s, "bold", False) and getattr(s, "underline", False) for s in styles)
        # left/right move the token cursor from the tables too.
        await pilot.press("left")
        assert screen.cursor == result.n_tokens - 2
        # f opens the highlighted feature on the feature screen.
        await pilot.press("f")
        await wait_until(pilot, lambda: app.current_mode == "feature", "feature screen")


async def test_probe_text_message_opens_the_probe_with_that_text(tiny_setup, tmp_path):
    from saetui.messages import ProbeText

    app, _ = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        context = "2 + 2 = 4 and\x1b[2J 3 * 5 = 15."
        app.post_message(ProbeText(context))  # e.g. from the feature screen, before the probe exists
        await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen) and app.screen.result is not None, "probe result")
        assert app.screen.result.text == context
        assert app.screen.query_one(ProbeInput).text == context.replace("\x1b", "\\x1b")


async def test_truncation_notice(tiny_setup, tmp_path):
    app, _ = _app(tiny_setup, tmp_path, context_len=16)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_probe(app, pilot)
        notice = screen.query_one("#probe-notice", Static)
        assert not notice.display
        screen.set_text("The red fox and the blue bird. " * 8)
        await wait_until(pilot, lambda: screen.result is not None)
        assert screen.result.n_tokens == 15  # 16 positions, one is the BOS
        assert notice.display and "truncated" in str(notice.render())
        assert "first 15" in str(notice.render())
        screen.set_text("short")
        await wait_until(pilot, lambda: screen.result is not None and screen.result.text == "short")
        assert not notice.display


async def test_empty_whitespace_unicode_and_control_characters(tiny_setup, tmp_path):
    app, _ = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_probe(app, pilot)
        screen.set_text("   \t\n ")
        await wait_until(pilot, lambda: screen.result is not None and screen.result.n_tokens > 0)
        shown = _tokens_shown(screen)
        assert "⇥" in shown and "↵" in shown and "\t" not in shown and "\n" not in shown
        odd = "é🙂猫 \x1b[31mred\x07 [b]x"
        screen.set_text(odd)
        await wait_until(pilot, lambda: screen.result is not None and screen.result.text == odd, "result for the odd text")
        shown = _tokens_shown(screen)
        assert "\x1b" not in shown and "\x07" not in shown
        assert "\\x1b" in shown and "\\x07" in shown and "[b]x" in shown.replace(probe_screen.SEPARATOR, "")
        assert "🙂" in shown or "\\xf0" in shown  # whole character, or the bytes of a partial token
        # The box shows escapes, but the text probed is exactly the one given.
        box = screen.query_one(ProbeInput)
        assert "\x1b" not in box.text and "\\x1b" in box.text
        assert screen.result.text == odd
        # Emptying the box clears the tokens and tables.
        box.load_text("")
        await wait_until(pilot, lambda: screen.result is None)
        assert _tokens_shown(screen) == probe_screen.EMPTY_HINT
        assert _table_ids(screen, "#probe-text-features") == []
        # A paste never puts raw control characters in the box.
        box.focus()
        app.post_message(events.Paste("p\x1b[31mq"))
        await wait_until(pilot, lambda: screen.result is not None and screen.result.n_tokens > 0)
        assert box.text == "p\\x1b[31mq"


async def test_stale_results_are_dropped(tiny_setup, tmp_path, monkeypatch):
    app, _ = _app(tiny_setup, tmp_path)
    release = threading.Event()
    real = probe_screen.probe_text

    def slow_for_first(engine, text, *args, **kwargs):
        if text == "first text":
            release.wait(10)
        return real(engine, text, *args, **kwargs)

    monkeypatch.setattr(probe_screen, "probe_text", slow_for_first)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_probe(app, pilot)
        shown: list[str] = []
        show = screen._show
        monkeypatch.setattr(screen, "_show", lambda result: (shown.append(result.text if result else None), show(result)))
        screen.set_text("first text")
        await pilot.pause(0.1)  # the first probe is now running (held on the worker)
        screen.set_text("second text")
        await pilot.pause(0.05)
        release.set()
        await wait_until(pilot, lambda: "second text" in shown, "the second result")
        await pilot.pause(0.1)
        assert shown == ["second text"]
        assert screen.result.text == "second text"


async def test_names_show_literally_and_e_edits_the_entry(tiny_setup, tmp_path):
    app, registry_path = _app(tiny_setup, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_probe(app, pilot)
        screen.set_text("I feel happy and calm today.")
        await wait_until(pilot, lambda: screen.result is not None)
        top = screen.result.top_features[0].feature_id
        app.registry.set(top, {"name": HOSTILE})
        app.registry.save()
        app.registry_changed_signal.publish(RegistryChange(top, "saved"))
        table = screen.query_one("#probe-text-features", FeatureTable)
        await wait_until(pilot, lambda: table.get_row_at(0)[-1].plain != "", "the name in the table")
        name_cell = table.get_row_at(0)[-1]
        assert name_cell.plain == HOSTILE.replace("\x1b", "\\x1b")
        assert not any(s.style and "link" in str(s.style) for s in name_cell.spans)
        assert app.is_running  # [@click=app.quit] did nothing
        status = str(screen.query_one("#probe-status", Static).render())
        assert "[bold red]loud" in status
        # e (from the tokens) edits the shaded feature's entry; the name is shown escaped.
        await pilot.press("escape", "e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen), "edit dialog")
        name_input = app.screen.query_one("#edit-name", Input)
        assert "\x1b" not in name_input.value and "\\x1b" in name_input.value
        # Change only the description: the hostile name is saved exactly as it was.
        app.screen.query_one("#edit-description", TextArea).load_text("fires on feelings")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen), "back on the probe")
        saved = json.loads(registry_path.read_text())[str(top)]
        assert saved["name"] == HOSTILE and saved["description"] == "fires on feelings"
        # A new name typed in the dialog lands in the file and in the table.
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen))
        app.screen.query_one("#edit-name", Input).value = ""
        await pilot.press(*"calm_words", "ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ProbeScreen))
        assert json.loads(registry_path.read_text())[str(top)]["name"] == "calm_words"
        await wait_until(pilot, lambda: table.get_row_at(0)[-1].plain == "calm_words", "the new name in the table")
