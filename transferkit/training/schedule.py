"""Learning-rate schedule: linear warmup then cosine decay (Goyal et al. 2017 warmup; Loshchilov &
Hutter 2017 cosine), as a per-step multiplier for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """Return ``step -> multiplier``: ``(step+1)/warmup`` during warmup, then cosine from 1 down to
    ``min_ratio`` at ``total_steps``."""
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn
