"""``transferkit export``: a run to one checked ONNX file: fp32, INT8 (gated) or FP16."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from transferkit.cli.common import app, fail

#: Exit code of ``--quantize`` when no INT8 variant passes the gate (nothing written).
EXIT_REFUSED = 3


def _image_paths(images: Path | None) -> list[str] | None:
    if images is None:
        return None
    from transferkit.imaging import IMAGE_EXTENSIONS

    if not images.is_dir():
        fail(f"--images {images}: not a folder")
    return [str(p) for p in sorted(images.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run folder (or its model.pt)."),
    output: Path = typer.Option(
        Path("model.onnx"), "--output", "-o", help="The .onnx file to write."
    ),
    opset: int = typer.Option(18, help="ONNX opset (>= 18 with the dynamo exporter)."),
    atol: float = typer.Option(1e-4, help="Max allowed |logit difference| vs PyTorch."),
    images: Path | None = typer.Option(
        None, help="Folder of images to validate on (default: the run's test split)."
    ),
    validation_images: int = typer.Option(512, help="How many images to compare."),
    tta: str = typer.Option(
        "none",
        help="Test-time augmentation in the graph: none, hflip (2 views) or d4 (8: rotations "
        "and flips); logits averaged, one forward pass per view.",
    ),
    quantize: str = typer.Option(
        "none",
        help="none; auto (every INT8 variant measured here, the fastest that passes the gate "
        "ships); one INT8 variant: qdq, qdq_reduce_range, qoperator, qoperator_reduce_range; or "
        "fp16 (for GPUs). The checked fp32 export is its starting point.",
    ),
    calibration_images: int = typer.Option(200, help="Training images calibrating INT8."),
    calibrate_method: str = typer.Option("minmax", help="minmax, entropy or percentile."),
    max_accuracy_drop: float = typer.Option(
        0.01, help="Gate: INT8 test accuracy >= fp32's minus this (0.01 = 1 point)."
    ),
    max_latency_ratio: float = typer.Option(
        0.67, help="Gate: INT8 batch-32 p50 latency <= this x fp32's."
    ),
    force: bool = typer.Option(
        False, help="Ship the fastest INT8 variant whatever the gate says (fp16: even on a CPU)."
    ),
    latency_runs: int = typer.Option(
        50, help="Timed runs per model at batch 1; batch 32, the gate's, gets a fifth (>= 10)."
    ),
    threads: int = typer.Option(0, help="ONNX Runtime threads for the gate (0 = automatic)."),
    embed_preprocessing: bool = typer.Option(
        False,
        "--embed-preprocessing",
        help="Write a file that takes the decoded image (uint8 [N, H, W, C], any H and W) and "
        "answers probabilities and class_index: resize, scaling and normalisation in the graph.",
    ),
) -> None:
    """Export a run to ONNX and validate it against PyTorch (fails when any check fails);
    optionally quantize it (exit code 3 when no INT8 variant passes the gate) and put the
    preprocessing inside the graph."""
    cfg = _config(dict(locals()))
    paths = _image_paths(images)
    if embed_preprocessing:
        _embedded(cfg, paths, threads)
    elif cfg.quantization.quantize == "none":
        _say_fp32(_call(cfg, paths, threads), cfg)
    else:
        _say_compact(_call(cfg, paths, threads), cfg)


_QUANTIZATION = (
    "quantize", "calibration_images", "calibrate_method", "max_accuracy_drop",
    "max_latency_ratio", "force", "latency_runs",
)  # fmt: skip
_EXPORT = ("opset", "atol", "validation_images", "tta")


def _config(options: dict[str, Any]):
    """The :class:`~transferkit.config.ExportConfig` of the command's options (exit 2 when
    invalid, naming the field and the allowed values)."""
    from transferkit.config import ConfigError, ExportConfig, validate

    values = {
        "run": str(options["run"]),
        "output": str(options["output"]),
        **{k: options[k] for k in _EXPORT},
        "quantization": {k: options[k] for k in _QUANTIZATION},
    }
    try:
        return validate(ExportConfig, values, source="command line")
    except ConfigError as exc:
        fail(str(exc))


def _call(cfg, paths, threads: int) -> Any:
    """Run the export; each kind of failure becomes one message and its exit code."""
    from transferkit.errors import TransferkitError
    from transferkit.export.fp16 import FP16ValidationError
    from transferkit.export.onnx_export import ExportValidationError, export_onnx
    from transferkit.export.quantize import QuantizationRefused
    from transferkit.models.portable import PortableModelError

    try:
        if cfg.quantization.quantize == "none":
            return export_onnx(cfg, images=paths)
        from transferkit.export.compact import export_compact

        return export_compact(cfg, images=paths, threads=threads)
    except QuantizationRefused as exc:
        _table(exc.report)
        fail(str(exc), code=EXIT_REFUSED)
    except (ExportValidationError, FP16ValidationError) as exc:
        fail(str(exc), code=1)
    except (PortableModelError, TransferkitError, FileNotFoundError) as exc:
        fail(str(exc))


def _embedded(cfg, paths, threads: int) -> None:
    """Export (and quantize) to a temporary file, then write ``cfg.output`` with the
    preprocessing inside the graph, validated against the numpy path."""
    import shutil
    import tempfile

    from transferkit.errors import TransferkitError
    from transferkit.export.embed import EmbedValidationError, embed_preprocessing
    from transferkit.export.quantize import report_path

    final = Path(cfg.output)
    with tempfile.TemporaryDirectory(prefix="transferkit-embed-") as tmp:
        inner = cfg.model_copy(update={"output": str(Path(tmp) / final.name)})
        try:
            base = _call(inner, paths, threads)
        except typer.Exit:  # refused or failed: keep the figures beside the requested output
            if report_path(inner.output).is_file():
                shutil.copyfile(report_path(inner.output), report_path(final))
                typer.echo(f"figures: {report_path(final)}", err=True)
            raise
        try:
            r = embed_preprocessing(inner.output, final, validate_on=paths)
        except EmbedValidationError as exc:
            fail(str(exc), code=1)
        except TransferkitError as exc:
            fail(str(exc))
        if report_path(inner.output).is_file():
            shutil.copyfile(report_path(inner.output), report_path(final))
    kind = "fp32" if cfg.quantization.quantize == "none" else _kind_of(base)
    typer.echo(
        f"exported {final} ({kind}, {r['file_bytes'] / 1e6:.1f} MB) with the preprocessing in the "
        "graph: input uint8 [N, H, W, C] (any H and W), outputs probabilities [N, K] and "
        f"class_index [N]\nagrees with the server's numpy path on {r['images_compared']} images: "
        f"top-1 {r['top1_agreement']:.2%}, max probability difference "
        f"{r['max_abs_prob_diff']:.2e}"
    )


def _kind_of(report: dict[str, Any]) -> str:
    return "fp16" if report.get("variant") == "fp16" else f"INT8 {report.get('shipped')}"


def _say_fp32(report, cfg) -> None:
    typer.echo(
        f"exported {report.onnx_path} ({report.file_bytes / 1e6:.1f} MB, opset {report.opset}"
        + (f", test-time augmentation {report.tta}" if report.tta != "none" else "")
        + ")\n"
        f"validated on {report.images_compared} images ({report.image_source}): max |logit diff| "
        f"{report.max_abs_diff:.2e} (<= {cfg.atol:g}), top-1 agreement {report.top1_agreement:.2%}, "
        f"batches {report.batch_sizes_checked}"
    )


def _say_compact(r: dict[str, Any], cfg) -> None:
    from transferkit.export.quantize import report_path

    if r.get("variant") == "fp16":
        typer.echo(
            f"exported {r['output']} (fp16, {r['file_mb']:.2f} MB; fp32 {r['fp32_file_mb']:.2f} "
            f"MB): max probability difference {r['max_abs_prob_diff']:.2e} and top-1 agreement "
            f"{r['top1_agreement']:.2%} vs fp32 on {r['images_compared']} images "
            f"({r['provider']})"
        )
    else:
        _table(r)
        typer.echo(
            f"exported {r['output']} (INT8 {r['shipped']}"
            + (", forced past the gate" if r["forced"] else ", passed the gate")
            + f"; calibrated on {r['calibration_images']} training images)"
        )
    typer.echo(f"figures: {report_path(cfg.output)}")


def _table(r: dict[str, Any]) -> None:
    """fp32 and every INT8 variant: accuracy, p50 latency at batch 1 and 32, size, verdict."""
    typer.echo(
        f"{'model':<24} {'test acc':>8} {'p50 b1 ms':>10} {'p50 b32 ms':>11} {'vs fp32':>8} "
        f"{'MB':>6}  gate"
    )
    rows = [("fp32", r["fp32"], None)] + [
        (n, f, r["verdicts"][n]) for n, f in r["variants"].items()
    ]
    for name, f, v in rows:
        ratio = f["p50_ms_b32"] / r["fp32"]["p50_ms_b32"]
        gate = "" if v is None else _verdict(v)
        typer.echo(
            f"{name:<24} {f['test_acc']:>8.4f} {f['p50_ms_b1']:>10.2f} {f['p50_ms_b32']:>11.2f} "
            f"{ratio:>7.2f}x {f['file_mb']:>6.2f}  {gate}"
        )


def _verdict(v: dict[str, Any]) -> str:
    if v["passed"]:
        return "passes"
    why = []
    if not v["accuracy_ok"]:
        why.append(f"accuracy -{v['accuracy_drop'] * 100:.1f} pt")
    if not v["latency_ok"]:
        why.append(f"latency {v['latency_ratio']:.2f}x")
    return "fails: " + ", ".join(why)
