"""Errors of bad input to CCST (no torch import): each names the file or role and the problem in
one line, and derives from `annrepro.errors.AnnreproError` (and ValueError, which callers caught
before), so that a CLI reports it as `ccst: error: <file>: <problem>` with exit code 2.
"""

from __future__ import annotations

from annrepro.errors import AnnreproError, InputError

__all__ = ["DataError", "ModelFileError", "first_line"]


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (torch and zip errors span several)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


class ModelFileError(AnnreproError, ValueError):
    """A CCST model or checkpoint file is missing, truncated, corrupt, of another kind, or cannot
    be written."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable despite the 2-argument init
        return (type(self), (self.path, self.problem))


class DataError(InputError):
    """Vectors handed to CCST are unusable: `what` names them ("training vectors", "input
    vectors"), `problem` says why (a row with NaN / inf, a wrong dimension, too few rows...).
    A CLI replaces `what` with the file the vectors came from."""

    def __init__(self, what: str, problem: str):
        self.what = what
        self.problem = problem
        super().__init__(f"{what}: {problem}")

    def __reduce__(self):
        return (type(self), (self.what, self.problem))
