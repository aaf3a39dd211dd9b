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
    def _lengths(self) -> "Preprocessing":
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

    Defaults suit digits/characters: small affine jitter, no horizontal flip (a flipped digit is a
    different or no digit). Turn ``hflip`` on for natural photos.
    """

    enabled: bool = True
    hflip: bool = False
    rotation_deg: float = Field(10.0, ge=0.0, le=180.0)
    translate: float = Field(0.1, ge=0.0, le=0.5)
    scale_min: float = Field(0.9, gt=0.0, le=1.0)
    scale_max: float = Field(1.1, ge=1.0, le=2.0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)


class DataConfig(_Strict):
    """Where the images come from and how they are split.

    Attributes:
        dataset: a bundled dataset name (``digits``) or a folder path. A folder is either
            pre-split (``train/``, ``val/``, ``test/`` each holding ``<class>/*.png|jpg``) or one
            ``<class>/*`` tree split here by a seeded, stratified split.
        val_fraction / test_fraction: split fractions for a single folder, each in [0, 0.5).
        image_size: override of the model's input size (pixels); ``None`` keeps the weights' size.
        num_loader_workers: DataLoader worker processes per training worker (0 = in-process).
    """

    dataset: str = "digits"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    image_size: int | None = Field(None, ge=8, le=2048)
    num_loader_workers: int = Field(0, ge=0, le=64)
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
    """

    arch: str = "mobilenet_v2"
    weights: str | None = "IMAGENET1K_V1"
    freeze_depth: int = Field(0, ge=0)
    width_mult: float = Field(1.0, gt=0.0, le=4.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    bn_momentum: float | None = Field(None, gt=0.0, le=1.0)

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
        keep_checkpoints: best-k checkpoints kept, ranked by val top-1.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingConf = Field(default_factory=ScalingConf)
    output: str = "runs/finetune"
    seed: int = 0
    keep_checkpoints: int = Field(2, ge=1, le=100)


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
    def _some_weight(self) -> "KDConfig":
        if self.hard_weight == 0 and self.soft_weight == 0:
            raise ValueError("hard_weight and soft_weight are both 0: nothing to learn from")
        if self.hints and self.hint_weight == 0:
            raise ValueError("hints are given but hint_weight is 0; set kd.hint_weight > 0")
        return self


def _student_model() -> "ModelConfig":
    return ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5, freeze_depth=0)


def _student_optim() -> "OptimConfig":
    return OptimConfig(epochs=30, backbone_lr=3e-3, head_lr=3e-3, weight_decay=0.05,
                       warmup_epochs=2.0, label_smoothing=0.0)


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
    """``transferkit serve``: one ONNX file behind HTTP.

    Attributes:
        host: bind address (loopback by default; use 0.0.0.0 to expose).
        top_k: predictions returned per image by ``/v1/predict`` (capped at the class count).
        intra_op_threads: ONNX Runtime intra-op threads (0 = number of CPUs, capped).
        max_body_mb: request bodies larger than this get HTTP 413.
        max_image_pixels: decoded images with more pixels get HTTP 422.
    """

    model: str
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    name: str | None = None
    top_k: int = Field(5, ge=1, le=1000)
    intra_op_threads: int = Field(0, ge=0, le=1024)
    max_body_mb: float = Field(20.0, gt=0.0)
    max_image_pixels: int = Field(50_000_000, ge=1)


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        msg = err.get("msg", "")
        ctx = err.get("ctx") or {}
        allowed = ctx.get("expected")
        value = err.get("input")
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        line = f"  {loc}: {msg}"
        if err.get("type") == "extra_forbidden":
            line = f"  {loc}: unknown field (check the spelling; see the documented fields)"
        elif allowed:
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
        raise ConfigError(_format_validation_error(exc, source)) from None


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
    model_cls: type[BaseModel], path: str | Path | None = None, overrides: dict[str, Any] | None = None
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
