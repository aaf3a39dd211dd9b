"""The ``transferkit`` command line: parse, build a config, call one library function.

One module per group of commands (:mod:`.train`, :mod:`.search`, :mod:`.export`, :mod:`.evaluation`,
:mod:`.serving`, :mod:`.info`); :mod:`.common` holds the Typer app and the error handling.
Heavy libraries (torch, Ray, ONNX Runtime) are imported inside each command, after the config is
validated, so a mistake is reported in about a second.
"""

from __future__ import annotations

from transferkit.cli.common import app

# Imported for their commands, in the order --help lists them.
# isort: off
from transferkit.cli import train, search, export, evaluation, serving, info  # noqa: F401
# isort: on


def main() -> None:
    """Entry point of the ``transferkit`` script: transferkit's log lines on the console
    (:func:`transferkit.logs.setup_console`), then the command."""
    from transferkit.logs import setup_console

    setup_console()
    app()


__all__ = ["app", "main"]
