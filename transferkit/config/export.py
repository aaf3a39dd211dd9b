"""``transferkit export``: a run to one ONNX file, checked; and the ONNX Runtime evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from transferkit.config.base import Strict

__all__ = [
    "TTA",
    "Quantize",
    "QuantizeSettings",
    "ExportSettings",
    "ExportConfig",
    "PipelineExport",
    "EvaluateConfig",
]

#: Test-time augmentation compiled into the exported graph (``transferkit.models.tta``): ``none``,
#: ``hflip`` (2 views) or ``d4`` (the square's 8 symmetries; one forward pass per view).
TTA = Literal["none", "hflip", "d4"]


#: What ``--quantize`` asks for (:mod:`transferkit.export.quantize`): ``none`` (fp32 only),
#: ``auto`` (every INT8 variant measured here, the fastest that passes the gate ships), one INT8
#: variant by name (``qdq``, ``qdq_reduce_range``, ``qoperator``, ``qoperator_reduce_range``: all
#: static, U8S8, per-channel weights), or ``fp16`` (weights and compute in float16 for GPUs,
#: inputs and outputs float32).
Quantize = Literal[
    "none", "auto", "qdq", "qdq_reduce_range", "qoperator", "qoperator_reduce_range", "fp16"
]


class QuantizeSettings(Strict):
    """How a model is quantized and when the result may ship (the gate).

    Attributes:
        quantize: see :data:`Quantize`.
        calibration_images: training images of the run fed to the INT8 calibration (ONNX
            Runtime's ``CalibrationDataReader``), preprocessed as the model's metadata says.
        calibrate_method: ONNX Runtime's ``CalibrationMethod``: ``minmax``, ``entropy`` or
            ``percentile``.
        max_accuracy_drop: the gate: a variant ships only if its test accuracy is at least
            fp32's minus this (a fraction: 0.01 = 1 point).
        max_latency_ratio: the gate: ... and its batch-32 p50 latency is at most this times
            fp32's.
        force: ship the fastest variant whatever the gate says (the figures are still written);
            for ``fp16``, convert even where no CUDA execution provider is available.
        latency_runs: timed runs per model at batch 1 (batch 32 gets a fifth, at least 10).
    """

    quantize: Quantize = "none"
    calibration_images: int = Field(200, ge=1, le=100000)
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0)
    max_latency_ratio: float = Field(0.67, gt=0.0, le=100.0)
    force: bool = False
    latency_runs: int = Field(50, ge=5, le=100000)


class ExportSettings(Strict):
    """How an export is made and checked: the pipeline's ``export:`` section, and the part of
    :class:`ExportConfig` that is not about which files.

    Attributes:
        opset: ONNX opset (torch's dynamo exporter supports >= 18).
        atol: maximum allowed absolute logit difference vs PyTorch.
        validation_images: number of real images compared.
    """

    opset: int = Field(18, ge=18, le=23)
    atol: float = Field(1e-4, gt=0.0)
    validation_images: int = Field(512, ge=2)


class PipelineExport(ExportSettings):
    """The pipeline's ``export:`` section: :class:`ExportSettings` for every model, and the
    test-time augmentation of each.

    Attributes:
        teacher_tta: views averaged inside the teacher's ONNX graph (see :data:`TTA`).
        student_tta: the same for the distilled and the label-only student.
        quantization: an optional quantization stage after the fp32 export, for the teacher and
            the distilled student (``quantization.quantize: none`` skips it); the report puts
            each quantized file beside its fp32 one.
    """

    teacher_tta: TTA = "none"
    student_tta: TTA = "none"
    quantization: QuantizeSettings = Field(default_factory=QuantizeSettings)


class ExportConfig(ExportSettings):
    """``transferkit export``: a run folder (or ``model.pt``) to one self-contained ONNX file,
    checked as :class:`ExportSettings` says.

    Attributes:
        run: the run folder or ``model.pt``.
        output: the ONNX file written.
        batch_size: batch used for the batch-N check.
        tta: test-time augmentation compiled into the graph (see :data:`TTA`); the exported
            model's output is the mean of the views' logits, checked against PyTorch like any
            export, and the mode is written into the file's metadata.
        quantization: with ``quantization.quantize`` other than ``none``, ``output`` is the
            quantized file (the checked fp32 export it starts from is not kept).
    """

    run: str
    output: str = "model.onnx"
    batch_size: int = Field(16, ge=2, le=4096)
    tta: TTA = "none"
    quantization: QuantizeSettings = Field(default_factory=QuantizeSettings)


class EvaluateConfig(Strict):
    """ONNX Runtime evaluation of the exported files on the test split.

    Attributes:
        threads: ORT intra-op threads (0 = the machine's CPUs, at most 4).
        latency_batches: batch sizes whose latency is measured (p50/p99 over ``latency_runs``).
        latency_runs: timed runs per batch size, after 10 warm-up runs.
    """

    threads: int = Field(0, ge=0, le=1024)
    latency_batches: list[int] = Field(default_factory=lambda: [1, 32])
    latency_runs: int = Field(50, ge=5, le=100000)

    @field_validator("latency_batches")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError(f"a non-empty list of batch sizes >= 1 is needed; got {v}")
        return v
