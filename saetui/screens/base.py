"""What every main screen shares: the header, the job bar, the footer, and the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header

from ..widgets.job_status import JobStatus
from ..widgets.screen_tabs import ScreenTabs

if TYPE_CHECKING:
    from ..app import SaetuiApp
    from ..engine.engine import Engine

# The footer shows the command palette's key (ctrl+p) only on terminals this wide.
PALETTE_KEY_MIN_WIDTH = 100


class EngineScreen(Screen):
    """A main screen: subclasses yield their body from `compose_body`."""

    app: "SaetuiApp"

    def compose(self) -> ComposeResult:
        # The table of screens imports every screen module, this one included: read it here.
        from . import SCREENS

        yield Header()
        yield ScreenTabs(SCREENS)
        yield from self.compose_body()
        yield JobStatus()
        # Compact, and without the palette's key below 100 columns (help lists it): the
        # screen's own keys must all fit at 80.
        yield Footer(compact=True, show_command_palette=False)

    def compose_body(self) -> Iterable[Widget]:  # pragma: no cover - overridden
        return []

    def on_mount(self) -> None:
        self._palette_key(self.app.size.width)

    def on_resize(self, event: events.Resize) -> None:
        self._palette_key(event.size.width)

    def _palette_key(self, width: int) -> None:
        for footer in self.query(Footer):
            footer.show_command_palette = width >= PALETTE_KEY_MIN_WIDTH

    def on_screen_resume(self) -> None:
        for tabs in self.query(ScreenTabs):
            tabs.active = self.app.current_mode

    @property
    def engine(self) -> "Engine":
        return self.app.engine

    async def wait_ready(self) -> bool:
        """Wait until the model is loaded; False if loading failed."""
        return await self.app.wait_ready()

