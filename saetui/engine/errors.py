"""Errors a user can fix.

Every problem caused by the user's input (a path, a file, a flag, a model that is not
there) is raised as a `UserError`: one line that names the problem and one that names
the fix. The command line prints it and exits with status 2; the app shows it as a
notification. Anything else is a bug and keeps its traceback.

The line is safe by construction: `one_line()` passes the text through the one escaping
rule (`saetui.ui.safe_text.visible`), since problems quote names read from files (an
SAE's metadata, a dataset's columns, a model's config) that may hold terminal escapes.
A command quoted in the fix between backticks is shown only when it is made of plain
characters (letters, digits, `_-./:@=+,%` and spaces) and passes no options: one that
quotes text from a file could run something else when pasted, so it is replaced by a
note saying so.
"""

from __future__ import annotations

import re

# A pasteable command: nothing a shell would interpret.
_PLAIN_COMMAND = re.compile(r"[\w@%+=:,./ -]+", re.ASCII)
_HIDDEN_COMMAND = "the command for it (not shown: it would quote unusual text from a file)"


def _is_plain_command(command: str) -> bool:
    """Plain characters only, and no option after the program (a quoted name must not
    smuggle in `--local-dir` or the like)."""
    words = command.split()
    return bool(_PLAIN_COMMAND.fullmatch(command)) and bool(words) and not any(w.startswith("-") for w in words)


def _safe_fix(fix: str) -> str:
    """`fix` with its backticked commands, unless one of them is not plain: then everything
    from the first backtick to the last is replaced by a note (a name holding backticks
    cannot re-pair them into a harmless-looking command)."""
    parts = fix.split("`")
    if len(parts) == 1:
        return fix
    commands = parts[1::2]
    plain = len(parts) % 2 == 1 and all(_is_plain_command(c) for c in commands)
    if plain:
        return fix
    return parts[0] + _HIDDEN_COMMAND + parts[-1]


class UserError(Exception):
    """A problem the user can fix, with the fix."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = str(problem).rstrip(". ")
        self.fix = str(fix).rstrip(". ")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """Problem and fix as one line with nothing raw in it (see the module docstring)."""
        from ..ui.safe_text import visible

        problem = visible(self.problem)
        if self.fix:
            return f"{problem}. {visible(_safe_fix(self.fix))}."
        return f"{problem}."


class Cancelled(Exception):
    """Long work stopped because the user asked it to."""
