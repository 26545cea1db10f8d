"""`saetui registry [SAE] [--json]`: the named features, as a table or as the file's JSON.

Needs neither the model nor the SAE's weights: only where the registry lives.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine.errors import UserError
from ..engine.registry import Registry, registry_path_for
from ..ui.safe_text import dumps_json_safe, literal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the registry's JSON (every entry, as the file holds it)")


def run(args: argparse.Namespace, engine) -> int:
    if not engine.is_demo and not engine.sae_path.exists():
        raise UserError(f"SAE not found: {engine.sae_path}", "Check the path, or run with no SAE for the demo's registry")
    path = registry_path_for(engine)
    registry = Registry.load(path)
    if registry.read_only:
        raise UserError(f"Registry {path} cannot be read ({registry.problem})", "Fix the file or move it away; saetui never overwrites it")
    if args.json:
        sys.stdout.write(dumps_json_safe(registry.to_json(), indent=2) + "\n")
        return 0
    console = Console(highlight=False, soft_wrap=False)
    if len(registry) == 0:
        console.print(literal(f"No named features in {path}"))
        console.print("Name features in the app: saetui [SAE], then press e on a feature (probe, feature or registry screen).")
        return 0
    # The path on a line of its own, never wrapped, so it can be copied.
    console.print(literal(f"{len(registry)} named features in {path}"), soft_wrap=True)
    table = Table(show_lines=False)
    table.add_column("feature", justify="right")
    table.add_column("name")
    table.add_column("confidence")
    table.add_column("description", overflow="fold")
    for fid, entry in registry.entries():
        table.add_row(
            Text(str(fid)),
            literal(str(entry.get("name", ""))),
            literal(str(entry.get("confidence", ""))),
            literal(str(entry.get("description", ""))),
        )
    console.print(table)
    return 0
