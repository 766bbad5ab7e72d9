"""One error hierarchy for bad input: every problem the user can fix (a file, an argument, an
environment variable, a registry entry) raises an `AnnreproError` whose message names the thing
and the problem in one line. `annrepro.cli.run_cli` turns it into `<prog>: error: <message>` and
exit code 2; anything else is a bug and keeps its traceback.

Each subclass also derives from the builtin its callers caught before (`ValueError` or
`RuntimeError`), so existing `except ValueError` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "AnnreproError",
    "VectorFileError",
    "DatasetError",
    "DatasetMissingError",
    "GroundTruthError",
    "InputError",
    "SettingError",
]


class AnnreproError(Exception):
    """Base of every error caused by bad input (a file, an argument, a setting)."""


class VectorFileError(AnnreproError, ValueError):
    """A vector file is missing, truncated, mis-typed or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable across worker processes despite the 2-argument init
        return (type(self), (self.path, self.problem))


class DatasetError(AnnreproError, RuntimeError):
    """A data set is unknown, missing, or does not match the registry."""


class DatasetMissingError(DatasetError):
    """A data set's files are not on this machine (absent, not corrupt: a file that is there
    but does not match the registry is a plain `DatasetError`)."""


class GroundTruthError(AnnreproError, ValueError):
    """Inputs to ground truth are inconsistent, or a ground truth is wrong."""


class InputError(AnnreproError, ValueError):
    """Arrays handed to the library do not fit together (shape, dtype, range, values)."""


class SettingError(AnnreproError, ValueError):
    """An environment variable or command-line option has an unusable value."""
