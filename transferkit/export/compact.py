"""``transferkit export RUN --quantize ...``: the checked fp32 export, then the compact file.

The fp32 export (:func:`transferkit.export.onnx_export.export_onnx`, checked against PyTorch) is
written to a temporary folder; from it, INT8 (:mod:`transferkit.export.quantize`: calibrated on the
run's training split, gated on its test split) or FP16 (:mod:`transferkit.export.fp16`) is written
at the requested output, with ``<output>.quantization.json`` beside it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferkit.config import ExportConfig
from transferkit.data.folder import Sample
from transferkit.errors import UsageError

__all__ = ["export_compact", "run_splits"]


def run_splits(run: str | Path) -> dict[str, list[Sample]]:
    """The run's ``splits.json`` as ``{"train"|"val"|"test": [(path, class index), ...]}``, only
    the images that still exist.

    Args:
        run: a run folder, or the ``model.pt`` inside one.

    Raises:
        UsageError: the run has no ``splits.json``.
    """
    folder = Path(run)
    folder = folder if folder.is_dir() else folder.parent
    path = folder / "splits.json"
    if not path.is_file():
        raise UsageError(
            f"{folder} has no splits.json, so there are no training images to calibrate on and no "
            "test images to gate on; quantize a run folder written by transferkit"
        )
    from transferkit.data.folder import Splits

    splits = Splits.from_json(path.read_text())
    return {
        split: [(p, y) for p, y in getattr(splits, split) if Path(p).is_file()]
        for split in ("train", "val", "test")
    }


def export_compact(
    cfg: ExportConfig, images: Sequence[str] | None = None, threads: int = 0
) -> dict[str, Any]:
    """Export ``cfg.run`` to fp32 (checked), then write the INT8 or FP16 file at ``cfg.output``.

    Args:
        cfg: as for :func:`~transferkit.export.onnx_export.export_onnx`, with
            ``cfg.quantization.quantize`` other than ``none``.
        images: images for the fp32-vs-PyTorch check (default: the run's test split).
        threads: ORT intra-op threads for the INT8 measurements (0 = automatic).

    Returns:
        The quantization report (:func:`~transferkit.export.quantize.quantize_model` or
        :func:`~transferkit.export.fp16.convert_fp16`), plus ``fp32_export`` (the fp32 check).

    Raises:
        UsageError: ``quantize`` is ``none``, or the run lacks the images needed.
        QuantizationRefused: no INT8 variant passed the gate (nothing written at ``cfg.output``).
        ExportValidationError / FP16ValidationError: a check failed.
    """
    from dataclasses import asdict

    from transferkit.export.onnx_export import export_onnx

    q = cfg.quantization
    if q.quantize == "none":
        raise UsageError("export_compact needs quantization.quantize other than none")
    if q.quantize == "fp16":
        from transferkit.export.fp16 import require_gpu

        require_gpu(q.force)  # before the fp32 export, not after it
    splits = run_splits(cfg.run)
    test = splits["test"] or splits["val"]
    with tempfile.TemporaryDirectory(prefix="transferkit-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        checked = export_onnx(cfg.model_copy(update={"output": str(fp32)}), images)
        if q.quantize == "fp16":
            from transferkit.export.fp16 import convert_fp16

            paths = [p for p, _ in test][: cfg.validation_images]
            report = convert_fp16(fp32, cfg.output, paths, force=q.force)
        else:
            from transferkit.export.quantize import quantize_model

            if not splits["train"] or not test:
                raise UsageError(
                    f"{cfg.run}: INT8 needs training images to calibrate on and test (or val) "
                    "images to gate on; its splits.json lists none that exist"
                )
            calib = [p for p, _ in splits["train"]]
            report = quantize_model(fp32, cfg.output, calib, test, q, threads)
    from transferkit.export.quantize import report_path

    report["fp32_export"] = {k: v for k, v in asdict(checked).items() if k != "onnx_path"}
    if "fp32" in report:  # the checked fp32 file lived in a temporary folder, now gone
        report["fp32"]["onnx"] = None
    report_path(cfg.output).write_text(json.dumps(report, indent=2) + "\n")
    return report
