"""``transferkit distill``: the KD loss (``kd:``) and the distillation config."""

from __future__ import annotations

from pydantic import Field, model_validator

from transferkit.config.base import Strict
from transferkit.config.export import TTA
from transferkit.config.model import StudentModel
from transferkit.config.training import FinetuneConfig, StudentOptim

__all__ = ["KDConfig", "DistillConfig"]


class KDConfig(Strict):
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
        teacher_tta: the teacher's targets averaged over views of each training image (``hflip``:
            2, ``d4``: the 8 symmetries of the square; :mod:`transferkit.models.tta`), the
            test-time-augmented teacher the export's ``teacher_tta`` serves. Computed once per
            run, before the first epoch, on the un-augmented image with the teacher's
            preprocessing, so they cost 8 teacher passes per image once instead of one per image
            per epoch. With only flips and 90-degree rotations as augmentation (``data.augment``)
            a view's target is exactly the averaged teacher's answer for it (the average is the
            same for every view of the group); other augmentations get the clean image's target.
            Not with hints or mixup (they need the teacher on each batch).
    """

    temperature: float = Field(4.0, gt=0.0, le=100.0)
    hard_weight: float = Field(0.1, ge=0.0)
    soft_weight: float = Field(0.9, ge=0.0)
    hints: list[tuple[str, str]] = Field(default_factory=list)
    hint_weight: float = Field(0.0, ge=0.0)
    mixup_alpha: float = Field(0.4, ge=0.0, le=10.0)
    teacher_tta: TTA = "none"

    @model_validator(mode="after")
    def _some_weight(self) -> KDConfig:
        if self.hard_weight == 0 and self.soft_weight == 0:
            raise ValueError("hard_weight and soft_weight are both 0: nothing to learn from")
        if self.hints and self.hint_weight == 0:
            raise ValueError("hints are given but hint_weight is 0; set kd.hint_weight > 0")
        if self.teacher_tta != "none" and (self.hints or self.mixup_alpha > 0):
            raise ValueError(
                f"teacher_tta: {self.teacher_tta} precomputes the teacher's targets, so it cannot "
                "be combined with hints or mixup (they need the teacher on every batch); set "
                "kd.mixup_alpha: 0 and no kd.hints, or kd.teacher_tta: none"
            )
        return self


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
    model: StudentModel = Field(default_factory=StudentModel)
    optim: StudentOptim = Field(default_factory=StudentOptim)
    output: str = "runs/student"
    unlabeled: str | None = None
    baseline: bool = True
    baseline_dataset: str | None = None
