"""What a person reads on the console: transferkit's loggers (``transferkit.*``) through one
handler, one line per event (``[transferkit] message``; warnings and errors say so).

Library code only calls ``logging.getLogger(__name__)``; entry points (the CLI, the demo, each Ray
Train worker) call :func:`setup_console` once. Ray Train's own per-rank INFO lines ("Reporting
training result ...", "Checkpoint successfully created ...") are turned down to warnings by
:func:`quiet_ray_train` inside the workers, so an epoch is one line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["setup_console", "detach_console", "quiet_ray_train"]

_ROOT = "transferkit"


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"[transferkit] {level}{msg}"


def setup_console(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send ``transferkit.*`` records at ``level`` and above to ``stream`` (default stderr, so
    that stdout carries only a command's data: CSV, JSON).

    Idempotent: a second call changes the level, not the number of handlers. Records still
    propagate to the root logger (pytest's ``caplog`` and an application's own handlers see them).
    """
    logger = logging.getLogger(_ROOT)
    logger.setLevel(level)
    for h in logger.handlers:
        if getattr(h, "_transferkit_console", False):
            return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Format("%(message)s"))
    handler._transferkit_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def detach_console() -> None:
    """Remove :func:`setup_console`'s handler (``transferkit serve`` logs through the root, as
    uvicorn does)."""
    logger = logging.getLogger(_ROOT)
    for h in list(logger.handlers):
        if getattr(h, "_transferkit_console", False):
            logger.removeHandler(h)


def quiet_ray_train() -> None:
    """Inside a Ray Train worker: Ray Train's INFO lines (one per rank per report) become
    warnings-only, so the worker's own epoch line is what a user reads.

    Ray Train 2.x logs "Reporting training result N: TrainingReport(...) from rank R" through a
    logger named after its module's file path (``logging.getLogger(__file__)`` in
    ``ray/train/v2/_internal/execution/context.py``), outside ``ray.train``; it is turned down
    by that name.
    """
    names = ["ray.train", "ray.tune"]
    try:
        from ray.train.v2._internal.execution import context

        names.append(context.logger.name)
    except (ImportError, AttributeError):  # another Ray version: nothing more to quiet
        pass
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
