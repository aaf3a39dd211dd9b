"""The ``model:`` section: architecture, pretrained weights, freezing, a cut backbone."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from transferkit.config.base import Strict, with_defaults

__all__ = ["ModelConfig", "StudentModel"]


class ModelConfig(Strict):
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


_StudentDefaults = with_defaults(
    ModelConfig,
    "_StudentDefaults",
    """:class:`ModelConfig` with the default student's defaults (see :class:`StudentModel`).""",
    arch="mobilenet_v3_small",
    weights=None,
    width_mult=0.5,
)


class StudentModel(_StudentDefaults):
    """The student's ``model:`` section: :class:`ModelConfig` whose defaults are MobileNetV3-small
    at width 0.5 trained from scratch (a partial section keeps these for the fields it omits).

    The 0.5 width belongs to that default student: a section naming another ``arch`` without a
    ``width_mult`` gets 1.0 (the standard width, the only one most architectures have).
    """

    @model_validator(mode="before")
    @classmethod
    def _width_follows_arch(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("width_mult") is None:
            arch = data.get("arch")
            if arch is not None and arch != cls.model_fields["arch"].default:
                return {**data, "width_mult": 1.0}
        return data
