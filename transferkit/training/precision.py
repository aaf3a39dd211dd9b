"""Which dtype a training run computes in: ``scaling.precision``.

Mixed precision in PyTorch's sense (``torch.autocast``, https://pytorch.org/docs/stable/amp.html):
weights, optimizer state and the losses stay float32; convolutions and matrix products run in
bfloat16. bfloat16 keeps float32's exponent range, so no loss scaling is needed (Kalamkar et al.,
"A Study of BFLOAT16 for Deep Learning Training", 2019).
"""

from __future__ import annotations

import logging

import torch

__all__ = ["autocast_dtype", "cpu_has_native_bf16"]

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles, as oneDNN
    uses them); without either, oneDNN emulates bfloat16 and it is no faster than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The ``torch.autocast`` dtype for ``precision`` on ``device``, ``None`` for float32.

    Args:
        precision: ``auto`` (bfloat16 on a GPU, float32 on a CPU), ``bf16`` (bfloat16 on a GPU
            and on a CPU with native support; float32, with a warning, on a CPU without it, where
            oneDNN would emulate bfloat16 more slowly than float32 runs) or ``fp32``.
        device: where the run computes.

    Raises:
        ValueError: ``precision`` is none of the three.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"scaling.precision must be auto, bf16 or fp32; got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "scaling.precision=bf16: this CPU has neither AVX512-BF16 nor AMX, where bfloat16 "
            "would be emulated and slower; training in float32"
        )
        return None
    return torch.bfloat16
