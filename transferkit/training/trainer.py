"""Driver side of fine-tuning: validate, resolve data and preprocessing, run the Ray Train
``TorchTrainer``, then write the portable ``model.pt``, metrics and the test evaluation.

Run folder layout (``cfg.output``)::

    config.yaml          resolved config (``transferkit finetune --config`` accepts it)
    versions.json        package versions
    splits.json          the exact file lists of train/val/test (resume keeps them)
    checkpoint_*/        Ray Train checkpoints (best-k by val top-1, plus the latest)
    metrics.jsonl        one JSON line per epoch
    model.pt             best epoch's weights + architecture, class names, preprocessing
    test_metrics.json    final evaluation on the test split
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from transferkit.config import ConfigError, FinetuneConfig, Preprocessing, save_config
from transferkit.data.dataset import verify_images
from transferkit.data.folder import Splits, resolve_splits
from transferkit.errors import TransferkitError
from transferkit.models import BuiltModel, build_model, count_parameters
from transferkit.training.loop import train_loop_per_worker
from transferkit.training.outcome import TrainingError, evaluate_split, finish_run, metric_mode

__all__ = [
    "finetune",
    "fit_run",
    "finish_run",
    "RunExistsError",
    "TrainingError",
    "resolve_preprocessing",
    "prepare_run",
    "RunPlan",
    "evaluate_split",
    "ensure_ray",
    "start_run",
    "load_splits",
    "make_trainer",
    "check_resources",
]

log = logging.getLogger(__name__)

PACKAGES = (
    "transferkit",
    "torch",
    "torchvision",
    "ray",
    "onnx",
    "onnxruntime-gpu",
    "onnxruntime",
    "numpy",
    "Pillow",
    "scikit-learn",
    "pydantic",
)


class RunExistsError(TransferkitError, FileExistsError):
    """The run folder exists and neither ``--resume`` nor ``--overwrite`` was given."""


@dataclass
class RunPlan:
    """What the driver resolved before any worker starts."""

    cfg: FinetuneConfig
    run_dir: Path
    splits: Splits
    preprocessing: Preprocessing
    built: BuiltModel


def resolve_preprocessing(built: BuiltModel, image_size: int | None) -> Preprocessing:
    """The weights' preprocessing, with ``image_size`` overriding the input size.

    An override resizes the whole image to ``image_size`` (``crop_pct=1.0``): small inputs such as
    8x8 digits must not lose their borders to an ImageNet-style center crop.
    """
    prep = built.preprocessing
    if image_size is not None:
        prep = prep.model_copy(update={"input_size": image_size, "crop_pct": 1.0})
    return prep


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's result."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _prepare_folder(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Return True when an existing run is continued."""
    exists = run_dir.exists() and any(run_dir.iterdir())
    if exists and overwrite:
        shutil.rmtree(run_dir)
        exists = False
    if exists and not resume:
        raise RunExistsError(
            f"run folder {run_dir} already exists: pass --resume to continue it from its latest "
            "checkpoint, --overwrite to start afresh, or choose another --output"
        )
    if resume and not exists:
        raise RunExistsError(f"--resume: run folder {run_dir} does not exist (nothing to resume)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return exists


def load_splits(cfg: FinetuneConfig) -> Splits:
    """Resolve ``cfg.data.dataset`` into verified file lists (unreadable images dropped and
    listed in ``splits.skipped`` with a warning each)."""
    splits = resolve_splits(
        cfg.data.dataset, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed
    )
    good, splits.skipped = verify_images(splits.train + splits.val + splits.test)  # one count
    readable = set(good)
    splits.train, splits.val, splits.test = (
        [s for s in part if s in readable] for part in (splits.train, splits.val, splits.test)
    )
    if splits.skipped:
        log.info("the skipped files are listed in splits.json")
    return splits


def prepare_run(
    cfg: FinetuneConfig,
    resume: bool = False,
    overwrite: bool = False,
    splits: Splits | None = None,
    preprocessing: Preprocessing | None = None,
) -> RunPlan:
    """Everything that can fail fast, before Ray starts: folder policy, dataset, model, weights,
    freeze depth; writes config, versions and splits into the run folder.

    Args:
        splits: use these file lists instead of resolving ``cfg.data`` (e.g. the teacher's).
        preprocessing: use this instead of the weights' (e.g. a student taking the teacher's).

    Raises:
        RunExistsError, DatasetError, UnknownArchError, WeightsUnavailableError, FreezeDepthError.
    """
    run_dir = Path(cfg.output).expanduser().resolve()
    continuing = _prepare_folder(run_dir, resume, overwrite)
    if continuing and (run_dir / "splits.json").is_file():
        splits = Splits.from_json((run_dir / "splits.json").read_text())
    elif splits is None:
        splits = load_splits(cfg)
    if not splits.train or not splits.val:
        raise ConfigError(
            f"data: need training and validation images; got {splits.counts()} "
            "(raise data.val_fraction or add a val/ folder)"
        )
    from transferkit.training.objectives import class_weights

    try:  # checked here, not first in a worker
        class_weights(cfg.optim.class_weight, [y for _, y in splits.train], len(splits.class_names))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    built = build_model(cfg.model, len(splits.class_names))
    prep = (preprocessing or resolve_preprocessing(built, cfg.data.image_size)).model_copy(
        update={"background": tuple(cfg.data.background)}
    )
    save_config(_with_absolute_paths(cfg), run_dir / "config.yaml")
    (run_dir / "versions.json").write_text(json.dumps(package_versions(), indent=2))
    (run_dir / "splits.json").write_text(splits.to_json())
    return RunPlan(cfg, run_dir, splits, prep, built)


def _with_absolute_paths(cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with its local paths absolute, so that ``RUN/config.yaml`` means the same run from
    any directory (``--config RUN/config.yaml --resume``): ``output``, a dataset folder, a weights
    file, and a distillation's ``teacher`` / ``unlabeled`` / ``baseline_dataset``. Bundled
    dataset names and weight enums stay as they are (an existing path wins over a name, as in
    :func:`~transferkit.data.folder.dataset_folder`)."""

    def local(value: str | None, only_files: bool = False) -> str | None:
        path = Path(value).expanduser() if value else None
        found = path is not None and (path.is_file() if only_files else path.exists())
        return str(path.resolve()) if found else value

    weights = local(cfg.model.weights, only_files=True)  # "teacher" names no folder
    update: dict[str, Any] = {
        "output": str(Path(cfg.output).expanduser().resolve()),
        "data": cfg.data.model_copy(update={"dataset": local(cfg.data.dataset)}),
        "model": cfg.model.model_copy(update={"weights": weights}),
    }
    for name in ("teacher", "unlabeled", "baseline_dataset"):
        if getattr(cfg, name, None):
            update[name] = local(getattr(cfg, name))
    return cfg.model_copy(update=update)


def ensure_ray() -> bool:
    """Connect to a Ray cluster (``RAY_ADDRESS``) or start a local one. Returns True when this call
    started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(logging_level=logging.WARNING, log_to_driver=True)
    return True


def check_resources(cfg: FinetuneConfig) -> None:
    """Refuse a run whose workers cannot fit the cluster (it would wait forever)."""
    import ray

    if cfg.scaling.autoscale:
        return
    res = ray.cluster_resources()
    need_cpu = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    if need_cpu > res.get("CPU", 0) + 1e-9:
        raise ConfigError(
            f"scaling: {cfg.scaling.num_workers} workers x {cfg.scaling.cpus_per_worker} CPU = "
            f"{need_cpu:g} CPUs, but the Ray cluster has {res.get('CPU', 0):g}; lower "
            "scaling.num_workers (--num-workers) or scaling.cpus_per_worker, or set "
            "scaling.autoscale=true on an autoscaling cluster"
        )
    need_gpu = cfg.scaling.num_workers * cfg.scaling.gpus_per_worker if cfg.scaling.use_gpu else 0
    if need_gpu > res.get("GPU", 0) + 1e-9:
        raise ConfigError(
            f"scaling.use_gpu: {need_gpu:g} GPUs needed but the Ray cluster has "
            f"{res.get('GPU', 0):g}; use --no-gpu or set scaling.autoscale=true"
        )


def finetune(
    cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False, splits: Splits | None = None
) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data`` with Ray Train; see the module doc for outputs.

    Args:
        cfg: the resolved config.
        resume: continue an existing run folder from its latest checkpoint.
        overwrite: delete an existing run folder first.
        splits: train on these file lists instead of resolving ``cfg.data``.

    Returns:
        Summary dict: run folder, best epoch metrics, test metrics, parameter count.

    Raises:
        RunExistsError, ConfigError and the model/data errors of :func:`prepare_run`;
        TrainingError when the distributed run fails.
    """
    plan = start_run(cfg, resume, overwrite, splits=splits)
    return finish_run(plan, fit_run(plan))


def start_run(cfg: FinetuneConfig, resume: bool, overwrite: bool, **prepare_kwargs: Any) -> RunPlan:
    """:func:`prepare_run`, connect to Ray and check resources; a fresh run folder is removed again
    when anything fails before training starts. Prints what will run."""
    run_dir = Path(cfg.output).expanduser().resolve()
    fresh = not run_dir.exists()
    try:
        plan = prepare_run(cfg, resume, overwrite, **prepare_kwargs)
        ensure_ray()
        check_resources(cfg)
    except BaseException:
        if fresh and run_dir.exists():  # nothing trained yet: leave no half-made run folder
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    counts = plan.splits.counts()
    log.info(f"run folder {plan.run_dir}")
    log.info(
        f"data {counts} classes={len(plan.splits.class_names)}; "
        f"input {plan.preprocessing.input_size}px; model {cfg.model.arch} "
        f"({count_parameters(plan.built.model):,} parameters, freeze_depth={cfg.model.freeze_depth}"
        f" of {len(plan.built.stages)} stages)"
    )
    log.info(
        f"{cfg.scaling.num_workers} workers x batch {cfg.optim.batch_size} = global "
        f"batch {cfg.scaling.num_workers * cfg.optim.batch_size}"
    )
    return plan


def make_trainer(
    cfg: FinetuneConfig,
    splits: Splits,
    preprocessing: Preprocessing,
    name: str,
    storage_path: str,
    callbacks: list | None = None,
    teacher_preprocessing: Preprocessing | None = None,
) -> Any:
    """The Ray Train ``TorchTrainer`` for one run of :func:`train_loop_per_worker`.

    The workers receive ``cfg``, ``splits`` and the preprocessing as the typed objects they are
    (Ray pickles them); a :class:`~transferkit.config.DistillConfig` makes the run a distillation.

    Args:
        cfg: the run's config (workers, resources, checkpoints to keep).
        splits / preprocessing: the data and how images become tensors.
        name / storage_path: the run's storage; the same pair again resumes the run from its
            latest checkpoint.
        callbacks: Ray Train callbacks (e.g. Tune's ``TuneReportCallback`` inside a trial).
        teacher_preprocessing: a distillation's teacher preprocessing, when it differs from the
            student's (batches then carry both inputs).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg,
            "splits": splits,
            "preprocessing": preprocessing,
            "teacher_preprocessing": teacher_preprocessing,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute=cfg.metric,
                checkpoint_score_order=metric_mode(cfg.metric),
            ),
        ),
    )


def fit_run(plan: RunPlan, teacher_preprocessing: Preprocessing | None = None) -> Any:
    """Run the planned Ray Train job (fine-tuning, distillation or a baseline: the same driver).

    Args:
        plan: from :func:`start_run` (config, splits, preprocessing, run folder, resume).
        teacher_preprocessing: for a distillation whose teacher sees other inputs.

    Returns:
        Ray Train's ``Result`` (its ``checkpoint`` is the latest one).

    Raises:
        TrainingError: the workers failed (the cause chained).
    """
    trainer = make_trainer(
        plan.cfg,
        plan.splits,
        plan.preprocessing,
        plan.run_dir.name,
        str(plan.run_dir.parent),
        teacher_preprocessing=teacher_preprocessing,
    )
    try:
        return trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types
        raise TrainingError(f"training failed: {exc}") from exc
