"""Knowledge distillation objectives: Hinton KD and FitNets feature hints.

* Hinton, Vinyals, Dean (2015), "Distilling the Knowledge in a Neural Network":
  ``hard_weight * CE(y, s) + soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T))``, KL with
  batch-mean reduction. The ``T^2`` factor keeps the soft term's gradient scale independent of
  ``T``; its gradient w.r.t. the student logits is ``T * (softmax(s/T) - softmax(t/T)) / B``.
* Romero et al. (2015), "FitNets: Hints for Thin Deep Nets": MSE between a learned 1x1-conv
  projection of a student stage's features and a teacher stage's features.

The teacher is a fixed function: eval mode for the whole run, ``requires_grad=False``, not in the
optimizer, not wrapped in DDP, run under ``torch.inference_mode()``.

Samples of an unlabelled transfer set carry the label ``-1`` (:data:`UNLABELED`): they contribute
the soft (and hint) terms only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNLABELED", "kd_loss", "KDObjective", "CachedTargets", "HintPair", "make_kd_objective"]

UNLABELED = -1


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    hard_weight: float,
    soft_weight: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinton KD loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

    Args:
        student_logits: float ``[B, K]``.
        teacher_logits: float ``[B, K]`` (no gradient needed).
        labels: int64 ``[B]``; entries equal to :data:`UNLABELED` (-1) are left out of the hard
            term (mean over the labelled ones); ``None`` = no hard term.
        temperature: ``T > 0``.
        hard_weight, soft_weight: the two weights (named, not an ambiguous "alpha").
        label_smoothing: of the hard term's cross-entropy (Szegedy et al. 2016), in [0, 1): the
            same ``optim.label_smoothing`` a label-only student trains with.

    Returns:
        ``(loss scalar, {"hard": ..., "soft": ...})``; the soft term already includes ``T^2``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    s = student_logits.float()
    t = teacher_logits.float().detach()
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t / temperature, dim=1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
    hard = (
        _hard_only(s, labels, label_smoothing=label_smoothing)
        if labels is not None and hard_weight > 0
        else s.new_zeros(())
    )
    return hard_weight * hard + soft_weight * soft, {"hard": hard.detach(), "soft": soft.detach()}


@dataclass(frozen=True)
class HintPair:
    """A FitNets hint: the output of ``student_stage`` regresses onto ``teacher_stage``'s."""

    student_stage: str
    teacher_stage: str


class _Capture:
    """Forward hook storing a module's output."""

    def __init__(self):
        self.value: torch.Tensor | None = None

    def __call__(self, module, inputs, output):
        self.value = output


def _stage_output_module(model: nn.Module, spec, stage_name: str) -> nn.Module:
    from transferkit.models.registry import model_stages

    stages = {s.name: s for s in model_stages(model, spec)}
    if stage_name not in stages:
        raise ValueError(
            f"hint stage {stage_name!r} is not a stage of {spec.name} (stages: {', '.join(stages)})"
        )
    return model.get_submodule(stages[stage_name].modules[-1])


class KDObjective:
    """Distillation objective for the shared training loop.

    The teacher (a ``model.pt``) is loaded per worker in :meth:`setup`. Images may be one tensor
    (teacher and student share preprocessing) or a pair ``(student_x, teacher_x)``.
    """

    def __init__(
        self,
        teacher_path: str,
        temperature: float,
        hard_weight: float,
        soft_weight: float,
        hints: list[HintPair] | None = None,
        hint_weight: float = 0.0,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        teacher_tta: str = "none",
    ):
        self.teacher_path = teacher_path
        self.teacher_tta = teacher_tta
        self.label_smoothing = label_smoothing
        self.mixup_alpha = mixup_alpha
        self.temperature, self.hard_weight, self.soft_weight = temperature, hard_weight, soft_weight
        self.hints = list(hints or [])
        self.hint_weight = hint_weight
        self.teacher: nn.Module | None = None
        self.class_weight: torch.Tensor | None = None  # hard-term class weights, set by the loop
        self._t_caps: list[_Capture] = []
        self._s_caps: list[_Capture] = []

    def setup(self, device: torch.device) -> None:
        """Load the teacher onto ``device``: eval mode, frozen, never in the optimizer."""
        from transferkit.models.portable import load_portable

        if self.class_weight is not None:
            self.class_weight = self.class_weight.to(device)
        built, _ = load_portable(self.teacher_path)
        teacher = built.model.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        for h in self.hints:
            cap = _Capture()
            _stage_output_module(teacher, built.spec, h.teacher_stage).register_forward_hook(cap)
            self._t_caps.append(cap)

    def cache_targets(self, samples, prep, rank: int = 0, world: int = 1) -> None:
        """Replace the teacher by its test-time-augmented logits for every training sample
        (``kd.teacher_tta``): float32 ``[N, K]``, computed once, each worker scoring every
        ``world``-th image from ``rank`` and the rows summed across workers (an all-reduce), so
        every worker holds them all. Batches then carry ``(student_x, sample index)``.

        Args:
            samples: the training samples ``[(path, label), ...]``, in the dataset's order.
            prep: the teacher's preprocessing (the un-augmented image, as it is scored).
            rank, world: this worker and the number of workers.
        """
        from torch.utils.data import DataLoader, Subset

        from transferkit.data.dataset import ImageListDataset, build_transform
        from transferkit.models.tta import TTAModel
        from transferkit.training.evaluate import sum_across_workers

        device = next(self.teacher.parameters()).device
        mine = list(range(rank, len(samples), world))
        ds = Subset(ImageListDataset(samples, build_transform(prep, None)), mine)
        tta = TTAModel(self.teacher, self.teacher_tta).eval()
        rows = []
        with torch.inference_mode():
            for x, _ in DataLoader(ds, batch_size=32):
                rows.append(tta(x.to(device, memory_format=torch.channels_last)).float())
        k = rows[0].shape[1] if rows else 0
        table = torch.zeros(len(samples), k, dtype=torch.float32, device=device)
        if rows:
            table[mine] = torch.cat(rows)
        sum_across_workers(table)
        self.teacher = CachedTargets(table)

    def extra_modules(
        self, student: nn.Module, spec, input_shape: tuple[int, ...]
    ) -> nn.Module | None:
        """The learned hint projections (1x1 conv, student channels -> teacher channels), sized by
        one dry forward pass; trained with the student, synchronised by DDP, not exported."""
        if not self.hints:
            return None
        for h in self.hints:
            cap = _Capture()
            _stage_output_module(student, spec, h.student_stage).register_forward_hook(cap)
            self._s_caps.append(cap)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            x = torch.zeros(1, *input_shape)
            student(x)
            self.teacher(x.to(next(self.teacher.parameters()).device))
        student.train(was_training)
        return nn.ModuleList(
            nn.Conv2d(sc.value.shape[1], tc.value.shape[1], kernel_size=1, bias=False)
            for sc, tc in zip(self._s_caps, self._t_caps)
        )

    def _hint_loss(self, regressors: nn.ModuleList) -> torch.Tensor:
        total = 0.0
        for reg, sc, tc in zip(regressors, self._s_caps, self._t_caps):
            s_feat = reg(sc.value.float())
            t_feat = tc.value.float()
            if s_feat.shape[-2:] != t_feat.shape[-2:]:
                s_feat = F.adaptive_avg_pool2d(s_feat, t_feat.shape[-2:])
            total = total + F.mse_loss(s_feat, t_feat)
        return total

    def __call__(
        self, model: nn.Module, images: Any, labels: torch.Tensor, extras: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, student logits [B, K])``."""
        s_x, t_x = images if isinstance(images, (tuple, list)) else (images, images)
        perm, lam = None, 1.0
        if self.mixup_alpha > 0 and model.training and s_x.shape[0] > 1:
            s_x, t_x, perm, lam = _mix(s_x, t_x, self.mixup_alpha)
        with torch.inference_mode():
            t_logits = self.teacher(t_x)
        t_logits = t_logits.clone()
        if self._t_caps:
            for cap in self._t_caps:
                cap.value = cap.value.clone()
        s_logits = model(s_x)
        w = self.class_weight
        if perm is None and w is None:
            loss, _ = kd_loss(
                s_logits,
                t_logits,
                labels,
                self.temperature,
                self.hard_weight,
                self.soft_weight,
                self.label_smoothing,
            )
        else:  # soft term on the (mixed) inputs; hard term mixed like the inputs (mixup), weighted
            soft, _ = kd_loss(s_logits, t_logits, None, self.temperature, 0.0, self.soft_weight)
            ls = self.label_smoothing
            hard = _hard_only(s_logits, labels, w, ls)
            if perm is not None:
                hard = lam * hard + (1.0 - lam) * _hard_only(s_logits, labels[perm], w, ls)
            loss = soft + self.hard_weight * hard
        if self.hints and self.hint_weight > 0 and extras is not None:
            loss = loss + self.hint_weight * self._hint_loss(extras)
        return loss, s_logits


class CachedTargets(nn.Module):
    """The teacher as a table: sample indices int64 ``[B]`` -> its logits float32 ``[B, K]``
    (``kd.teacher_tta``, see :meth:`KDObjective.cache_targets`)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]


def _mix(s_x: torch.Tensor, t_x: torch.Tensor, alpha: float):
    """Mixup (Zhang et al. 2018) applied identically to student and teacher inputs, so that the
    teacher labels exactly what the student sees ("consistent teaching", Beyer et al. 2022)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(s_x.shape[0], device=s_x.device)
    mixed_s = lam * s_x + (1.0 - lam) * s_x[perm]
    mixed_t = mixed_s if t_x is s_x else lam * t_x + (1.0 - lam) * t_x[perm]
    return mixed_s, mixed_t, perm, lam


def _hard_only(
    s_logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(Class-weighted, label-smoothed) mean cross-entropy over the labelled samples (0 when there
    are none)."""
    labelled = labels != UNLABELED
    if not labelled.any():
        return s_logits.new_zeros(())
    return F.cross_entropy(
        s_logits.float()[labelled], labels[labelled], weight=weight, label_smoothing=label_smoothing
    )


def make_kd_objective(cfg) -> KDObjective:
    """Factory run inside each worker from a distillation config (picklable by reference)."""
    return KDObjective(
        cfg.teacher,
        cfg.kd.temperature,
        cfg.kd.hard_weight,
        cfg.kd.soft_weight,
        [HintPair(a, b) for a, b in cfg.kd.hints],
        cfg.kd.hint_weight,
        cfg.kd.mixup_alpha,
        label_smoothing=cfg.optim.label_smoothing,  # as the label-only baseline trains
        teacher_tta=cfg.kd.teacher_tta,
    )
