"""The feature screen."""

from __future__ import annotations

from .base import ComingScreen


class FeatureScreen(ComingScreen):
    TITLE_TEXT = "Feature"
    ISSUE = 4
    WHAT = "feature pages from the feature index"
