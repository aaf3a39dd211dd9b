"""Run the serving app with uvicorn in the foreground.

``transferkit serve`` (the one command line, in :mod:`transferkit.cli`) calls :func:`serve_config`;
:func:`serve` is the Python entry. On SIGINT/SIGTERM the server drains: readiness turns 503, new
requests (also on kept-alive connections) get 503 with ``Connection: close``, the listening socket
closes, in-flight requests finish (up to ``graceful_timeout_s``), then the process returns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from transferkit.config import ServeConfig
from transferkit.serving.app import create_app
from transferkit.serving.limits import ServingLimits
from transferkit.serving.model import OnnxClassifier
from transferkit.serving.repository import ModelSource, discover_models
from transferkit.serving.runtime import ServingRuntime

__all__ = ["serve", "serve_config", "API_KEY_ENV"]

log = logging.getLogger(__name__)

#: Environment variable read for the API key when none is given.
API_KEY_ENV = "TRANSFERKIT_API_KEY"


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the app as draining the moment shutdown starts, so requests
    arriving on kept-alive connections are refused (503) while in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, runtime: ServingRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self.runtime.draining = True
        await super().shutdown(sockets=sockets)


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
        port: TCP port.
        repository: a Triton-style folder ``REPO/<name>/<version>/model.onnx`` (added to the files).
        name: the model's name when exactly one file is given (default: the file stem).
        limits: body, image, threads, batching and queue limits (default: :class:`ServingLimits`).
        api_key: required on every route but health; None = the ``TRANSFERKIT_API_KEY``
            environment variable, if set.
        eager: load (and warm) every model before binding the port, so a bad file fails here; when
            False the server starts at once and ``/v2/health/ready`` answers 503 until loaded.
        log_level: uvicorn's log level.
        access_log: uvicorn's per-request access log (costs latency; off by default).
        graceful_timeout_s: how long in-flight requests may finish after a shutdown signal.

    Raises:
        FileNotFoundError: a model file or the repository is missing.
        ValueError: nothing to serve, duplicate names, or a bad limit.
        ModelLoadError: (eager) a file is unloadable or disagrees with its metadata.
        MetadataError: (eager) a file carries no transferkit metadata.
    """
    limits = limits or ServingLimits()
    files: list[str | Path]
    if model_path is None:
        files = []
    elif isinstance(model_path, (str, Path)):
        files = [model_path]
    else:
        files = list(model_path)
    sources = discover_models(files, repository, name)
    models: list[ModelSource | OnnxClassifier] = list(sources)
    if eager:
        models = [
            OnnxClassifier(
                s.path, name=s.name, version=s.version, intra_op_threads=limits.intra_op_threads
            )
            for s in sources
        ]
    app = create_app(
        models,
        limits=limits,
        api_key=api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None),
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=graceful_timeout_s,
    )
    names = ", ".join(f"{s.name}:{s.version}" for s in sources)
    log.info(
        "serving %s at %s/v2/models/{name}/infer and /v1/predict (Ctrl+C to stop)",
        names,
        _url(host, port),
    )
    _DrainingServer(config, app.state.runtime).run()


def serve_config(cfg: ServeConfig, *, eager: bool = True, log_level: str = "info") -> None:
    """:func:`serve` (or, with ``cfg.ray``, :func:`~transferkit.serving.ray_serve.serve_ray`) from a
    validated :class:`~transferkit.config.ServeConfig` (blocking until interrupted)."""
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
