"""The HTTP app: FastAPI routes over one or more :class:`~transferkit.serving.model.OnnxClassifier`.

Routes (Open Inference Protocol v2, the KServe v2 REST protocol, see :mod:`.oip`, plus ``/v1``):

    ``GET /v2``: server metadata.
    ``GET /v2/health/live``: the process answers (200).
    ``GET /v2/health/ready``: 200 once every model is loaded and warmed up, 503 before, after a
        failed load, or while shutting down.
    ``GET /v2/models/{name}[/versions/{v}]``: model metadata (tensors with -1 for the batch).
    ``GET /v2/models/{name}[/versions/{v}]/ready``: 200 when that model is ready, else 503.
    ``POST /v2/models/{name}[/versions/{v}]/infer``: an OIP v2 JSON request
        (``application/json``), or one encoded image as the raw body (``image/*`` or
        ``application/octet-stream``; transferkit's extension: no megabytes of JSON floats).
        Answers the OIP v2 response with the logits ``FP32 [N, K]``.
    ``POST /v1/predict``: one image (multipart upload or raw body); ``?top_k=N``, ``?model=NAME``.
        Answers ``{"model": NAME, "predictions": [{"label": "7", "probability": 0.98}, ...]}``.
    ``GET /v1/model`` (``?model=NAME``), ``GET /v1/models``: transferkit's own metadata.
    ``GET /metrics``: Prometheus text format (see :mod:`.metrics`).

Errors are JSON ``{"error": "..."}`` with the status from one table,
:data:`~transferkit.serving.errors.ERROR_STATUS`. Bad input is always 4xx and the server keeps
serving. With an API key, every route but ``/v2/health/*`` needs ``Authorization: Bearer KEY``
or ``X-API-Key: KEY``. Inference runs through each model's
:class:`~transferkit.serving.batching.DynamicBatcher` (``max_batch_size > 1``) or straight in the
threadpool (batching off); the event loop never blocks on decoding or ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transferkit.metadata import MetadataError
from transferkit.serving.batching import DynamicBatcher
from transferkit.serving.errors import (
    ERROR_STATUS,
    InvalidInputError,
    InvalidTensorError,
    ModelNotReadyError,
    PayloadTooLargeError,
    QueueFullError,
    ServingError,
    ShuttingDownError,
    UnauthorizedError,
    UnknownModelError,
    UnsupportedMediaTypeError,
    status_for,
)
from transferkit.serving.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from transferkit.serving.model import ModelLoadError, OnnxClassifier
from transferkit.serving.oip import infer_response, model_metadata, parse_infer_request
from transferkit.serving.repository import ModelSource

__all__ = [
    "create_app",
    "ServingRuntime",
    "ModelEntry",
    "ERROR_STATUS",
    "status_for",
    "ServingError",
    "InvalidInputError",
    "InvalidTensorError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "ModelNotReadyError",
    "UnknownModelError",
    "QueueFullError",
    "ShuttingDownError",
    "UnauthorizedError",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
_RAW_TYPES = ("application/octet-stream", "")
_MODEL_KEY = "transferkit.model"  # set on the ASGI scope by model routes: the metrics label
_JSON_IN_THREAD_BYTES = 256 * 1024  # parse larger JSON bodies off the event loop
_MAX_ROWS = 1024
_RETRY_AFTER_S = "1"


# -- errors -> responses ---------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    from fastapi.exceptions import RequestValidationError

    if isinstance(exc, RequestValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
    return str(exc) or type(exc).__name__


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON error response for ``exc``: status from the table, ``Retry-After`` on a full
    queue or shutdown, ``WWW-Authenticate`` on 401; internal errors are not described."""
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


# -- request bodies ------------------------------------------------------------------------------


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


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image in a predict request: multipart's first file, or the raw body.

    Raises:
        UnsupportedMediaTypeError: content type other than multipart, ``image/*`` or octet-stream.
        PayloadTooLargeError: body over ``limit`` bytes.
        InvalidInputError: empty body, or multipart without a file part.
    """
    media = _media(request)
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


# -- the served models -----------------------------------------------------------------------------


class ModelEntry:
    """One served model version: its session (once loaded), batcher and admission count.

    Args:
        source: name, version and file.
        clf: the loaded model, or None to load it at start-up.
        runtime: the owning :class:`ServingRuntime` (limits, metrics).
    """

    def __init__(
        self, source: ModelSource, clf: OnnxClassifier | None, runtime: ServingRuntime
    ) -> None:
        self.source = source
        self.name = source.name
        self.version = source.version
        self.clf = clf
        self.problem = f"model {source.name!r} version {source.version} is loading"
        self.batcher: DynamicBatcher | None = None
        self.inflight = 0
        self._rt = runtime

    @property
    def ready(self) -> bool:
        """Loaded, warmed up, and (with batching) its batcher running."""
        return self.clf is not None and (self._rt.max_batch_size == 1 or self.batcher is not None)

    def get(self) -> OnnxClassifier:
        """The loaded model.

        Raises:
            ModelNotReadyError: still loading, or loading failed (the message says which).
        """
        if not self.ready:
            raise ModelNotReadyError(self.problem)
        assert self.clf is not None
        return self.clf

    async def load(self) -> None:
        """Load and warm the session in a worker thread; on failure keep the reason for /ready."""
        if self.clf is None:
            try:
                self.clf = await run_in_threadpool(
                    OnnxClassifier,
                    self.source.path,
                    name=self.name,
                    version=self.version,
                    intra_op_threads=self._rt.intra_op_threads,
                )
            except (ModelLoadError, MetadataError, OSError, ValueError) as exc:
                self.problem = f"model {self.name!r} version {self.version} failed to load: {exc}"
                log.error("%s", self.problem)
                return
        if self._rt.max_batch_size > 1 and self.batcher is None:
            metrics, name = self._rt.metrics, self.name
            batcher = DynamicBatcher(
                self.clf.predict_batch,
                self._rt.max_batch_size,
                self._rt.max_queue_delay_ms,
                on_batch=lambda rows, waits: metrics.observe_batch(name, rows, waits),
                name=self.name,
            )
            batcher.start()
            self.batcher = batcher

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[OnnxClassifier]:
        """Hold one of the model's ``max_queue_size`` request slots for the block.

        Raises:
            ModelNotReadyError: not loaded.
            QueueFullError: every slot is taken (HTTP 503 with ``Retry-After``).
        """
        clf = self.get()
        if self.inflight >= self._rt.max_queue_size:
            raise QueueFullError(
                f"model {self.name!r} has {self.inflight} requests queued (limit {self._rt.max_queue_size}); retry later"
            )
        self.inflight += 1
        gauge = self._rt.metrics.inflight.labels(self.name)
        gauge.inc()
        try:
            yield clf
        finally:
            self.inflight -= 1
            gauge.dec()

    def arriving(self) -> AbstractContextManager[None]:
        """While a request reads and decodes its input: a batch in formation waits for it."""
        return self.batcher.arriving() if self.batcher is not None else nullcontext()

    def _observe_direct(self, rows: int) -> None:
        self._rt.metrics.observe_batch(self.name, rows, [0.0])

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits float32 ``[N, K]`` for float32 ``[N, C, H, W]``, batched with other requests."""
        clf = self.get()
        if self.batcher is not None:
            out = await self.batcher.run_if_idle(lambda: x)
            return out if out is not None else await self.batcher.submit(x)
        out = await run_in_threadpool(clf.predict_batch, x)
        self._observe_direct(len(x))
        return out

    async def infer_image(self, data: bytes, max_pixels: int) -> np.ndarray:
        """Logits float32 ``[1, K]`` for one encoded image.

        Raises:
            ImageTooLargeError: more than ``max_pixels`` pixels (checked from the header).
            ImageDecodeError: not a decodable image.
        """
        clf = self.get()

        def prepare() -> np.ndarray:
            return clf.preprocess(clf.decode(data, max_pixels))[None]

        if self.batcher is None:  # batching off: decode, preprocess and run in one thread hop
            out = await run_in_threadpool(lambda: clf.predict_batch(prepare()))
            self._observe_direct(1)
            return out
        out = await self.batcher.run_if_idle(prepare)  # an idle server: one hop, no window
        if out is not None:
            return out
        with self.batcher.arriving():
            x = await run_in_threadpool(prepare)
        return await self.batcher.submit(x)


class ServingRuntime:
    """Everything the routes share: the models by name and version, limits, metrics, state.

    Args:
        sources: the models; the first is the default of ``/v1/predict``.
        loaded: already-loaded models by (name, version); the others load at start-up.
        top_k, max_body_bytes, max_image_pixels, intra_op_threads, max_batch_size,
        max_queue_delay_ms, max_queue_size, api_key: as in :func:`create_app`.
    """

    def __init__(
        self,
        sources: Sequence[ModelSource],
        loaded: dict[tuple[str, str], OnnxClassifier],
        *,
        top_k: int,
        max_body_bytes: int,
        max_image_pixels: int,
        intra_op_threads: int,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        api_key: str | None,
    ) -> None:
        self.top_k = top_k
        self.max_body_bytes = max_body_bytes
        self.max_image_pixels = max_image_pixels
        self.intra_op_threads = intra_op_threads
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = max_queue_delay_ms
        self.max_queue_size = max_queue_size
        self.api_key = api_key
        self.metrics = ServerMetrics()
        self.draining = False
        self.models: dict[str, dict[str, ModelEntry]] = {}
        for src in sources:
            entry = ModelEntry(src, loaded.get((src.name, src.version)), self)
            self.models.setdefault(src.name, {})[src.version] = entry
        self.default_name = sources[0].name

    # -- lookup ----------------------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """Served versions of ``name``, oldest first (numeric order when numeric)."""
        return sorted(
            self.models.get(name, {}),
            key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v),
        )

    def entry(self, name: str | None, version: str | None = None) -> ModelEntry:
        """The served model ``name`` (default: the first), at ``version`` (default: the latest).

        Raises:
            UnknownModelError: no such model or version (HTTP 404); the message lists the known ones.
        """
        name = name or self.default_name
        by_version = self.models.get(name)
        if by_version is None:
            raise UnknownModelError(f"unknown model {name!r}; served models: {sorted(self.models)}")
        if version is None:
            version = self.versions(name)[-1]
        entry = by_version.get(version)
        if entry is None:
            raise UnknownModelError(
                f"model {name!r} has no version {version!r}; served versions: {self.versions(name)}"
            )
        return entry

    def entries(self) -> list[ModelEntry]:
        """Every served model version."""
        return [e for by_v in self.models.values() for e in by_v.values()]

    @property
    def ready(self) -> bool:
        """Every model is ready and the server is not shutting down."""
        return not self.draining and all(e.ready for e in self.entries())

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (when needed) and warm every model, start the batchers."""
        for e in self.entries():
            await e.load()

    async def stop(self) -> None:
        """Stop the batchers after their queues drain."""
        self.draining = True
        for e in self.entries():
            if e.batcher is not None:
                await e.batcher.stop()
                e.batcher = None


# -- the gate: API key, shutdown, metrics ----------------------------------------------------------


class _Gate:
    """Pure ASGI middleware: refuses unauthorised requests and new requests while draining, and
    counts every answered request (a plain ASGI wrapper, cheaper than ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, runtime: ServingRuntime) -> None:
        self.app = app
        self.rt = runtime
        self._key = runtime.api_key.encode() if runtime.api_key else None

    def _authorized(self, scope: Scope) -> bool:
        for k, v in scope.get("headers", ()):
            if (
                k == b"authorization"
                and v[:7].lower() == b"bearer "
                and hmac.compare_digest(v[7:].strip(), self._key)
            ):
                return True
            if k == b"x-api-key" and hmac.compare_digest(v.strip(), self._key):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        health = path.startswith("/v2/health/")
        start = time.perf_counter()
        refusal: ServingError | None = None
        if self._key is not None and not health and not self._authorized(scope):
            refusal = UnauthorizedError(
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            )
        elif self.rt.draining and not health:
            refusal = ShuttingDownError("the server is shutting down; retry on another replica")
        if refusal is not None:
            resp = error_response(refusal)
            await resp(scope, receive, send)
            self.rt.metrics.observe_request("", resp.status_code, time.perf_counter() - start)
            return
        if health or path == "/metrics":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.rt.metrics.observe_request(
                scope.get(_MODEL_KEY, ""), status[0], time.perf_counter() - start
            )


# -- the app ---------------------------------------------------------------------------------------


def _sources(
    models: Any, name: str | None
) -> tuple[list[ModelSource], dict[tuple[str, str], OnnxClassifier]]:
    items = list(models) if isinstance(models, (list, tuple)) else [models]
    if not items:
        raise ValueError("no models to serve")
    if name is not None and len(items) != 1:
        raise ValueError(f"name={name!r} needs exactly one model; got {len(items)}")
    sources: list[ModelSource] = []
    loaded: dict[tuple[str, str], OnnxClassifier] = {}
    for m in items:
        if isinstance(m, OnnxClassifier):
            if name is not None:
                m.name = name
            src = ModelSource(m.name, m.version, m.path)
            loaded[(src.name, src.version)] = m
        elif isinstance(m, ModelSource):
            src = m
        else:
            src = ModelSource(name or Path(m).stem, "1", Path(m))
        if any((s.name, s.version) == (src.name, src.version) for s in sources):
            raise ValueError(f"model {src.name!r} version {src.version} is given twice")
        sources.append(src)
    return sources, loaded


def create_app(
    models: str
    | Path
    | OnnxClassifier
    | ModelSource
    | Sequence[str | Path | OnnxClassifier | ModelSource],
    name: str | None = None,
    top_k: int = 5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    intra_op_threads: int = 0,
    *,
    max_batch_size: int = 1,
    max_queue_delay_ms: float = 2.0,
    max_queue_size: int = 256,
    api_key: str | None = None,
) -> FastAPI:
    """Build the FastAPI app serving one or more ONNX classifiers.

    Args:
        models: one or several of: a loaded :class:`OnnxClassifier` (ready at once), a path of an
            ``.onnx`` file (served as its stem, version "1") or a :class:`ModelSource`; paths and
            sources load and warm up in the background at start-up (``/v2/health/ready`` answers
            503 until every model is ready). The first is ``/v1/predict``'s default.
        name: the model's name when ``models`` is a single model (default: the file stem).
        top_k: predictions per image when a ``/v1/predict`` request gives no ``top_k`` (capped at
            the class count).
        max_body_bytes: larger request bodies get 413.
        max_image_pixels: images with more pixels (width x height) get 422.
        intra_op_threads: ORT intra-op threads for models loaded here (0 = automatic; capped at
            the CPUs).
        max_batch_size: rows per ORT run with dynamic batching; 1 turns batching off.
        max_queue_delay_ms: longest wait for a batch to fill while requests are on their way.
        max_queue_size: admitted requests per model beyond which the answer is 503 + Retry-After.
        api_key: when set, required on every route but ``/v2/health/*`` (else 401).

    Returns:
        The app (``app.state.runtime`` is its :class:`ServingRuntime`); run it with any ASGI
        server (``transferkit.serving.serve`` uses uvicorn).

    Raises:
        ValueError: a limit below 1 (``max_queue_delay_ms`` below 0), no models, a duplicate
            (name, version), or ``name`` with several models.
    """
    for label, value in (
        ("top_k", top_k),
        ("max_body_bytes", max_body_bytes),
        ("max_image_pixels", max_image_pixels),
        ("max_batch_size", max_batch_size),
        ("max_queue_size", max_queue_size),
    ):
        if value < 1:
            raise ValueError(f"{label} must be >= 1; got {value}")
    if max_queue_delay_ms < 0:
        raise ValueError(f"max_queue_delay_ms must be >= 0; got {max_queue_delay_ms}")
    sources, loaded = _sources(models, name)
    rt = ServingRuntime(
        sources,
        loaded,
        top_k=top_k,
        max_body_bytes=max_body_bytes,
        max_image_pixels=max_image_pixels,
        intra_op_threads=intra_op_threads,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        max_queue_size=max_queue_size,
        api_key=api_key,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(rt.start())
        yield
        if not task.done():
            task.cancel()
        await rt.stop()

    title = ", ".join(rt.models)
    app = FastAPI(title=f"transferkit: {title}", lifespan=lifespan)
    app.state.runtime = rt
    for exc_type in ERROR_STATUS:
        app.add_exception_handler(exc_type, _error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_exception_handler(Exception, _error_handler)
    app.add_middleware(_Gate, runtime=rt)
    _add_routes(app, rt)
    return app


def _add_routes(app: FastAPI, rt: ServingRuntime) -> None:
    from transferkit import __version__

    # -- health and server metadata (OIP v2) ----------------------------------------------------

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, Any]:
        if rt.draining:
            raise ShuttingDownError("the server is shutting down")
        for e in rt.entries():
            e.get()
        return {"ready": True, "models": sorted(rt.models)}

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "transferkit", "version": __version__, "extensions": []}

    # -- model metadata and readiness (OIP v2) ---------------------------------------------------

    def _entry(request: Request, name: str | None, version: str | None) -> ModelEntry:
        entry = rt.entry(name, version)
        request.scope[_MODEL_KEY] = entry.name
        return entry

    async def _metadata(request: Request, name: str, version: str | None) -> dict[str, Any]:
        return model_metadata(_entry(request, name, version).get(), rt.versions(name))

    async def _model_ready(request: Request, name: str, version: str | None) -> dict[str, Any]:
        entry = _entry(request, name, version)
        entry.get()
        return {"name": entry.name, "version": entry.version, "ready": True}

    @app.get("/v2/models/{name}")
    async def model_meta(request: Request, name: str) -> dict[str, Any]:
        return await _metadata(request, name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_version_meta(request: Request, name: str, version: str) -> dict[str, Any]:
        return await _metadata(request, name, version)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(request: Request, name: str) -> dict[str, Any]:
        return await _model_ready(request, name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(request: Request, name: str, version: str) -> dict[str, Any]:
        return await _model_ready(request, name, version)

    # -- inference (OIP v2) ------------------------------------------------------------------------

    async def _infer(request: Request, name: str, version: str | None) -> Response:
        entry = _entry(request, name, version)
        media = _media(request)
        is_image = media.startswith("image/") or media == "application/octet-stream"
        if not (is_image or media in ("application/json", "")):
            raise UnsupportedMediaTypeError(
                f"unsupported content type {media!r}: send an OIP v2 JSON request (application/json) "
                "or one encoded image (image/*, application/octet-stream)"
            )
        async with entry.admit() as clf:
            if is_image:
                with entry.arriving():
                    data = await read_body(request, rt.max_body_bytes)
                    if not data:
                        raise InvalidInputError(
                            "empty body: expected an encoded image (PNG, JPEG, ...)"
                        )
                logits = await entry.infer_image(data, rt.max_image_pixels)
                rid = request.headers.get("inference-request-id")
            else:
                with entry.arriving():
                    body = await read_body(request, rt.max_body_bytes)
                    payload = await _parse_json(body)
                    if len(body) > _JSON_IN_THREAD_BYTES:
                        x, rid = await run_in_threadpool(
                            parse_infer_request, payload, clf, _MAX_ROWS
                        )
                    else:
                        x, rid = parse_infer_request(payload, clf, _MAX_ROWS)
                logits = await entry.infer(x)
        return JSONResponse(infer_response(clf, logits, rid))

    @app.post("/v2/models/{name}/infer")
    async def infer(request: Request, name: str) -> Response:
        return await _infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(request: Request, name: str, version: str) -> Response:
        return await _infer(request, name, version)

    # -- transferkit's own routes --------------------------------------------------------------------

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [
                {"name": e.name, "version": e.version, "ready": e.ready, "path": str(e.source.path)}
                for e in rt.entries()
            ]
        }

    @app.get("/v1/model")
    async def v1_model(
        request: Request, model: str | None = Query(None, description="model name")
    ) -> dict[str, Any]:
        entry = _entry(request, model, None)
        return {**entry.get().metadata_dict(), "name": entry.name}

    @app.post("/v1/predict")
    async def predict(
        request: Request,
        top_k: int | None = Query(None, ge=1, description="classes returned"),
        model: str | None = Query(None, description="model name (default: the first served)"),
    ) -> Response:
        entry = _entry(request, model, None)
        async with entry.admit() as clf:
            with entry.arriving():
                data = await image_bytes(request, rt.max_body_bytes)
            logits = await entry.infer_image(data, rt.max_image_pixels)
        k = min(top_k or rt.top_k, clf.num_classes)
        return JSONResponse({"model": entry.name, "predictions": clf.postprocess(logits[0], k)})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _parse_json(body: bytes) -> Any:
    """Decode a JSON body (off the event loop when large).

    Raises:
        InvalidInputError: empty, not UTF-8 or not JSON.
    """
    if not body:
        raise InvalidInputError(
            "empty body: expected an OIP v2 inference request (JSON) or an image"
        )
    try:
        if len(body) > _JSON_IN_THREAD_BYTES:
            return await run_in_threadpool(json.loads, body)
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"malformed JSON body: {exc}") from None
