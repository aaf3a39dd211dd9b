"""Request bodies: read within a size limit, pick the image out of multipart, parse JSON.

Every function refuses bad input with a :mod:`~transferkit.serving.errors` type that names the
problem; large JSON is parsed off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from transferkit.serving.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)

__all__ = ["media_type", "read_body", "first_file", "image_bytes", "parse_json", "LARGE_JSON_BYTES"]

#: JSON bodies above this many bytes are parsed (and checked) in a worker thread.
LARGE_JSON_BYTES = 256 * 1024
_RAW_TYPES = ("application/octet-stream", "")


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters (``""`` when absent).

    Args:
        request: the request.

    Returns:
        E.g. ``"image/png"`` for ``Content-Type: image/PNG; q=1``.
    """
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes without reading them all.

    Args:
        request: the request.
        limit: the most bytes accepted.
        timeout_s: the most seconds the whole body may take to arrive (``None``: no limit).

    Returns:
        The body.

    Raises:
        PayloadTooLargeError: the declared or streamed length exceeds ``limit``.
        InvalidInputError: the Content-Length header is not a number.
        RequestTimeoutError: the body took longer than ``timeout_s``.
    """
    if timeout_s is None:
        return await _read_body(request, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s"
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
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

    Args:
        request: the request (its headers give the boundary).
        body: the body, already read within the limit.

    Returns:
        The file's bytes.

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


def is_image_type(media: str) -> bool:
    """Whether a media type carries one encoded image as the raw body.

    Args:
        media: as returned by :func:`media_type`.

    Returns:
        True for ``image/*`` and ``application/octet-stream``.
    """
    return media.startswith("image/") or media == "application/octet-stream"


async def image_bytes(
    request: Request, limit: int, multipart: bool = False, timeout_s: float | None = None
) -> bytes:
    """The one encoded image of a request: the raw body, or multipart's first file.

    Args:
        request: the request.
        limit: the most body bytes accepted.
        multipart: accept ``multipart/form-data`` too (and a body without a content type).
        timeout_s: the most seconds the body may take to arrive (:func:`read_body`).

    Returns:
        The image's bytes, not empty.

    Raises:
        UnsupportedMediaTypeError: a content type other than those accepted.
        PayloadTooLargeError: body over ``limit`` bytes.
        RequestTimeoutError: the body took longer than ``timeout_s``.
        InvalidInputError: empty body, or multipart without a file part.
    """
    media = media_type(request)
    is_multipart = multipart and media == "multipart/form-data"
    if not (is_multipart or is_image_type(media) or (multipart and media in _RAW_TYPES)):
        raise UnsupportedMediaTypeError(
            f"unsupported content type {media!r}: send the image as multipart/form-data, image/*, "
            "or application/octet-stream"
        )
    body = await read_body(request, limit, timeout_s)
    data = await first_file(request, body) if is_multipart else body
    if not data:
        raise InvalidInputError("empty body: expected an encoded image (PNG, JPEG, ...)")
    return data


async def parse_json(body: bytes) -> Any:
    """Decode a JSON body (off the event loop when larger than :data:`LARGE_JSON_BYTES`).

    Args:
        body: the body.

    Returns:
        The decoded document.

    Raises:
        InvalidInputError: empty, not UTF-8 or not JSON.
    """
    if not body:
        raise InvalidInputError(
            "empty body: expected an OIP v2 inference request (JSON) or an image"
        )
    try:
        if len(body) > LARGE_JSON_BYTES:
            return await to_thread.run_sync(json.loads, body)
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"malformed JSON body: {exc}") from None
