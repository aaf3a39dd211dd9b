"""ServingLimits: each limit checked where it is built, and the config's units converted once."""

from __future__ import annotations

import dataclasses

import pytest

from transferkit.config import ServeConfig
from transferkit.serving.limits import ServingLimits

COUNTS = [
    "top_k",
    "max_body_bytes",
    "max_image_pixels",
    "max_batch_size",
    "max_queue_size",
    "max_request_rows",
]


@pytest.mark.parametrize("field", COUNTS)
def test_a_count_below_1_names_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be >= 1; got 0"):
        ServingLimits(**{field: 0})
    assert getattr(ServingLimits(**{field: 1}), field) == 1


def test_the_queue_delay_may_be_0_but_not_negative() -> None:
    assert ServingLimits(max_queue_delay_ms=0.0).max_queue_delay_ms == 0.0
    with pytest.raises(ValueError, match="max_queue_delay_ms must be >= 0"):
        ServingLimits(max_queue_delay_ms=-0.5)


def test_from_config_carries_every_limit_and_converts_mib_to_bytes() -> None:
    cfg = ServeConfig(
        models=["a.onnx"],
        top_k=3,
        intra_op_threads=2,
        max_body_mb=0.5,
        max_image_pixels=1234,
        max_batch_size=16,
        max_queue_delay_ms=7.5,
        max_queue_size=9,
    )
    assert ServingLimits.from_config(cfg) == ServingLimits(
        top_k=3,
        intra_op_threads=2,
        max_body_bytes=512 * 1024,
        max_image_pixels=1234,
        max_batch_size=16,
        max_queue_delay_ms=7.5,
        max_queue_size=9,
    )
    default = ServingLimits.from_config(ServeConfig(models=["a.onnx"]))
    assert default == ServingLimits()  # the CLI's defaults and the library's agree
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.top_k = 1  # type: ignore[misc]
