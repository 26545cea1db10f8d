"""`saetui registry` (arrives with issue #5)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, engine) -> int:
    print("saetui registry: not built yet (issue #5 is open)", file=sys.stderr)
    return 1
