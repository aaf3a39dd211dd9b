"""A training checkpoint's one file, written so that a crash mid-write never loads wrong.

``state.pt`` (``torch.save`` of the weights, optimizer, scheduler, epoch and history) is written
to a temporary name and moved into place with ``os.replace`` (atomic on POSIX), and its SHA-256
is written beside it last. :func:`load_state` refuses a file whose digest does not match (a
torn copy, a truncated upload) instead of loading damaged weights. Ray Train itself registers a
checkpoint only after ``ray.train.report`` has persisted the whole folder, so a worker killed
while writing leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from transferkit.errors import TransferkitError

__all__ = ["STATE_FILE", "DIGEST_FILE", "CheckpointError", "save_state", "load_state"]

STATE_FILE = "state.pt"
DIGEST_FILE = "state.pt.sha256"


class CheckpointError(TransferkitError, RuntimeError):
    """A checkpoint's state file is missing or does not match its recorded SHA-256."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_state(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``folder/state.pt`` (atomically) and its digest.

    Args:
        folder: the checkpoint folder (created if missing).
        state: tensors and plain Python values (``torch.load(weights_only=True)`` reads it).

    Returns:
        The path of ``state.pt``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final, tmp = folder / STATE_FILE, folder / (STATE_FILE + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, final)
    (folder / DIGEST_FILE).write_text(_sha256(final) + "\n")
    return final


def load_state(folder: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint folder's ``state.pt`` after checking its SHA-256.

    Args:
        folder: the checkpoint folder.
        device: where tensors are mapped (``map_location``).

    Returns:
        The saved dict.

    Raises:
        CheckpointError: no state file, or its digest differs from the recorded one. A folder
            written before digests existed (no ``state.pt.sha256``) is read as it is.
    """
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {STATE_FILE}")
    digest = folder / DIGEST_FILE
    if digest.is_file() and digest.read_text().strip() != _sha256(path):
        raise CheckpointError(
            f"checkpoint {folder}: {STATE_FILE} does not match its recorded SHA-256 (a torn or "
            "truncated copy); it is not loaded"
        )
    return torch.load(path, map_location=device, weights_only=True)
