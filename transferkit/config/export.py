"""``transferkit export``: a run to one ONNX file, checked; and the ONNX Runtime evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from transferkit.config.base import Strict

__all__ = ["TTA", "ExportSettings", "ExportConfig", "PipelineExport", "EvaluateConfig"]

#: Test-time augmentation compiled into the exported graph (``transferkit.models.tta``): ``none``,
#: ``hflip`` (2 views) or ``d4`` (the square's 8 symmetries; one forward pass per view).
TTA = Literal["none", "hflip", "d4"]


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
    """

    teacher_tta: TTA = "none"
    student_tta: TTA = "none"


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
    """

    run: str
    output: str = "model.onnx"
    batch_size: int = Field(16, ge=2, le=4096)
    tta: TTA = "none"


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
