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

from transferkit.config import DistillConfig, FinetuneConfig

__all__ = ["Objective", "CrossEntropyObjective", "class_weights", "make_objective"]


def class_weights(
    scheme: str | list[float], labels: list[int], num_classes: int
) -> torch.Tensor | None:
    """Per-class loss weights for ``optim.class_weight``.

    Args:
        scheme: ``none``; ``balanced``: ``n / (K * n_c)`` over the labelled samples (scikit-learn's
            ``compute_class_weight("balanced")``, King & Zeng 2001); ``sqrt_balanced``: its square
            root; or an explicit list of ``num_classes`` weights.
        labels: the training split's class indices (``-1`` = unlabelled, ignored).
        num_classes: ``K``.

    Returns:
        float32 ``[K]``, or ``None`` for ``none``.

    Raises:
        ValueError: an explicit list of the wrong length; a class without training images under
            ``balanced``/``sqrt_balanced``.
    """
    if isinstance(scheme, list):
        if len(scheme) != num_classes:
            raise ValueError(
                f"optim.class_weight: {len(scheme)} weights for {num_classes} classes; "
                "give one per class, in class order"
            )
        return torch.tensor(scheme, dtype=torch.float32)
    if scheme == "none":
        return None
    known = torch.as_tensor([y for y in labels if y >= 0], dtype=torch.long)
    counts = torch.bincount(known, minlength=num_classes).double()
    if (counts == 0).any():
        raise ValueError(
            f"optim.class_weight={scheme}: class(es) {(counts == 0).nonzero().flatten().tolist()} "
            "have no training images"
        )
    w = counts.sum() / (num_classes * counts)
    return (w.sqrt() if scheme == "sqrt_balanced" else w).float()


class Objective(Protocol):
    """Protocol for a per-worker training objective."""

    def setup(self, device: torch.device) -> None:
        """Called once per worker before training (move fixed modules to ``device``)."""

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss float32 scalar, logits [N, classes])`` for ``images`` float32
        ``[N, C, H, W]`` and ``labels`` int64 ``[N]``."""


class CrossEntropyObjective:
    """Cross-entropy with optional label smoothing (Szegedy et al. 2016, "Rethinking the
    Inception Architecture") and per-class weights (``class_weight`` float32 ``[K]``)."""

    def __init__(self, label_smoothing: float = 0.0, class_weight: torch.Tensor | None = None):
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight

    def setup(self, device: torch.device) -> None:
        """Move the class weights to ``device``."""
        if self.class_weight is not None:
            self.class_weight = self.class_weight.to(device)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        loss = F.cross_entropy(
            logits.float(), labels, weight=self.class_weight, label_smoothing=self.label_smoothing
        )
        return loss, logits


def make_objective(cfg: FinetuneConfig, class_weight: torch.Tensor | None) -> Objective:
    """What the run optimises, chosen by the config's type: knowledge distillation for a
    :class:`~transferkit.config.DistillConfig`, otherwise cross-entropy with the config's label
    smoothing; both weighted by ``class_weight``."""
    if isinstance(cfg, DistillConfig):
        from transferkit.training.kd import make_kd_objective

        objective = make_kd_objective(cfg)
        objective.class_weight = class_weight
        return objective
    return CrossEntropyObjective(cfg.optim.label_smoothing, class_weight)
