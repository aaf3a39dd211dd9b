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
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

from transferkit.config import FinetuneConfig, Preprocessing
from transferkit.data.dataset import ImageListDataset, build_transform
from transferkit.data.folder import Splits
from transferkit.models import BuiltModel, build_model, param_groups, set_train_mode
from transferkit.training.evaluate import eval_sums, sums_to_metrics
from transferkit.training.objectives import CrossEntropyObjective, Objective
from transferkit.training.schedule import warmup_cosine

__all__ = ["train_loop_per_worker", "seed_everything", "STATE_FILE"]

STATE_FILE = "state.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _optimizer(cfg: FinetuneConfig, built: BuiltModel, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = param_groups(model, built.spec, o.backbone_lr, o.head_lr, o.weight_decay)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=o.head_lr, momentum=o.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=o.head_lr)


def _loaders(cfg: FinetuneConfig, splits: Splits, prep: Preprocessing, rank: int, world: int):
    train_ds = ImageListDataset(splits.train, build_transform(prep, cfg.data.augment), cache=True)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    g = torch.Generator().manual_seed(cfg.seed + rank)
    train = DataLoader(train_ds, batch_size=cfg.optim.batch_size, sampler=sampler,
                       num_workers=cfg.data.num_loader_workers, generator=g,
                       persistent_workers=cfg.data.num_loader_workers > 0)
    val_ds = ImageListDataset(splits.val, build_transform(prep, None), cache=True)
    shard = Subset(val_ds, list(range(rank, len(val_ds), world)))  # exact shards, no padding
    val = DataLoader(shard, batch_size=max(64, cfg.optim.batch_size),
                     num_workers=cfg.data.num_loader_workers)
    return train, sampler, val


def _save_state(path: Path, model, optimizer, scheduler, epoch: int, history: list, extra: dict) -> None:
    inner = getattr(model, "module", model)
    torch.save({"model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                "extra": extra}, path / STATE_FILE)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train on this worker's shard and report each epoch.

    ``config`` keys: ``cfg`` (FinetuneConfig as a dict), ``splits`` (Splits JSON),
    ``preprocessing`` (dict), ``objective_factory`` (optional callable ``cfg -> Objective``,
    default cross-entropy with the config's label smoothing).
    """
    import ray.train
    import ray.train.torch

    cfg = FinetuneConfig.model_validate(config["cfg"])
    splits = Splits.from_json(config["splits"])
    prep = Preprocessing.model_validate(config["preprocessing"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    seed_everything(cfg.seed + rank)
    device = ray.train.torch.get_device()
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None

    factory: Callable[[FinetuneConfig], Objective] | None = config.get("objective_factory")
    objective = factory(cfg) if factory else CrossEntropyObjective(cfg.optim.label_smoothing)
    objective.setup(device)

    torch.manual_seed(cfg.seed)  # identical head init on every rank (DDP also broadcasts rank 0's)
    built = build_model(cfg.model, len(splits.class_names))
    torch.manual_seed(cfg.seed + rank)
    model = ray.train.torch.prepare_model(built.model)
    optimizer = _optimizer(cfg, built, model)
    train_loader, sampler, val_loader = _loaders(cfg, splits, prep, rank, world)
    steps = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        steps * cfg.optim.epochs, int(round(steps * cfg.optim.warmup_epochs)), cfg.optim.min_lr_ratio))

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
        getattr(model, "module", model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        if rank == 0:
            print(f"[transferkit] resumed from epoch {state['epoch'] + 1} checkpoint", flush=True)

    for epoch in range(start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        set_train_mode(model, built.frozen)
        t0 = time.perf_counter()
        tr = torch.zeros(2, dtype=torch.float64, device=device)
        for images, labels in train_loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss, _ = objective(model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            tr[0] += loss.detach().double() * labels.numel()
            tr[1] += labels.numel()
        elapsed = time.perf_counter() - t0
        model.eval()
        val = eval_sums(model, val_loader, device, amp_dtype)
        _all_reduce(tr)
        _all_reduce(val)
        metrics = {"epoch": epoch + 1, "train_loss": float(tr[0] / max(tr[1], 1)),
                   **sums_to_metrics(val, len(splits.class_names), "val"),
                   "images_per_s": float(tr[1]) / max(elapsed, 1e-9),
                   "lr_backbone": _group_lr(optimizer, "backbone"), "lr_head": _group_lr(optimizer, "head")}
        history.append(metrics)
        if rank == 0:
            print("[transferkit] " + json.dumps({k: round(v, 5) if isinstance(v, float) else v
                                                 for k, v in metrics.items()}), flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                _save_state(Path(tmp), model, optimizer, scheduler, epoch, history,
                            {"frozen": built.frozen})
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def _group_lr(optimizer: torch.optim.Optimizer, part: str) -> float:
    for g in optimizer.param_groups:
        if g.get("name", "").startswith(part):
            return float(g["lr"])
    return 0.0
