"""``transferkit finetune`` and ``transferkit distill``: one Ray Train run each."""

from __future__ import annotations

from typing import Annotated

import typer

from transferkit.cli.common import (
    ConfigFile,
    Dataset,
    Seed,
    UseGpu,
    app,
    check_arch,
    config_defaults,
    exclusive_resume,
    fail,
    fields,
    load,
    overrides,
    read_yaml,
    run,
)
from transferkit.config import DistillConfig, FinetuneConfig

Opt = typer.Option

#: ``--max-failures``: Ray Train restarts a run whose worker died from its last checkpoint.
MaxFailures = Annotated[
    int | None,
    Opt(help="Restarts from the last checkpoint after a worker dies, before the run fails."),
]

#: Each ``finetune`` option's field in :class:`~transferkit.config.FinetuneConfig`.
FINETUNE_FIELDS = fields(
    {
        "data": "dataset image_size val_fraction test_fraction sampler",
        "data.augment": "hflip vflip rot90",
        "model": "weights freeze_depth width_mult",
        "optim": "epochs batch_size optimizer backbone_lr head_lr weight_decay warmup_epochs "
        "label_smoothing class_weight",
        "scaling": "num_workers cpus_per_worker use_gpu",
        "": "seed output metric max_failures",
    },
    model="model.arch",
    augment="data.augment.enabled",
)

#: Each ``distill`` option's field in :class:`~transferkit.config.DistillConfig`.
DISTILL_FIELDS = fields(
    {
        "": "teacher unlabeled baseline baseline_dataset seed output max_failures",
        "data": "dataset image_size",
        "model": "width_mult",
        "kd": "temperature hard_weight soft_weight hint_weight mixup_alpha teacher_tta",
        "optim": "epochs batch_size backbone_lr head_lr",
        "scaling": "num_workers use_gpu",
    },
    student="model.arch",
    student_weights="model.weights",
)


@app.command(cls=config_defaults(FinetuneConfig, FINETUNE_FIELDS))
def finetune(
    ctx: typer.Context,
    config: ConfigFile = None,
    dataset: Dataset = None,
    model: str | None = Opt(None, "--model", help="Architecture (see `transferkit models`)."),
    weights: str | None = Opt(None, help="IMAGENET1K_V1, DEFAULT, none, or a state-dict file."),
    image_size: int | None = Opt(None, help="Input size in pixels (overrides the weights')."),
    freeze_depth: int | None = Opt(None, help="Freeze the first k stages (0 = train all)."),
    width_mult: float | None = Opt(None, help="MobileNet width multiplier."),
    epochs: int | None = Opt(None),
    batch_size: int | None = Opt(None, help="Per worker; the global batch is this x workers."),
    optimizer: str | None = Opt(None, help="adamw or sgd."),
    backbone_lr: float | None = Opt(None),
    head_lr: float | None = Opt(None),
    weight_decay: float | None = Opt(None),
    warmup_epochs: float | None = Opt(None),
    label_smoothing: float | None = Opt(None),
    augment: bool | None = Opt(None, "--augment/--no-augment"),
    hflip: bool | None = Opt(None, "--hflip/--no-hflip", help="Horizontal flips (off for digits)."),
    vflip: bool | None = Opt(None, "--vflip/--no-vflip", help="Vertical flips."),
    rot90: bool | None = Opt(None, "--rot90/--no-rot90", help="Random 90-degree rotations."),
    class_weight: str | None = Opt(None, help="Loss class weights: none, balanced, sqrt_balanced."),
    sampler: str | None = Opt(None, help="random, or balanced (class-balanced sampling)."),
    metric: str | None = Opt(
        None, help="Best-epoch metric: val_acc, val_balanced_acc, val_macro_f1, val_loss."
    ),
    val_fraction: float | None = Opt(None),
    test_fraction: float | None = Opt(None),
    num_workers: int | None = Opt(None, help="Ray Train workers (DDP)."),
    cpus_per_worker: float | None = Opt(None),
    use_gpu: UseGpu = None,
    seed: Seed = None,
    max_failures: MaxFailures = None,
    output: str | None = Opt(None, help="The run folder itself."),
    resume: bool = Opt(
        False, "--resume", help="Continue the run folder from its latest checkpoint."
    ),
    overwrite: bool = Opt(False, "--overwrite", help="Delete an existing run folder first."),
) -> None:
    """Fine-tune a pretrained model with Ray Train; writes model.pt, metrics and a test evaluation."""
    exclusive_resume(resume, overwrite)
    cfg = load(FinetuneConfig, config, overrides(ctx.params, FINETUNE_FIELDS))
    check_arch(cfg.model.arch, "model.arch (--model)")
    from transferkit.training.trainer import finetune as run_finetune

    run(run_finetune, cfg, resume=resume, overwrite=overwrite)


#: ``distill``'s --dataset and --image-size default to the teacher's, not to a config value.
_DISTILL_SHOWN = {k: v for k, v in DISTILL_FIELDS.items() if k not in ("dataset", "image_size")}


@app.command(cls=config_defaults(DistillConfig, _DISTILL_SHOWN))
def distill(
    ctx: typer.Context,
    teacher: str | None = Opt(None, help="Teacher run folder (or its model.pt) from `finetune`."),
    student: str | None = Opt(None, help="Student architecture."),
    width_mult: float | None = Opt(
        None, help="Student width multiplier (1.0 for a student other than the default)."
    ),
    student_weights: str | None = Opt(None, help="Student weights: none, an enum, or a file."),
    config: ConfigFile = None,
    dataset: str | None = Opt(
        None, help="Labelled data (default: the teacher's dataset and splits)."
    ),
    unlabeled: str | None = Opt(None, help="Folder of unlabelled images: an extra transfer set."),
    image_size: int | None = Opt(None, help="Student input size (default: the teacher's)."),
    temperature: float | None = Opt(None, help="KD temperature T."),
    hard_weight: float | None = Opt(None, help="Weight of CE with the labels (0 allowed)."),
    soft_weight: float | None = Opt(None, help="Weight of T^2 * KL to the teacher."),
    hint: list[str] | None = Opt(
        None, help="FitNets hint STUDENT_STAGE:TEACHER_STAGE (repeatable)."
    ),
    hint_weight: float | None = Opt(None, help="Weight of the hint MSE."),
    mixup_alpha: float | None = Opt(
        None, help="Mixup alpha applied to teacher and student alike (0 = off)."
    ),
    teacher_tta: str | None = Opt(
        None,
        help="Targets from the teacher averaged over each image's views: none, hflip or d4 "
        "(computed once; needs --mixup-alpha 0).",
    ),
    baseline: bool | None = Opt(
        None, "--baseline/--no-baseline", help="Also train a label-only student."
    ),
    baseline_dataset: str | None = Opt(None, help="Train the baseline on this dataset instead."),
    epochs: int | None = Opt(None),
    batch_size: int | None = Opt(None),
    backbone_lr: float | None = Opt(None),
    head_lr: float | None = Opt(None),
    num_workers: int | None = Opt(None),
    use_gpu: UseGpu = None,
    seed: Seed = None,
    max_failures: MaxFailures = None,
    output: str | None = Opt(None, help="The student's run folder."),
    resume: bool = Opt(False, "--resume"),
    overwrite: bool = Opt(False, "--overwrite"),
) -> None:
    """Distil a fine-tuned teacher into a compact student (Hinton KD, optional FitNets hints)."""
    exclusive_resume(resume, overwrite)
    given = overrides(ctx.params, DISTILL_FIELDS)
    given["kd"]["hints"] = _hints(hint)
    given["data"]["dataset"] = dataset or _teacher_dataset(teacher, read_yaml(config))
    cfg = load(DistillConfig, config, given)
    check_arch(cfg.model.arch, "model.arch (--student)")
    _check_teacher(cfg.teacher)
    from transferkit.training.distillation import distill as run_distill

    run(run_distill, cfg, resume=resume, overwrite=overwrite)


def _check_teacher(teacher: str) -> None:
    """Exit 2 naming ``--teacher`` when it is not a run folder or a ``model.pt``."""
    from transferkit.models.portable import PortableModelError, resolve_model_file

    try:
        resolve_model_file(teacher)
    except PortableModelError as exc:
        fail(f"teacher (--teacher): {exc}")


def _hints(hint: list[str] | None) -> list[tuple[str, ...]] | None:
    """``--hint S:T`` options as ``(student_stage, teacher_stage)`` pairs; exit 2 when malformed."""
    hints = [tuple(h.split(":", 1)) for h in hint] if hint else None
    if hints and not all(len(h) == 2 and all(h) for h in hints):
        fail("--hint takes STUDENT_STAGE:TEACHER_STAGE, e.g. stage3:stage4")
    return hints


def _teacher_dataset(teacher: str | None, file_data: dict) -> str | None:
    """The teacher's dataset when neither ``--dataset`` nor the file names one (else ``None``)."""
    teacher_path = teacher or file_data.get("teacher")
    if (file_data.get("data") or {}).get("dataset") or not teacher_path:
        return None
    from transferkit.training.distillation import teacher_dataset

    return teacher_dataset(teacher_path)
