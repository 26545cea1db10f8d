"""The saetui app: its screens over one engine, and the one owner of registry edits.

Start here to find anything: the screens are listed in `saetui.screens.SCREENS` (one
module each in `saetui/screens/`), and every number they show comes from
`saetui/engine/`, awaited on the engine's worker thread. Screens ask the app for things
with the messages in `saetui/messages.py`; registry edits are saved here and announced
with `registry_changed_signal`.
"""

from __future__ import annotations

import asyncio
import os
import time
from functools import partial
from pathlib import Path
from typing import Iterable

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.signal import Signal

from .engine.engine import Engine
from .engine.errors import UserError
from .engine.registry import Registry, registry_path_for
from .engine.session import Session
from .engine.worker import Job, Progress
from .messages import AddRegistryEntry, DeleteRegistryEntry, EditRegistryEntry, JobProgress, OpenFeature, ProbeText, RegistryChange
from .screens import SCREENS, screen_title
from .screens.edit_entry import ConfirmDeleteScreen, EditedEntry, EditEntryScreen, top_context_examples
from .screens.help import HelpScreen, binding_rows
from .ui.safe_text import visible

# Seconds between two progress updates posted to the screen.
PROGRESS_INTERVAL_S = 0.1


class SaetuiApp(App[int]):
    """The explorer. `engine` is opened in the background while the first frame paints."""

    CSS_PATH = "app.tcss"
    TITLE = "saetui"
    MODES = {entry.mode: entry.screen for entry in SCREENS}
    DEFAULT_MODE = SCREENS[0].mode
    # The engine's long work as the status bar of every screen shows it (None: idle).
    job_progress: reactive[Progress | None] = reactive(None, always_update=True)
    # The command line's BLAS notice (blas.notice), set after construction.
    startup_notice: str | None = None
    BINDINGS = [
        # The screen strip under the header shows these; the footer keeps to the screen's own keys.
        *(Binding(entry.key, f"switch_mode({entry.mode!r})", entry.title, show=False) for entry in SCREENS),
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
        # Progress of long work arrives from the worker thread as posted messages.
        self._last_progress_post = 0.0
        engine.on_progress = self.post_job_progress
        # The user's feature names; a file that cannot be read opens read-only (never overwritten).
        # Only the app edits it (see "registry edits" below), and announces every saved change here.
        self.registry = Registry.load(registry_path_for(engine))
        self.registry_changed_signal: Signal[RegistryChange] = Signal(self, "registry-changed")
        # The Steer screen's interventions; `s` on the feature and probe screens adds to it.
        self.interventions: list = []
        # The token budget of the report on screen 1 (set by it); the feature page names it
        # beside its index's budget, since the two count on different tokens.
        self.report_budget: int | None = None

    # -- start-up -----------------------------------------------------------------------

    def on_mount(self) -> None:
        self.title = f"saetui · {screen_title(self.DEFAULT_MODE)}"
        self.sub_title = "loading..."
        if self.registry.warning:
            self.notify(visible(self.registry.warning), severity="warning", timeout=20, markup=False)
        if self.startup_notice:
            # e.g. running on MLX's slow reference BLAS, and how to get the fast one.
            self.notify(visible(self.startup_notice), timeout=15, markup=False)
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
            await self.engine.run(self.engine.read_sae)
            self.sub_title = self.engine.summary_line()
            await self.wait_job(self.engine.start("loading", self.engine.opening))
        except UserError as exc:
            self._load_error = exc.one_line()
            self.fatal_error = self._load_error
            self._engine_ready.set()
            self.exit(return_code=2)
            return
        self.sub_title = self.engine.summary_line()
        self._engine_ready.set()

    async def wait_ready(self) -> bool:
        await self._engine_ready.wait()
        return self._load_error is None

    @property
    def is_ready(self) -> bool:
        return self._engine_ready.is_set() and self._load_error is None

    @property
    def session(self) -> Session:
        """The open session (screens ask only once `wait_ready()` said yes)."""
        return self.engine.require_session()

    def feature_name(self, feature_id: int) -> str | None:
        """The registry's name for a feature, for showing next to its id anywhere."""
        registry = getattr(self, "registry", None)
        name = registry.name(feature_id) if registry is not None else None
        if name:
            return name
        # Else the automatic explanation, marked as such (once the session's index is explained).
        from .engine.explain import display_label

        session = self.engine.session
        return display_label(session.explanations.get(int(feature_id))) if session is not None else None

    def refresh_names(self) -> None:
        """Names shown anywhere may have changed (explanations arrived): say so to every screen."""
        self.registry_changed_signal.publish(RegistryChange(-1, "explained"))

    # -- the engine's long work ------------------------------------------------------------

    async def wait_job(self, job: Job):
        """The result of long work started on the engine (raises what it raised).

        Shielded: a screen's task that stops waiting (the app exiting, a newer request)
        does not cancel work that others may follow; `x` does.
        """
        waited = asyncio.wrap_future(job.future)
        # Retrieve the outcome even when nobody waits any more (no "never retrieved" warning).
        waited.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(waited)

    def post_job_progress(self, job: Job, progress: Progress | None) -> None:
        # Worker thread: post_message is thread-safe. At most ~10 updates a second reach the
        # screen; the first, the last and the end of a job always do.
        now = time.monotonic()
        if progress is not None and not progress.finished and progress.done and now - self._last_progress_post < PROGRESS_INTERVAL_S:
            return
        self._last_progress_post = now
        self.post_message(JobProgress(job, progress))

    @on(JobProgress)
    def _job_progress(self, message: JobProgress) -> None:
        self.job_progress = message.progress

    def action_cancel_job(self) -> None:
        if self.engine.cancel_jobs():
            self.notify("Cancelled")
        else:
            self.notify("Nothing to cancel")

    # -- navigation -----------------------------------------------------------------------

    def switch_mode(self, mode: str):  # type: ignore[override]
        # The header names the screen, so a user always knows where they are.
        self.title = f"saetui · {screen_title(mode)}"
        return super().switch_mode(mode)

    def action_help(self) -> None:
        screen = self.screen
        self.push_screen(HelpScreen(binding_rows(screen), screen_title(self.current_mode)))

    def on_open_feature(self, message: OpenFeature) -> None:
        self.switch_mode("feature")
        screen = self.screen
        if hasattr(screen, "show_feature"):
            screen.show_feature(message.feature_id)

    def on_probe_text(self, message: ProbeText) -> None:
        self.switch_mode("probe")
        screen = self.screen
        if hasattr(screen, "set_text"):
            screen.set_text(message.text, message.feature_id)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for entry in SCREENS:
            yield SystemCommand(f"{entry.title} screen", f"Switch to the {entry.title.lower()} screen (key {entry.key})", partial(self.switch_mode, entry.mode))
        yield SystemCommand("Help", "Show the keys of this screen", self.action_help)

    # -- registry edits: every screen asks, the app saves and announces -------------------------

    def _registry_writable(self) -> bool:
        if self.registry.read_only:
            self.notify(visible(self.registry.warning or "The registry is read-only"), severity="error", markup=False)
            return False
        return True

    @on(AddRegistryEntry)
    def _add_registry_entry(self, message: AddRegistryEntry) -> None:
        self._open_entry_editor(None)

    @on(EditRegistryEntry)
    def _edit_registry_entry(self, message: EditRegistryEntry) -> None:
        self._open_entry_editor(message.feature_id)

    def _open_entry_editor(self, feature_id: int | None) -> None:
        """Show the edit dialog for a feature (None: a new entry) and save what it returns."""
        if not self._registry_writable():
            return
        registry = self.registry
        d_sae = self.engine.sae.d_sae if self.engine.sae is not None else None
        if feature_id is not None and d_sae is not None and not 0 <= feature_id < d_sae:
            self.notify(f"Feature {feature_id} does not exist: this SAE has features 0 to {d_sae - 1}", severity="error")
            return
        # Decoding a few contexts is quick tokenizer work (no MLX): done here, so the dialog
        # opens at once even while the engine's worker is busy with a long job.
        examples = top_context_examples(self.engine.session, feature_id) if feature_id is not None else []
        # When adding: the name of an id already in the registry, so it is not overwritten.
        named = (lambda fid: registry.name(fid) or ("(unnamed)" if fid in registry else None)) if feature_id is None else None
        entry = registry.get(feature_id) if feature_id is not None else None
        steered = [iv.spec for iv in self.interventions if iv.feature_id == feature_id] if feature_id is not None else []
        self.push_screen(EditEntryScreen(feature_id, entry, d_sae, examples, named, steered), self._save_entry)

    def _save_entry(self, edited: EditedEntry | None) -> None:
        if edited is None:  # cancelled
            return
        registry = self.registry
        try:
            registry.set(edited.feature_id, edited.fields)
            registry.save()
        except UserError as exc:
            registry.revert()
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            return
        self.notify(visible(f"Saved feature {edited.feature_id}: {edited.fields.get('name', '')}"), markup=False)
        self.registry_changed_signal.publish(RegistryChange(edited.feature_id, "saved"))

    @on(DeleteRegistryEntry)
    def _delete_registry_entry(self, message: DeleteRegistryEntry) -> None:
        feature_id = message.feature_id
        if not self._registry_writable():
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete_entry(feature_id)

        self.push_screen(ConfirmDeleteScreen(feature_id, self.registry.name(feature_id)), confirmed)

    def _delete_entry(self, feature_id: int) -> None:
        registry = self.registry
        try:
            registry.delete(feature_id)
            registry.save()
        except UserError as exc:
            registry.revert()
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            return
        self.notify(f"Deleted feature {feature_id} from the registry")
        self.registry_changed_signal.publish(RegistryChange(feature_id, "deleted"))

    def on_unmount(self) -> None:
        self.engine.close()
