"""The serving errors: what the runtime and the HTTP layer raise, free of any HTTP library.

After KServe's ``errors.py``. Each type has one HTTP status in the HTTP layer's table
(:data:`transferkit.serving.http_errors.ERROR_STATUS`): bad input is 400/408/413/415/422 (408: a body too slow to arrive), an unknown
model or version 404, a missing or wrong API key 401, a full queue, a model that is not ready or a
server that is shutting down 503.
"""

from __future__ import annotations

from transferkit.errors import TransferkitError

__all__ = [
    "ServingError",
    "InvalidInputError",
    "InvalidTensorError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "UnsupportedMediaTypeError",
    "UnknownModelError",
    "UnauthorizedError",
    "ModelNotReadyError",
    "QueueFullError",
    "ShuttingDownError",
    "PortInUseError",
]


class ServingError(TransferkitError):
    """Base of the serving errors; each has its HTTP status in the HTTP layer's one table."""


class InvalidInputError(ServingError, ValueError):
    """The request is malformed (no file part, empty body, bad header, JSON that does not parse)."""


class InvalidTensorError(InvalidInputError):
    """An OIP v2 tensor does not fit the model: wrong name, datatype, rank, shape or data."""


class RequestTimeoutError(ServingError):
    """The request body did not arrive within the body timeout (HTTP 408)."""


class PayloadTooLargeError(ServingError):
    """The request body exceeds the server's limit."""


class UnsupportedMediaTypeError(ServingError):
    """The content type is not one the route accepts."""


class UnknownModelError(ServingError, LookupError):
    """No model, or no such version of a model, is served under that name."""


class UnauthorizedError(ServingError):
    """An API key is configured and the request did not present it."""


class ModelNotReadyError(ServingError):
    """The model is still loading, or failed to load."""


class QueueFullError(ServingError):
    """The model's request queue is full; the client should retry later (``Retry-After``)."""


class ShuttingDownError(ServingError):
    """The server is draining for shutdown and takes no new requests."""


class PortInUseError(ServingError):
    """The server's TCP port is taken by another process (a user mistake: pick another port)."""
