"""The gate in front of every route: API key, shutdown refusal, request metrics.

A pure ASGI middleware (cheaper than Starlette's ``BaseHTTPMiddleware``). With an API key, every
route but ``/v2/health/*`` needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in
constant time. While the runtime drains, requests that reach the app get 503 with
``Connection: close``. Every answered request is counted under the model its route named
(:data:`MODEL_SCOPE_KEY`).
"""

from __future__ import annotations

import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transferkit.serving.errors import ServingError, ShuttingDownError, UnauthorizedError
from transferkit.serving.http_errors import error_response
from transferkit.serving.runtime import ServingRuntime

__all__ = ["Gate", "MODEL_SCOPE_KEY"]

#: Set on the ASGI scope by the model routes: the ``model`` label of the request metrics.
MODEL_SCOPE_KEY = "transferkit.model"


class Gate:
    """ASGI middleware: refuses unauthorised requests and new requests while draining, and counts
    every answered request.

    Args:
        app: the wrapped ASGI app.
        runtime: its draining flag and metrics.
        api_key: the key every route but health requires; None turns authentication off.
    """

    def __init__(self, app: ASGIApp, runtime: ServingRuntime, api_key: str | None) -> None:
        self.app = app
        self.rt = runtime
        self._key = api_key.encode() if api_key else None

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

    def _refusal(self, path: str, scope: Scope) -> ServingError | None:
        if path.startswith("/v2/health/"):
            return None
        if self._key is not None and not self._authorized(scope):
            return UnauthorizedError(
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            )
        if self.rt.draining:
            return ShuttingDownError("the server is shutting down; retry on another replica")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope (HTTP is gated, lifespan passes through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        start = time.perf_counter()
        refusal = self._refusal(path, scope)
        if refusal is not None:
            resp = error_response(refusal)
            await resp(scope, receive, send)
            self.rt.metrics.observe_request("", resp.status_code, time.perf_counter() - start)
            return
        if path.startswith("/v2/health/") or path == "/metrics":
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
                scope.get(MODEL_SCOPE_KEY, ""), status[0], time.perf_counter() - start
            )
