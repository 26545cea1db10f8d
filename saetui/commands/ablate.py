"""`saetui ablate [SAE] TEXT --feature ID[:MODE[:VALUE]] ...`: per-token effects on a text.

For every token of the text (tokenised like the corpus, BOS first, cut to one context):
the log-probability the model gives it clean and with the interventions, and the KL
between the two next-token distributions that predicted it. A bare feature id ablates.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.errors import UserError
from ..engine.intervene import MODE_HELP, parse_interventions, text_effects
from ..ui.safe_text import dumps_json_safe, visible


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to measure the interventions on")
    parser.add_argument("--feature", action="append", default=[], metavar="ID[:MODE[:VALUE]]", help=f"an intervention (ID alone ablates; {MODE_HELP}); repeat for several")
    parser.add_argument("--json", action="store_true", help="print JSON: {text, tokens: [{token, clean_logprob, intervened_logprob, kl}], total_loss_change}")


def run(args: argparse.Namespace, engine) -> int:
    if not args.feature:
        raise UserError("No intervention given", "Pass --feature ID (ablates it) or --feature ID:MODE[:VALUE]")
    parse_interventions(args.feature, default_mode="ablate")
    if not args.text.strip():
        raise UserError("The text is empty", "Pass a text, e.g. saetui ablate \"We ate bread in Paris\" --feature 12")
    session = engine.call_job("loading", engine.opening)
    interventions = parse_interventions(args.feature, session.d_sae, default_mode="ablate")
    effects = engine.call(text_effects, session, args.text, interventions)
    if args.json:
        sys.stdout.write(dumps_json_safe(effects.to_json(), indent=2) + "\n")
        if effects.truncated:
            print("saetui: note: the text was cut to the context length", file=sys.stderr)
        return 0
    print("Interventions: " + ", ".join(f"feature {iv.feature_id} {iv.describe()}" for iv in interventions))
    print(f"{'token':<20} {'clean lp':>9} {'interv. lp':>10} {'Δ loss':>8} {'KL':>8}")
    for tok, c, i, k in zip(effects.tokens, effects.clean_logprob, effects.intervened_logprob, effects.kl):
        print(f"{visible(repr(tok))[:20]:<20} {c:>9.4f} {i:>10.4f} {c - i:>+8.4f} {k:>8.4f}")
    print(f"Total loss change: {effects.total_loss_change:+.4f} nats over {effects.n_tokens} tokens (mean {effects.mean_loss_change:+.5f})")
    dependent = effects.most_dependent(5)
    if dependent:
        print("Most dependent tokens: " + ", ".join(f"{visible(repr(effects.tokens[j]))} ({effects.loss_change[j]:+.3f})" for j in dependent))
    if effects.truncated:
        print("Note: the text was cut to the context length.")
    return 0
