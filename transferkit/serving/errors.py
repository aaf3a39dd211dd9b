"""The serving errors and the one table that maps every error to an HTTP status.

After KServe's ``errors.py``: bad input is 400/413/415/422, an unknown model or version 404, a
missing or wrong API key 401, a full queue, a model that is not ready or a server that is
shutting down 503. The Open Inference Protocol v2 REST spec (KServe,
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol, "HTTP/REST")
answers every failure with a JSON object ``{"error": "<message>"}``; so does this server.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from transferkit.errors import TransferkitError
from transferkit.imaging import ImageDecodeError, ImageTooLargeError

__all__ = [
    "ServingError",
    "InvalidInputError",
    "InvalidTensorError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "UnknownModelError",
    "UnauthorizedError",
    "ModelNotReadyError",
    "QueueFullError",
    "ShuttingDownError",
    "ERROR_STATUS",
    "status_for",
]


class ServingError(TransferkitError):
    """Base of the errors the HTTP layer raises; the status comes from :data:`ERROR_STATUS`."""


class InvalidInputError(ServingError, ValueError):
    """The request is malformed (no file part, empty body, bad header, JSON that does not parse)."""


class InvalidTensorError(InvalidInputError):
    """An OIP v2 tensor does not fit the model: wrong name, datatype, rank, shape or data."""


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


#: Exception type -> HTTP status; the most specific type in the exception's MRO wins.
ERROR_STATUS: dict[type[BaseException], int] = {
    InvalidInputError: 400,
    InvalidTensorError: 400,
    ImageDecodeError: 400,
    UnauthorizedError: 401,
    UnknownModelError: 404,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    ImageTooLargeError: 422,
    RequestValidationError: 422,
    ModelNotReadyError: 503,
    QueueFullError: 503,
    ShuttingDownError: 503,
}


def status_for(exc: BaseException) -> int:
    """HTTP status for ``exc`` from :data:`ERROR_STATUS` (500 when no entry matches)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500
