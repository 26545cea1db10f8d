"""Errors a user can fix.

Every problem caused by the user's input (a path, a file, a flag, a model that is not
there) is raised as a `UserError`: one line that names the problem and one that names
the fix. The command line prints it and exits with status 2; the app shows it as a
notification. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix, with the fix."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        if self.fix:
            return f"{self.problem}. {self.fix}."
        return f"{self.problem}."


class Cancelled(Exception):
    """Long work stopped because the user asked it to."""
