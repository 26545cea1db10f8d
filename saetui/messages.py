"""Messages the app's screens and widgets exchange, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


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
class EditRegistryEntry(Message):
    """Open the registry's edit dialog for a feature."""

    feature_id: int


class RegistryChanged(Message):
    """The feature registry was saved; names shown anywhere may have changed."""
