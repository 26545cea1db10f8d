"""Progress of long work on the command line: Rich's progress display on stderr.

`cli_progress(console)` is a context manager giving a callback for `engine.worker.Job`:
each label (loading, evaluating, indexing, ...) gets a line with its description, bar,
done/total, rate and time remaining (the rate and ETA the job measures, as the app's
status line shows them), and the line of an earlier label is hidden when a
new one starts. It draws only when the console is a terminal, so redirected stderr
stays clean, and it is cleared when the work ends. The callback may be called from the
engine's worker thread (Rich's display is thread-safe).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import rich.progress
from rich.console import Console
from rich.text import Text

from ..engine.worker import Progress
from .safe_text import visible


class RateColumn(rich.progress.ProgressColumn):
    """Units per second since the job started ("1,234 tokens/s"), as the job measures it."""

    def render(self, task: rich.progress.Task) -> Text:
        rate = task.fields.get("rate") or 0.0
        return Text(f"{rate:,.0f} {task.fields.get('unit', '')}/s" if rate > 0 else "", style="progress.data.speed")


class RemainingColumn(rich.progress.ProgressColumn):
    """Time left at the job's rate so far ("ETA 12s")."""

    def render(self, task: rich.progress.Task) -> Text:
        eta = task.fields.get("eta")
        return Text(f"ETA {eta:,.0f}s" if eta is not None and not task.finished else "", style="progress.remaining")


class ProgressPrinter:
    """A `Job` progress callback that drives a Rich `Progress` display.

    `reported` says whether any progress arrived (e.g. whether an index was built rather
    than read from the cache), whether or not anything was drawn.
    """

    def __init__(self, display: rich.progress.Progress) -> None:
        self.display = display
        self.reported = False
        self._tasks: dict[str, rich.progress.TaskID] = {}

    def __call__(self, progress: Progress) -> None:
        self.reported = True
        total = progress.total if progress.total > 0 else None
        task = self._tasks.get(progress.label)
        if task is None:
            for earlier in self._tasks.values():
                self.display.update(earlier, visible=False)
            task = self.display.add_task(visible(progress.label or "working"), total=total, unit=progress.unit)
            self._tasks[progress.label] = task
        self.display.update(task, completed=progress.done, total=total, rate=progress.rate, eta=progress.eta)


def progress_display(console: Console) -> rich.progress.Progress:
    """Description, bar, done/total, rate, time remaining; drawn only on a terminal."""
    return rich.progress.Progress(
        rich.progress.TextColumn("{task.description}", markup=False),
        rich.progress.BarColumn(bar_width=30),
        rich.progress.MofNCompleteColumn(),
        RateColumn(),
        RemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


@contextmanager
def cli_progress(console: Console | None = None) -> Iterator[ProgressPrinter]:
    """A progress callback for the duration of the `with` block (on stderr by default)."""
    display = progress_display(console or Console(stderr=True, highlight=False))
    with display:
        yield ProgressPrinter(display)
