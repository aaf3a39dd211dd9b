"""Ray Train vs a plain loop: what one Ray Train worker costs over a single-process PyTorch loop.

Both sides train the same model (``--arch``, default MobileNetV2, ``--weights``, default random)
on the same data (the bundled digits, materialized by ``transferkit.data.materialize`` into a
temporary folder, or ``--data DIR``; the same seeded splits) at the same ``--image-size``
(default 64 px), batch (``--batch``, default 32), augmentation, optimizer, schedule and precision,
with one intra-op thread (``torch.set_num_threads(1)``), for ``--epochs`` (default 3):

(a) plain: one process, no Ray; the loop is transferkit's own epoch (``_train_epoch`` of
    ``transferkit.training.loop``, the function each Ray Train worker runs) on the loader the
    worker builds (``_loaders`` with rank 0 of 1);
(b) Ray Train: ``transferkit.training.trainer.finetune`` with ``scaling.num_workers=1`` and
    ``cpus_per_worker=1`` (``TorchTrainer``, one worker: no DDP), its images/s read from the run's
    ``metrics.jsonl``. It connects to ``RAY_ADDRESS`` or starts a local cluster (and stops it).

The figure is each side's training images/s (the epoch's images over its training-pass time,
validation excluded), the median over the epochs after the first (the first fills the image
cache); the goal: plain / Ray <= 1.10. Wall times (Ray's includes starting the cluster and the
worker) are reported beside. JSON to ``bench/results/train_overhead-<time>.json`` (and
``train_overhead.json``).

Usage: ``.venv/bin/python bench/train_overhead.py [--epochs 3] [--batch 32] [--image-size 64]``.
Run it with nothing else on the CPU; it starts Ray.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, check, finish, reference

#: Plain-loop images/s may exceed Ray Train's by this factor.
MAX_RATIO = 1.10


def make_config(a: argparse.Namespace, data: Path, output: Path):
    """The one run both sides train (a :class:`~transferkit.config.FinetuneConfig`)."""
    from transferkit.config import FinetuneConfig

    return FinetuneConfig.model_validate(
        {
            "data": {"dataset": str(data), "image_size": a.image_size, "num_loader_workers": 0},
            "model": {"arch": a.arch, "weights": a.weights, "freeze_depth": 0},
            "optim": {"epochs": a.epochs, "batch_size": a.batch},
            "scaling": {"num_workers": 1, "cpus_per_worker": 1.0, "use_gpu": False},
            "output": str(output),
            "seed": a.seed,
        }
    )


def plain_loop(cfg, plan) -> list[float]:
    """Images/s of each epoch of the worker's own loop, in this process, without Ray."""
    import torch

    from transferkit.models import build_model
    from transferkit.training import loop
    from transferkit.training.objectives import class_weights, make_objective
    from transferkit.training.precision import autocast_dtype
    from transferkit.training.schedule import warmup_cosine

    torch.set_num_threads(int(cfg.scaling.cpus_per_worker))
    device, splits, n = torch.device("cpu"), plan.splits, len(plan.splits.class_names)
    loop.seed_everything(cfg.seed)
    labels = [y for _, y in splits.train]
    objective = make_objective(cfg, class_weights(cfg.optim.class_weight, labels, n))
    objective.setup(device)
    torch.manual_seed(cfg.seed)
    built = build_model(cfg.model, n)
    model = built.model.to(memory_format=loop.MEMORY_FORMAT)
    optimizer = loop.make_optimizer(cfg, built, built.model)
    train, sampler, _ = loop._loaders(cfg, splits, plan.preprocessing, 0, 1)
    o = cfg.optim
    steps = len(train)
    schedule = warmup_cosine(steps * o.epochs, round(steps * o.warmup_epochs), o.min_lr_ratio)
    run = loop._Run(
        cfg=cfg,
        rank=0,
        device=device,
        amp_dtype=autocast_dtype(cfg.scaling.precision, device),
        num_classes=n,
        objective=objective,
        built=built,
        extras=None,
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
    )
    rates = []
    for epoch in range(o.epochs):
        loop.seed_everything(cfg.seed + loop._EPOCH_SEED_STRIDE * epoch)
        sampler.set_epoch(epoch)
        rates.append(loop._train_epoch(run, train)["images_per_s"])
        print(f"plain loop: epoch {epoch + 1}: {rates[-1]:.1f} images/s", flush=True)
    return rates


def ray_train(cfg, plan) -> list[float]:
    """Images/s of each epoch of ``finetune`` with one Ray Train worker (from ``metrics.jsonl``)."""
    import ray

    from transferkit.training.trainer import finetune

    started = not ray.is_initialized()
    try:
        result = finetune(cfg, overwrite=True, splits=plan.splits)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    lines = (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["images_per_s"] for line in lines if line.strip()]


def steady(rates: list[float]) -> float:
    """The median images/s over the epochs after the first (the only one if just one)."""
    return statistics.median(rates[1:] or rates)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=None, help="ImageFolder (default: the digits)")
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--weights", default=None, help="e.g. IMAGENET1K_V1 (default: random)")
    p.add_argument("--image-size", type=int, default=64, help="pixels")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    from transferkit.data import materialize
    from transferkit.logs import setup_console
    from transferkit.training.trainer import prepare_run

    setup_console()
    with tempfile.TemporaryDirectory(prefix="bench-train-overhead-") as tmp:
        data = a.data or Path(tmp) / "digits"
        if a.data is None:
            materialize("digits", data)
        t0 = time.perf_counter()
        plan = prepare_run(make_config(a, data, Path(tmp) / "plain"))
        plain = plain_loop(plan.cfg, plan)
        t1 = time.perf_counter()
        ray_rates = ray_train(make_config(a, data, Path(tmp) / "ray"), plan)
        t2 = time.perf_counter()
    ratio = steady(plain) / steady(ray_rates)
    r = {
        **{k: getattr(a, k) for k in ("arch", "weights", "image_size", "batch", "epochs")},
        "threads": 1,
        "train_images": len(plan.splits.train),
        "plain_images_per_s": plain,
        "ray_images_per_s": ray_rates,
        "plain_steady": steady(plain),
        "ray_steady": steady(ray_rates),
        "ratio": ratio,
        "plain_wall_s": t1 - t0,
        "ray_wall_s": t2 - t1,
        "checks": {
            f"images/s, plain loop / Ray Train (1 worker); {a.arch} {a.image_size} px, batch "
            f"{a.batch}, 1 thread": check(
                f"{ratio:.3f} ({steady(plain):.1f} vs {steady(ray_rates):.1f} images/s)",
                f"<= {MAX_RATIO:.2f}",
                ratio <= MAX_RATIO,
            )
        },
        "references": [
            reference(
                f"wall time of {a.epochs} epochs: plain loop; Ray Train (cluster start included)",
                f"{t1 - t0:.0f} s; {t2 - t1:.0f} s",
            )
        ],
    }
    return finish("train_overhead", r, a.out)


if __name__ == "__main__":
    sys.exit(main())
