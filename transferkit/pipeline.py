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

from transferkit.config import ConfigError, ExportConfig, PipelineConfig, as_config, save_config
from transferkit.errors import TransferkitError
from transferkit.pipeline_plan import stage_configs, validate_pipeline

log = logging.getLogger(__name__)

__all__ = ["run_pipeline", "validate_pipeline", "PipelineError", "stage_configs"]


class PipelineError(TransferkitError, RuntimeError):
    """A stage failed in a way the config does not explain (the cause is chained)."""


def _say(msg: str) -> None:
    log.info("%s", msg)


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


def _quantize(
    out: Path, cfg: PipelineConfig, teacher_dir: Path, names: list[str]
) -> Callable[[bool], dict[str, Any]]:
    """INT8 (or fp16) versions of ``names``' fp32 files: ``<name>-int8.onnx`` (``-fp16``), each
    calibrated on the teacher run's training split and gated on its test split; a refusal is a
    result (``shipped: None`` and the figures), not a failure."""

    def run(resume: bool) -> dict[str, Any]:
        from transferkit.export.compact import run_splits
        from transferkit.export.quantize import QuantizationRefused, quantize_model, report_path

        q = cfg.export.quantization
        splits = run_splits(teacher_dir)
        result = {}
        for name in names:
            target = out / f"{name}-{_kind(cfg)}.onnx"
            if q.quantize == "fp16":
                from transferkit.export.fp16 import convert_fp16

                paths = [p for p, _ in splits["test"]][: cfg.export.validation_images]
                convert_fp16(out / f"{name}.onnx", target, paths, force=q.force)
                result[name] = {"onnx": str(target), "shipped": "fp16", "forced": q.force}
                continue
            try:
                rep = quantize_model(
                    out / f"{name}.onnx",
                    target,
                    [p for p, _ in splits["train"]],
                    splits["test"],
                    q,
                    cfg.evaluate.threads,
                )
            except QuantizationRefused as exc:
                _say(f"{name}: {exc}")
                rep = exc.report
            result[name] = {
                "onnx": str(target) if rep["shipped"] else None,
                "shipped": rep["shipped"],
                "forced": rep.get("forced", False),
                "figures": str(report_path(target)),
                "verdicts": rep["verdicts"],
            }
        return result

    return run


def _kind(cfg: PipelineConfig) -> str:
    return "fp16" if cfg.export.quantization.quantize == "fp16" else "int8"


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

    def stage(name: str, config: Any, inputs: list[Path], fn: Callable[[bool], Any]) -> None:
        results[name] = _run_stage(_Stage(name, config, inputs, fn), records, force)

    teacher_dir = (
        Path(cfg.teacher.run).expanduser().resolve() if cfg.teacher.run else out / "teacher"
    )
    if teacher_dir.is_file():
        teacher_dir = teacher_dir.parent
    runs = _training_stages(stages, stage, results, teacher_dir, out)
    stage("export", cfg.export, [d / "model.pt" for d in runs.values()], _export(out, cfg, runs))
    names = _quantized(cfg, stage, results, runs, teacher_dir, out)
    onnx_files = [out / f"{n}.onnx" for n in names]
    stage("evaluate", cfg.evaluate, onnx_files, _evaluate(out, cfg, teacher_dir, names))
    from transferkit.report import write_report

    seconds = {
        name: (records.read(name) or {}).get("seconds")
        for name in (
            "tune-teacher",
            "teacher",
            "tune-student",
            "student",
            "export",
            "quantize",
            "evaluate",
        )  # fmt: skip
    }
    results["seconds"] = {k: v for k, v in seconds.items() if v is not None}
    report = write_report(cfg, out, runs, results)
    _say(f"report: {report['report_md']}")
    return report


def _quantized(
    cfg: PipelineConfig,
    stage: Callable[..., None],
    results: dict[str, Any],
    runs: dict[str, Path],
    teacher_dir: Path,
    out: Path,
) -> list[str]:
    """The optional quantization stage (teacher and distilled student); returns the names of the
    files to evaluate, each quantized file right after its fp32 one."""
    if cfg.export.quantization.quantize == "none":
        return list(runs)
    targets = [n for n in ("teacher", "student") if n in runs]
    inputs = [out / f"{n}.onnx" for n in targets]
    stage("quantize", cfg.export.quantization, inputs, _quantize(out, cfg, teacher_dir, targets))
    shipped = {n for n, r in results["quantize"].items() if r["onnx"]}
    kind = _kind(cfg)
    return [m for n in runs for m in ([n, f"{n}-{kind}"] if n in shipped else [n])]


def _training_stages(
    stages: dict[str, Any],
    stage: Callable[..., None],
    results: dict[str, Any],
    teacher_dir: Path,
    out: Path,
) -> dict[str, Path]:
    """The teacher's search and training, then the student's (each run with the best values of
    its search): ``{"teacher": dir, "student": dir, "baseline": dir}``, the runs to export."""
    if stages["tune-teacher"] is not None:
        stage("tune-teacher", stages["tune-teacher"], [], _search(stages["tune-teacher"]))
    if stages["teacher"] is not None:
        t_cfg = _with_best(stages["teacher"], results.get("tune-teacher"))
        stage("teacher", t_cfg, [], _train("finetune", t_cfg))
    runs = {"teacher": teacher_dir}
    if stages["student"] is None:
        return runs
    t_model = teacher_dir / "model.pt"
    if stages["tune-student"] is not None:
        stage("tune-student", stages["tune-student"], [t_model], _search(stages["tune-student"]))
    s_cfg = _with_best(stages["student"], results.get("tune-student"))
    stage("student", s_cfg, [t_model], _train("distill", s_cfg))
    runs["student"] = out / "student"
    if s_cfg.baseline:  # the label-only student, exported and scored like the others
        runs["baseline"] = out / "student" / "baseline"
    return runs
