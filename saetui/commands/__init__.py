"""The command line's subcommands (`saetui eval`, `top-features`, `top-texts`, `registry`).

Each module has `add_arguments(parser)` and `run(args, engine) -> int`.
"""
