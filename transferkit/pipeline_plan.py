"""What ``transferkit pipeline`` would run, checked before Ray starts: the per-stage configs built
from the pipeline's typed sections (:func:`stage_configs`), and every check that needs only the
config and the dataset's class folders (:func:`validate_pipeline`). :mod:`transferkit.pipeline`
runs the stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.config import (
    ConfigError,
    DistillConfig,
    DistillTuneConfig,
    FinetuneConfig,
    PipelineConfig,
    StageTune,
    TuneConfig,
    TuneSettings,
    as_config,
)

__all__ = ["stage_configs", "validate_pipeline"]


# ----------------------------------------------------------------------------- stage configs


def _tune_cfg(cls, base: FinetuneConfig, tune: StageTune, output: str, **update: Any):
    """A search stage's config: the stage's own base with the search's trial scaling, per-trial
    epochs and settings (the search stage's fields other than those two), and ``update``."""
    optim = base.optim
    if tune.epochs:
        optim = optim.model_copy(update={"epochs": tune.epochs})
    return as_config(
        base,
        cls,
        optim=optim,
        scaling=tune.scaling,
        output=str(output),
        tune=as_config(tune, TuneSettings),
        **update,
    )


def stage_configs(cfg: PipelineConfig) -> dict[str, Any]:
    """The per-stage configs the pipeline would run, before any search result is applied.

    Every stage config is built from the pipeline's typed sections (shared, not copied).

    Returns:
        ``{"tune-teacher": TuneConfig | None, "teacher": FinetuneConfig | None,
        "tune-student": DistillTuneConfig | None, "student": DistillConfig | None}``; the
        teacher's folder is ``teacher.run`` when given.
    """
    out = Path(cfg.output).expanduser().resolve()
    common = {
        "data": cfg.data,
        "seed": cfg.seed,
        "keep_checkpoints": cfg.keep_checkpoints,
        "max_failures": cfg.max_failures,
        "metric": cfg.metric,
    }
    t = cfg.teacher

    def search_dir(name: str) -> str:
        return f"{cfg.storage.rstrip('/')}/{name}" if cfg.storage else str(out / name)

    stages: dict[str, Any] = {
        "tune-teacher": None,
        "teacher": None,
        "tune-student": None,
        "student": None,
    }
    if t.run is None:
        teacher = as_config(t, FinetuneConfig, **common, output=str(out / "teacher"))
        if t.tune is not None:
            stages["tune-teacher"] = _tune_cfg(
                TuneConfig, teacher, t.tune, search_dir("tune-teacher")
            )
        stages["teacher"] = teacher
    teacher_dir = Path(t.run).expanduser().resolve() if t.run else out / "teacher"
    s = cfg.student
    if s is not None:
        s_common = common
        if s.image_size:  # the student's own input size; the teacher keeps data.image_size
            s_common = {
                **common,
                "data": common["data"].model_copy(update={"image_size": s.image_size}),
            }
        student = as_config(
            s, DistillConfig, **s_common, teacher=str(teacher_dir), output=str(out / "student")
        )
        if s.tune is not None:
            stages["tune-student"] = _tune_cfg(
                DistillTuneConfig, student, s.tune, search_dir("tune-student"), baseline=False
            )
        stages["student"] = student
    return stages


# ----------------------------------------------------------------------------- validation


def _dataset_classes(cfg: PipelineConfig) -> tuple[list[str], int]:
    from transferkit.data.folder import DatasetError, resolve_splits

    try:
        splits = resolve_splits(
            cfg.data.dataset, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed
        )
    except DatasetError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    return splits.class_names, len(splits.test)


def _teacher_classes(run: str) -> list[str]:
    from transferkit.data.folder import Splits

    p = Path(run).expanduser()
    folder = p if p.is_dir() else p.parent
    if (folder / "splits.json").is_file():
        return Splits.from_json((folder / "splits.json").read_text()).class_names
    from transferkit.models.portable import load_portable

    return load_portable(str(p))[1]["class_names"]


def validate_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Check the whole pipeline before any stage starts; returns :func:`stage_configs`.

    Checks, in this order (cheapest first): architectures are registered; the dataset resolves
    and has a test split; an existing teacher (``teacher.run``) exists and has the data's classes;
    freeze depths and search spaces fit each model's stages; ASHA budgets; then, on the Ray
    cluster (started or joined here, no worker started), that every stage's workers and trials fit.

    Raises:
        ConfigError: naming the field (``teacher.model.arch``, ``student.tune.scaling``, ...).
    """
    from transferkit.models.registry import UnknownArchError, get_arch

    for who, section in (("teacher", cfg.teacher), ("student", cfg.student)):
        if section is None or (who == "teacher" and section.run):
            continue
        try:
            get_arch(section.model.arch)
        except UnknownArchError as exc:
            raise ConfigError(f"{who}.model.arch: {exc}") from None
    classes, n_test = _dataset_classes(cfg)
    if n_test == 0:
        raise ConfigError(
            f"data.test_fraction: the pipeline scores teacher and student on a test split, "
            f"but {cfg.data.dataset} gives none; set data.test_fraction > 0 (e.g. 0.2)"
        )
    if cfg.teacher.run:
        from transferkit.models.portable import PortableModelError, resolve_model_file

        try:
            resolve_model_file(cfg.teacher.run)
            t_classes = _teacher_classes(cfg.teacher.run)
        except (PortableModelError, FileNotFoundError) as exc:
            raise ConfigError(f"teacher.run: {exc}") from None
        if t_classes != classes:
            raise ConfigError(
                f"teacher.run: the teacher's classes {t_classes} differ from the data's "
                f"{classes} (data.dataset = {cfg.data.dataset})"
            )
    q = cfg.export.quantization
    if q.quantize == "fp16":
        from transferkit.errors import UsageError
        from transferkit.export.fp16 import require_gpu

        try:
            require_gpu(q.force)
        except UsageError as exc:
            raise ConfigError(f"export.quantization.quantize: {exc}") from None
    stages = stage_configs(cfg)
    _check_class_options(cfg, stages, classes)
    _check_models(cfg, stages, len(classes))
    _check_resources(stages)
    return stages


def _check_class_options(cfg: PipelineConfig, stages: dict[str, Any], classes: list[str]) -> None:
    """Options that depend on the data's classes: explicit class weights (one per class), the
    report's positive class, and ``weights: teacher`` (only a student has a teacher)."""
    from transferkit.training.objectives import class_weights

    for who, run in (("teacher", "teacher"), ("student", "student")):
        c = stages[run]
        if c is None:
            continue
        if isinstance(c.optim.class_weight, list):
            try:
                class_weights(c.optim.class_weight, [], len(classes))  # a list needs no labels
            except ValueError as exc:
                raise ConfigError(f"{who}.{exc}") from None
    if stages["teacher"] is not None and stages["teacher"].model.weights == "teacher":
        raise ConfigError(
            "teacher.model.weights: 'teacher' is for the student (start it from the "
            "teacher's weights); give the teacher an enum such as IMAGENET1K_V1, a file, or none"
        )
    pos = cfg.report.positive_class
    if pos is not None and pos not in classes:
        raise ConfigError(
            f"report.positive_class: {pos!r} is not a class of {cfg.data.dataset} "
            f"(classes: {', '.join(classes)})"
        )


def _check_models(cfg: PipelineConfig, stages: dict[str, Any], num_classes: int) -> None:
    from transferkit.models import check_freeze_depth, stages_of
    from transferkit.tuning.resources import check_schedule
    from transferkit.tuning.space import param_space

    for who, run, search in (
        ("teacher", "teacher", "tune-teacher"),
        ("student", "student", "tune-student"),
    ):
        c = stages[run]
        if c is None:
            continue
        try:
            n = len(stages_of(c.model))  # a build on the meta device: no weights, no memory
        except ValueError as exc:  # keep_stages out of range, width_mult unsupported
            raise ConfigError(
                f"{who}.{exc}" if str(exc).startswith("model.") else f"{who}.model: {exc}"
            ) from None
        check_freeze_depth(c.model.freeze_depth, n, c.model.arch, f"{who}.model.freeze_depth")
        t = stages[search]
        if t is not None:
            try:
                param_space(
                    t.tune.search,
                    n,
                    t.model.weights is not None,
                    distill=search == "tune-student",
                    arch=t.model.arch,
                )
                check_schedule(t, f"{who}.tune.epochs (or {who}.optim.epochs)")
            except ConfigError as exc:
                raise ConfigError(f"{who}.{exc}") from None


def _check_resources(stages: dict[str, Any]) -> None:
    import ray

    from transferkit.training.trainer import check_resources, ensure_ray
    from transferkit.tuning.resources import plan_concurrency

    ensure_ray()
    cluster = ray.cluster_resources()
    for who, run, search in (
        ("teacher", "teacher", "tune-teacher"),
        ("student", "student", "tune-student"),
    ):
        if stages[run] is not None:
            try:
                check_resources(stages[run])
            except ConfigError as exc:
                raise ConfigError(f"{who}.{exc}") from None
        if stages[search] is not None:
            plan_concurrency(stages[search], cluster, f"{who}.tune", f"{who}.tune.scaling")
