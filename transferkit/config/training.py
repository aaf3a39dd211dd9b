"""One training run: the optimizer (``optim:``), Ray Train scaling (``scaling:``) and the
``transferkit finetune`` config that composes them with ``data:`` and ``model:``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from transferkit.config.base import Metric, Strict, with_defaults
from transferkit.config.data import DataConfig
from transferkit.config.model import ModelConfig

__all__ = ["OptimConfig", "StudentOptim", "ScalingConf", "TrialScaling", "FinetuneConfig"]


class OptimConfig(Strict):
    """Optimizer and schedule. ``batch_size`` is per worker (global = batch_size x workers).

    Learning rates are per parameter group: ``backbone_lr`` for unfrozen backbone stages,
    ``head_lr`` for the new classifier head. Weight decay is not applied to biases and norm
    parameters. Schedule: linear warmup for ``warmup_epochs`` (capped below the run's length)
    then cosine decay to
    ``min_lr_ratio`` x the base rate (Loshchilov & Hutter 2017, SGDR), stepped every batch.
    ``momentum`` is SGD's (Nesterov when > 0; 0 is plain SGD); AdamW ignores it.
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


StudentOptim = with_defaults(
    OptimConfig,
    "StudentOptim",
    """A distillation student's ``optim:`` section: :class:`OptimConfig` with a longer budget for
    a model trained from scratch (30 epochs, AdamW 3e-3 for backbone and head, weight decay 0.05,
    2 warmup epochs, no label smoothing: the teacher's soft targets already smooth).""",
    epochs=30,
    backbone_lr=3e-3,
    head_lr=3e-3,
    weight_decay=0.05,
    warmup_epochs=2.0,
    label_smoothing=0.0,
)


class ScalingConf(Strict):
    """Ray Train scaling: ``num_workers`` DDP workers, each holding ``cpus_per_worker`` CPUs and,
    with ``use_gpu``, ``gpus_per_worker`` GPUs.

    Attributes:
        autoscale: the cluster grows on demand (Ray autoscaler); skips the up-front check that
            the workers fit the resources the cluster has now.
        precision: the dtype of the forward and backward passes (``torch.autocast``; weights,
            optimizer state and losses stay float32): ``auto`` is bfloat16 on a GPU and float32
            on a CPU; ``bf16`` asks for bfloat16 on a CPU too where it runs natively (AVX512-BF16
            or AMX), float32 on other CPUs; ``fp32`` never autocasts. Measure before relying on
            it: on this project's 2-core Zen 4 one isolated MobileNetV2 step is 1.3-1.7x faster
            in bf16 (``bench/precision.py``), yet the ELPV pipeline's 2-worker runs were not
            (teacher 30 vs 32 images/s, student 13.7 vs 14-18), so ``configs/elpv.yaml`` stays
            float32.
    """

    num_workers: int = Field(2, ge=1, le=4096)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(1.0, ge=0.0)
    autoscale: bool = False
    precision: Literal["auto", "bf16", "fp32"] = "auto"


TrialScaling = with_defaults(
    ScalingConf,
    "TrialScaling",
    """A search trial's ``scaling:``: one worker at 0.99 CPU. With the trial's 0.01 token CPU a
    trial takes exactly 1 CPU, so two trials run side by side on a 2-CPU machine (a token plus two
    1-CPU workers never fits).""",
    num_workers=1,
    cpus_per_worker=0.99,
)


class FinetuneConfig(Strict):
    """Everything ``transferkit finetune`` needs.

    Attributes:
        output: the run folder itself (checkpoints, metrics, ``model.pt``).
        seed: seeds splits, initialisation, shuffling and augmentation.
        keep_checkpoints: best-k checkpoints kept, ranked by ``metric``.
        max_failures: times a run whose worker died (killed, OOM, a lost node) restarts its
            workers from the last checkpoint before failing (Ray Train's
            ``FailureConfig(max_failures)``); 0 fails on the first.
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
    max_failures: int = Field(1, ge=0, le=100)
    metric: Metric = "val_acc"
