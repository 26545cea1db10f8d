"""`saetui top-features` (arrives with issue #4)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, engine) -> int:
    print("saetui top-features: not built yet (issue #4 is open)", file=sys.stderr)
    return 1
