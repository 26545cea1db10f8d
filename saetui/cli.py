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
    "index": ("saetui.commands.index", "build the feature index headless (under mlx.launch: sharded across ranks)"),
    "registry": ("saetui.commands.registry", "list the named features"),
    "search": ("saetui.commands.search", "features by name, explanation or top tokens"),
    "explain": ("saetui.commands.explain", "explanations of every live feature and their scores (--explainer MODEL: by a local chat model)"),
    "steer": ("saetui.commands.steer", "continue a prompt clean and with features changed"),
    "ablate": ("saetui.commands.ablate", "per-token loss changes when features are changed"),
    "clusters": ("saetui.commands.clusters", "the SAE's families of features (clusters of all live features)"),
    "compare": ("saetui.commands.compare", "compare two SAEs feature by feature"),
}

EXIT_USER_ERROR = 2


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sae", nargs="?", default=None, help="an SAE: an mlxterp NAME.mlx, SAELens, Gemma Scope or sparsify folder, or repo/id:folder in the Hugging Face cache; default: the bundled demo")
    parser.add_argument("--model", help="mlx-lm model directory or cached Hugging Face id (default: the SAE's metadata.model_name)")
    parser.add_argument("--dataset", help="local .txt/.jsonl/.json/.csv/.parquet file or cached Hugging Face name[:config[:split]]")
    parser.add_argument("--text-column", help="the dataset's text column (default: found automatically)")
    parser.add_argument("--layer", type=int, help="layer of the hook (default: the SAE's metadata)")
    parser.add_argument("--component", help="mlp, attn/self_attn or resid/residual (default: the SAE's metadata)")
    parser.add_argument("--registry", help="feature registry JSON (default: beside the SAE)")
    parser.add_argument("--context-len", type=context_len_arg, help="tokens per context, BOS included (default: 128, or the model's limit)")
    parser.add_argument("--batch-semantics", action="store_true", help="BatchTopK SAEs: use mlxterp's batch-dependent encoding instead of the calibrated per-token threshold")
    parser.add_argument("--download", action="store_true", help="allow downloading the SAE, model or dataset from Hugging Face")
    parser.add_argument("--norm-scaling-factor", type=float, help="SAELens SAEs with normalize_activations expected_average_only_in: the release's norm scaling factor")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def context_len_arg(text: str) -> int:
    """--context-len: a whole number of at least 2 (BOS and one token); 0 is not "default"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is too short: a context holds BOS and at least one token, so pass 2 or more")
    return value


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
        norm_scaling_factor=args.norm_scaling_factor,
        debug=args.debug,
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block): problem and fix, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        from .ui.safe_text import visible

        print(f"{self.prog}: error: {visible(message)}. Run {self.prog} --help for the flags.", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def _quiet_libraries(debug: bool) -> None:
    """Library log lines (a `datasets` cache notice, transformers' tokenizer length warning,
    which saetui's own context cutting makes moot) would add lines to one-line errors."""
    if debug:
        return
    for var in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY"):
        os.environ.setdefault(var, "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # saetui shows its own progress
    import logging

    for name in ("datasets", "transformers", "huggingface_hub", "fsspec"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _main_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    parser = OneLineParser(prog=f"saetui {name}", description=help_)
    add_common_arguments(parser)
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _quiet_libraries(debug)
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
            print(internal_error_line(exc), file=sys.stderr)
        return EXIT_USER_ERROR if isinstance(exc, UserError) else 1


def internal_error_line(exc: BaseException) -> str:
    """A bug, as one escaped line (the exception's text can quote file contents)."""
    from .ui.safe_text import visible

    return f"saetui: internal error: {visible(type(exc).__name__)}: {visible(str(exc))} (run with --debug for the traceback)"


def _dispatch(argv: list[str]) -> int:
    from .blas import enable_fast_blas

    blas = enable_fast_blas()
    if argv and argv[0] in SUBCOMMANDS:
        parser, module = _sub_parser(argv[0])
        # Intermixed: `saetui top-texts SAE --dataset D 5` works as well as `SAE 5 --dataset D`.
        args = parser.parse_intermixed_args(argv[1:])
        if blas.notice:
            from .ui.safe_text import visible

            print(f"saetui: note: {visible(blas.notice)}", file=sys.stderr)
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
    engine.call(engine.read_sae)
    from .engine.corpus import check_dataset

    check_dataset(engine.dataset_name)
    if not args.download:
        from .engine.model import resolve_model_path

        assert engine.model_name is not None  # read_sae above refused an SAE naming no model
        model_dir = resolve_model_path(engine.model_name)  # a model that is not there fails here, not after the first frame
        from .commands.checks import check_context_len_against

        check_context_len_against(args.context_len, model_dir)
    from .app import SaetuiApp

    app = SaetuiApp(engine)
    if blas.notice:
        app.startup_notice = blas.notice
    quiet_crash_traceback(app, args.debug)
    app.run()
    return app_exit_status(app)


def quiet_crash_traceback(app, debug: bool) -> None:
    """Textual prints a crash's whole traceback after the screen closes; without --debug
    saetui prints one line instead (app_exit_status)."""
    if not debug:
        app._print_error_renderables = app._exit_renderables.clear


def app_exit_status(app) -> int:
    """The exit status after the app closed: 2 for a user error, 1 (one line) after a crash."""
    from .ui.safe_text import visible

    if app.fatal_error:
        print(f"saetui: error: {visible(app.fatal_error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    crash = getattr(app, "_exception", None)
    if crash is not None or app.return_code:
        if crash is not None:
            print(internal_error_line(crash), file=sys.stderr)
        return app.return_code or 1
    return 0
