"""The registry screen."""

from __future__ import annotations

from .base import ComingScreen


class RegistryScreen(ComingScreen):
    TITLE_TEXT = "Registry"
    ISSUE = 5
    WHAT = "your named features"
