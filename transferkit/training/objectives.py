"""Training objectives plugged into the one per-worker loop (:mod:`transferkit.training.loop`).

An objective turns ``(model, images, labels)`` into a scalar loss and the model's logits. Fine-
tuning uses cross-entropy; distillation and multi-task objectives implement the same protocol
(and may hold extra fixed modules such as a teacher, set up per worker in :meth:`setup`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Objective", "CrossEntropyObjective"]


class Objective(Protocol):
    """Protocol for a per-worker training objective."""

    def setup(self, device: torch.device) -> None:
        """Called once per worker before training (move fixed modules to ``device``)."""

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss float32 scalar, logits [N, classes])`` for ``images`` float32
        ``[N, C, H, W]`` and ``labels`` int64 ``[N]``."""


class CrossEntropyObjective:
    """Cross-entropy with optional label smoothing (Szegedy et al. 2016, "Rethinking the
    Inception Architecture")."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def setup(self, device: torch.device) -> None:  # noqa: D102 - nothing to move
        return None

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return loss, logits
