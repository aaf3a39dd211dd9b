"""``transferkit pipeline``: one config for tune -> fine-tune -> distill -> export -> evaluate ->
report, composed of the stages' own sections."""

from __future__ import annotations

from pydantic import Field

from transferkit.config.base import Metric, Strict
from transferkit.config.data import DataConfig
from transferkit.config.distill import KDConfig
from transferkit.config.export import EvaluateConfig, PipelineExport
from transferkit.config.model import ModelConfig, StudentModel
from transferkit.config.training import OptimConfig, ScalingConf, StudentOptim
from transferkit.config.tune import StageTune

__all__ = [
    "PipelineTeacher",
    "PipelineStudent",
    "PublishedResult",
    "ReportConfig",
    "PipelineConfig",
]


class PipelineTeacher(Strict):
    """The teacher: optionally searched (``tune``), then fine-tuned with the best values found.

    Attributes:
        run: use this existing fine-tuned run folder instead (no teacher stages run).
    """

    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingConf = Field(default_factory=ScalingConf)
    tune: StageTune | None = None
    run: str | None = None


class PipelineStudent(Strict):
    """The student: optionally searched, then distilled from the teacher (fields as in
    :class:`DistillConfig`; partial ``model``/``optim`` sections fill in from the student
    defaults)."""

    model: StudentModel = Field(default_factory=StudentModel)
    optim: StudentOptim = Field(default_factory=StudentOptim)
    scaling: ScalingConf = Field(default_factory=ScalingConf)
    kd: KDConfig = Field(default_factory=KDConfig)
    unlabeled: str | None = None
    baseline: bool = False
    tune: StageTune | None = None
    #: The student's input side in pixels (default: ``data.image_size``, the teacher's). The
    #: teacher keeps its own preprocessing during distillation; a cut student with few stages
    #: sees thin defects better at a larger input.
    image_size: int | None = Field(None, ge=8, le=2048)


class PublishedResult(Strict):
    """A published figure the report puts beside the pipeline's own (same task, same metric).

    Attributes:
        name: what was measured (``"VGG-19, fine-tuned (GPU)"``).
        accuracy: in [0, 1].
        source: the citation.
        note: protocol details (split, resolution) a reader needs to compare fairly.
    """

    name: str
    accuracy: float = Field(ge=0.0, le=1.0)
    source: str = ""
    note: str = ""


class ReportConfig(Strict):
    """What the pipeline's report adds beyond its own measurements.

    Attributes:
        published: published results on the same task, shown beside the measured ones.
        positive_class: the class whose recall matters most (e.g. ``defective``); the report
            names it in the summary. ``None``: every class's recall is shown alike.
    """

    published: list[PublishedResult] = Field(default_factory=list)
    positive_class: str | None = None


class PipelineConfig(Strict):
    """``transferkit pipeline``: tune -> fine-tune the teacher -> (tune and) distill the student ->
    export both to ONNX -> evaluate both with ONNX Runtime -> report.

    Attributes:
        output: the pipeline folder (local, or a shared filesystem on a cluster); every stage
            writes into its own sub-folder.
        storage: where the search stages keep their Ray Tune experiments: a local folder or an
            ``s3://``/``gs://`` URI (default: inside ``output``). The fine-tune and distillation
            run folders stay under ``output``, which on a multi-node cluster must be shared (NFS/EFS).
        data: the data for every stage (the student reuses the teacher's splits).
        metric: the validation figure that picks every run's best epoch (see
            :class:`FinetuneConfig`); each search ranks trials by its own ``tune.metric``.
        student: ``null`` stops after the teacher; with ``student.baseline`` the label-only
            student is exported and evaluated beside the distilled one.
        report: published figures to compare with.
    """

    output: str = "runs/pipeline"
    storage: str | None = None
    seed: int = 0
    keep_checkpoints: int = Field(2, ge=1, le=100)
    max_failures: int = Field(1, ge=0, le=100)
    metric: Metric = "val_acc"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: PipelineTeacher = Field(default_factory=PipelineTeacher)
    student: PipelineStudent | None = Field(default_factory=PipelineStudent)
    export: PipelineExport = Field(default_factory=PipelineExport)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
