"""The probe screen."""

from __future__ import annotations

from .base import ComingScreen


class ProbeScreen(ComingScreen):
    TITLE_TEXT = "Probe"
    ISSUE = 5
    WHAT = "type text and see which features fire"
