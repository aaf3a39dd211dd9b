"""``transferkit serve`` (ONNX models behind HTTP) and ``transferkit predict`` (in-process)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from transferkit.cli.common import app, fail, run

Opt = typer.Option

#: ``serve`` options whose :class:`~transferkit.config.ServeConfig` field has another name.
_RENAMED = {
    "threads": "intra_op_threads",
    "graceful_timeout": "graceful_timeout_s",
    "body_timeout": "body_timeout_s",
}


@app.command()
def serve(
    ctx: typer.Context,
    models: list[Path] | None = typer.Argument(
        None,
        help="One or more .onnx files written by `transferkit export` (each served as its stem).",
    ),
    repository: Path | None = Opt(
        None, help="Triton-style model repository REPO/<name>/<version>/model.onnx."
    ),
    host: str = Opt("127.0.0.1", help="Bind address (0.0.0.0 exposes it)."),
    port: int = Opt(8000),
    name: str | None = Opt(None, help="Model name when one file is given (default: its stem)."),
    top_k: int = Opt(5, help="Predictions returned per image by /v1/predict."),
    threads: int = Opt(0, help="ONNX Runtime intra-op threads per model (0 = automatic)."),
    max_batch_size: int = Opt(8, help="Dynamic batching: images per ORT run (1 = off)."),
    max_queue_delay_ms: float = Opt(2.0, help="Longest wait for a batch to fill."),
    max_queue_size: int = Opt(256, help="Queued requests per model before 503 + Retry-After."),
    max_body_mb: float = Opt(20.0, help="Larger request bodies get 413."),
    body_timeout: float = Opt(30.0, help="Seconds a request body may take to arrive (else 408)."),
    max_image_pixels: int = Opt(50_000_000, help="Images with more pixels get 422."),
    api_key: str | None = Opt(
        None,
        envvar="TRANSFERKIT_API_KEY",
        show_envvar=True,
        help="Require 'Authorization: Bearer KEY' (or X-API-Key) on every route but health.",
    ),
    graceful_timeout: float = Opt(10.0, help="Seconds in-flight requests get on shutdown."),
    access_log: bool = Opt(False, help="uvicorn's per-request access log."),
    ray: bool = Opt(False, "--ray", help="Deploy on Ray Serve (needs the `serve` extra)."),
    replicas: int = Opt(1, help="Ray Serve replicas (with --ray)."),
    replica_cpus: float = Opt(
        1.0, help="CPUs per Ray Serve replica = its ORT threads (with --ray)."
    ),
) -> None:
    """Serve ONNX models over HTTP: Open Inference Protocol v2 (/v2/models/NAME/infer), POST
    /v1/predict, /metrics, /v2/health/*."""
    from transferkit.config import ConfigError, ServeConfig, validate

    settings = {_RENAMED.get(k, k): v for k, v in ctx.params.items()}
    settings["models"] = [str(m) for m in models or []]
    settings["repository"] = str(repository) if repository else None
    try:
        cfg = validate(ServeConfig, settings, "command line")
    except ConfigError as exc:
        fail(str(exc))
    for m in models or []:
        if not m.is_file():
            fail(f"MODEL {m}: file not found")
    if repository is not None and not repository.is_dir():
        fail(f"--repository {repository}: not a folder")
    import logging

    from transferkit.logs import detach_console

    detach_console()  # the server logs through the root logger, in uvicorn's format
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    from transferkit.serving.server import serve_config

    run(serve_config, cfg)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="An .onnx file written by `transferkit export`."),
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders."),
    top_k: int = Opt(1, help="Labels per image."),
    fmt: str = Opt("table", "--format", help="table or csv."),
) -> None:
    """Label images with an ONNX model (in-process, ONNX Runtime)."""
    if fmt not in ("table", "csv"):
        fail(f"--format {fmt!r}: allowed values are table, csv")
    if top_k < 1:
        fail("--top-k must be >= 1")
    if not model.is_file():
        fail(f"MODEL {model}: file not found")
    from transferkit.imaging import IMAGE_EXTENSIONS, ImageDecodeError
    from transferkit.serving.model import OnnxClassifier

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
        elif p.is_file():
            files.append(p)
        else:
            fail(f"{p}: no such file or folder")
    if not files:
        fail(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    clf = run(OnnxClassifier, str(model))
    rows = []
    for f in files:
        try:
            preds = clf.predict_image_bytes(f.read_bytes(), top_k=top_k)
            rows.append((str(f), preds, ""))
        except ImageDecodeError as exc:
            rows.append((str(f), [], str(exc)))
    _print_predictions(rows, top_k, fmt)
    if any(err for _, _, err in rows):
        raise typer.Exit(1)


def _print_predictions(rows, top_k: int, fmt: str) -> None:
    import csv

    if fmt == "csv":
        w = csv.writer(sys.stdout)
        header = (
            ["path"]
            + [h for i in range(1, top_k + 1) for h in (f"label_{i}", f"probability_{i}")]
            + ["error"]
        )
        w.writerow(header)
        for path, preds, err in rows:
            cells = [c for p in preds for c in (p["label"], f"{p['probability']:.6f}")]
            cells += [""] * (2 * top_k - len(cells))
            w.writerow([path, *cells, err])
        return
    width = max([len(r[0]) for r in rows] + [4])
    typer.echo(f"{'path':<{width}}  label  probability")
    for path, preds, err in rows:
        if err:
            typer.echo(f"{path:<{width}}  ERROR  {err}")
            continue
        typer.echo(
            f"{path:<{width}}  " + ", ".join(f"{p['label']} {p['probability']:.4f}" for p in preds)
        )
