"""A bar under each screen showing the engine's long work: progress, rate, ETA, cancel key."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from ..engine.worker import Progress


class JobStatus(Horizontal):
    """Hidden while the engine is idle; follows the app's `job_progress`."""

    DEFAULT_CSS = """
    JobStatus { height: 1; display: none; padding: 0 1; background: $boost; }
    JobStatus.-busy { display: block; }
    JobStatus Label { width: auto; max-width: 1fr; }
    /* The label (rate, ETA, cancel key) comes first; the bar takes what is left. */
    JobStatus ProgressBar { width: 1fr; min-width: 8; margin-left: 1; }
    JobStatus ProgressBar Bar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="job-label")
        yield ProgressBar(total=100, show_eta=False, id="job-bar")

    def on_mount(self) -> None:
        if hasattr(self.app, "job_progress"):
            self.watch(self.app, "job_progress", self._follow)

    def _follow(self, progress: Progress | None) -> None:
        if progress is None:
            self.clear()
        else:
            self.show(progress)

    def show(self, progress: Progress) -> None:
        self.add_class("-busy")
        label = progress.describe()
        if not progress.finished:
            label += " · x cancels"
        self.query_one("#job-label", Label).update(label)
        self.query_one("#job-bar", ProgressBar).update(total=max(progress.total, 1), progress=progress.done)

    def clear(self) -> None:
        self.remove_class("-busy")
