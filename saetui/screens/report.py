"""The report screen."""

from __future__ import annotations

from .base import ComingScreen


class ReportScreen(ComingScreen):
    TITLE_TEXT = "Report"
    ISSUE = 3
    WHAT = "the quality report and 0-5 score"
