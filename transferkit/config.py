"""Typed configuration for every stage: pydantic models, YAML load/merge/save.

This module imports neither torch, ray nor onnxruntime, and no other transferkit module, so the CLI
can validate a config in well under a second and a serving install can read preprocessing metadata.

A wrong value raises :class:`ConfigError`, whose message names the field (dotted path, as in the
YAML file), the bad value, and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "Preprocessing",
    "DataConfig",
    "AugmentConfig",
    "ModelConfig",
    "OptimConfig",
    "ScalingConf",
    "FinetuneConfig",
    "KDConfig",
    "DistillConfig",
    "ExportConfig",
    "ServeConfig",
    "Range",
    "SearchSpace",
    "TuneSettings",
    "TuneConfig",
    "DistillTuneConfig",
    "StageTune",
    "PipelineTeacher",
    "PipelineStudent",
    "PipelineExport",
    "EvaluateConfig",
    "PipelineConfig",
    "PublishedResult",
    "ReportConfig",
    "load_config",
    "deep_merge",
    "save_config",
]

Interpolation = Literal["nearest", "bilinear", "bicubic"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed.

    Picklable (plain ``ValueError`` with one string), so it crosses Ray process boundaries.
    """


class _Strict(BaseModel):
    """Base: unknown keys are errors (a typo in YAML must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Preprocessing(_Strict):
    """How an image becomes a model input; travels with the weights into ``model.pt`` and ONNX.

    The pipeline (identical in training, export validation and serving; see
    ``transferkit.imaging.preprocess``): decode -> convert to ``channels`` (grey is replicated to 3
    channels when ``channels == 3``) -> resize the shorter side to ``round(input_size / crop_pct)``
    with ``interpolation`` -> center-crop ``input_size`` x ``input_size`` -> scale to [0, 1] ->
    ``(x - mean) / std`` per channel. The result is a float32 array of shape
    ``(channels, input_size, input_size)``.

    Attributes:
        input_size: side of the square model input, pixels.
        channels: 1 or 3.
        mean: per-channel mean in [0, 1] units (length ``channels``).
        std: per-channel standard deviation in [0, 1] units (length ``channels``), all > 0.
        interpolation: resize filter.
        crop_pct: fraction of the resized shorter side kept by the center crop (ImageNet's
            classic 256 -> 224 is 0.875). With 1.0 the shorter side becomes ``input_size`` and the
            longer side is center-cropped; a square image is then simply resized.
    """

    input_size: int = Field(224, ge=8, le=2048)
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: Interpolation = "bilinear"
    crop_pct: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _lengths(self) -> Preprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}); "
                f"got mean={list(self.mean)}, std={list(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0; got {list(self.std)}")
        return self


class AugmentConfig(_Strict):
    """Training-time augmentation (applied to PIL images before ``preprocess``).

    Defaults suit digits/characters: small affine jitter, no flips (a flipped digit is a different
    or no digit). Turn ``hflip`` on for natural photos; ``hflip``, ``vflip`` and ``rot90`` together
    give the eight symmetries of a square (the dihedral group D4), label-preserving for top-down
    inspection images such as solar cells, wafers or tiles.

    Attributes:
        hflip / vflip: random horizontal / vertical flip (p = 0.5 each).
        rot90: rotate by a random multiple of 90 degrees (lossless, before the affine jitter).
        rotation_deg / translate / scale_min / scale_max: random affine jitter (degrees, fraction
            of the side, scale factors).
        color_jitter: brightness, contrast and saturation jitter for colour photos (factor range
            ``[1 - j, 1 + j]``, torchvision ``ColorJitter``).
        brightness / contrast: brightness and contrast jitter alone (same factor ranges), the
            photometric changes of grey sensor images (exposure, gain), applied after
            ``color_jitter``.
    """

    enabled: bool = True
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    rotation_deg: float = Field(10.0, ge=0.0, le=180.0)
    translate: float = Field(0.1, ge=0.0, le=0.5)
    scale_min: float = Field(0.9, gt=0.0, le=1.0)
    scale_max: float = Field(1.1, ge=1.0, le=2.0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    brightness: float = Field(0.0, ge=0.0, le=1.0)
    contrast: float = Field(0.0, ge=0.0, le=1.0)


class DataConfig(_Strict):
    """Where the images come from and how they are split.

    Attributes:
        dataset: a bundled dataset name (``digits``) or a folder path. A folder is either
            pre-split (``train/``, ``val/``, ``test/`` each holding ``<class>/*.png|jpg``) or one
            ``<class>/*`` tree split here by a seeded, stratified split.
        val_fraction / test_fraction: split fractions for a single folder, each in [0, 0.5).
        image_size: override of the model's input size (pixels); ``None`` keeps the weights' size.
        num_loader_workers: DataLoader worker processes per training worker (0 = in-process).
        sampler: ``random`` (each training image once per epoch, shuffled) or ``balanced``
            (class-balanced: each epoch draws as many images as the training split holds, with
            replacement, every class equally likely; for rare classes).
    """

    dataset: str = "digits"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    image_size: int | None = Field(None, ge=8, le=2048)
    num_loader_workers: int = Field(0, ge=0, le=64)
    sampler: Literal["random", "balanced"] = "random"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class ModelConfig(_Strict):
    """Architecture, pretrained weights and freezing.

    Attributes:
        arch: a registry name (``transferkit models`` lists them).
        weights: ``None``/``"none"`` (random init), a torchvision enum name (``IMAGENET1K_V1``,
            ``DEFAULT``) or a path to a local state-dict / ``model.pt`` file.
        freeze_depth: freeze the first k named stages (0 trains everything; the number of stages is
            a linear probe). Checked against the architecture when the model is built.
        width_mult: channel width multiplier for MobileNets (1.0 = standard).
        dropout: classifier dropout override (``None`` keeps the architecture's).
        bn_momentum: BatchNorm running-statistics momentum. ``None``: the architecture's with
            pretrained weights, PyTorch's 0.1 from scratch (torchvision's MobileNetV3 and
            EfficientNet use 0.01, tuned for ImageNet-sized epochs: on a small dataset their
            eval-mode statistics stay unusable for hundreds of steps).
        keep_stages: keep only the first k named stages of the backbone and drop the rest (a
            compact student cut from a pretrained backbone, or from the teacher's own with
            ``weights: teacher`` in a distillation, as DistilBERT initialises its student from the
            teacher's layers: Sanh et al. 2019). ``None`` keeps all. MobileNet and EfficientNet
            only; the head becomes global pooling, dropout and one linear layer.
        head_hidden: with ``keep_stages``, a 1x1 convolution (+BatchNorm, ReLU6) to this many
            channels after the last kept stage, before pooling (MobileNet's last layer, Sandler
            et al. 2018); a stage of its own, trained from scratch.
    """

    arch: str = "mobilenet_v2"
    weights: str | None = "IMAGENET1K_V1"
    freeze_depth: int = Field(0, ge=0)
    width_mult: float = Field(1.0, gt=0.0, le=4.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    bn_momentum: float | None = Field(None, gt=0.0, le=1.0)
    keep_stages: int | None = Field(None, ge=1, le=64)
    head_hidden: int | None = Field(None, ge=1, le=16384)

    @model_validator(mode="after")
    def _hidden_needs_cut(self) -> ModelConfig:
        if self.head_hidden is not None and self.keep_stages is None:
            raise ValueError(
                "head_hidden is set but keep_stages is not: head_hidden adds a layer "
                "after a cut backbone (set model.keep_stages, or drop head_hidden)"
            )
        return self

    @field_validator("weights")
    @classmethod
    def _none_string(cls, v: str | None) -> str | None:
        if v is not None and v.strip().lower() in ("", "none", "null", "random"):
            return None
        return v


class OptimConfig(_Strict):
    """Optimizer and schedule. ``batch_size`` is per worker (global = batch_size x workers).

    Learning rates are per parameter group: ``backbone_lr`` for unfrozen backbone stages,
    ``head_lr`` for the new classifier head. Weight decay is not applied to biases and norm
    parameters. Schedule: linear warmup for ``warmup_epochs`` (capped below the run's length)
    then cosine decay to
    ``min_lr_ratio`` x the base rate (Loshchilov & Hutter 2017, SGDR), stepped every batch.
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    backbone_lr: float = Field(2e-3, gt=0.0, le=10.0)
    head_lr: float = Field(5e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    epochs: int = Field(10, ge=1, le=10000)
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    batch_size: int = Field(16, ge=1, le=65536)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    class_weight: Literal["none", "balanced", "sqrt_balanced"] | list[float] = "none"

    @field_validator("class_weight")
    @classmethod
    def _weights(cls, v):
        if isinstance(v, list) and (not v or any(w <= 0 for w in v)):
            raise ValueError(f"an explicit class_weight needs one value > 0 per class; got {v}")
        return v


Metric = Literal["val_acc", "val_balanced_acc", "val_macro_f1", "val_loss"]
"""What "best" means for epoch selection and searches (``val_loss`` is minimised, the rest
maximised); balanced accuracy (mean per-class recall) and macro F1 suit imbalanced classes."""


class ScalingConf(_Strict):
    """Ray Train scaling: ``num_workers`` DDP workers, each holding ``cpus_per_worker`` CPUs and,
    with ``use_gpu``, ``gpus_per_worker`` GPUs.

    Attributes:
        autoscale: the cluster grows on demand (Ray autoscaler); skips the up-front check that
            the workers fit the resources the cluster has now.
    """

    num_workers: int = Field(2, ge=1, le=4096)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(1.0, ge=0.0)
    autoscale: bool = False


class FinetuneConfig(_Strict):
    """Everything ``transferkit finetune`` needs.

    Attributes:
        output: the run folder itself (checkpoints, metrics, ``model.pt``).
        seed: seeds splits, initialisation, shuffling and augmentation.
        keep_checkpoints: best-k checkpoints kept, ranked by ``metric``.
        metric: which validation figure picks the best epoch (``model.pt``) and ranks
            checkpoints: ``val_acc``, ``val_balanced_acc``, ``val_macro_f1`` or ``val_loss``.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingConf = Field(default_factory=ScalingConf)
    output: str = "runs/finetune"
    seed: int = 0
    keep_checkpoints: int = Field(2, ge=1, le=100)
    metric: Metric = "val_acc"


class KDConfig(_Strict):
    """Distillation loss (Hinton et al. 2015; hints: Romero et al. 2015).

    ``loss = hard_weight * CE(y, s) + soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T))
    [+ hint_weight * sum MSE(proj(student_stage), teacher_stage)]``.

    Attributes:
        temperature: softening temperature ``T`` (> 0).
        hard_weight: weight of the cross-entropy with the labels (0 allowed).
        soft_weight: weight of the temperature-scaled KL to the teacher.
        hints: ``[[student_stage, teacher_stage], ...]`` by the stage names freezing uses
            (``transferkit models ARCH`` lists them).
        hint_weight: weight of the FitNets hint MSE.
        mixup_alpha: > 0 mixes each training batch (mixup, Zhang et al. 2018, lambda ~
            Beta(alpha, alpha)) identically for teacher and student, so the teacher labels exactly
            what the student sees ("function matching", Beyer et al. 2022); 0 turns it off.
    """

    temperature: float = Field(4.0, gt=0.0, le=100.0)
    hard_weight: float = Field(0.1, ge=0.0)
    soft_weight: float = Field(0.9, ge=0.0)
    hints: list[tuple[str, str]] = Field(default_factory=list)
    hint_weight: float = Field(0.0, ge=0.0)
    mixup_alpha: float = Field(0.4, ge=0.0, le=10.0)

    @model_validator(mode="after")
    def _some_weight(self) -> KDConfig:
        if self.hard_weight == 0 and self.soft_weight == 0:
            raise ValueError("hard_weight and soft_weight are both 0: nothing to learn from")
        if self.hints and self.hint_weight == 0:
            raise ValueError("hints are given but hint_weight is 0; set kd.hint_weight > 0")
        return self


def _student_model() -> ModelConfig:
    return ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5, freeze_depth=0)


def _student_optim() -> OptimConfig:
    return OptimConfig(
        epochs=30,
        backbone_lr=3e-3,
        head_lr=3e-3,
        weight_decay=0.05,
        warmup_epochs=2.0,
        label_smoothing=0.0,
    )


class DistillConfig(FinetuneConfig):
    """``transferkit distill``: a fine-tuned teacher teaches a compact student.

    ``model`` is the student (default: MobileNetV3-small at width 0.5, from scratch) and ``optim``
    its training budget (default: 30 epochs, AdamW 3e-3). A student without weights of its own
    takes the teacher's preprocessing.

    Attributes:
        teacher: the teacher's run folder or ``model.pt``.
        kd: the distillation loss.
        unlabeled: a folder of unlabelled images (any layout) used as extra transfer set: the
            teacher supplies the targets.
        baseline: also train a label-only student (same architecture, epochs and data) for the
            report.
        baseline_dataset: train that baseline on this dataset instead (e.g. all the labels when
            the student itself sees only some of them).
    """

    teacher: str
    kd: KDConfig = Field(default_factory=KDConfig)

    @model_validator(mode="before")
    @classmethod
    def _student_defaults(cls, data: Any) -> Any:
        """Partial ``model``/``optim`` sections fill in from the *student* defaults."""
        if isinstance(data, dict):
            data = dict(data)
            for key, factory in (("model", _student_model), ("optim", _student_optim)):
                if isinstance(data.get(key), dict):
                    data[key] = {**factory().model_dump(), **data[key]}
        return data

    model: ModelConfig = Field(default_factory=_student_model)
    optim: OptimConfig = Field(default_factory=_student_optim)
    output: str = "runs/student"
    unlabeled: str | None = None
    baseline: bool = True
    baseline_dataset: str | None = None


class Range(_Strict):
    """A continuous search range ``[low, high]``, sampled uniformly or, with ``log``, log-uniformly
    (learning rates and weight decay: Bergstra & Bengio 2012)."""

    low: float
    high: float
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got {self.low} (or set log: false)")
        return self


Choice = list[float]
"""An explicit list of values, sampled uniformly (a grid when the searcher is random)."""


class SearchSpace(_Strict):
    """What a search varies; a field left ``None`` keeps the base config's value.

    Attributes:
        freeze_depth: candidate freeze depths; ``None`` = every depth from 0 to the model's number
            of stages (``transferkit models ARCH`` lists them).
        backbone_lr / head_lr: learning rates of the unfrozen backbone and of the head.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        temperature / hard_weight / soft_weight: the KD loss (distillation searches only).
    """

    freeze_depth: list[int] | None = None
    backbone_lr: Range | Choice | None = Field(default_factory=lambda: Range(low=1e-4, high=1e-2))
    head_lr: Range | Choice | None = Field(default_factory=lambda: Range(low=1e-3, high=3e-2))
    weight_decay: Range | Choice | None = None
    temperature: Range | Choice | None = None
    hard_weight: Range | Choice | None = None
    soft_weight: Range | Choice | None = None

    @field_validator("freeze_depth")
    @classmethod
    def _depths(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d < 0 for d in v)):
            raise ValueError(f"a non-empty list of depths >= 0 is needed; got {v}")
        return v

    @field_validator(
        "backbone_lr", "head_lr", "weight_decay", "temperature", "hard_weight", "soft_weight"
    )
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and (not v or any(x < 0 for x in v)):
            raise ValueError(f"a non-empty list of values >= 0 is needed; got {v}")
        return v


class TuneSettings(_Strict):
    """The ``tune:`` section: search space, scheduler, searcher, concurrency, tracking.

    Attributes:
        num_samples: number of trials.
        scheduler: ``asha`` (Li et al. 2020, asynchronous successive halving: stops a trial whose
            ``metric`` at a rung is below the top ``1/reduction_factor`` of the trials seen
            there) or ``fifo`` (every trial runs its full budget).
        grace_period: epochs every trial runs before ASHA may stop it.
        reduction_factor: ASHA's eta (keeps the best ``1/eta`` at each rung).
        searcher: ``random`` (Bergstra & Bengio 2012) or ``optuna`` (TPE, Bergstra et al. 2011).
        metric: what "best" means: ``val_acc``, ``val_balanced_acc``, ``val_macro_f1`` (max) or
            ``val_loss`` (min). Every search also runs the base config's own values first
            (Ray Tune's ``points_to_evaluate``), so its best is never worse than the defaults
            on this metric within the trial budget.
        max_concurrent_trials: ``None`` = as many as the cluster's CPUs/GPUs fit.
        trial_cpu: the CPU reserved by each trial's driver function (the workers hold the rest).
        tracking: ``local`` (CSV/JSON/TensorBoard files in each trial folder), ``tensorboard``
            (the same, and says where to point TensorBoard), ``mlflow`` (also logs to MLflow).
        tracking_uri: MLflow tracking URI (default: ``mlruns/`` in the experiment folder).
        max_failures: times a failing trial is retried (from its last checkpoint).
    """

    search: SearchSpace = Field(default_factory=SearchSpace)
    num_samples: int = Field(8, ge=1, le=100000)
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)
    searcher: Literal["random", "optuna"] = "random"
    metric: Metric = "val_acc"
    max_concurrent_trials: int | None = Field(None, ge=1)
    trial_cpu: float = Field(0.01, gt=0.0, le=64.0)
    tracking: Literal["local", "tensorboard", "mlflow"] = "local"
    tracking_uri: str | None = None
    max_failures: int = Field(0, ge=0, le=100)


def _tune_scaling() -> ScalingConf:
    # One worker per trial at 0.99 CPU: with the trial's 0.01 token CPU a trial takes exactly 1 CPU,
    # so two trials run side by side on a 2-CPU machine (a token plus two 1-CPU workers never fits).
    return ScalingConf(num_workers=1, cpus_per_worker=0.99)


class _TuneDefaults(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _tune_scaling_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("scaling"), dict):
            data = {**data, "scaling": {**_tune_scaling().model_dump(), **data["scaling"]}}
        return data


class TuneConfig(FinetuneConfig, _TuneDefaults):
    """``transferkit tune``: a Ray Tune search over fine-tuning runs.

    The fields of :class:`FinetuneConfig` are the base every trial starts from (``optim.epochs`` is
    the per-trial budget, ``--max-epochs``; ``scaling`` is per trial, default 1 worker at 0.99
    CPU); ``tune`` says what varies and how trials are scheduled. ``output`` is the experiment
    folder (a local path, or an ``s3://``/``gs://`` URI as Ray accepts it).
    """

    scaling: ScalingConf = Field(default_factory=_tune_scaling)
    output: str = "runs/tune"
    tune: TuneSettings = Field(default_factory=TuneSettings)


class DistillTuneConfig(DistillConfig, _TuneDefaults):
    """``transferkit tune --teacher RUN``: a search over distillation runs (the student's optimizer
    and the KD temperature and weights); fields as :class:`DistillConfig` plus ``tune``."""

    scaling: ScalingConf = Field(default_factory=_tune_scaling)
    output: str = "runs/tune-student"
    baseline: bool = False
    tune: TuneSettings = Field(default_factory=TuneSettings)


class ExportConfig(_Strict):
    """``transferkit export``: a run folder (or ``model.pt``) to one self-contained ONNX file.

    Attributes:
        opset: ONNX opset (torch's dynamo exporter supports >= 18).
        atol: maximum allowed absolute logit difference vs PyTorch.
        validation_batches: number of batches of real images compared.
        batch_size: batch used for the batch-N check.
    """

    run: str
    output: str = "model.onnx"
    opset: int = Field(18, ge=18, le=23)
    atol: float = Field(1e-4, gt=0.0)
    validation_images: int = Field(512, ge=2)
    batch_size: int = Field(16, ge=2, le=4096)


class ServeConfig(_Strict):
    """``transferkit serve``: ONNX models behind HTTP (Open Inference Protocol v2 + ``/v1``).

    Attributes:
        models: ``.onnx`` files; each is served under its file stem (``student.onnx`` ->
            ``student``), version ``"1"``. A single string is accepted for one model.
        repository: a Triton-style model repository ``REPO/<name>/<version>/model.onnx``; its
            models are served beside ``models``.
        name: name of the model when exactly one file is given (default: its stem).
        host: bind address (loopback by default; use 0.0.0.0 to expose).
        top_k: predictions returned per image by ``/v1/predict`` (capped at the class count).
        intra_op_threads: ONNX Runtime intra-op threads per model (0 = CPUs, at most 4; always
            capped at the CPUs this process may use).
        max_body_mb: request bodies larger than this get HTTP 413.
        max_image_pixels: images with more pixels (width x height) get HTTP 422.
        max_batch_size: dynamic batching: most images in one ORT run (1 = batching off).
        max_queue_delay_ms: how long a queued request may wait for its batch to fill while other
            requests are on their way (a lone request on an idle server never waits).
        max_queue_size: queued requests per model beyond which the server answers 503 with
            ``Retry-After``.
        api_key: when set, every route but ``/v2/health/*`` requires ``Authorization: Bearer
            KEY`` or ``X-API-Key: KEY`` (HTTP 401 otherwise).
        graceful_timeout_s: on SIGINT/SIGTERM, in-flight requests get this long to finish.
        access_log: uvicorn's per-request access log (off by default: it costs latency).
        ray: deploy with Ray Serve instead of a single uvicorn process.
        replicas: Ray Serve replicas.
        replica_cpus: CPUs reserved per replica; its ORT intra-op threads equal this (at least 1).
    """

    models: list[str] = Field(default_factory=list)
    repository: str | None = None
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    top_k: int = Field(5, ge=1, le=1000)
    intra_op_threads: int = Field(0, ge=0, le=1024)
    max_body_mb: float = Field(20.0, gt=0.0)
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=10_000.0)
    max_queue_size: int = Field(256, ge=1, le=1_000_000)
    api_key: str | None = None
    graceful_timeout_s: float = Field(10.0, ge=0.0)
    access_log: bool = False
    ray: bool = False
    replicas: int = Field(1, ge=1, le=1024)
    replica_cpus: float = Field(1.0, gt=0.0, le=1024.0)

    @model_validator(mode="before")
    @classmethod
    def _one_model_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "model" in data:  # the one-model spelling of earlier versions
                one = data.pop("model")
                data["models"] = [
                    *([one] if isinstance(one, str) else list(one or [])),
                    *data.get("models", []),
                ]
            if isinstance(data.get("models"), str):
                data["models"] = [data["models"]]
        return data

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if not self.models and not self.repository:
            raise ValueError(
                "models: give at least one .onnx file or a repository folder (repository=REPO)"
            )
        if self.name is not None and len(self.models) != 1:
            raise ValueError(
                f"name={self.name!r} needs exactly one model file; got {len(self.models)}: "
                "name models by their file stem or use a repository folder"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(
                "api_key: must not be empty (leave it unset to turn authentication off)"
            )
        return self


class StageTune(TuneSettings):
    """A search stage of a pipeline: :class:`TuneSettings` plus the trials' own resources and
    epoch budget (the fine-tune/distill stage after it uses its own ``scaling`` and ``optim``).

    Attributes:
        scaling: per trial (default 1 worker at 0.99 CPU).
        epochs: per-trial budget; ``None`` = the stage's ``optim.epochs``.
    """

    scaling: ScalingConf = Field(default_factory=_tune_scaling)
    epochs: int | None = Field(None, ge=1, le=10000)


class PipelineTeacher(_Strict):
    """The teacher: optionally searched (``tune``), then fine-tuned with the best values found.

    Attributes:
        run: use this existing fine-tuned run folder instead (no teacher stages run).
    """

    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingConf = Field(default_factory=ScalingConf)
    tune: StageTune | None = None
    run: str | None = None


class PipelineStudent(_Strict):
    """The student: optionally searched, then distilled from the teacher (fields as in
    :class:`DistillConfig`; partial ``model``/``optim`` sections fill in from the student
    defaults)."""

    model: ModelConfig = Field(default_factory=_student_model)
    optim: OptimConfig = Field(default_factory=_student_optim)
    scaling: ScalingConf = Field(default_factory=ScalingConf)
    kd: KDConfig = Field(default_factory=KDConfig)
    unlabeled: str | None = None
    baseline: bool = False
    tune: StageTune | None = None
    #: The student's input side in pixels (default: ``data.image_size``, the teacher's). The
    #: teacher keeps its own preprocessing during distillation; a cut student with few stages
    #: sees thin defects better at a larger input.
    image_size: int | None = Field(None, ge=8, le=2048)

    _defaults = model_validator(mode="before")(DistillConfig._student_defaults.__func__)


class PipelineExport(_Strict):
    """ONNX export of teacher and student (see :class:`ExportConfig`)."""

    opset: int = Field(18, ge=18, le=23)
    atol: float = Field(1e-4, gt=0.0)
    validation_images: int = Field(512, ge=2)


class EvaluateConfig(_Strict):
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


class PublishedResult(_Strict):
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


class ReportConfig(_Strict):
    """What the pipeline's report adds beyond its own measurements.

    Attributes:
        published: published results on the same task, shown beside the measured ones.
        positive_class: the class whose recall matters most (e.g. ``defective``); the report
            names it in the summary. ``None``: every class's recall is shown alike.
    """

    published: list[PublishedResult] = Field(default_factory=list)
    positive_class: str | None = None


class PipelineConfig(_Strict):
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
    metric: Metric = "val_acc"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: PipelineTeacher = Field(default_factory=PipelineTeacher)
    student: PipelineStudent | None = Field(default_factory=PipelineStudent)
    export: PipelineExport = Field(default_factory=PipelineExport)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


def _fields_at(model_cls: type[BaseModel], path: tuple) -> list[str]:
    """The field names of the (nested) model at ``path`` (names, through optional sections)."""
    import typing

    cls: Any = model_cls
    for part in path:
        field = getattr(cls, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return []
        cls = next(
            (
                a
                for a in (field.annotation, *typing.get_args(field.annotation))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def _format_validation_error(
    exc: ValidationError, source: str, model_cls: type[BaseModel] | None = None
) -> str:
    import difflib

    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        path = tuple(err.get("loc", ()))
        loc = ".".join(str(p) for p in path) or "<root>"
        msg = err.get("msg", "")
        ctx = err.get("ctx") or {}
        allowed = ctx.get("expected")
        value = err.get("input")
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        line = f"  {loc}: {msg}"
        if err.get("type") == "extra_forbidden":
            known = _fields_at(model_cls, path[:-1]) if model_cls is not None else []
            close = difflib.get_close_matches(str(path[-1]), known, n=1) if path else []
            line = (
                f"  {loc}: unknown field"
                + (
                    f"; did you mean {'.'.join(map(str, path[:-1] + (close[0],)))}?"
                    if close
                    else ""
                )
                + (
                    f" (known here: {', '.join(known)})"
                    if known
                    else " (check the spelling; see the documented fields)"
                )
            )
        elif allowed and str(allowed) not in msg:
            line += f" (allowed: {allowed})"
        if err.get("type") != "missing" and err.get("type") != "extra_forbidden":
            line += f"; got {shown}"
        lines.append(line)
    return "\n".join(lines)


def validate(model_cls: type[BaseModel], data: dict[str, Any], source: str = "config") -> Any:
    """Build ``model_cls`` from ``data``; raise :class:`ConfigError` naming each bad field.

    Raises:
        ConfigError: with one line per invalid field: dotted path, message, allowed values, value.
    """
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, model_cls)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override``; ``None`` values in override are skipped
    (an option not given on the command line does not erase the file's value)."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict):
            base_value = out.get(key)
            if isinstance(base_value, dict):
                out[key] = deep_merge(base_value, value)
            else:
                merged = deep_merge({}, value)
                if merged or key not in out:  # an all-None override keeps a bad value visible
                    out[key] = merged
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (data only: ``yaml.safe_load``).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def load_config(
    model_cls: type[BaseModel],
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Load ``path`` (optional YAML), apply ``overrides`` (nested dict, ``None`` = not given),
    validate into ``model_cls``.

    Raises:
        ConfigError: unreadable file or invalid field (named, with allowed values).
    """
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = deep_merge(data, overrides or {})
    return validate(model_cls, data, source=str(path) if path else "command line")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write ``cfg`` as YAML that :func:`load_config` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
