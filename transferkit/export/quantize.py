"""INT8 static quantization of an exported transferkit ONNX file with ONNX Runtime's own tools,
and the gate that decides whether a variant ships.

Method (ONNX Runtime, "Quantize ONNX models",
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
``quant_pre_process`` (symbolic shape inference and ORT's graph optimisation, which folds batch
norms into convolutions), then ``quantize_static`` calibrated on real training images of the run
(a :class:`ImageCalibrationReader`, the images preprocessed as the file's metadata says), uint8
activations and int8 weights (U8S8), per-channel weights. The variants differ in format (QDQ:
QuantizeLinear/DequantizeLinear pairs that ORT fuses into integer kernels; QOperator: QLinearConv
and friends) and in ``reduce_range`` (7-bit weights, which avoid the saturation of U8S8 products
on x86 CPUs without VNNI). Which is fastest depends on the CPU, and on some CPUs and models
(depthwise-heavy MobileNets) none is faster than fp32, so :func:`quantize_model` measures every
candidate here and "not faster" is a possible, reported outcome.

The gate: a variant ships only if its test accuracy is at least fp32's minus
``max_accuracy_drop`` and its batch-32 p50 latency at most ``max_latency_ratio`` x fp32's;
among those, the fastest at batch 32. Nothing passes: :class:`QuantizationRefused` (the CLI's
exit code 3) and no file at the output path, unless ``force``. Either way the figures are written
to ``<output>.quantization.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from transferkit.config import QuantizeSettings
from transferkit.data.folder import Sample
from transferkit.errors import TransferkitError
from transferkit.imaging import load_image, preprocess
from transferkit.metadata import ModelMetadata

__all__ = [
    "INT8_VARIANTS",
    "ImageCalibrationReader",
    "QuantizationRefused",
    "calibration_inputs",
    "carry_metadata",
    "judge",
    "quantize_int8",
    "quantize_model",
    "read_props",
    "report_path",
]

log = logging.getLogger(__name__)

#: name -> (``QuantFormat`` member name, ``reduce_range``); all U8S8, per-channel weights.
INT8_VARIANTS: dict[str, tuple[str, bool]] = {
    "qdq": ("QDQ", False),
    "qdq_reduce_range": ("QDQ", True),
    "qoperator": ("QOperator", False),
    "qoperator_reduce_range": ("QOperator", True),
}


class QuantizationRefused(TransferkitError, RuntimeError):
    """No variant passed the gate (and ``force`` was not given): nothing was written at the output
    path. ``report`` holds the figures (also in ``<output>.quantization.json``)."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def report_path(output: str | Path) -> Path:
    """``<output>.quantization.json``: the figures of every candidate and the gate's decision."""
    return Path(str(output) + ".quantization.json")


def calibration_inputs(paths: Sequence[str], meta: ModelMetadata, limit: int) -> np.ndarray:
    """The calibration batch: ``limit`` images spread evenly over ``paths`` (every class of a
    sorted split is represented), preprocessed as the server does.

    Returns:
        float32 ``[min(limit, len(paths)), C, H, W]``.

    Raises:
        TransferkitError: no path given, or none of them decodes.
    """
    if not paths:
        raise TransferkitError("no training images to calibrate the INT8 quantization on")
    step = max(1, len(paths) / limit)
    chosen = [paths[int(i * step)] for i in range(min(limit, len(paths)))]
    arrays = []
    for p in chosen:
        try:
            arrays.append(preprocess(load_image(p), meta.preprocessing))
        except TransferkitError as exc:
            log.warning("calibration: skipped %s (%s)", p, exc)
    if not arrays:
        raise TransferkitError(f"none of the {len(chosen)} calibration images could be read")
    return np.stack(arrays).astype(np.float32)


class ImageCalibrationReader(CalibrationDataReader):
    """ONNX Runtime's ``CalibrationDataReader`` over preprocessed images, ``batch_size`` at a time.

    Args:
        input_name: the graph input fed.
        images: float32 ``[N, C, H, W]``.
        batch_size: images per calibration run.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 8):
        self.input_name, self.images, self.batch_size = input_name, images, batch_size
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next ``{input_name: float32 [b, C, H, W]}``, ``None`` at the end."""
        if self._next >= len(self.images):
            return None
        batch = self.images[self._next : self._next + self.batch_size]
        self._next += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._next = 0


def quantize_int8(
    prepared: Path, output: Path, variant: str, images: np.ndarray, input_name: str, method: str
) -> None:
    """One INT8 variant of ``prepared`` (a ``quant_pre_process`` output) written to ``output``.

    Args:
        variant: a key of :data:`INT8_VARIANTS`.
        images: float32 ``[N, C, H, W]`` calibration inputs.
        method: ``minmax``, ``entropy`` or ``percentile`` (ORT's ``CalibrationMethod``).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fmt, reduce_range = INT8_VARIANTS[variant]
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(prepared),
        str(output),
        ImageCalibrationReader(input_name, images),
        quant_format=getattr(QuantFormat, fmt),
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
    )


def carry_metadata(source: Path, target: Path, extra: dict[str, Any]) -> None:
    """Copy ``source``'s transferkit metadata into ``target`` (in place), with ``extra`` merged
    into its ``transferkit.extra`` (quantization tools drop or keep ``metadata_props``
    unpredictably, so it is rewritten whole)."""
    import onnx

    src = onnx.load(str(source), load_external_data=False)
    props = {p.key: p.value for p in src.metadata_props}
    meta = ModelMetadata.from_props(props)
    meta.extra = {**meta.extra, **extra}
    model = onnx.load(str(target))
    del model.metadata_props[:]
    for k, v in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.doc_string = src.doc_string
    onnx.save(model, str(target), save_as_external_data=False)


def _figures(path: Path, samples: Sequence[Sample], runs: int, threads: int) -> dict[str, Any]:
    from transferkit.export.scoring import onnx_figures

    f = onnx_figures(path, samples, threads, (1, 32), runs)
    return {
        "test_acc": f["test_acc"],
        "balanced_accuracy": f["balanced_accuracy"],
        "test_images": f["test_images"],
        "p50_ms_b1": f["latency_ms"]["1"]["p50"],
        "p99_ms_b1": f["latency_ms"]["1"]["p99"],
        "p50_ms_b32": f["latency_ms"]["32"]["p50"],
        "p99_ms_b32": f["latency_ms"]["32"]["p99"],
        "file_mb": f["file_mb"],
        "threads": f["threads"],
    }


def judge(
    fp32: dict[str, Any], candidates: dict[str, dict[str, Any]], settings: QuantizeSettings
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Apply the gate to measured candidates.

    Args:
        fp32: the fp32 file's figures (``test_acc``, ``p50_ms_b32``).
        candidates: variant name -> the same figures.
        settings: ``max_accuracy_drop``, ``max_latency_ratio`` and ``force``.

    Returns:
        ``(the variant that ships or None, {variant: {"accuracy_ok", "latency_ok", "passed",
        "latency_ratio", "accuracy_drop"}})``; the shipped one is the fastest at batch 32 among
        those that pass, or among all with ``force``.
    """
    verdicts = {}
    for name, f in candidates.items():
        drop = fp32["test_acc"] - f["test_acc"]
        ratio = f["p50_ms_b32"] / fp32["p50_ms_b32"]
        acc_ok = drop <= settings.max_accuracy_drop + 1e-12
        lat_ok = ratio <= settings.max_latency_ratio
        verdicts[name] = {
            "accuracy_drop": drop,
            "latency_ratio": ratio,
            "accuracy_ok": acc_ok,
            "latency_ok": lat_ok,
            "passed": acc_ok and lat_ok,
        }
    pool = [n for n in candidates if verdicts[n]["passed"]] or (
        list(candidates) if settings.force else []
    )
    chosen = min(pool, key=lambda n: candidates[n]["p50_ms_b32"]) if pool else None
    return chosen, verdicts


def _variants_for(settings: QuantizeSettings) -> list[str]:
    return list(INT8_VARIANTS) if settings.quantize == "auto" else [settings.quantize]


def quantize_model(
    fp32_path: str | Path,
    output: str | Path,
    calibration_paths: Sequence[str],
    test_samples: Sequence[Sample],
    settings: QuantizeSettings,
    threads: int = 0,
) -> dict[str, Any]:
    """Quantize ``fp32_path`` to INT8, measure each variant against fp32 and ship one at ``output``.

    Args:
        fp32_path: a checked transferkit fp32 ONNX file (float32 ``[N, C, H, W]`` input).
        output: where the shipped INT8 file goes (with ``<output>.quantization.json``).
        calibration_paths: training images of the run (``settings.calibration_images`` used).
        test_samples: ``(path, class index)`` scored for the gate's accuracy.
        settings: the variants (``quantize``: ``auto`` or one name) and the gate.
        threads: ORT intra-op threads for the measurements (0 = the machine's CPUs, at most 4).

    Returns:
        The report: ``fp32`` and per-variant figures (test accuracy, p50/p99 ms at batch 1 and
        32, MB), ``verdicts``, ``shipped`` (variant name or ``None``), ``forced``, ``gate``.

    Raises:
        QuantizationRefused: no variant passed the gate and ``settings.force`` is false.
        TransferkitError: no calibration image readable, or no test sample.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, output = Path(fp32_path), Path(output)
    meta = ModelMetadata.from_props(read_props(fp32_path))
    images = calibration_inputs(list(calibration_paths), meta, settings.calibration_images)
    runs = settings.latency_runs
    report: dict[str, Any] = {
        "fp32": {"onnx": str(fp32_path), **_figures(fp32_path, test_samples, runs, threads)},
        "calibration_images": len(images),
        "calibrate_method": settings.calibrate_method,
        "gate": {
            "max_accuracy_drop": settings.max_accuracy_drop,
            "max_latency_ratio": settings.max_latency_ratio,
        },
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="transferkit-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        for name in _variants_for(settings):
            path = Path(tmp) / f"{name}.onnx"
            quantize_int8(prepared, path, name, images, meta.input_name, settings.calibrate_method)
            carry_metadata(fp32_path, path, {"quantization": {"variant": name}})
            report["variants"][name] = _figures(path, test_samples, runs, threads)
            log.info("int8 %s: %s", name, _line(report["variants"][name], report["fp32"]))
        chosen, report["verdicts"] = judge(report["fp32"], report["variants"], settings)
        report["shipped"], report["forced"] = (
            chosen,
            bool(chosen and not report["verdicts"][chosen]["passed"]),
        )
        _ship(Path(tmp) / f"{chosen}.onnx" if chosen else None, output, report, fp32_path)
    return report


def read_props(path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` as a dict (weights not loaded)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _line(f: dict[str, Any], fp32: dict[str, Any]) -> str:
    return (
        f"test accuracy {f['test_acc']:.4f} (fp32 {fp32['test_acc']:.4f}), batch-32 p50 "
        f"{f['p50_ms_b32']:.1f} ms ({f['p50_ms_b32'] / fp32['p50_ms_b32']:.2f}x fp32), "
        f"{f['file_mb']:.2f} MB"
    )


def _ship(chosen: Path | None, output: Path, report: dict[str, Any], fp32_path: Path) -> None:
    """Write the chosen file (its metadata carrying the gate's figures) and the JSON report, or
    refuse; an older file at ``output`` is removed either way, so what is there is this run's."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    if chosen is not None:
        shutil.copyfile(chosen, output)
        name = report["shipped"]
        summary = {
            "variant": name,
            "forced": report["forced"],
            "calibration_images": report["calibration_images"],
            "fp32": {k: report["fp32"][k] for k in ("test_acc", "p50_ms_b32")},
            "int8": {k: report["variants"][name][k] for k in ("test_acc", "p50_ms_b32")},
            "gate": report["gate"],
        }
        carry_metadata(fp32_path, output, {"quantization": summary})
        report["output"] = str(output)
    report_path(output).write_text(json.dumps(report, indent=2) + "\n")
    if chosen is None:
        best = min(report["variants"], key=lambda n: report["variants"][n]["p50_ms_b32"])
        raise QuantizationRefused(
            f"no INT8 variant passed the gate (accuracy >= fp32 - "
            f"{report['gate']['max_accuracy_drop']:g}, batch-32 latency <= "
            f"{report['gate']['max_latency_ratio']:g}x fp32); fastest was {best}: "
            f"{_line(report['variants'][best], report['fp32'])}. Nothing written at {output}; "
            f"figures in {report_path(output)}; --force ships the fastest anyway",
            report,
        )
