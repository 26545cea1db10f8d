"""Messages the app's screens and widgets send to the app, in one place.

Screens ask; the app acts: it switches screens, and it alone edits the feature registry
(asking with its dialogs, saving, and announcing each change with `registry_changed_signal`,
whose payload is a `RegistryChange`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    """Open the probe screen with this text (shaded by `feature_id` when given)."""

    text: str
    feature_id: int | None = None


@dataclass
class AddRegistryEntry(Message):
    """Name a new feature: the app asks for its id and fields, then saves them."""


@dataclass
class EditRegistryEntry(Message):
    """Edit a feature's registry entry: the app shows the edit dialog, then saves what it returns."""

    feature_id: int


@dataclass
class DeleteRegistryEntry(Message):
    """Delete a feature's registry entry: the app asks to confirm, then saves."""

    feature_id: int


@dataclass(frozen=True)
class RegistryChange:
    """What changed in the registry (the payload of the app's `registry_changed_signal`)."""

    feature_id: int  # -1: any feature (explanations arrived)
    action: Literal["saved", "deleted", "explained"]


@dataclass
class JobProgress(Message):
    """Long work on the engine moved on (`progress`), or ended (`progress` None)."""

    job: "Job"
    progress: "Progress | None"
