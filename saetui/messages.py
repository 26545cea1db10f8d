"""Messages the app's screens and widgets exchange, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from .engine.worker import Job, Progress


@dataclass
class OpenFeature(Message):
    """Show feature `feature_id` on the feature screen (from any screen)."""

    feature_id: int


@dataclass
class ProbeText(Message):
    """Open the probe screen with this text."""

    text: str


@dataclass
class EditRegistryEntry(Message):
    """Open the registry's edit dialog for a feature."""

    feature_id: int


class RegistryChanged(Message):
    """The feature registry was saved; names shown anywhere may have changed."""


@dataclass
class JobProgress(Message):
    """Long work on the engine moved on (`progress`), or ended (`progress` None)."""

    job: "Job"
    progress: "Progress | None"
