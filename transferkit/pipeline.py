"""``transferkit pipeline``: the whole job from one config.

Stages, in order (each optional in the config)::

    tune-teacher   Ray Tune search over teacher fine-tuning runs          (teacher.tune)
    teacher        fine-tune the teacher with the best values found        (unless teacher.run)
    tune-student   Ray Tune search over distillation runs                  (student.tune)
    student        distil the teacher into the student                     (student)
    export         teacher.onnx / student.onnx, validated against PyTorch
    evaluate       the ONNX files on the test split with ONNX Runtime: accuracy, balanced
                   accuracy, per-class precision/recall/F1, confusion matrix, latency
    report         report.md / report.json / training_curves.png / confusion_matrices.png

With ``student.baseline`` the label-only student (``student/baseline``) is exported
(``baseline.onnx``) and evaluated beside the distilled one, so the report shows what distillation
added.

Every stage writes into its own folder under ``output`` and records, in ``stages/<name>.json``,
the hash of its resolved config and of its inputs (the upstream files it reads). A stage whose
record says *done* with the same hash is skipped, so a pipeline that failed or was killed in
stage 4 restarts at stage 4; a stage that was *running* with the same hash resumes from its last
checkpoint (Ray Train) or experiment state (Ray Tune). ``force`` re-runs everything.

Before any stage runs, :func:`validate_pipeline` checks the whole config (architectures, freeze
depths, search spaces, the teacher's classes against the data, every stage's resources against
the Ray cluster) and names the field of the first mistake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferkit.config import (
    ConfigError,
    DistillConfig,
    DistillTuneConfig,
    ExportConfig,
    FinetuneConfig,
    PipelineConfig,
    StageTune,
    TuneConfig,
    TuneSettings,
    as_config,
    save_config,
)
from transferkit.errors import TransferkitError

log = logging.getLogger(__name__)

__all__ = ["run_pipeline", "validate_pipeline", "PipelineError", "stage_configs"]


class PipelineError(TransferkitError, RuntimeError):
    """A stage failed in a way the config does not explain (the cause is chained)."""


def _say(msg: str) -> None:
    log.info("%s", msg)


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
    from transferkit.tuning.search import check_schedule
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
    from transferkit.tuning.search import plan_concurrency

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


# ----------------------------------------------------------------------------- stage records


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stage_hash(config: Any, inputs: list[Path]) -> str:
    payload = {
        "config": config.model_dump(mode="json") if hasattr(config, "model_dump") else config,
        "inputs": {str(p): _file_digest(p) for p in inputs},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Stage:
    name: str
    config: Any
    inputs: list[Path]
    run: Callable[[bool], dict[str, Any]]  # resume -> result (JSON-able)


class _Records:
    def __init__(self, root: Path):
        self.dir = root / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> dict[str, Any] | None:
        p = self.dir / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def write(self, name: str, record: dict[str, Any]) -> None:
        tmp = self.dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(self.dir / f"{name}.json")


def _run_stage(stage: _Stage, records: _Records, force: bool) -> dict[str, Any]:
    digest = _stage_hash(stage.config, stage.inputs)
    rec = records.read(stage.name)
    if not force and rec and rec["hash"] == digest and rec["status"] == "done":
        _say(f"stage {stage.name}: up to date (config and inputs unchanged), skipped")
        return rec["result"]
    resume = bool(not force and rec and rec["hash"] == digest and rec["status"] == "running")
    why = (
        "--force"
        if force
        else "resuming an interrupted run"
        if resume
        else "config or inputs changed"
        if rec
        else "first run"
    )
    _say(f"stage {stage.name}: running ({why})")
    t0 = time.time()
    records.write(stage.name, {"hash": digest, "status": "running", "started": t0})
    result = stage.run(resume)
    records.write(
        stage.name,
        {
            "hash": digest,
            "status": "done",
            "started": t0,
            "finished": time.time(),
            "seconds": round(time.time() - t0, 1),
            "result": result,
        },
    )
    _say(f"stage {stage.name}: done in {time.time() - t0:.0f} s")
    return result


# ----------------------------------------------------------------------------- stages


def _with_best(cfg, tune_result: dict[str, Any] | None):
    """The stage's config with the best values its search found (``None``: no search ran)."""
    if not tune_result:
        return cfg
    from transferkit.tuning.space import apply_sample

    return apply_sample(cfg, tune_result["best"]["config"])


def _search(tcfg) -> Callable[[bool], dict[str, Any]]:
    def run(resume: bool) -> dict[str, Any]:
        from ray import tune

        from transferkit.tuning.search import SearchInterrupted, resume_search, tune_search

        try:
            if resume and tune.Tuner.can_restore(tcfg.output):
                return resume_search(tcfg.output)
            return tune_search(tcfg, overwrite=True)
        except SearchInterrupted as exc:
            raise SearchInterrupted(
                f"{exc}, or run the same `transferkit pipeline` command again "
                "(it continues the search)"
            ) from None

    return run


def _train(fn_name: str, c: Any) -> Callable[[bool], dict[str, Any]]:
    def run(resume: bool) -> dict[str, Any]:
        out = Path(c.output)
        resume = resume and (out / "splits.json").is_file()  # a checkpointed run to continue
        if fn_name == "finetune":
            from transferkit.training.trainer import finetune

            return finetune(c, resume=resume, overwrite=not resume)
        from transferkit.training.distillation import distill

        return distill(c, resume=resume, overwrite=not resume)

    return run


def _export(
    out: Path, cfg: PipelineConfig, runs: dict[str, Path]
) -> Callable[[bool], dict[str, Any]]:
    def run(resume: bool) -> dict[str, Any]:
        from transferkit.export.onnx_export import export_onnx

        result = {}
        for name, run_dir in runs.items():
            tta = cfg.export.teacher_tta if name == "teacher" else cfg.export.student_tta
            onnx_path = str(out / f"{name}.onnx")
            rep = export_onnx(
                as_config(cfg.export, ExportConfig, run=str(run_dir), output=onnx_path, tta=tta)
            )
            result[name] = {
                "onnx": str(out / f"{name}.onnx"),
                "max_abs_diff": rep.max_abs_diff,
                "top1_agreement": rep.top1_agreement,
                "images_compared": rep.images_compared,
            }
        return result

    return run


def _evaluate(
    out: Path, cfg: PipelineConfig, teacher_dir: Path, names: list[str]
) -> Callable[[bool], dict[str, Any]]:
    def run(resume: bool) -> dict[str, Any]:
        from transferkit.data.folder import Splits
        from transferkit.export.evaluate import onnx_figures

        test = Splits.from_json((teacher_dir / "splits.json").read_text()).test
        if not test:
            raise ConfigError("data.test_fraction: the teacher's run has no test split to score on")
        return {
            name: onnx_figures(
                out / f"{name}.onnx",
                test,
                cfg.evaluate.threads,
                cfg.evaluate.latency_batches,
                cfg.evaluate.latency_runs,
            )
            for name in names
        }

    return run


def run_pipeline(cfg: PipelineConfig, force: bool = False) -> dict[str, Any]:
    """Run every configured stage in order, skipping those already done; see the module doc.

    Args:
        cfg: the pipeline config.
        force: re-run every stage (each overwrites its folder).

    Returns:
        The report dict (also ``report.json``), with ``report_md`` its Markdown path.

    Raises:
        ConfigError: from :func:`validate_pipeline`, before anything runs.
        SearchInterrupted: a search stage was interrupted (run the pipeline again to continue).
        plus the errors of each stage (training, export validation).
    """
    out = Path(cfg.output).expanduser().resolve()
    stages = validate_pipeline(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "pipeline.yaml")
    records = _Records(out)
    results: dict[str, Any] = {}
    teacher_dir = (
        Path(cfg.teacher.run).expanduser().resolve() if cfg.teacher.run else out / "teacher"
    )
    if teacher_dir.is_file():
        teacher_dir = teacher_dir.parent

    if stages["tune-teacher"] is not None:
        results["tune-teacher"] = _run_stage(
            _Stage("tune-teacher", stages["tune-teacher"], [], _search(stages["tune-teacher"])),
            records,
            force,
        )
    if stages["teacher"] is not None:
        t_cfg = _with_best(stages["teacher"], results.get("tune-teacher"))
        results["teacher"] = _run_stage(
            _Stage("teacher", t_cfg, [], _train("finetune", t_cfg)), records, force
        )
    runs = {"teacher": teacher_dir}
    if stages["student"] is not None:
        t_model = teacher_dir / "model.pt"
        if stages["tune-student"] is not None:
            results["tune-student"] = _run_stage(
                _Stage(
                    "tune-student",
                    stages["tune-student"],
                    [t_model],
                    _search(stages["tune-student"]),
                ),
                records,
                force,
            )
        s_cfg = _with_best(stages["student"], results.get("tune-student"))
        results["student"] = _run_stage(
            _Stage("student", s_cfg, [t_model], _train("distill", s_cfg)), records, force
        )
        runs["student"] = out / "student"
        if s_cfg.baseline:  # the label-only student, exported and scored like the others
            runs["baseline"] = out / "student" / "baseline"
    model_files = [d / "model.pt" for d in runs.values()]
    results["export"] = _run_stage(
        _Stage("export", cfg.export, model_files, _export(out, cfg, runs)), records, force
    )
    onnx_files = [out / f"{n}.onnx" for n in runs]
    results["evaluate"] = _run_stage(
        _Stage("evaluate", cfg.evaluate, onnx_files, _evaluate(out, cfg, teacher_dir, list(runs))),
        records,
        force,
    )
    from transferkit.report import write_report

    seconds = {
        name: (records.read(name) or {}).get("seconds")
        for name in ("tune-teacher", "teacher", "tune-student", "student", "export", "evaluate")
    }
    results["seconds"] = {k: v for k, v in seconds.items() if v is not None}
    report = write_report(cfg, out, runs, results)
    _say(f"report: {report['report_md']}")
    return report
