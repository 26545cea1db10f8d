"""`saetui eval` (arrives with issue #3)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, engine) -> int:
    print("saetui eval: not built yet (issue #3 is open)", file=sys.stderr)
    return 1
