"""The package's error base: a `UserError` is bad input, anything else is a bug.

Every command exits through `cli_common.run_main`, which prints a UserError as one line
(`error: <file or flag>: <problem>`) with exit code 2 and lets every other exception show
its traceback, so a coding bug is never mistaken for bad input.
"""

from __future__ import annotations


class UserError(Exception):
    """Input the program cannot use; the message names the file or flag and the problem."""


class UsageError(UserError, ValueError):
    """A flag or argument value that cannot be used."""

