"""Export a trained model to one self-contained ONNX file and prove it matches PyTorch.

Export uses ``torch.onnx.export`` (dynamo exporter) in eval mode with a symbolic batch dimension,
saved without external data. Validation (after optimum-onnx's ``_run_validation``, but a failure
*fails* the export): ONNX checker; input/output names; symbolic batch on input and output; the
class dimension; ONNX Runtime runs at batch 1 and batch N; max absolute logit difference against
PyTorch on real images (default <= 1e-4) and 100% top-1 agreement. All failures are collected
before :class:`ExportValidationError` is raised; the invalid file is removed.

The file carries :class:`transferkit.metadata.ModelMetadata` (class names, preprocessing,
architecture, source run, validation figures), so serving needs nothing else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.config import ExportConfig, Preprocessing
from transferkit.errors import TransferkitError, UsageError
from transferkit.imaging import load_image, preprocess
from transferkit.metadata import ModelMetadata
from transferkit.models import count_parameters
from transferkit.models.portable import load_portable
from transferkit.models.tta import TTAModel

__all__ = ["export_onnx", "ExportReport", "ExportValidationError", "validation_images_for"]

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportValidationError(TransferkitError, RuntimeError):
    """The exported ONNX file failed one or more checks (all listed in the message)."""

    def __init__(self, failures: list[str], report: dict[str, Any] | None = None):
        super().__init__("ONNX export failed validation:\n  - " + "\n  - ".join(failures))
        self.failures = failures
        self.report = report or {}

    def __reduce__(self):  # picklable across processes
        return (self.__class__, (self.failures, self.report))


@dataclass
class ExportReport:
    """Figures of one export (saved as ``<output>.export.json``)."""

    onnx_path: str
    source: str
    arch: str
    opset: int
    parameters: int
    tta: str = "none"
    file_bytes: int = 0
    images_compared: int = 0
    image_source: str = ""
    max_abs_diff: float = float("nan")
    top1_agreement: float = float("nan")
    batch_sizes_checked: list[int] = field(default_factory=list)
    export_seconds: float = 0.0
    passed: bool = False
    failures: list[str] = field(default_factory=list)


def validation_images_for(info: dict[str, Any], limit: int) -> tuple[list[str], str]:
    """Real images to compare on: the run's test split (else val), from its ``splits.json``."""
    splits_file = Path(info["path"]).parent / "splits.json"  # the run folder holding model.pt
    if not splits_file.is_file() and info.get("source"):  # model.pt copied elsewhere
        splits_file = Path(info["source"]) / "splits.json"
    if splits_file.is_file():
        d = json.loads(splits_file.read_text())
        for split in ("test", "val", "train"):
            paths = [p for p, _ in d.get(split, []) if Path(p).is_file()]
            if paths:
                return paths[:limit], f"{split} split of {splits_file.parent}"
    return [], ""


def _preprocessed(paths: Sequence[str], prep: Preprocessing) -> np.ndarray:
    return np.stack([preprocess(load_image(p), prep) for p in paths]).astype(np.float32)


def _torch_export(model: torch.nn.Module, prep: Preprocessing, path: Path, opset: int) -> None:
    example = (torch.randn(2, prep.channels, prep.input_size, prep.input_size),)
    program = torch.onnx.export(
        model,
        example,
        dynamo=True,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: "batch"},),
        external_data=False,
        verbose=False,
    )
    program.save(str(path), external_data=False)


def _structure_checks(path: Path, num_classes: int) -> list[str]:
    import onnx

    failures = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001
        failures.append(f"onnx.checker: {exc}")
    m = onnx.load(str(path), load_external_data=False)
    ins = [i.name for i in m.graph.input]
    outs = [o.name for o in m.graph.output]
    if ins != [INPUT_NAME]:
        failures.append(f"inputs are {ins}, expected [{INPUT_NAME!r}]")
    if outs != [OUTPUT_NAME]:
        failures.append(f"outputs are {outs}, expected [{OUTPUT_NAME!r}]")
    for kind, vi in (("input", m.graph.input), ("output", m.graph.output)):
        if not vi:
            continue
        dims = vi[0].type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            failures.append(f"{kind} dimension 0 is not symbolic (batch must be dynamic)")
    if m.graph.output:
        dims = m.graph.output[0].type.tensor_type.shape.dim
        if len(dims) != 2 or (dims[1].dim_value and dims[1].dim_value != num_classes):
            failures.append(f"output shape is not [batch, {num_classes}]")
    return failures


def _numeric_checks(
    model: torch.nn.Module,
    path: Path,
    x: np.ndarray,
    batch_size: int,
    atol: float,
    report: ExportReport,
) -> list[str]:
    import onnxruntime as ort

    failures = []
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    k = None
    for n in sorted({1, min(batch_size, len(x))}):
        out = sess.run([OUTPUT_NAME], {INPUT_NAME: x[:n]})[0]
        report.batch_sizes_checked.append(n)
        k = out.shape[1] if k is None else k
        if out.shape[0] != n:
            failures.append(f"batch {n}: ONNX Runtime returned {out.shape[0]} rows")
    diffs, agree, total = [], 0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            ref = model(torch.from_numpy(xb)).float().numpy()
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: xb})[0]
            diffs.append(float(np.abs(ref - got).max()))
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            total += len(xb)
    report.images_compared = total
    report.max_abs_diff = max(diffs)
    report.top1_agreement = agree / total
    if report.max_abs_diff > atol:
        failures.append(f"max abs logit difference {report.max_abs_diff:.3g} > {atol:g}")
    if agree != total:
        failures.append(
            f"top-1 agreement {agree}/{total} ({report.top1_agreement:.2%}), expected 100%"
        )
    return failures


def export_onnx(cfg: ExportConfig, images: Sequence[str] | None = None) -> ExportReport:
    """Export ``cfg.run`` (a run folder or ``model.pt``) to ``cfg.output`` and validate it.

    Args:
        cfg: source, output path, opset, tolerance, how many images to compare.
        images: image paths to compare on; default: the run's test split (else val).

    Returns:
        The :class:`ExportReport` (also written as ``<output>.export.json``).

    Raises:
        PortableModelError: ``cfg.run`` holds no model.
        ExportValidationError: any check failed (the output file is removed).
        ValueError: no real images are available to validate on.
    """
    built, info = load_portable(cfg.run)
    model, prep = built.model.eval(), built.preprocessing
    if cfg.tta != "none":  # the averaged views are part of the graph, checked like the rest
        model = TTAModel(model, cfg.tta).eval()
    out = Path(cfg.output).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if images:
        paths, source = list(images)[: cfg.validation_images], "given images"
    else:
        paths, source = validation_images_for(info, cfg.validation_images)
    if len(paths) < 2:
        raise UsageError(
            f"no real images to validate the export of {cfg.run} on (its splits.json lists none "
            "that exist); pass image paths (`transferkit export RUN --images DIR`)"
        )
    report = ExportReport(
        str(out),
        info["path"],
        info["arch"],
        cfg.opset,
        count_parameters(model),
        tta=cfg.tta,
        image_source=source,
    )
    t0 = time.perf_counter()
    _torch_export(model, prep, out, cfg.opset)
    report.export_seconds = time.perf_counter() - t0
    x = _preprocessed(paths, prep)
    failures = _structure_checks(out, info["num_classes"])
    if not failures:
        failures += _numeric_checks(model, out, x, cfg.batch_size, cfg.atol, report)
    report.failures, report.passed = failures, not failures
    report_path = out.with_suffix(".export.json")
    report_path.write_text(json.dumps(asdict(report), indent=2))
    if failures:
        out.unlink(missing_ok=True)
        raise ExportValidationError(failures, asdict(report))
    _write_metadata(out, info, prep, report)
    report.file_bytes = out.stat().st_size
    report_path.write_text(json.dumps(asdict(report), indent=2))
    return report


def _write_metadata(
    path: Path, info: dict[str, Any], prep: Preprocessing, report: ExportReport
) -> None:
    import onnx

    m = onnx.load(str(path))
    meta = ModelMetadata(
        class_names=list(info["class_names"]),
        preprocessing=prep,
        arch=info["arch"],
        source_run=str(info.get("source") or info["path"]),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        extra={
            "width_mult": info.get("width_mult", 1.0),
            "parameters": report.parameters,
            "tta": report.tta,
            "opset": report.opset,
            "max_abs_diff": report.max_abs_diff,
            "top1_agreement": report.top1_agreement,
            "images_compared": report.images_compared,
            "metrics": info.get("metrics", {}),
        },
    )
    del m.metadata_props[:]
    for k, v in meta.to_props().items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    m.doc_string = f"transferkit export of {info['arch']} ({len(info['class_names'])} classes)"
    onnx.save(m, str(path), save_as_external_data=False)
