"""The feature screen through the real app: keys, shading, the partial label, cancel, markup safety."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from rich.style import Style
from rich.text import Text
from support import notifications_shown
from textual.widgets import OptionList, Static

from saetui.app import SaetuiApp
from saetui.engine import index as index_mod
from saetui.engine.engine import Engine, EngineSettings
from saetui.screens.feature import FeatureScreen
from saetui.widgets.feature_goto import GotoFeature


def _index(app):
    """The feature index the app's session has open (None before any)."""
    session = app.engine.session
    return session.index if session is not None else None

# Short lines, so every 32-token window holds at least one of them whole.
DANGEROUS = [
    "[@click=app.quit]Q[/]",
    "[bold red]B[/bold red]",
    "[link=http://e.vil]L[/link]",
    "\x1b[31mR\x1b[0m",
    "bell\x07nul\x00bs\x08",
]


def make_app(tiny_setup, dataset: str | None = None, registry: str | None = None) -> SaetuiApp:
    settings = EngineSettings(sae=tiny_setup["sae"], dataset=dataset or tiny_setup["dataset"], context_len=48, max_tokens=48 * 24, registry=registry)
    return SaetuiApp(Engine(settings))


async def wait_for(pilot, condition, what: str, tries: int = 600) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def plain(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def title(app) -> str:
    return plain(app.screen.query_one("#feature-title", Static))


def context_prompts(app) -> list[Text]:
    contexts = app.screen.query_one("#feature-contexts", OptionList)
    return [contexts.get_option_at_index(i).prompt for i in range(contexts.option_count)]


async def open_feature_screen(pilot, app) -> FeatureScreen:
    assert await app.wait_ready()
    await pilot.press("2")
    await wait_for(pilot, lambda: isinstance(app.screen, FeatureScreen), "the feature screen")
    screen = app.screen
    await wait_for(pilot, lambda: screen.page is not None and screen.build_job is None and (_index(app) or None) is not None and _index(app).complete, "the index")
    await wait_for(pilot, lambda: screen.page.stats is not None and not screen.page.stats.partial, "a complete page")
    return screen


async def show(pilot, screen, fid: int) -> None:
    await wait_for(pilot, lambda: screen.page is not None and screen.page.feature_id == fid and screen.page.stats is not None and not screen.page.stats.partial, f"feature {fid}")
    await pilot.pause()


async def test_navigation_keys_and_shading(tiny_setup, monkeypatch):
    probed: list[str] = []
    # The probe screen is another issue's: record what this screen asks of it.
    monkeypatch.setattr(SaetuiApp, "on_probe_text", lambda self, message: probed.append(message.text))
    app = make_app(tiny_setup)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_feature_screen(pilot, app)
        await show(pilot, screen, 0)
        assert title(app).startswith("Feature 0 of 256")
        for keys, fid in ((("n",), 1), (("n",), 2), (("p",), 1), (("right_square_bracket",), 2), (("left_square_bracket",), 1), (("p", "p"), 255)):
            await pilot.press(*keys)
            await show(pilot, screen, fid)
            assert title(app).startswith(f"Feature {fid} of 256")

        # Go to: a good id opens it; bad ones are one-line problems in the dialog and change nothing.
        await pilot.press("g")
        await pilot.pause()
        await pilot.press("1", "7", "enter")
        await show(pilot, screen, 17)
        problems = []
        for typed in ("abc", "9999"):
            await pilot.press("g")
            await wait_for(pilot, lambda: isinstance(app.screen, GotoFeature), "the go-to dialog")
            await pilot.press(*typed, "enter")
            await pilot.pause()
            assert isinstance(app.screen, GotoFeature)  # still open, saying why
            problems.append(plain(app.screen.query_one("#goto-problem", Static)))
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, FeatureScreen), "the dialog closed")
            await show(pilot, screen, 17)
        assert "'abc' is not a feature id" in problems[0]
        assert "Feature 9999 is out of range" in problems[1] and "0 to 255" in problems[1]

        # Random live feature: one that fires.
        index = _index(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.page.feature_id != 17, "a random feature")
        await show(pilot, screen, screen.feature_id)
        assert index.count[screen.feature_id] > 0

        # A live feature's page: stats, histogram, shaded contexts with the max marked, logits, neighbours.
        live = index.live_features()
        fid = int(live[np.argmax(index.count[live])])
        await pilot.press("g")
        await pilot.pause()
        await pilot.press(*str(fid), "enter")
        await show(pilot, screen, fid)
        stats_text = plain(screen.query_one("#feature-stats", Static))
        assert "density" in stats_text and f"{index.count[fid]:,} of" in stats_text and "max" in stats_text
        prompts = context_prompts(app)
        assert len([p for p in prompts if p.plain.startswith("#")]) == 5
        first = prompts[0]
        backgrounds = {str(s.style.bgcolor) for s in first.spans if isinstance(s.style, Style) and s.style.bgcolor}
        assert len(backgrounds) >= 3  # shaded by activation, inactive tokens alternate
        assert any(isinstance(s.style, Style) and s.style.bold and s.style.underline for s in first.spans)  # the max token
        heading = plain(screen.query_one("#contexts-heading", Static))
        assert "activation: 0" in heading and "strongest token" in heading  # the legend
        logits = plain(screen.query_one("#feature-logits", Static))
        assert "Promotes:" in logits and "Suppresses:" in logits and "how:" in logits and "unembedding" in logits
        neighbours = screen.query_one("#feature-neighbours", OptionList)
        assert neighbours.option_count == 10

        # More contexts.
        await pilot.press("m")
        await wait_for(pilot, lambda: len([p for p in context_prompts(app) if p.plain.startswith("#")]) == 10, "more contexts")

        # Enter on a neighbour opens it.
        target = int(neighbours.get_option_at_index(0).id.split("-")[1])
        neighbours.focus()
        neighbours.highlighted = 0
        await pilot.press("enter")
        await show(pilot, screen, target)

        # t (or enter) on a context: the probe screen is asked to show that context's text.
        await wait_for(pilot, lambda: screen.page.top, "contexts")
        contexts = screen.query_one("#feature-contexts", OptionList)
        contexts.focus()
        contexts.highlighted = 1
        await pilot.press("t")
        await pilot.pause()
        assert probed == [screen.page.top[1].text]
        await pilot.press("q")


async def test_dead_feature_says_so_and_shows_decoder_facts(tiny_setup):
    app = make_app(tiny_setup)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_feature_screen(pilot, app)
        index = _index(app)
        dead = np.flatnonzero(index.count == 0)
        if dead.size == 0:
            pytest.skip("every feature of the random SAE fires on this corpus")
        fid = int(dead[0])
        screen.show_feature(fid)
        await show(pilot, screen, fid)
        assert "Never fired on the" in plain(screen.query_one("#feature-stats", Static))
        assert "Top contexts: none" in plain(screen.query_one("#contexts-heading", Static))
        assert "Promotes:" in plain(screen.query_one("#feature-logits", Static))
        assert screen.query_one("#feature-neighbours", OptionList).option_count == 10


async def test_partial_label_cancel_and_resume(tiny_setup, monkeypatch):
    """A feature opened mid-build shows what is known, labelled PARTIAL; x cancels; b resumes."""
    gate = threading.Event()

    def held_build(session):
        # The real build, held after its first batch until the test lets go; the idle steps
        # give the worker back, so page requests are served meanwhile.
        for progress in index_mod.build_index(session):
            yield progress
            while session.index.contexts_done > 0 and not gate.is_set():
                gate.wait(0.01)
                yield progress

    app = make_app(tiny_setup)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        assert await app.wait_ready()
        app.engine.start("indexing", held_build, app.engine.session)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, FeatureScreen), "the feature screen")
        screen = app.screen
        await wait_for(pilot, lambda: "PARTIAL" in title(app), "the partial label")
        index = _index(app)
        assert not index.complete and 0 < index.contexts_done < index.n_contexts
        assert f"{index.tokens_seen:,} of" in title(app)
        assert screen.page.stats.partial
        # The UI stays responsive: other features open while the build is held.
        await pilot.press("n")
        await wait_for(pilot, lambda: screen.page.feature_id == 1 and "PARTIAL" in title(app), "feature 1, partial")

        await pilot.press("x")
        await wait_for(pilot, lambda: screen.build_job is None, "the cancelled build")
        await wait_for(pilot, lambda: any("cancelled" in m for m in notifications_shown(app)), "the cancel notice")
        assert "PARTIAL" in title(app)
        assert not index_mod.index_path(app.engine.session, 48 * 24, 20).exists()  # nothing finished on disk

        gate.set()
        await pilot.press("b")
        await wait_for(pilot, lambda: _index(app) is not None and _index(app).complete, "the resumed build")
        await wait_for(pilot, lambda: "PARTIAL" not in title(app) and not screen.page.stats.partial, "the complete page")
        await pilot.press("q")


def write_dangerous_dataset(folder: Path) -> Path:
    path = folder / "dangerous.jsonl"
    lines = [json.dumps({"text": DANGEROUS[i % len(DANGEROUS)]}) for i in range(400)]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_markup_and_control_characters_show_literally(tiny_setup, tmp_path, monkeypatch):
    probed: list[str] = []
    monkeypatch.setattr(SaetuiApp, "on_probe_text", lambda self, message: probed.append(message.text))
    dataset = write_dangerous_dataset(tmp_path)
    registry = tmp_path / "names.features.json"
    registry.write_text(json.dumps({"3": {"name": "[bold red]evil[/] [@click=app.quit]x[/]", "description": "[link=http://e.vil]d[/link]\x1b[2J"}}))
    app = make_app(tiny_setup, dataset=str(dataset), registry=str(registry))
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_feature_screen(pilot, app)
        seen = ""
        for fid in range(3, 12):
            screen.show_feature(fid)
            await show(pilot, screen, fid)
            if fid == 3:
                assert "[bold red]evil[/] [@click=app.quit]x[/]" in title(app)
                assert "[link=http://e.vil]d[/link]\\x1b[2J" in plain(screen.query_one("#feature-description", Static))
            for prompt in context_prompts(app):
                seen += prompt.plain
                for span in prompt.spans:
                    style = span.style
                    if isinstance(style, Style):
                        assert style.link is None and not style.meta
                    else:
                        assert "link" not in style and "@click" not in style
            # Click on the contexts: nothing in the data is an action (a click only selects).
            if screen.query_one("#feature-contexts", OptionList).option_count:
                await pilot.click("#feature-contexts", offset=(4, 1))
                await pilot.pause()
            assert app.is_running and app.current_mode == "feature"
        for literal_text in ("[@click=app.quit]", "[bold red]", "[/bold red]", "[link=http://e.vil]", "\\x1b[31m", "\\x07", "\\x00", "\\x08"):
            assert literal_text in seen, literal_text
        for raw in ("\x1b", "\x07", "\x00", "\x08"):
            assert raw not in seen
        screen.show_feature(3)
        await show(pilot, screen, 3)
        screenshot = app.export_screenshot()  # what reaches the terminal
        assert "\x1b" not in screenshot and "\x07" not in screenshot
        assert "[@click=app.quit]x[/]" in screenshot and "[link=http://e.vil]d[/link]\\x1b[2J" in screenshot
        assert app.is_running and probed  # the clicks selected contexts, literally
        assert any(d in text for text in probed for d in DANGEROUS)
        await pilot.press("q")


async def test_unusable_dataset_is_a_clear_message_and_decoder_facts_remain(tiny_setup, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    app = make_app(tiny_setup, dataset=str(empty))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        assert await app.wait_ready()
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, FeatureScreen), "the feature screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.build_error is not None and screen.page is not None, "the build error")
        await pilot.pause()
        assert "no non-empty text" in screen.build_error
        await wait_for(pilot, lambda: any("no non-empty text" in m for m in notifications_shown(app, "error")), "the error notice")
        assert "No feature index: " in plain(screen.query_one("#feature-stats", Static))
        assert "Promotes:" in plain(screen.query_one("#feature-logits", Static))
        await pilot.press("q")


async def test_open_feature_from_another_screen(tiny_setup):
    from saetui.messages import OpenFeature

    app = make_app(tiny_setup)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        assert app.current_mode == "report"
        app.post_message(OpenFeature(42))  # the feature screen has not been shown yet
        await wait_for(pilot, lambda: isinstance(app.screen, FeatureScreen), "the feature screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.page is not None and screen.page.feature_id == 42, "feature 42")
        assert title(app).startswith("Feature 42 of 256")
        await pilot.press("q")
