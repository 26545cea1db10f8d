"""`saetui steer [SAE] PROMPT --feature ID:MODE[:VALUE] ...`: clean and intervened continuations.

The prompt is continued twice per sample with mlx-lm's own generation step: once clean,
once with the interventions at the SAE's hook (see saetui/engine/intervene.py). Greedy
by default; with --temperature, sample s uses seed --seed + s in both branches.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.errors import UserError
from ..engine.intervene import DEFAULT_MAX_NEW_TOKENS, MODE_HELP, parse_interventions, steer
from ..ui.progress import cli_progress
from ..ui.safe_text import dumps_json_safe, visible
from .top_texts import feature_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the text to continue")
    parser.add_argument("--feature", action="append", default=[], metavar="ID:MODE[:VALUE]", help=f"an intervention ({MODE_HELP}); repeat for several")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help=f"tokens to generate per continuation (default {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the first sample (default 0)")
    parser.add_argument("--samples", type=int, default=1, help="continuations per branch (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON: {prompt, interventions, clean: [{text}], steered: [{text}]}")


def run(args: argparse.Namespace, engine) -> int:
    if not args.feature:
        raise UserError("No intervention given", f"Pass --feature {MODE_HELP}, e.g. --feature 12:scale:4")
    parse_interventions(args.feature)  # the spec's form, before the model loads
    if not args.prompt.strip():
        raise UserError("The prompt is empty", "Pass a prompt to continue, e.g. saetui steer \"We ate\" --feature 12:scale:4")
    session = engine.call_job("loading", engine.opening)
    interventions = parse_interventions(args.feature, session.d_sae)
    with cli_progress() as progress:
        result = engine.call_job(
            "generating", steer, session, args.prompt, interventions, args.max_new_tokens, args.temperature, args.seed, args.samples,
            on_progress=progress,
        )
    if args.json:
        sys.stdout.write(dumps_json_safe(result.to_json(), indent=2) + "\n")
        return 0
    names = feature_names(engine)
    print(f"Prompt: {visible(args.prompt)}")
    for iv in interventions:
        name = names.get(iv.feature_id)
        print(f"  feature {iv.feature_id}{' (' + visible(name) + ')' if name else ''} {iv.describe()}")
    for s, (clean, steered) in enumerate(zip(result.clean, result.steered)):
        head = f"sample {s + 1}, seed {result.seeds[s]}" if result.seeds[s] is not None else "greedy"
        print(f"\n[{head}]")
        print(f"clean:   {visible(clean)}")
        print(f"steered: {visible(steered)}")
    return 0
