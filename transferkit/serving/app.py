"""The HTTP app: FastAPI routes over one :class:`~transferkit.serving.model.OnnxClassifier`.

Routes:
    ``POST /v1/predict``: one image, as a multipart upload (first file part, any field name) or as
        the raw body (``image/*`` or ``application/octet-stream``); query ``top_k`` optional.
        Answers ``{"model": NAME, "predictions": [{"label": "7", "probability": 0.98}, ...]}``.
    ``GET /v2/health/live``: the process answers (200).
    ``GET /v2/health/ready``: 200 once the model is loaded and warmed, 503 before (or if loading
        failed).
    ``GET /v1/model``: the model's metadata (class names, preprocessing, input/output shapes).

Errors are JSON ``{"error": "..."}`` with a status from one table, :data:`ERROR_STATUS` (KServe
style): bad input 400/422, body too large 413, wrong content type 415, not ready 503.
Inference (decode, preprocess, ``session.run``) is blocking and runs in the threadpool, so the event
loop keeps answering health checks while a request computes.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from transferkit.imaging import ImageDecodeError
from transferkit.metadata import MetadataError
from transferkit.serving.model import ImageTooLargeError, ModelLoadError, OnnxClassifier

__all__ = [
    "create_app",
    "ERROR_STATUS",
    "status_for",
    "ServingError",
    "InvalidInputError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "ModelNotReadyError",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
_RAW_TYPES = ("application/octet-stream", "")


class ServingError(Exception):
    """Base of the errors the HTTP layer raises; the status comes from :data:`ERROR_STATUS`."""


class InvalidInputError(ServingError):
    """The request is malformed (no file part, empty body, bad header)."""


class PayloadTooLargeError(ServingError):
    """The request body exceeds the server's limit."""


class UnsupportedMediaTypeError(ServingError):
    """The content type is neither an image, ``application/octet-stream`` nor multipart."""


class ModelNotReadyError(ServingError):
    """The model is still loading, or failed to load."""


#: Exception type -> HTTP status; the most specific type in the exception's MRO wins.
ERROR_STATUS: dict[type[BaseException], int] = {
    InvalidInputError: 400,
    ImageDecodeError: 400,
    ImageTooLargeError: 422,
    RequestValidationError: 422,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    ModelNotReadyError: 503,
}


def status_for(exc: BaseException) -> int:
    """HTTP status for ``exc`` from :data:`ERROR_STATUS` (500 when no entry matches)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def _message(exc: BaseException) -> str:
    if isinstance(exc, RequestValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
        )
    return str(exc) or type(exc).__name__


async def _error_response(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if status >= 500 and status != 503:
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=status)
    return JSONResponse({"error": _message(exc)}, status_code=status)


async def _http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


class _ModelHolder:
    """The served model, or why it is not there yet."""

    def __init__(self, model: OnnxClassifier | None, problem: str) -> None:
        self.model = model
        self.problem = problem

    def get(self) -> OnnxClassifier:
        """The loaded model.

        Raises:
            ModelNotReadyError: still loading, or loading failed (the message says which).
        """
        if self.model is None:
            raise ModelNotReadyError(self.problem)
        return self.model


async def _load(holder: _ModelHolder, path: Path, name: str, intra_op_threads: int) -> None:
    """Load and warm the model in a worker thread; on failure, keep the reason for /ready."""
    try:
        holder.model = await run_in_threadpool(
            OnnxClassifier, path, name=name, intra_op_threads=intra_op_threads
        )
    except (ModelLoadError, MetadataError, OSError, ValueError) as exc:
        holder.problem = f"model {name!r} failed to load: {exc}"
        log.error("%s", holder.problem)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes without reading them all.

    Raises:
        PayloadTooLargeError: the declared or streamed length exceeds ``limit``.
        InvalidInputError: the Content-Length header is not a number.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInputError(f"invalid Content-Length header: {declared!r}") from None
        if length > limit:
            raise PayloadTooLargeError(f"request body is {length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Callable[[], Awaitable[Message]]:
    """An ASGI ``receive`` that hands out an already-read body once."""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def first_file(request: Request, body: bytes) -> bytes:
    """The bytes of the first file part of a multipart body (any field name).

    Raises:
        InvalidInputError: the body is not valid multipart or holds no file part.
    """
    try:
        form = await Request(request.scope, receive=_replay(body)).form()
    except (MultiPartException, StarletteHTTPException, ValueError) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise InvalidInputError(f"malformed multipart body: {detail}") from exc
    try:
        upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise InvalidInputError("multipart body has no file part; upload the image as a file")
        return await upload.read()
    finally:
        await form.close()


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image in a predict request: multipart's first file, or the raw body.

    Raises:
        UnsupportedMediaTypeError: content type other than multipart, ``image/*`` or octet-stream.
        PayloadTooLargeError: body over ``limit`` bytes.
        InvalidInputError: empty body, or multipart without a file part.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_multipart = media == "multipart/form-data"
    if not (is_multipart or media.startswith("image/") or media in _RAW_TYPES):
        raise UnsupportedMediaTypeError(
            f"unsupported content type {media!r}: send the image as multipart/form-data, image/*, "
            "or application/octet-stream"
        )
    body = await read_body(request, limit)
    data = await first_file(request, body) if is_multipart else body
    if not data:
        raise InvalidInputError("empty body: expected an encoded image (PNG, JPEG, ...)")
    return data


def create_app(
    model: str | Path | OnnxClassifier,
    name: str | None = None,
    top_k: int = 5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    intra_op_threads: int = 0,
) -> FastAPI:
    """Build the FastAPI app serving one ONNX classifier.

    Args:
        model: a loaded :class:`OnnxClassifier` (ready at once) or the path of an ``.onnx`` file,
            loaded in the background at start-up (``/v2/health/ready`` answers 503 until then).
        name: model name in responses; defaults to the ONNX file stem.
        top_k: predictions per image when the request gives no ``top_k`` (capped at the class
            count).
        max_body_bytes: larger request bodies get 413.
        max_image_pixels: images with more pixels (width x height) get 422.
        intra_op_threads: ORT intra-op threads when ``model`` is a path (0 = automatic).

    Returns:
        The app; run it with any ASGI server (``transferkit.serving.serve`` uses uvicorn).

    Raises:
        ValueError: ``top_k``, ``max_body_bytes`` or ``max_image_pixels`` below 1.
    """
    for label, value in (("top_k", top_k), ("max_body_bytes", max_body_bytes), ("max_image_pixels", max_image_pixels)):
        if value < 1:
            raise ValueError(f"{label} must be >= 1; got {value}")
    path = model.path if isinstance(model, OnnxClassifier) else Path(model)
    model_name = name or (model.name if isinstance(model, OnnxClassifier) else path.stem)
    holder = _ModelHolder(model if isinstance(model, OnnxClassifier) else None, f"model {model_name!r} is loading")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = None
        if holder.model is None:
            task = asyncio.create_task(_load(holder, path, model_name, intra_op_threads))
        yield
        if task is not None and not task.done():
            task.cancel()

    app = FastAPI(title=f"transferkit: {model_name}", lifespan=lifespan)
    for exc_type in ERROR_STATUS:
        app.add_exception_handler(exc_type, _error_response)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_exception_handler(Exception, _error_response)

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, Any]:
        holder.get()
        return {"ready": True, "model": model_name}

    @app.get("/v1/model")
    async def model_metadata() -> dict[str, Any]:
        return {**holder.get().metadata_dict(), "name": model_name}

    default_top_k = top_k

    @app.post("/v1/predict")
    async def predict(
        request: Request, top_k: int | None = Query(None, ge=1, description="classes returned")
    ) -> dict[str, Any]:
        clf = holder.get()
        data = await image_bytes(request, max_body_bytes)
        k = min(top_k or default_top_k, clf.num_classes)
        predictions = await run_in_threadpool(clf.predict_image_bytes, data, k, max_image_pixels)
        return {"model": model_name, "predictions": predictions}

    return app
