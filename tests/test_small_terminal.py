"""The app at 80x24, read as the user reads it: the text that reaches the terminal.

Issue 16's new-user findings: the feature page shows its first contexts without
scrolling and every footer key; the go-to prompt and the registry's path fit; the
report and the feature page say which token budget each counts on; an error from a
file never reaches the terminal raw in a notification.
"""

from __future__ import annotations

import io
import threading

from rich.console import Console
from support import burst, notifications_shown, wait_until
from textual.binding import Binding
from textual.widgets import Footer

from saetui.app import SaetuiApp
from saetui.engine import evaluate as evaluate_mod
from saetui.engine.engine import Engine, EngineSettings
from saetui.engine.errors import UserError
from saetui.engine.worker import Progress
from saetui.screens.feature import FeatureScreen
from saetui.screens.help import HelpScreen
from saetui.screens.registry import RegistryScreen
from saetui.screens.report import ReportScreen
from saetui.widgets.feature_goto import GotoFeature

SIZE = (80, 24)


def screen_text(app) -> list[str]:
    """The lines on the terminal now: what `App.export_screenshot` draws, as plain text."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text().splitlines()


def make_app(tiny_setup, tmp_path, **settings) -> SaetuiApp:
    settings.setdefault("registry", str(tmp_path / "reg.json"))
    return SaetuiApp(Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=48, **settings)))


async def open_live_feature(pilot, app) -> FeatureScreen:
    """The feature screen on the feature that fires most, once the index is complete."""
    assert await app.wait_ready()
    await pilot.press("2")
    await wait_until(pilot, lambda: isinstance(app.screen, FeatureScreen), "the feature screen")
    screen = app.screen
    session = app.engine.session
    await wait_until(pilot, lambda: session.index is not None and session.index.complete and screen.build_job is None, "the index")
    fid = int(session.index.count.argmax())
    screen.show_feature(fid)
    await wait_until(pilot, lambda: screen.page is not None and screen.page.feature_id == fid and screen.page.stats is not None and not screen.page.stats.partial, "its page")
    await pilot.pause()
    return screen


async def test_feature_page_fits_80x24(tiny_setup, tmp_path):
    app = make_app(tiny_setup, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_live_feature(pilot, app)
        lines = screen_text(app)
        text = "\n".join(lines)
        # Every key the footer offers is shown whole, on the last line.
        footer = lines[-1]
        shown = [b for b in screen.BINDINGS if b.show]
        assert shown
        for binding in shown:
            key = app.get_key_display(Binding(binding.key.split(",")[0], binding.action))
            assert f"{key} {binding.description}" in footer, (binding, footer)
        assert app.screen.query_one(Footer).compact
        # The name line, the density, and at least three contexts without scrolling.
        assert f"Feature {screen.feature_id} of 256" in lines[2]
        stats = screen.page.stats
        assert f"{stats.density:.3%}" in text and f"({stats.count:,} of {stats.tokens:,} tokens)" in text
        shown_contexts = [line for line in lines if line.lstrip().startswith(("#1 ", "#2 ", "#3 "))]
        assert len(shown_contexts) == 3, text
        # The budget of the index and, beside it, the report's (they differ by default).
        index = app.engine.session.index
        assert f"budget {index.budget:,} (the report's: {evaluate_mod.DEFAULT_EVAL_TOKENS:,})" in text


async def test_goto_prompt_fits_80x24(tiny_setup, tmp_path):
    app = make_app(tiny_setup, tmp_path, max_tokens=48 * 24)
    async with app.run_test(size=SIZE) as pilot:
        await open_live_feature(pilot, app)
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, GotoFeature), "the go-to dialog")
        await pilot.pause()
        text = "\n".join(screen_text(app))
        assert "Go to feature: an id from 0 to 255" in text
        assert "enter opens it · escape closes" in text
        # The footer's short words; help says each key in full.
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, FeatureScreen), "the dialog closed")
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.pause()
        text = "\n".join(screen_text(app))
        for binding in FeatureScreen.BINDINGS:
            assert (binding.tooltip or binding.description) in text


async def test_registry_path_shows_at_80_columns(tiny_setup, tmp_path, monkeypatch):
    home = tmp_path / "home"
    folder = home / "research" / "saes" / "registries"
    folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    app = make_app(tiny_setup, tmp_path, registry=str(folder / "my_sae_with_a_long_name.features.json"))
    async with app.run_test(size=SIZE) as pilot:
        assert await app.wait_ready()
        await pilot.press("4")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen), "the registry screen")
        await pilot.pause()
        lines = [line.strip() for line in screen_text(app)]
        # The count, then the path whole (on the next line when both do not fit in 80).
        at = next(i for i, line in enumerate(lines) if line.startswith("0 of 0 named features"))
        assert "~/research/saes/registries/my_sae_with_a_long_name.features.json" in " ".join(lines[at : at + 2])


async def test_report_names_its_budget_and_the_index_budget(tiny_setup, tmp_path):
    app = make_app(tiny_setup, tmp_path)
    async with app.run_test(size=(80, 120)) as pilot:
        assert await app.wait_ready()
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        await wait_until(pilot, lambda: screen.report is not None, "the report")
        await pilot.pause()
        report = screen.report
        text = "\n".join(screen_text(app))
        evaluated = report.settings.tokens_evaluated
        from saetui.engine.index import DEFAULT_BUDGET

        words = " ".join(text.split())  # the line may wrap
        assert f"This report: {evaluated:,} tokens (budget {report.budget:,}); the feature screen's index: budget {DEFAULT_BUDGET:,}, so a feature dead here may fire there" in words
        # The dead list: how many, and on which tokens (its top and bottom borders, whole at 80).
        assert f"dead features: {report.dead_features.strict:,}" in text
        assert f"on the {evaluated:,} evaluation tokens" in text


async def test_report_says_evaluating_as_soon_as_it_starts(tiny_setup, tmp_path, monkeypatch):
    """While the worker evaluates, the report says so (not "loading"), with the budget."""
    release = threading.Event()
    real = evaluate_mod.evaluate

    def slow_evaluate(session, budget, *args, **kwargs):
        yield Progress("evaluating", 0, budget)
        release.wait(60)
        return (yield from real(session, budget, *args, **kwargs))

    import saetui.screens.report as report_screen

    monkeypatch.setattr(report_screen, "evaluate", slow_evaluate)
    app = make_app(tiny_setup, tmp_path, max_tokens=48 * 24)
    async with app.run_test(size=SIZE) as pilot:
        try:
            assert await app.wait_ready()
            await wait_until(pilot, lambda: any("Evaluating the SAE on 1,152 tokens" in line for line in screen_text(app)), "the evaluating line")
            assert not any("load" in line.lower() for line in screen_text(app)[2:4])
        finally:
            release.set()
        await wait_until(pilot, lambda: app.screen.report is not None, "the report")


async def test_error_notifications_never_reach_the_terminal_raw(tiny_setup, tmp_path, monkeypatch):
    hostile = "model \x1b]0;pwned\x07\x1b[2J[bold]x[/bold]"

    def failing_page(session, feature_id, *args, **kwargs):
        raise UserError(f"Cannot read {hostile}", "Check the file")

    monkeypatch.setattr("saetui.screens.feature.feature_page", failing_page)
    app = make_app(tiny_setup, tmp_path, max_tokens=48 * 24)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert await app.wait_ready()
        await pilot.press("2")
        await wait_until(pilot, lambda: any("Cannot read" in m for m in notifications_shown(app, "error")), "the error")
        shown = [m for m in notifications_shown(app, "error") if "Cannot read" in m][0]
        assert "\x1b" not in shown and "\x07" not in shown
        assert "\\x1b]0;pwned\\x07\\x1b[2J[bold]x[/bold]" in shown  # escaped, and markup shown as typed
        assert not any("\x1b" in line for line in screen_text(app))


def test_clean_excerpt_keeps_the_peak_document_and_whole_words(tiny_model_dir):
    """Edit-dialog examples: the peak's document only, no special tokens, no cut words."""
    from transformers import AutoTokenizer

    from saetui.screens.edit_entry import clean_excerpt

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    eos = tokenizer.convert_tokens_to_ids("</s>")
    before = tokenizer.encode("The cat sat on the mat.", add_special_tokens=False)
    after = tokenizer.encode(" Paris is the capital of France.", add_special_tokens=False)
    ids = before + [eos] + after
    paris = next(i for i in range(len(before) + 1, len(ids)) if "P" in tokenizer.decode(ids[i : i + 1]))
    assert clean_excerpt(tokenizer, ids, paris) == "Paris is the capital of France."
    assert clean_excerpt(tokenizer, ids, 1) == "The cat sat on the mat."
    # Firing on the special token itself: the text that follows it.
    assert clean_excerpt(tokenizer, ids, len(before)) == "Paris is the capital of France."
    # A window that ends inside a word: that word is left out, never the peak.
    ends = [n for n in range(paris + 1, len(ids)) if tokenizer.decode(ids[:n]).endswith(("F", "Fr", "Fra", "Fran", "Franc"))]
    if ends:  # the tokenizer splits "France": cut the window inside it
        assert clean_excerpt(tokenizer, ids[: ends[0]], paris) == "Paris is the capital of"
    # Short excerpts drop words from the longer side first, keeping the peak.
    short = clean_excerpt(tokenizer, ids, paris, max_chars=12)
    assert short.startswith("Paris") and len(short) <= 12 + len("Paris") and "</s>" not in short


async def test_goto_typed_in_one_burst(tiny_setup, tmp_path):
    """g, an id and enter typed in one burst open that feature (the digits once switched screens)."""
    app = make_app(tiny_setup, tmp_path, max_tokens=48 * 24)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_live_feature(pilot, app)
        target = 17 if screen.feature_id != 17 else 18
        burst(app, ["g", *str(target), "enter"])
        await wait_until(pilot, lambda: screen.page is not None and screen.page.feature_id == target, "the feature typed")
        await pilot.pause()
        assert app.screen is screen
        assert screen_text(app)[2].strip().startswith(f"Feature {target} of 256")
