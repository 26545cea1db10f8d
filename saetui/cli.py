"""The command line: `saetui [SAE]` opens the explorer; subcommands print and exit.

Every user-fixable problem is a `UserError`: printed as one line on stderr, exit
status 2, no traceback unless --debug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Sequence

SUBCOMMANDS = {
    "eval": ("saetui.commands.eval", "quality report in the terminal, JSON written"),
    "top-features": ("saetui.commands.top_features", "the features that fire most on a text"),
    "top-texts": ("saetui.commands.top_texts", "the contexts where a feature fires most"),
    "registry": ("saetui.commands.registry", "list the named features"),
    "clusters": ("saetui.commands.clusters", "the SAE's families of features (clusters of all live features)"),
    "compare": ("saetui.commands.compare", "compare two SAEs feature by feature"),
}

EXIT_USER_ERROR = 2


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sae", nargs="?", default=None, help="an SAE directory saved by mlxterp (NAME.mlx); default: the bundled demo")
    parser.add_argument("--model", help="mlx-lm model directory or cached Hugging Face id (default: the SAE's metadata.model_name)")
    parser.add_argument("--dataset", help="local .txt/.jsonl/.json/.csv/.parquet file or cached Hugging Face name[:config[:split]]")
    parser.add_argument("--text-column", help="the dataset's text column (default: found automatically)")
    parser.add_argument("--layer", type=int, help="layer of the hook (default: the SAE's metadata)")
    parser.add_argument("--component", help="mlp, attn/self_attn or resid/residual (default: the SAE's metadata)")
    parser.add_argument("--registry", help="feature registry JSON (default: beside the SAE)")
    parser.add_argument("--context-len", type=int, help="tokens per context, BOS included (default: 128, or the model's limit)")
    parser.add_argument("--batch-semantics", action="store_true", help="BatchTopK SAEs: use mlxterp's batch-dependent encoding instead of the calibrated per-token threshold")
    parser.add_argument("--download", action="store_true", help="allow downloading the model or dataset from Hugging Face")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def engine_settings(args: argparse.Namespace):
    from .engine.engine import THRESHOLD_BATCH, THRESHOLD_CALIBRATED, EngineSettings

    return EngineSettings(
        sae=args.sae,
        model=args.model,
        dataset=args.dataset,
        layer=args.layer,
        component=args.component,
        registry=args.registry,
        text_column=args.text_column,
        max_tokens=getattr(args, "max_tokens", None),
        context_len=args.context_len,
        download=args.download,
        threshold_mode=THRESHOLD_BATCH if args.batch_semantics else THRESHOLD_CALIBRATED,
        debug=args.debug,
    )


def _main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saetui",
        description="Explore a sparse autoencoder on an MLX language model. Subcommands: "
        + "; ".join(f"{name}: {help_}" for name, (_, help_) in SUBCOMMANDS.items())
        + " (saetui SUBCOMMAND --help).",
    )
    add_common_arguments(parser)
    return parser


def _sub_parser(name: str):
    module_name, help_ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"saetui {name}", description=help_)
    add_common_arguments(parser)
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        print("saetui: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        from .engine.errors import UserError

        if isinstance(exc, UserError) and not debug:
            print(f"saetui: error: {exc.one_line()}", file=sys.stderr)
            return EXIT_USER_ERROR
        if debug:
            traceback.print_exc()
        else:
            print(f"saetui: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR if isinstance(exc, UserError) else 1


def _dispatch(argv: list[str]) -> int:
    from .engine.blas import enable_fast_blas

    blas = enable_fast_blas()
    if argv and argv[0] in SUBCOMMANDS:
        parser, module = _sub_parser(argv[0])
        # Intermixed: `saetui top-texts SAE --dataset D 5` works as well as `SAE 5 --dataset D`.
        args = parser.parse_intermixed_args(argv[1:])
        if blas.notice:
            print(f"saetui: note: {blas.notice}", file=sys.stderr)
        from .engine.engine import Engine

        engine = Engine(engine_settings(args))
        try:
            return int(module.run(args, engine) or 0)
        finally:
            engine.close()
    args = _main_parser().parse_intermixed_args(argv)
    return _run_app(args, blas)


def _run_app(args: argparse.Namespace, blas) -> int:
    from .engine.engine import Engine

    engine = Engine(engine_settings(args))
    # Cheap checks before the first frame, so a bad path fails on the command line.
    engine.worker.call(engine.open_sae)
    from .engine.corpus import check_dataset

    check_dataset(engine.dataset_name)
    if not args.download:
        from .engine.model import resolve_model_path

        resolve_model_path(engine.model_name)  # a model that is not there fails here, not after the first frame
    from .app import SaetuiApp

    app = SaetuiApp(engine)
    if blas.notice:
        app.startup_notice = blas.notice
    app.run()
    if app.fatal_error:
        print(f"saetui: error: {app.fatal_error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
