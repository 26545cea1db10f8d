"""The app's screens, one module each, and `SCREENS`: the one table of them.

The app derives everything about its screens from `SCREENS`: its modes, the number keys
that switch to them, the strip of screens under the header, the help screen's title and
the command palette's screen commands. Adding a screen is one row here (and its import).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.screen import Screen

from .clusters import ClustersScreen
from .feature import FeatureScreen
from .probe import ProbeScreen
from .registry import RegistryScreen
from .report import ReportScreen
from .steer import SteerScreen


@dataclass(frozen=True)
class ScreenEntry:
    key: str  # the key that switches to the screen, from any screen
    mode: str  # the app's mode name for it
    title: str  # shown in the header, the screen strip, help and the command palette
    screen: type[Screen]


# In key order; the first is the screen the app opens on.
SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry("1", "report", "Report", ReportScreen),
    ScreenEntry("2", "feature", "Feature", FeatureScreen),
    ScreenEntry("3", "probe", "Probe", ProbeScreen),
    ScreenEntry("4", "registry", "Registry", RegistryScreen),
    ScreenEntry("5", "steer", "Steer", SteerScreen),
    ScreenEntry("6", "clusters", "Clusters", ClustersScreen),
)


def screen_title(mode: str) -> str:
    """The title of the screen shown in `mode` (the mode itself if it is not in the table)."""
    return next((entry.title for entry in SCREENS if entry.mode == mode), mode)
