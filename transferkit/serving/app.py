"""The HTTP app: thin FastAPI routes over a :class:`~transferkit.serving.runtime.ServingRuntime`.

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
        Answers the OIP v2 response with the logits ``FP32 [N, K]`` (the probabilities, for a
        model with embedded preprocessing, which takes ``UINT8 [N, H, W, C]`` images).
    ``POST /v1/predict``: one image (multipart upload or raw body); ``?top_k=N``, ``?model=NAME``.
        Answers ``{"model": NAME, "predictions": [{"label": "7", "probability": 0.98}, ...]}``.
    ``GET /v1/model`` (``?model=NAME``), ``GET /v1/models``: transferkit's own metadata.
    ``GET /metrics``: Prometheus text format (see :mod:`.metrics`).

Each versioned/unversioned pair of model routes is one handler registered on both paths.
Errors are JSON ``{"error": "..."}`` with the status from one table
(:mod:`.http_errors`); the API key, shutdown refusal and request metrics are the :mod:`.gate`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from transferkit import __version__
from transferkit.serving.bodies import (
    LARGE_JSON_BYTES,
    image_bytes,
    is_image_type,
    media_type,
    parse_json,
    read_body,
)
from transferkit.serving.errors import UnsupportedMediaTypeError
from transferkit.serving.gate import MODEL_SCOPE_KEY, Gate
from transferkit.serving.http_errors import install_error_handlers
from transferkit.serving.limits import ServingLimits
from transferkit.serving.metrics import CONTENT_TYPE_LATEST
from transferkit.serving.model import OnnxClassifier
from transferkit.serving.oip import infer_response, model_metadata, parse_infer_request
from transferkit.serving.runtime import ModelEntry, ModelSpec, ServingRuntime

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")

router = APIRouter()


def _model_route(method: str, suffix: str = "") -> Callable[[Callable], Callable]:
    """Register one handler on both ``/v2/models/{name}`` and ``.../versions/{version}``."""

    def register(endpoint: Callable) -> Callable:
        for prefix in _MODEL_PATHS:
            router.add_api_route(prefix + suffix, endpoint, methods=[method])
        return endpoint

    return register


def _runtime(request: Request) -> ServingRuntime:
    return request.app.state.runtime


def _entry(request: Request, name: str | None) -> ModelEntry:
    """The model a request names (path version, if any), recorded for the request metrics."""
    entry = _runtime(request).entry(name, request.path_params.get("version"))
    request.scope[MODEL_SCOPE_KEY] = entry.name
    return entry


# -- health and server metadata (OIP v2) -----------------------------------------------------------


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    """``GET /v2/health/live``: the process answers.

    Returns:
        ``{"live": true}``.
    """
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> dict[str, Any]:
    """``GET /v2/health/ready``: every model loaded and warmed up, the server not draining.

    Args:
        request: the request.

    Returns:
        ``{"ready": true, "models": [names]}``.

    Raises:
        ShuttingDownError, ModelNotReadyError: not ready (503; the message says why).
    """
    rt = _runtime(request)
    rt.check_ready()
    return {"ready": True, "models": sorted(rt.models)}


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    """``GET /v2``: OIP v2 server metadata.

    Returns:
        ``{"name": "transferkit", "version", "extensions": []}``.
    """
    return {"name": "transferkit", "version": __version__, "extensions": []}


# -- model metadata, readiness, inference (OIP v2) -------------------------------------------------


@_model_route("GET")
async def model_meta(request: Request, name: str) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{version}]``: OIP v2 model metadata.

    Args:
        request: the request (its path may name the version; default: the latest).
        name: the model.

    Returns:
        See :func:`~transferkit.serving.oip.model_metadata`.

    Raises:
        UnknownModelError: no such model or version (404).
        ModelNotReadyError: not loaded (503).
    """
    clf = _entry(request, name).get()
    return model_metadata(clf, _runtime(request).versions(name))


@_model_route("GET", "/ready")
async def model_ready(request: Request, name: str) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{version}]/ready``: that model version is ready.

    Args:
        request: the request (its path may name the version; default: the latest).
        name: the model.

    Returns:
        ``{"name", "version", "ready": true}``.

    Raises:
        UnknownModelError: no such model or version (404).
        ModelNotReadyError: not loaded (503).
    """
    entry = _entry(request, name)
    entry.get()
    return {"name": entry.name, "version": entry.version, "ready": True}


async def _image(request: Request, entry: ModelEntry, multipart: bool) -> bytes:
    """The request's encoded image, read in full (within the body size and time limits) before
    the request takes a queue slot: a slow client never holds one."""
    limits = _runtime(request).limits
    with _receiving(request, entry):
        return await image_bytes(request, limits.max_body_bytes, multipart, limits.body_timeout_s)


@contextmanager
def _receiving(request: Request, entry: ModelEntry) -> Iterator[None]:
    """Count the request in ``transferkit_receiving_requests`` while its body arrives."""
    gauge = _runtime(request).metrics.receiving.labels(entry.name)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


async def _tensor(
    request: Request, entry: ModelEntry, clf: OnnxClassifier, body: bytes
) -> tuple[np.ndarray, str | None]:
    """The OIP v2 JSON request's input tensor and id (large bodies are checked off the loop);
    a batch in formation waits for it."""
    limits = _runtime(request).limits
    with entry.arriving():
        payload = await parse_json(body)
        if len(body) > LARGE_JSON_BYTES:
            return await to_thread.run_sync(
                parse_infer_request, payload, clf, limits.max_request_rows
            )
        return parse_infer_request(payload, clf, limits.max_request_rows)


@_model_route("POST", "/infer")
async def infer(request: Request, name: str) -> Response:
    """``POST /v2/models/{name}[/versions/{version}]/infer``: OIP v2 JSON, or one raw image.

    Args:
        request: the request (its path may name the version; default: the latest).
        name: the model.

    Returns:
        The OIP v2 response with the logits ``FP32 [N, K]`` (probabilities for a model with
        embedded preprocessing).

    Raises:
        UnsupportedMediaTypeError: neither JSON nor an image type (415).
        ServingError, ImageDecodeError, ImageTooLargeError: bad input (4xx), an unknown model
            (404), a full queue or a model that is not ready (503).
    """
    entry = _entry(request, name)
    media = media_type(request)
    if not (is_image_type(media) or media in ("application/json", "")):
        raise UnsupportedMediaTypeError(
            f"unsupported content type {media!r}: send an OIP v2 JSON request (application/json) "
            "or one encoded image (image/*, application/octet-stream)"
        )
    entry.get()  # not ready: 503 before the body is read
    if is_image_type(media):
        data = await _image(request, entry, multipart=False)
    else:
        limits = _runtime(request).limits
        with _receiving(request, entry):
            data = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    async with entry.admit() as clf:
        if is_image_type(media):
            logits = await entry.infer_image(data)
            rid = request.headers.get("inference-request-id")
        else:
            x, rid = await _tensor(request, entry, clf, data)
            logits = await entry.infer(x)
    return JSONResponse(infer_response(clf, logits, rid))


# -- transferkit's own routes ----------------------------------------------------------------------


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """``GET /v1/models``: every served model version.

    Args:
        request: the request.

    Returns:
        ``{"models": [{"name", "version", "ready", "path"}, ...]}``.
    """
    return {
        "models": [
            {"name": e.name, "version": e.version, "ready": e.ready, "path": str(e.source.path)}
            for e in _runtime(request).entries()
        ]
    }


@router.get("/v1/model")
async def v1_model(
    request: Request, model: str | None = Query(None, description="model name")
) -> dict[str, Any]:
    """``GET /v1/model``: transferkit's metadata of one model (its latest version).

    Args:
        request: the request.
        model: the model (default: the first served).

    Returns:
        :meth:`OnnxClassifier.metadata_dict`'s description.

    Raises:
        UnknownModelError: no such model (404).
        ModelNotReadyError: not loaded (503).
    """
    entry = _entry(request, model)
    return {**entry.get().metadata_dict(), "name": entry.name}


@router.post("/v1/predict")
async def predict(
    request: Request,
    top_k: int | None = Query(None, ge=1, description="classes returned"),
    model: str | None = Query(None, description="model name (default: the first served)"),
) -> Response:
    """``POST /v1/predict``: the top classes of one image (multipart upload or raw body).

    Args:
        request: the request.
        top_k: classes returned (default: the limits' ``top_k``; capped at the class count).
        model: the model (default: the first served).

    Returns:
        ``{"model": NAME, "predictions": [{"label", "probability"}, ...]}``.

    Raises:
        ServingError, ImageDecodeError, ImageTooLargeError: as :func:`infer`.
    """
    entry = _entry(request, model)
    entry.get()  # not ready: 503 before the body is read
    data = await _image(request, entry, multipart=True)
    async with entry.admit() as clf:
        logits = await entry.infer_image(data)
    k = min(top_k or _runtime(request).limits.top_k, clf.num_classes)
    return JSONResponse({"model": entry.name, "predictions": clf.postprocess(logits[0], k)})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format.

    Args:
        request: the request.

    Returns:
        The metrics page of this app's registry.
    """
    return Response(_runtime(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


# -- the app ---------------------------------------------------------------------------------------


def create_app(
    models: ModelSpec | Sequence[ModelSpec],
    name: str | None = None,
    limits: ServingLimits | None = None,
    *,
    api_key: str | None = None,
) -> FastAPI:
    """Build the FastAPI app serving one or more ONNX classifiers.

    Args:
        models: one or several of: a loaded :class:`OnnxClassifier` (ready at once), a path of an
            ``.onnx`` file (served as its stem, version "1") or a
            :class:`~transferkit.serving.repository.ModelSource`; paths and sources load and warm
            up in the background at start-up (``/v2/health/ready`` answers 503 until every model
            is ready). The first is ``/v1/predict``'s default.
        name: the model's name when ``models`` is a single model (default: the file stem).
        limits: body, image, batching and queue limits (default: :class:`ServingLimits`'s).
        api_key: when set, required on every route but ``/v2/health/*`` (else 401).

    Returns:
        The app (``app.state.runtime`` is its :class:`ServingRuntime`); run it with any ASGI
        server (:func:`transferkit.serving.server.serve` uses uvicorn).

    Raises:
        ValueError: no models, a duplicate (name, version), or ``name`` with several models.
    """
    rt = ServingRuntime(models, limits or ServingLimits(), name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(rt.start())
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            try:
                await task  # a model still loading finishes its thread; a failed start is logged
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - shutting down: report, do not mask the stop
                log.exception("model start-up failed")
            await rt.stop()

    app = FastAPI(title=f"transferkit: {', '.join(rt.models)}", lifespan=lifespan)
    app.state.runtime = rt
    install_error_handlers(app)
    app.add_middleware(Gate, runtime=rt, api_key=api_key)
    app.include_router(router)
    return app
