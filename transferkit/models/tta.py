"""Test-time augmentation compiled into the exported graph: the model's logits averaged over
symmetric views of the input, so a served file needs nothing beyond ONNX Runtime.

``d4`` is the dihedral group of the square (4 rotations x optional horizontal flip, 8 views), the
symmetries that keep an image's label when a part is seen from above (a solar cell, a wafer, a
tile) and that ``data.augment`` (hflip, vflip, rot90) trains on; ``hflip`` is 2 views. Averaging
predictions over label-preserving transforms is the classic test-time augmentation (Krizhevsky et
al. 2012, ten-crop; Simonyan & Zisserman 2015, flips). It costs one forward pass per view.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TTA_VIEWS", "TTAModel", "views"]

#: Number of forward passes each mode costs.
TTA_VIEWS = {"none": 1, "hflip": 2, "d4": 8}


def views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch ``x`` (float ``[N, C, H, W]``; ``d4`` needs ``H == W``).

    Raises:
        ValueError: an unknown mode, or ``d4`` on a non-square input.
    """
    if mode not in TTA_VIEWS:
        raise ValueError(f"tta {mode!r}: allowed values are {', '.join(TTA_VIEWS)}")
    if mode == "none":
        return [x]
    if mode == "hflip":
        return [x, torch.flip(x, dims=(3,))]
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"tta d4 needs square inputs; got {tuple(x.shape[-2:])}")
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        out += [r, torch.flip(r, dims=(3,))]
    return out


class TTAModel(nn.Module):
    """``model`` with its logits averaged over :func:`views` of the input.

    Input float32 ``[N, C, S, S]`` (preprocessed as the model expects); output float32 ``[N, K]``
    logits, the mean of the ``K``-class logits of every view (so the served softmax is of the
    averaged logits). No parameters of its own.
    """

    def __init__(self, model: nn.Module, mode: str):
        super().__init__()
        if mode not in TTA_VIEWS or mode == "none":
            raise ValueError(f"tta {mode!r}: allowed values are hflip, d4")
        self.model, self.mode = model, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vs = views(x, self.mode)
        n = x.shape[0]
        logits = self.model(torch.cat(vs, dim=0))  # one batched pass over every view
        return logits.reshape(len(vs), n, -1).mean(dim=0)
