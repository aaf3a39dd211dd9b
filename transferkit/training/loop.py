"""The one per-worker training loop (Ray Train ``train_loop_per_worker``).

Pure in the Ray Train sense: everything comes in through ``config``; the model is wrapped with
``ray.train.torch.prepare_model`` (DDP when there is more than one worker); every epoch each rank
calls ``ray.train.report`` once (it is a barrier) and rank 0 attaches the checkpoint; a restarted
run resumes from ``ray.train.get_checkpoint()``. What is optimised is an
:class:`~transferkit.training.objectives.Objective`, so fine-tuning, distillation and multi-task
share this loop.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from transferkit.config import FinetuneConfig, Preprocessing
from transferkit.data.dataset import (
    BalancedDistributedSampler,
    ImageListDataset,
    build_pair_transform,
    build_transform,
)
from transferkit.data.folder import Splits
from transferkit.logs import quiet_ray_train, setup_console
from transferkit.models import BuiltModel, build_model, param_groups, set_train_mode
from transferkit.training.evaluate import eval_sums, sum_across_workers, sums_to_metrics
from transferkit.training.objectives import class_weights, make_objective
from transferkit.training.precision import autocast_dtype
from transferkit.training.schedule import warmup_cosine
from transferkit.training.state import STATE_FILE, load_state, save_state

log = logging.getLogger(__name__)

__all__ = ["train_loop_per_worker", "make_optimizer", "seed_everything", "STATE_FILE"]


_EPOCH_SEED_STRIDE = 1_000_003  # a prime: (rank, epoch) pairs never share a seed


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_optimizer(
    cfg: FinetuneConfig,
    built: BuiltModel,
    student: torch.nn.Module,
    extras: torch.nn.Module | None = None,
) -> torch.optim.Optimizer:
    """The run's optimizer over the student's parameter groups (and the objective's ``extras``).

    SGD uses Nesterov momentum (Sutskever et al. 2013) when ``optim.momentum`` > 0; momentum 0
    is plain SGD (torch refuses Nesterov without momentum).
    """
    o = cfg.optim
    groups = param_groups(student, built.spec, o.backbone_lr, o.head_lr, o.weight_decay)
    if extras is not None:
        groups.append(
            {
                "params": list(extras.parameters()),
                "lr": o.head_lr,
                "weight_decay": o.weight_decay,
                "name": "extras",
            }
        )
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=o.head_lr, momentum=o.momentum, nesterov=o.momentum > 0)
    return torch.optim.AdamW(groups, lr=o.head_lr)


def _loaders(
    cfg: FinetuneConfig,
    splits: Splits,
    prep: Preprocessing,
    rank: int,
    world: int,
    teacher_prep: Preprocessing | None = None,
    indexed: bool = False,
):
    """``(train loader, its sampler, val loader)`` of this worker's shards. Train batches are
    ``(x, y)``; ``((student_x, teacher_x), y)`` with ``teacher_prep``; ``((x, sample index), y)``
    when ``indexed`` (the teacher's targets are precomputed, see ``kd.teacher_tta``)."""
    transform = (
        build_pair_transform(prep, teacher_prep, cfg.data.augment)
        if teacher_prep
        else build_transform(prep, cfg.data.augment)
    )
    train_ds = ImageListDataset(splits.train, transform, cache=True, with_index=indexed)
    if cfg.data.sampler == "balanced":
        sampler = BalancedDistributedSampler([y for _, y in splits.train], world, rank, cfg.seed)
    else:
        sampler = DistributedSampler(
            train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False
        )
    g = torch.Generator().manual_seed(cfg.seed + rank)
    train = DataLoader(
        train_ds,
        batch_size=cfg.optim.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_loader_workers,
        generator=g,
        persistent_workers=cfg.data.num_loader_workers > 0,
    )
    val_ds = ImageListDataset(splits.val, build_transform(prep, None), cache=True)
    shard = Subset(val_ds, list(range(rank, len(val_ds), world)))  # exact shards, no padding
    val = DataLoader(
        shard, batch_size=max(64, cfg.optim.batch_size), num_workers=cfg.data.num_loader_workers
    )
    return train, sampler, val


def _save_state(
    path: Path, student, extras, optimizer, scheduler, epoch: int, history: list
) -> None:
    save_state(
        path,
        {
            "model": student.state_dict(),
            "extras": extras.state_dict() if extras is not None else {},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "history": history,
        },
    )


class _WithExtras(torch.nn.Module):
    """The student plus objective-owned trainable modules (e.g. FitNets hint projections), so
    that DDP synchronises both; ``forward`` is the student's."""

    def __init__(self, student: torch.nn.Module, extras: torch.nn.Module):
        super().__init__()
        self.student = student
        self.extras = extras

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def _say(message: str) -> None:
    """One line to the worker's real stdout (forwarded to the driver once), through the
    ``transferkit`` logger (see :func:`_worker_console`)."""
    log.info("%s", message.removeprefix("[transferkit] "))


def _worker_console() -> None:
    """In a Ray Train worker: transferkit's lines go to the real stdout once (Ray Train patches
    ``print`` and the root logger, which would show every line twice), and Ray Train's per-rank
    INFO lines are turned down (:func:`transferkit.logs.quiet_ray_train`)."""
    setup_console(stream=sys.__stdout__)
    logging.getLogger("transferkit").propagate = False
    quiet_ray_train()


def _to(images, device):
    """Move a batch (or a ``(student_x, teacher_x)`` pair) to ``device`` in channels-last layout
    (see :data:`MEMORY_FORMAT`)."""
    if isinstance(images, (tuple, list)):
        return tuple(_to(t, device) for t in images)
    return images.to(
        device,
        non_blocking=True,
        memory_format=MEMORY_FORMAT if images.dim() == 4 else torch.preserve_format,
    )


MEMORY_FORMAT = torch.channels_last
"""Conv nets train in NHWC: oneDNN's CPU kernels (and cuDNN's tensor-core kernels) are faster
there. Measured on this project's 2-core CPU, MobileNetV2 at 160 px, batch 16, one thread:
18.1 -> 29.1 images/s for a training step (1.6x)."""


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train on this worker's shard and report each epoch.

    ``config`` keys (typed objects, as :func:`~transferkit.training.trainer.make_trainer` passes
    them): ``cfg`` (a :class:`~transferkit.config.FinetuneConfig`, or a
    :class:`~transferkit.config.DistillConfig` for a distillation), ``splits``
    (:class:`~transferkit.data.folder.Splits`; label -1 marks unlabelled transfer images),
    ``preprocessing`` (the trained model's :class:`~transferkit.config.Preprocessing`),
    ``teacher_preprocessing`` (optional: when given, batches carry ``(student_x, teacher_x)``).
    """
    import ray.train
    import ray.train.torch

    _worker_console()
    cfg: FinetuneConfig = config["cfg"]
    splits: Splits = config["splits"]
    prep: Preprocessing = config["preprocessing"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    seed_everything(cfg.seed + rank)
    t_prep = config.get("teacher_preprocessing")
    run = _setup(cfg, splits, prep, rank, ray.train.torch.get_device())
    indexed = getattr(run.objective, "teacher_tta", "none") != "none"
    if indexed:  # the teacher becomes a table of its averaged logits, one row per image
        run.objective.cache_targets(splits.train, t_prep or prep, rank, world)
        if rank == 0:
            _say(f"[transferkit] teacher targets: {run.objective.teacher_tta} views averaged")
    train_loader, sampler, val_loader = _loaders(
        cfg, splits, prep, rank, world, None if indexed else t_prep, indexed=indexed
    )
    steps = len(train_loader)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer,
        warmup_cosine(
            steps * cfg.optim.epochs,
            int(round(steps * cfg.optim.warmup_epochs)),
            cfg.optim.min_lr_ratio,
        ),
    )
    start_epoch, history = _restore(run, ray.train.get_checkpoint())
    for epoch in range(start_epoch, cfg.optim.epochs):
        # every epoch's randomness (augmentation, dropout, mixup) from (seed, rank, epoch): a run
        # restarted from a checkpoint replays the epochs it lost as the undisturbed run had them
        seed_everything(cfg.seed + rank + _EPOCH_SEED_STRIDE * epoch)
        sampler.set_epoch(epoch)
        metrics = {"epoch": epoch + 1, **_train_epoch(run, train_loader)}
        run.student.eval()
        val = eval_sums(run.student, val_loader, run.device, run.num_classes, run.amp_dtype)
        metrics.update(sums_to_metrics(sum_across_workers(val), run.num_classes, "val"))
        metrics.update(
            images_per_s=metrics.pop("images_per_s"),
            lr_backbone=_group_lr(run.optimizer, "backbone"),
            lr_head=_group_lr(run.optimizer, "head"),
        )
        history.append(metrics)
        _report(run, epoch, history)


@dataclass
class _Run:
    """One worker's training state: what :func:`_setup` builds, plus the LR scheduler."""

    cfg: FinetuneConfig
    rank: int
    device: torch.device
    amp_dtype: torch.dtype | None
    num_classes: int
    objective: Any
    built: BuiltModel
    extras: torch.nn.Module | None
    model: torch.nn.Module  # the student (with extras) as Ray Train prepared it (DDP)
    optimizer: torch.optim.Optimizer
    scheduler: Any = None

    @property
    def student(self) -> torch.nn.Module:
        return self.built.model


def _setup(
    cfg: FinetuneConfig, splits: Splits, prep: Preprocessing, rank: int, device: torch.device
) -> _Run:
    """The objective (its class weights logged by rank 0), the student built with the same
    initial weights on every rank, wrapped by ``prepare_model``, and its optimizer."""
    import ray.train.torch

    weight = class_weights(
        cfg.optim.class_weight, [y for _, y in splits.train], len(splits.class_names)
    )
    objective = make_objective(cfg, weight)
    objective.setup(device)
    if weight is not None and rank == 0:
        _say(
            f"[transferkit] class weights ({cfg.optim.class_weight}): "
            + ", ".join(f"{n} {w:.3f}" for n, w in zip(splits.class_names, weight.tolist()))
        )
    torch.manual_seed(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    built = build_model(cfg.model, len(splits.class_names))
    extras = None
    if hasattr(objective, "extra_modules"):
        shape = (prep.channels, prep.input_size, prep.input_size)
        extras = objective.extra_modules(built.model, built.spec, shape)
    net = _WithExtras(built.model, extras) if extras is not None else built.model
    net = net.to(memory_format=MEMORY_FORMAT)
    if getattr(objective, "teacher", None) is not None:
        objective.teacher.to(memory_format=MEMORY_FORMAT)
    torch.manual_seed(cfg.seed + rank)
    model = ray.train.torch.prepare_model(net)
    optimizer = make_optimizer(cfg, built, built.model, extras)
    amp_dtype = autocast_dtype(cfg.scaling.precision, device)
    if rank == 0 and amp_dtype is not None and device.type == "cpu":
        _say("[transferkit] precision: bfloat16 autocast on the CPU (scaling.precision)")
    return _Run(
        cfg, rank, device, amp_dtype, len(splits.class_names), objective, built, extras, model,
        optimizer,
    )  # fmt: skip


def _restore(run: _Run, checkpoint) -> tuple[int, list[dict[str, Any]]]:
    """``(first epoch to train, history so far)``: ``(0, [])``, or what a restarted run's
    checkpoint holds (weights, optimizer and scheduler state loaded into ``run``)."""
    if not checkpoint:
        return 0, []
    with checkpoint.as_directory() as d:
        state = load_state(d, run.device)
    run.student.load_state_dict(state["model"])
    if run.extras is not None and state.get("extras"):
        run.extras.load_state_dict(state["extras"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.rank == 0:
        _say(f"[transferkit] resumed from epoch {state['epoch'] + 1} checkpoint")
    return state["epoch"] + 1, state["history"]


def _train_epoch(run: _Run, loader: DataLoader) -> dict[str, float]:
    """One pass over this worker's shard: ``train_loss`` and ``images_per_s``, both over every
    worker's images (the throughput of the whole run, timed on this worker)."""
    run.model.train()
    set_train_mode(run.student, run.built.frozen)
    t0 = time.perf_counter()
    tr = torch.zeros(2, dtype=torch.float64, device=run.device)
    amp = run.amp_dtype
    for images, labels in loader:
        images, labels = _to(images, run.device), labels.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, dtype=amp, enabled=amp is not None):
            loss, _ = (
                run.objective(run.model, images, labels, run.extras)
                if run.extras is not None
                else run.objective(run.model, images, labels)
            )
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        tr[0] += loss.detach().double() * labels.numel()
        tr[1] += labels.numel()
    elapsed = time.perf_counter() - t0
    sum_across_workers(tr)
    return {
        "train_loss": float(tr[0] / max(tr[1], 1)),
        "images_per_s": float(tr[1]) / max(elapsed, 1e-9),
    }


def _report(run: _Run, epoch: int, history: list[dict[str, Any]]) -> None:
    """``ray.train.report`` of the epoch's metrics on every rank (a barrier); rank 0 logs them
    and attaches the checkpoint."""
    import ray.train

    metrics = history[-1]
    if run.rank != 0:
        ray.train.report(metrics)
        return
    shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}
    _say("[transferkit] " + json.dumps(shown))
    with tempfile.TemporaryDirectory() as tmp:
        _save_state(
            Path(tmp), run.student, run.extras, run.optimizer, run.scheduler, epoch, history
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _group_lr(optimizer: torch.optim.Optimizer, part: str) -> float:
    for g in optimizer.param_groups:
        if g.get("name", "").startswith(part):
            return float(g["lr"])
    return 0.0
