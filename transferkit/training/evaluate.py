"""Classification metrics as sums, so that shards evaluated on several workers reduce exactly."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["eval_sums", "sums_to_metrics", "predict_logits"]


@torch.inference_mode()
def eval_sums(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
              device: torch.device, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Evaluate ``model`` (already in eval mode) over ``batches``.

    Returns:
        float64 tensor ``[4]``: summed cross-entropy loss, top-1 correct, top-5 correct, count.
    """
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += (topk[:, 0] == labels).sum()
        sums[2] += (topk == labels[:, None]).any(dim=1).sum()
        sums[3] += labels.numel()
    return sums


def sums_to_metrics(sums: torch.Tensor, num_classes: int, prefix: str) -> dict[str, float]:
    """``[loss_sum, correct1, correct5, n]`` -> ``{prefix_loss, prefix_acc, prefix_top5?}``;
    top-5 only where there are >= 5 classes."""
    loss_sum, c1, c5, n = (float(x) for x in sums.tolist())
    n = max(n, 1.0)
    out = {f"{prefix}_loss": loss_sum / n, f"{prefix}_acc": c1 / n}
    if num_classes >= 5:
        out[f"{prefix}_top5"] = c5 / n
    return out


@torch.inference_mode()
def predict_logits(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits float32 [N, K], labels int64 [N])`` over all batches (model in eval)."""
    outs, labs = [], []
    for images, labels in batches:
        outs.append(model(images.to(device)).float().cpu())
        labs.append(labels)
    return torch.cat(outs), torch.cat(labs)
