"""Run the serving app with uvicorn in the foreground.

``python -m transferkit.serving.server MODEL.onnx --port 8000`` or :func:`serve` from Python.
uvicorn handles SIGINT/SIGTERM: it stops accepting connections, finishes in-flight requests
(up to ``graceful_timeout_s``) and returns.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import uvicorn

from transferkit.config import ServeConfig
from transferkit.metadata import MetadataError
from transferkit.serving.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_PIXELS, create_app
from transferkit.serving.model import ModelLoadError, OnnxClassifier

__all__ = ["serve", "serve_config", "main"]

log = logging.getLogger("transferkit.serving.server")  # not "__main__" under python -m


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    name: str | None = None,
    top_k: int = 5,
    intra_op_threads: int = 0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    eager: bool = True,
    log_level: str = "info",
    graceful_timeout_s: float = 10.0,
) -> None:
    """Serve one ONNX classifier over HTTP until SIGINT/SIGTERM (blocking).

    Args:
        model_path: the ``.onnx`` file exported by ``transferkit export``.
        host: bind address (loopback by default; ``0.0.0.0`` exposes it).
        port: TCP port.
        name: model name in responses (default: the file stem).
        top_k: default number of predictions per image.
        intra_op_threads: ONNX Runtime intra-op threads (0 = automatic, capped at the CPUs).
        max_body_bytes: request bodies above this get 413.
        max_image_pixels: images above this many pixels get 422.
        eager: load (and warm) the model before binding the port, so a bad file fails here; when
            False the server starts at once and ``/v2/health/ready`` answers 503 until loaded.
        log_level: uvicorn's log level.
        graceful_timeout_s: how long in-flight requests may finish after a shutdown signal.

    Raises:
        ModelLoadError: (eager) the file is missing, unloadable, or disagrees with its metadata.
        MetadataError: (eager) the file carries no transferkit metadata.
    """
    model: Path | OnnxClassifier = Path(model_path)
    if eager:
        model = OnnxClassifier(model_path, name=name, intra_op_threads=intra_op_threads)
    app = create_app(
        model, name=name, top_k=top_k, max_body_bytes=max_body_bytes, max_image_pixels=max_image_pixels,
        intra_op_threads=intra_op_threads,
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_timeout_s
    )
    log.info("serving %s at %s/v1/predict (Ctrl+C to stop)", model_path, _url(host, port))
    uvicorn.Server(config).run()


def serve_config(cfg: ServeConfig) -> None:
    """:func:`serve` from a validated :class:`~transferkit.config.ServeConfig`."""
    serve(
        cfg.model, cfg.host, cfg.port, name=cfg.name, top_k=cfg.top_k,
        intra_op_threads=cfg.intra_op_threads, max_body_bytes=int(cfg.max_body_mb * 1024 * 1024),
        max_image_pixels=cfg.max_image_pixels,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m transferkit.serving.server", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="the .onnx file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default=None)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = automatic)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS)
    p.add_argument("--lazy", action="store_true", help="bind first, load the model in the background")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (2 when the model cannot be loaded)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        serve(
            args.model, args.host, args.port, name=args.name, top_k=args.top_k,
            intra_op_threads=args.threads, max_body_bytes=args.max_body_bytes,
            max_image_pixels=args.max_image_pixels, eager=not args.lazy, log_level=args.log_level,
        )
    except (ModelLoadError, MetadataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
