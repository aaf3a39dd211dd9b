"""Errors -> HTTP responses: the one table of statuses and the app's exception handlers.

The Open Inference Protocol v2 REST spec (KServe,
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol, "HTTP/REST")
answers every failure with a JSON object ``{"error": "<message>"}``; so does this server. Bad input
is always 4xx and the server keeps serving; internal errors (500) are logged, not described.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from transferkit.imaging import ImageAmbiguousError, ImageDecodeError, ImageTooLargeError
from transferkit.serving.errors import (
    InvalidInputError,
    InvalidTensorError,
    ModelNotReadyError,
    PayloadTooLargeError,
    QueueFullError,
    RequestTimeoutError,
    ShuttingDownError,
    UnauthorizedError,
    UnknownModelError,
    UnsupportedMediaTypeError,
)

__all__ = ["ERROR_STATUS", "status_for", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_RETRY_AFTER_S = "1"

#: Exception type -> HTTP status; the most specific type in the exception's MRO wins.
ERROR_STATUS: dict[type[BaseException], int] = {
    InvalidInputError: 400,
    InvalidTensorError: 400,
    ImageDecodeError: 400,
    UnauthorizedError: 401,
    RequestTimeoutError: 408,
    UnknownModelError: 404,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    ImageTooLargeError: 422,
    ImageAmbiguousError: 422,
    RequestValidationError: 422,
    ModelNotReadyError: 503,
    QueueFullError: 503,
    ShuttingDownError: 503,
}


def status_for(exc: BaseException) -> int:
    """The HTTP status of an exception.

    Args:
        exc: any exception.

    Returns:
        The status of the most specific type of ``exc`` in :data:`ERROR_STATUS`; 500 when none.
    """
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def _message(exc: BaseException) -> str:
    if isinstance(exc, RequestValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
    return str(exc) or type(exc).__name__


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON error response for an exception.

    Args:
        exc: the error.

    Returns:
        ``{"error": message}`` with the status of :func:`status_for`; ``Retry-After`` on a full
        queue or shutdown, ``Connection: close`` on shutdown, ``WWW-Authenticate`` on 401.
        Internal errors (500) say only "internal server error".
    """
    status = status_for(exc)
    if status >= 500 and status != 503:
        return JSONResponse({"error": "internal server error"}, status_code=status)
    headers: dict[str, str] = {}
    if isinstance(exc, (QueueFullError, ShuttingDownError)):
        headers["Retry-After"] = _RETRY_AFTER_S
    if isinstance(exc, ShuttingDownError):
        headers["Connection"] = "close"
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": _message(exc)}, status_code=status, headers=headers or None)


async def _error_handler(request: Request, exc: Exception) -> JSONResponse:
    if status_for(exc) == 500:
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(exc)


async def _http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as JSON ``{"error": ...}`` (unknown routes too).

    Args:
        app: the FastAPI app.
    """
    for exc_type in ERROR_STATUS:
        app.add_exception_handler(exc_type, _error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_exception_handler(Exception, _error_handler)
