"""Run the serving app with uvicorn in the foreground: ``transferkit serve`` or :func:`serve`.

The port is bound before anything is announced or loaded, so a port in use fails at once with
:class:`~transferkit.serving.errors.PortInUseError`. On SIGINT/SIGTERM the server drains:
readiness turns 503, the listening socket and idle kept-alive connections close, a request that
still reaches the app gets 503 with ``Connection: close``, in-flight requests finish (up to
``graceful_timeout_s``), then the call returns.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from transferkit.config import ServeConfig
from transferkit.serving.app import create_app
from transferkit.serving.errors import PortInUseError
from transferkit.serving.limits import ServingLimits
from transferkit.serving.model import OnnxClassifier
from transferkit.serving.providers import resolve_threads
from transferkit.serving.repository import ModelSource, discover_models
from transferkit.serving.runtime import ServingRuntime

__all__ = ["serve", "serve_config", "bind_socket", "API_KEY_ENV"]

log = logging.getLogger(__name__)

#: Environment variable read for the API key when none is given.
API_KEY_ENV = "TRANSFERKIT_API_KEY"


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), as uvicorn would bind it.

    Args:
        host: an IPv4 or IPv6 address or a host name.
        port: the TCP port; 0 picks a free one (read it from ``getsockname()``).

    Returns:
        The bound socket; pass it to ``uvicorn.Server.serve(sockets=[...])``.

    Raises:
        PortInUseError: another process holds the port.
        OSError: any other failure to bind (e.g. an address this machine does not have).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use (another server is listening there): "
                "stop it or pick another --port"
            ) from exc
        raise
    sock.set_inheritable(True)
    return sock


class _DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the runtime as draining the moment shutdown starts, so a
    request that still reaches the app is refused (503) while in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, runtime: ServingRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Mark the runtime as draining, then shut down as uvicorn does."""
        self.runtime.draining = True
        await super().shutdown(sockets=sockets)


def _announce(sources: Sequence[ModelSource], host: str, port: int) -> None:
    base = _url(host, port)
    for s in sources:
        log.info("serving %s version %s at %s/v2/models/%s/infer", s.name, s.version, base, s.name)
    log.info("/v1/predict at %s/v1/predict, readiness at %s/v2/health/ready", base, base)
    log.info("Ctrl+C to stop")


def _load(sources: Sequence[ModelSource], requested: int) -> list[OnnxClassifier]:
    """Load every model with its share of the CPUs (``requested`` 0: CPUs // models)."""
    threads = resolve_threads(requested, models=len(sources))
    return [
        OnnxClassifier(s.path, name=s.name, version=s.version, intra_op_threads=threads)
        for s in sources
    ]


def serve(
    model_path: str | Path | Sequence[str | Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    repository: str | Path | None = None,
    name: str | None = None,
    limits: ServingLimits | None = None,
    api_key: str | None = None,
    eager: bool = True,
    log_level: str = "info",
    access_log: bool = False,
    graceful_timeout_s: float = 10.0,
) -> None:
    """Serve ONNX classifiers over HTTP until SIGINT/SIGTERM (blocking).

    Args:
        model_path: one or several ``.onnx`` files exported by ``transferkit export``; each is
            served under its file stem.
        host: bind address (loopback by default; ``0.0.0.0`` exposes it).
        port: TCP port (0 = a free one, logged).
        repository: a Triton-style folder ``REPO/<name>/<version>/model.onnx`` (added to the files).
        name: the model's name when exactly one file is given (default: the file stem).
        limits: body, image, threads, batching and queue limits (default: :class:`ServingLimits`).
        api_key: required on every route but health; None = the ``TRANSFERKIT_API_KEY``
            environment variable, if set.
        eager: load (and warm) every model before serving, so a bad file fails here; when False
            the server starts at once and ``/v2/health/ready`` answers 503 until loaded.
        log_level: uvicorn's log level.
        access_log: uvicorn's per-request access log (costs latency; off by default).
        graceful_timeout_s: how long in-flight requests may finish after a shutdown signal.

    Raises:
        PortInUseError: the port is taken (checked first, before any model loads).
        FileNotFoundError: a model file or the repository is missing.
        ValueError: nothing to serve, duplicate names, or a bad limit.
        ModelLoadError: (eager) a file is unloadable, not ONNX, or disagrees with its metadata.
        MetadataError: (eager) a file carries no transferkit metadata.
    """
    limits = limits or ServingLimits()
    files = [model_path] if isinstance(model_path, (str, Path)) else list(model_path or [])
    sources = discover_models(files, repository, name)
    sock = bind_socket(host, port)
    try:
        models = _load(sources, limits.intra_op_threads) if eager else sources
        key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        app = create_app(models, limits=limits, api_key=key)
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=graceful_timeout_s,
        )
        _announce(sources, host, sock.getsockname()[1])
        _DrainingServer(config, app.state.runtime).run(sockets=[sock])
    finally:
        sock.close()


def serve_config(cfg: ServeConfig, *, eager: bool = True, log_level: str = "info") -> None:
    """Serve a validated :class:`~transferkit.config.ServeConfig` (blocking until interrupted).

    Args:
        cfg: models, address and limits; with ``cfg.ray``, deployed by
            :func:`~transferkit.serving.ray_serve.serve_ray` instead.
        eager: as in :func:`serve`.
        log_level: uvicorn's log level.

    Raises:
        PortInUseError, FileNotFoundError, ValueError, ModelLoadError, MetadataError: as
            :func:`serve`.
    """
    if cfg.ray:
        from transferkit.serving.ray_serve import serve_ray

        serve_ray(cfg)
        return
    serve(
        cfg.models,
        cfg.host,
        cfg.port,
        repository=cfg.repository,
        name=cfg.name,
        limits=ServingLimits.from_config(cfg),
        api_key=cfg.api_key,
        eager=eager,
        log_level=log_level,
        access_log=cfg.access_log,
        graceful_timeout_s=cfg.graceful_timeout_s,
    )
