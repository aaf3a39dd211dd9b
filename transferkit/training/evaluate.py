"""Classification metrics as sums, so that shards evaluated on several workers reduce exactly."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["eval_sums", "sums_to_metrics", "confusion_from_sums", "predict_logits"]


@torch.inference_mode()
def sum_across_workers(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the DDP workers in place (all-reduce); unchanged with one worker or no
    process group. Returns ``t``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.inference_mode()
def eval_sums(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    num_classes: int,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Evaluate ``model`` (already in eval mode) over ``batches``, with autograd off.

    Returns:
        float64 tensor ``[4 + K*K]``: summed cross-entropy loss, top-1 correct, top-5 correct,
        count, then the confusion matrix (row = true class, column = predicted) flattened, so that
        shards summed across workers give the exact totals.
    """
    sums = torch.zeros(4 + num_classes**2, dtype=torch.float64, device=device)
    for images, labels in batches:
        images = images.to(
            device,
            non_blocking=True,
            memory_format=(torch.channels_last if images.dim() == 4 else torch.preserve_format),
        )
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += (topk[:, 0] == labels).sum()
        sums[2] += (topk == labels[:, None]).any(dim=1).sum()
        sums[3] += labels.numel()
        sums[4:] += torch.bincount(
            labels * num_classes + topk[:, 0], minlength=num_classes**2
        ).double()
    return sums


def sums_to_metrics(sums: torch.Tensor, num_classes: int, prefix: str) -> dict[str, float]:
    """:func:`eval_sums` -> ``{prefix_loss, prefix_acc, prefix_balanced_acc, prefix_macro_f1,
    prefix_top5?}`` (top-5 only where there are >= 5 classes); see
    :func:`transferkit.metrics.classification_metrics`."""
    from transferkit.metrics import classification_metrics

    values = sums.tolist()
    loss_sum, c1, c5, n = values[:4]
    n = max(n, 1.0)
    out = {f"{prefix}_loss": loss_sum / n, f"{prefix}_acc": c1 / n}
    if len(values) == 4 + num_classes**2:
        cm = classification_metrics(
            np.asarray(values[4:]).reshape(num_classes, num_classes),
            [str(i) for i in range(num_classes)],
        )
        out[f"{prefix}_balanced_acc"] = cm["balanced_accuracy"]
        out[f"{prefix}_macro_f1"] = cm["macro_f1"]
    if num_classes >= 5:
        out[f"{prefix}_top5"] = c5 / n
    return out


def confusion_from_sums(sums: torch.Tensor, num_classes: int) -> np.ndarray:
    """The ``[K, K]`` int64 confusion matrix held in :func:`eval_sums`' result."""
    return (
        np.asarray(sums.tolist()[4:], dtype=np.float64)
        .reshape(num_classes, num_classes)
        .astype(np.int64)
    )


@torch.inference_mode()
def predict_logits(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits float32 [N, K], labels int64 [N])`` over all batches (model in eval)."""
    outs, labs = [], []
    for images, labels in batches:
        outs.append(model(images.to(device)).float().cpu())
        labs.append(labels)
    return torch.cat(outs), torch.cat(labs)
