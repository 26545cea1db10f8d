"""The report screen through App.run_test at 80x24: score, bands, plots, keys, features."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from rich.console import Console

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.engine.evaluate import cached_report, evaluate
from saetui.screens.report import ReportScreen
from saetui.widgets.feature_table import FeatureTable
from saetui.widgets.histogram import Histogram

SIZE = (80, 24)


@pytest.fixture
def setup(tiny_setup, tmp_path):
    """A copy of the tiny SAE (so exported JSON lands in tmp) and a registry file of our own."""
    sae = tmp_path / "screen_sae.mlx"
    shutil.copytree(tiny_setup["sae"], sae)
    return {"sae": str(sae), "dataset": tiny_setup["dataset"], "registry": str(tmp_path / "names.features.json"), "dir": tmp_path}


def make_engine(setup, **kw) -> Engine:
    settings = dict(sae=setup["sae"], dataset=setup["dataset"], registry=setup["registry"], context_len=32, max_tokens=256)
    settings.update(kw)
    return Engine(EngineSettings(**settings))


def plain(widget) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(widget.content)
    return console.export_text()


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the screen")


async def test_the_report_is_the_first_screen_with_score_bands_and_plots(setup):
    app = SaetuiApp(make_engine(setup))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        await wait_for(pilot, lambda: screen.report is not None)
        await pilot.pause()
        data = screen.report.data
        score = plain(screen.query_one("#report-score"))
        assert f"Score {data['quality_score']:.1f} / 5" in score
        assert data["score"]["verdict"] in score and "Next step" in score
        metrics = plain(screen.query_one("#report-metrics"))
        for label in ("MSE", "Cosine similarity", "Explained variance", "L0 mean", "Dead (practical)", "CE loss recovered"):
            assert label in metrics
        mse_line = next(line for line in metrics.splitlines() if "MSE" in line)
        assert data["bands"]["mse"] in mse_line
        status = plain(screen.query_one("#report-status"))
        assert "256" in status and "BOS excluded" in status
        density = screen.query_one("#report-density", Histogram)
        assert density.render().plain.count("│") >= 5  # the bars are drawn
        assert "└" in screen.query_one("#report-l0", Histogram).render().plain
        densest = screen.query_one("#report-densest", FeatureTable)
        assert densest.row_count == len(data["feature_density"]["densest"]) > 0


async def test_definitions_export_and_recompute_keys(setup):
    app = SaetuiApp(make_engine(setup))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.report is not None)
        panel = screen.query_one("#report-definitions")
        assert not panel.display
        await pilot.press("d")
        assert panel.display and "Cosine similarity" in plain(panel) and "SAEBench" in plain(panel)
        await pilot.press("d")
        assert not panel.display

        await pilot.press("e")
        written = setup["dir"] / "screen_sae_evaluation.json"
        await wait_for(pilot, written.exists)
        assert json.loads(written.read_text())["settings"]["budget"] == 256

        await pilot.press("r")
        await wait_for(pilot, lambda: screen.report is not None and screen.report.budget == 512)
        assert not screen.report.from_cache
        assert "512" in plain(screen.query_one("#report-status"))


async def test_a_cached_report_shows_at_once_with_registry_names_and_enter_opens_a_feature(setup):
    engine = make_engine(setup)
    session = engine.call(engine.open)
    first = engine.call_job("evaluating", evaluate, session, 256, registry={})
    engine.close()
    top = first.data["feature_density"]["densest"][0]["feature"]
    # Names are data: markup in them is shown literally.
    with open(setup["registry"], "w") as fh:
        json.dump({str(top): {"name": "[bold]cats[/bold]", "confidence": "high"}}, fh)

    app = SaetuiApp(make_engine(setup))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.report is not None)
        assert screen.report.from_cache
        table = screen.query_one("#report-densest", FeatureTable)
        await pilot.pause()
        assert "[bold]cats[/bold]" in str(table.get_row_at(0)[2])
        interp = screen.report.data["interpretability"]
        token_ids = {f["feature"] for f in interp["token_features"]}
        assert (top in token_ids) or any(f["feature"] == top for f in interp["registry_features"])

        table.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "feature")


async def test_cancelling_leaves_nothing_cached(setup):
    engine = make_engine(setup)
    entered, gate = threading.Event(), threading.Event()
    app = SaetuiApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await app.wait_ready()
        runner = engine.session.runner
        real = runner.logits_and_activations

        def held(*args, **kwargs):
            entered.set()
            gate.wait(10)  # hold the batch (the only one: 8 contexts) until the test has pressed x
            return real(*args, **kwargs)

        runner.logits_and_activations = held
        screen = app.screen
        await wait_for(pilot, entered.is_set)
        await pilot.press("x")
        gate.set()
        await wait_for(pilot, lambda: not screen.running)
        assert screen.report is None
        assert "cancelled" in plain(screen.query_one("#report-score")).lower()
        runner.logits_and_activations = real
        assert await engine.run(cached_report, engine.session, 256, {}) is None


async def test_a_bad_dataset_is_a_notification_not_a_crash(setup, tmp_path):
    app = SaetuiApp(make_engine(setup, dataset=str(tmp_path / "missing.txt")))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: "No report" in plain(screen.query_one("#report-score")))
        assert "Dataset file not found" in plain(screen.query_one("#report-score"))
        assert app.is_running


# -- the histogram widget's drawing ------------------------------------------------------------------


@pytest.mark.parametrize("width", [12, 37, 80])
def test_histogram_fits_its_width_and_merges_bins(width):
    from saetui.ui.histogram import render_histogram

    counts = list(range(100))
    edges = [float(i) for i in range(101)]
    text = render_histogram(counts, edges, width=width, height=4, title="t", markers={50.0: "k"}, x_label="x")
    lines = text.plain.splitlines()
    assert all(len(line) <= width for line in lines), lines
    assert lines[0] == "t" and "99" in lines[1]  # the count axis shows the peak
    bars = [line.split("│", 1)[1] for line in lines[1:5]]
    # Bars grow left to right, and the tallest column is full at the top row.
    assert bars[-1].rstrip()[-1] == "█" and bars[0].rstrip().endswith("█")
    assert lines[6].split()[0] == "0" and lines[6].split()[-1] == "100"
    assert "k" in lines[7] and lines[8].strip() == "x"


def test_histogram_bar_heights_follow_counts():
    from saetui.ui.histogram import render_histogram

    text = render_histogram([8, 4, 0, 1], [0, 1, 2, 3, 4], width=10, height=1)
    row = text.plain.splitlines()[0].split("│", 1)[1]
    assert row[:4] == "█▄ ▁"  # full, half, empty, and a non-zero count is never invisible


def test_histogram_without_data():
    from saetui.ui.histogram import render_histogram

    assert "(no data)" in render_histogram([], [], width=20).plain
