"""The saetui app: four screens over one engine.

Start here to find anything: the screens (report, feature, probe, registry) live in
`saetui/screens/`, and every number they show comes from `saetui/engine/`, awaited on
the engine's worker thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .engine.engine import Engine
from .engine.errors import UserError
from .engine.worker import Progress
from .engine.registry import Registry, registry_path_for
from .messages import EditRegistryEntry, OpenFeature, ProbeText
from .screens.edit_entry import open_entry_editor
from .screens.clusters import ClustersScreen
from .screens.feature import FeatureScreen
from .screens.help import HelpScreen, binding_rows
from .screens.probe import ProbeScreen
from .screens.registry import RegistryScreen
from .screens.report import ReportScreen
from .ui.safe_text import visible
from .widgets.job_status import JobStatus

SCREEN_NAMES = {
    "report": "Report",
    "feature": "Feature",
    "probe": "Probe",
    "registry": "Registry",
    "clusters": "Clusters",
}


class SaetuiApp(App[int]):
    """The explorer. `engine` is opened in the background while the first frame paints."""

    CSS_PATH = "app.tcss"
    TITLE = "saetui"
    MODES = {
        "report": ReportScreen,
        "feature": FeatureScreen,
        "probe": ProbeScreen,
        "registry": RegistryScreen,
        "clusters": ClustersScreen,
    }
    DEFAULT_MODE = "report"
    BINDINGS = [
        Binding("1", "switch_mode('report')", "Report", show=False),
        Binding("2", "switch_mode('feature')", "Feature", show=False),
        Binding("3", "switch_mode('probe')", "Probe", show=False),
        Binding("4", "switch_mode('registry')", "Registry", show=False),
        Binding("6", "switch_mode('clusters')", "Clusters", show=False),
        # The screen strip under the header shows these; the footer keeps to the screen's own keys.
        Binding("question_mark", "help", "Help", show=False),
        Binding("x", "cancel_job", "Cancel job", show=False),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._engine_ready = asyncio.Event()
        self._load_error: str | None = None
        self.fatal_error: str | None = None
        self._jobs: list = []
        # The user's feature names; a file that cannot be read opens read-only (never overwritten).
        self.registry = Registry.load(registry_path_for(engine))

    # -- start-up -----------------------------------------------------------------------

    def on_mount(self) -> None:
        self.title = f"saetui · {SCREEN_NAMES[self.DEFAULT_MODE]}"
        self.sub_title = "loading..."
        if self.registry.warning:
            self.notify(visible(self.registry.warning), severity="warning", timeout=20, markup=False)
        self.run_worker(self._open_engine(), name="open-engine", exclusive=True)
        if os.environ.get("SAETUI_FIRST_FRAME_FILE"):
            # For the benchmark (saetui.bench): when the first frame has been painted.
            self.call_after_refresh(self._record_first_frame)

    def _record_first_frame(self) -> None:
        Path(os.environ["SAETUI_FIRST_FRAME_FILE"]).write_text(f"{time.time():.6f}\n")
        if os.environ.get("SAETUI_EXIT_AFTER_FIRST_FRAME"):
            self.exit()

    async def _open_engine(self) -> None:
        try:
            await self.engine.run(self.engine.open_sae)
            self.sub_title = self.engine.summary_line()
            await self.engine.open_async(self.progress_callback("loading model"))
        except UserError as exc:
            self._load_error = exc.one_line()
            self.fatal_error = self._load_error
            self._engine_ready.set()
            self.exit(return_code=2)
            return
        self.clear_progress()
        self.sub_title = self.engine.summary_line()
        self._engine_ready.set()

    async def wait_ready(self) -> bool:
        await self._engine_ready.wait()
        return self._load_error is None

    @property
    def is_ready(self) -> bool:
        return self._engine_ready.is_set() and self._load_error is None

    def feature_name(self, feature_id: int) -> str | None:
        """The registry's name for a feature, for showing next to its id anywhere."""
        registry = getattr(self, "registry", None)
        if registry is None:
            return None
        return registry.name(feature_id)

    # -- progress of engine jobs ----------------------------------------------------------

    def progress_callback(self, label: str):
        """A callback for the worker thread that shows a job's progress on the current screen."""
        loop = asyncio.get_running_loop()

        def report(progress: Progress) -> None:
            loop.call_soon_threadsafe(self._show_progress, progress)

        return report

    def _show_progress(self, progress: Progress) -> None:
        # Reports queued by the worker can arrive after the app has started to exit.
        if not self.is_running or not self.screen_stack:
            return
        for bar in self.screen.query(JobStatus):
            if bar.is_mounted and bar.children:  # a screen still composing has no label yet
                bar.show(progress)

    def clear_progress(self) -> None:
        if not self.is_running or not self.screen_stack:
            return
        for bar in self.screen.query(JobStatus):
            bar.clear()

    def track_job(self, job) -> None:
        """Let `x` cancel this job while it runs."""
        self._jobs.append(job)

    def action_cancel_job(self) -> None:
        # A job whose last report reached its total has finished.
        self._jobs = [j for j in self._jobs if not j.cancelled and not (j.last and j.last.total and j.last.done >= j.last.total)]
        running = list(self._jobs)
        if not running:
            self.notify("Nothing to cancel")
            return
        for job in running:
            job.cancel()
        self._jobs.clear()
        self.notify("Cancelled")

    # -- navigation -----------------------------------------------------------------------

    def switch_mode(self, mode: str):  # type: ignore[override]
        # The header names the screen, so a user always knows where they are.
        self.title = f"saetui · {SCREEN_NAMES.get(mode, mode)}"
        return super().switch_mode(mode)

    def action_help(self) -> None:
        screen = self.screen
        title = SCREEN_NAMES.get(self.current_mode, type(screen).__name__)
        self.push_screen(HelpScreen(binding_rows(screen), title))

    def on_open_feature(self, message: OpenFeature) -> None:
        self.switch_mode("feature")
        screen = self.screen
        if hasattr(screen, "show_feature"):
            screen.show_feature(message.feature_id)

    def on_probe_text(self, message: ProbeText) -> None:
        self.switch_mode("probe")
        screen = self.screen
        if hasattr(screen, "set_text"):
            screen.set_text(message.text)

    def on_edit_registry_entry(self, message: EditRegistryEntry) -> None:
        open_entry_editor(self, message.feature_id)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, name in SCREEN_NAMES.items():
            yield SystemCommand(f"{name} screen", f"Switch to the {name.lower()} screen", lambda m=mode: self.switch_mode(m))
        yield SystemCommand("Help", "Show the keys of this screen", self.action_help)

    def on_unmount(self) -> None:
        self.engine.close()
