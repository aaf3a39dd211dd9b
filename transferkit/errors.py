"""The root of transferkit's own exceptions (torch-free, so any entry point can catch it).

Errors meant for the user (bad input, a missing file, a failed check) derive from
:class:`TransferkitError` as well as from the builtin type that describes them, so the CLI can
turn them into a one-paragraph message without importing the heavy module that raised them.
All of them pickle (they cross Ray process boundaries).
"""


class TransferkitError(Exception):
    """Base class of transferkit's user-facing errors."""


class UsageError(TransferkitError, ValueError):
    """A request that cannot be carried out as given (an argument, a file of the wrong kind, a
    name that does not exist); the message names what to change. Any other ``ValueError`` is a
    bug and keeps its traceback."""
