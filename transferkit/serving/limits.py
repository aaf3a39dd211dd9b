"""The serving limits, in one object: what a request may cost and how models run.

:class:`ServingLimits` travels from the command line (through
:class:`~transferkit.config.ServeConfig`) to the app, the runtime, the uvicorn server and each
Ray Serve replica; each limit is named, checked and documented here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transferkit.config import ServeConfig

__all__ = ["ServingLimits", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_IMAGE_PIXELS"]

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ServingLimits:
    """Limits and run settings of a server, checked when built.

    Attributes:
        top_k: predictions per image (count) on ``/v1/predict`` when the request gives no
            ``top_k``; capped at the model's class count.
        max_body_bytes: largest request body, in bytes; larger ones get 413.
        max_image_pixels: largest image, in pixels (width x height, read from the header before
            decoding); larger ones get 422.
        intra_op_threads: ONNX Runtime intra-op threads per model; 0 = automatic
            (each model's share, ``CPUs // models``, 1 to 4), never more than the CPUs this process
            may use.
        max_batch_size: rows (images) per ONNX Runtime run with dynamic batching; 1 turns
            batching off.
        max_queue_delay_ms: longest wait, in milliseconds, for a batch to fill while other
            requests are on their way (a lone request on an idle server never waits).
        max_queue_size: admitted, unanswered requests per model (count) beyond which the answer
            is 503 with ``Retry-After``.
        max_request_rows: most rows (images) one OIP v2 JSON request may carry.
        body_timeout_s: longest time, in seconds, a request body may take to arrive; slower ones
            get 408. Bodies are read before a request takes one of the ``max_queue_size``
            slots, so slow clients never hold a slot.

    Raises:
        ValueError: a count or size below 1, or ``max_queue_delay_ms`` below 0 (the message names
            the field). ``intra_op_threads`` is checked where threads are resolved
            (:func:`transferkit.serving.providers.resolve_threads`).
    """

    top_k: int = 5
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    intra_op_threads: int = 0
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 256
    max_request_rows: int = 1024
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for field in (
            "top_k",
            "max_body_bytes",
            "max_image_pixels",
            "max_batch_size",
            "max_queue_size",
            "max_request_rows",
        ):
            value = getattr(self, field)
            if value < 1:
                raise ValueError(f"{field} must be >= 1; got {value}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be > 0; got {self.body_timeout_s}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0; got {self.max_queue_delay_ms}")

    @property
    def batching(self) -> bool:
        """Whether dynamic batching is on (``max_batch_size > 1``)."""
        return self.max_batch_size > 1

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> ServingLimits:
        """The limits of a validated :class:`~transferkit.config.ServeConfig`.

        Args:
            cfg: the serve configuration (its ``max_body_mb`` is in MiB).

        Returns:
            The same limits, the body size in bytes.
        """
        return cls(
            top_k=cfg.top_k,
            max_body_bytes=int(cfg.max_body_mb * _MIB),
            max_image_pixels=cfg.max_image_pixels,
            intra_op_threads=cfg.intra_op_threads,
            max_batch_size=cfg.max_batch_size,
            max_queue_delay_ms=cfg.max_queue_delay_ms,
            max_queue_size=cfg.max_queue_size,
            body_timeout_s=cfg.body_timeout_s,
        )
