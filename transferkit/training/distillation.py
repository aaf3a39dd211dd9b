"""Driver of ``transferkit distill``: a fine-tuned teacher into a compact student on Ray Train.

The student trains in the same per-worker loop as fine-tuning, with
:class:`~transferkit.training.distill.KDObjective` plugged in; it gets the same checkpoints,
resume, metrics and portable ``model.pt`` (so ``transferkit export`` works on it unchanged).

Outputs in the student's run folder, beside the usual ones:
``distill_report.json`` / ``distill_report.md`` (teacher vs student vs label-only baseline:
parameters, test accuracy on the same test images) and ``baseline/`` (the label-only run).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transferkit.config import ConfigError, DistillConfig, FinetuneConfig, Preprocessing, as_config
from transferkit.data.dataset import verify_images
from transferkit.data.folder import DatasetError, Splits, dataset_folder, scan_images
from transferkit.models import count_parameters
from transferkit.models.portable import load_portable
from transferkit.training.kd import UNLABELED
from transferkit.training.trainer import evaluate_split, finish_run, fit_run, load_splits, start_run

log = logging.getLogger(__name__)

__all__ = ["distill", "teacher_dataset", "student_inputs", "TEACHER_WEIGHTS"]

TEACHER_WEIGHTS = "teacher"
"""``model.weights: teacher`` in a distillation: start the student from the teacher's weights."""


def _run_folder(teacher: str) -> Path:
    """A run folder, or the folder of a ``model.pt``."""
    p = Path(teacher)
    return p if p.is_dir() else p.parent


def teacher_dataset(teacher: str) -> str | None:
    """The dataset the teacher run was trained on (from its ``config.yaml``), if known."""
    import yaml

    cfg_file = _run_folder(teacher) / "config.yaml"
    if cfg_file.is_file():
        return (yaml.safe_load(cfg_file.read_text()) or {}).get("data", {}).get("dataset")
    return None


def _teacher_splits(teacher: str) -> Splits | None:
    f = _run_folder(teacher) / "splits.json"
    return Splits.from_json(f.read_text()) if f.is_file() else None


def _resolve_student_splits(cfg: DistillConfig) -> Splits:
    """The teacher's own splits when the dataset is the teacher's (same test images for both);
    otherwise a fresh split. Unlabelled transfer images are appended to train with label -1."""
    t_splits = _teacher_splits(cfg.teacher)
    same = t_splits is not None and str(dataset_folder(cfg.data.dataset)) == t_splits.source
    splits = t_splits if same else load_splits(cfg)
    if cfg.unlabeled:
        try:
            paths = scan_images(cfg.unlabeled)
        except DatasetError as exc:
            raise ConfigError(f"unlabeled (--unlabeled): {exc}") from None
        good, _ = verify_images([(p, UNLABELED) for p in paths])
        if not good:
            raise ConfigError(f"unlabeled: {cfg.unlabeled} holds no readable images")
        splits.train = splits.train + good
        log.info(f"transfer set: {len(good)} unlabelled images from {cfg.unlabeled}")
    return splits


def _check_classes(splits: Splits, teacher_classes: list[str]) -> None:
    if splits.class_names != teacher_classes:
        raise ConfigError(
            f"teacher: its classes {teacher_classes} differ from the dataset's "
            f"{splits.class_names}; distil on the data the teacher was trained for"
        )


def _with_teacher_weights(cfg: DistillConfig, teacher_path: str) -> DistillConfig:
    """``cfg`` with the teacher's absolute ``model.pt`` path, and as the student's weights where
    ``model.weights`` is ``teacher`` (a student cut from the teacher's own backbone)."""
    update: dict[str, Any] = {"teacher": teacher_path}
    if cfg.model.weights == TEACHER_WEIGHTS:
        update["model"] = cfg.model.model_copy(update={"weights": teacher_path})
    return cfg.model_copy(update=update)


def _student_preprocessing(cfg: DistillConfig, t_prep: Preprocessing) -> Preprocessing | None:
    """The teacher's preprocessing for a student without weights of its own (``--image-size``
    still applies); ``None`` lets a student with weights take the weights' own."""
    if cfg.model.weights is not None:
        return None
    if cfg.data.image_size is not None:
        return t_prep.model_copy(update={"input_size": cfg.data.image_size, "crop_pct": 1.0})
    return t_prep


def student_inputs(
    cfg: DistillConfig,
) -> tuple[DistillConfig, Splits, Preprocessing | None, Preprocessing]:
    """What a distillation run needs before any worker starts, checked.

    Returns:
        ``(cfg with the teacher's absolute model.pt path, the student's splits, the student's
        preprocessing or None to take its weights' own, the teacher's preprocessing)``.

    Raises:
        PortableModelError: no teacher model; ConfigError: its classes differ from the data's.
    """
    teacher, t_info = load_portable(cfg.teacher)
    splits = _resolve_student_splits(cfg)
    _check_classes(splits, t_info["class_names"])
    cfg = _with_teacher_weights(cfg, t_info["path"])
    return cfg, splits, _student_preprocessing(cfg, teacher.preprocessing), teacher.preprocessing


def distill(cfg: DistillConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into ``cfg.model`` on ``cfg.data`` (+ ``cfg.unlabeled``).

    Returns:
        The report dict (also written as ``distill_report.json`` and ``.md``).

    Raises:
        ConfigError: teacher classes differ from the data's, no transfer images, resources.
        PortableModelError: the teacher folder holds no ``model.pt``.
        plus the errors of :func:`transferkit.training.trainer.prepare_run`.
    """
    teacher, t_info = load_portable(cfg.teacher)
    t_prep = teacher.preprocessing
    run_dir = Path(cfg.output).expanduser().resolve()
    splits = None
    if not (resume and (run_dir / "splits.json").is_file()):  # a resumed run keeps its splits
        splits = _resolve_student_splits(cfg)
        _check_classes(splits, t_info["class_names"])
    cfg = _with_teacher_weights(cfg, t_info["path"])  # absolute: workers may run elsewhere
    plan = start_run(
        cfg, resume, overwrite, splits=splits, preprocessing=_student_preprocessing(cfg, t_prep)
    )
    s_prep = plan.preprocessing
    log.info(
        f"teacher {t_info['arch']} ({count_parameters(teacher.model):,} parameters) "
        f"-> student {cfg.model.arch} x{cfg.model.width_mult} "
        f"({count_parameters(plan.built.model):,}); T={cfg.kd.temperature}, "
        f"hard_weight={cfg.kd.hard_weight}, soft_weight={cfg.kd.soft_weight}"
    )
    result = fit_run(plan, teacher_preprocessing=t_prep if t_prep != s_prep else None)
    student = finish_run(plan, result)
    teacher_test = evaluate_split(
        teacher.model, plan.splits.test, t_prep, len(t_info["class_names"])
    )
    baseline = _run_baseline(cfg, plan.splits, s_prep, resume) if cfg.baseline else None
    report = _report(cfg, plan, t_info, teacher, teacher_test, student, baseline)
    return report


def _labelled(samples):
    return [s for s in samples if s[1] != UNLABELED]


def _run_baseline(
    cfg: DistillConfig, splits: Splits, prep: Preprocessing, resume: bool
) -> dict[str, Any]:
    """Label-only student: same architecture, epochs, optimizer; cross-entropy on the labels."""
    out = Path(cfg.output).expanduser().resolve() / "baseline"
    base = as_config(cfg, FinetuneConfig, output=str(out))
    if (out / "model.pt").is_file():
        log.info(f"label-only baseline already trained: {out}")
    else:
        labelled = Splits(
            splits.class_names,
            _labelled(splits.train),
            splits.val,
            splits.test,
            splits.source,
            splits.skipped,
        )
        if cfg.baseline_dataset:
            base = base.model_copy(
                update={"data": base.data.model_copy(update={"dataset": cfg.baseline_dataset})}
            )
            labelled = None
        log.info(f"training the label-only baseline in {out}")
        plan = start_run(
            base,
            resume=resume and out.exists(),
            overwrite=not resume,
            splits=labelled,
            preprocessing=prep,
        )
        finish_run(plan, fit_run(plan))
    built, _ = load_portable(out)  # scored on the student's test split, whatever it trained on
    test = evaluate_split(built.model, splits.test, built.preprocessing, len(splits.class_names))
    return {"run_dir": str(out), "dataset": cfg.baseline_dataset or cfg.data.dataset, **test}


def _report(cfg, plan, t_info, teacher, teacher_test, student, baseline) -> dict[str, Any]:
    t_params = count_parameters(teacher.model)
    s_params = count_parameters(plan.built.model)
    n_unlabeled = sum(1 for s in plan.splits.train if s[1] == UNLABELED)
    report = {
        "teacher": {
            "path": t_info["path"],
            "arch": t_info["arch"],
            "parameters": t_params,
            "test_acc": teacher_test["test_acc"],
        },
        "student": {
            "run_dir": str(plan.run_dir),
            "arch": cfg.model.arch,
            "width_mult": cfg.model.width_mult,
            "parameters": s_params,
            "test_acc": student.get("test_acc"),
            "best_val_acc": student["best_val_acc"],
        },
        "baseline": baseline,
        "parameter_ratio": s_params / t_params,
        "accuracy_ratio": (student.get("test_acc") or 0.0) / max(teacher_test["test_acc"], 1e-12),
        "kd": cfg.kd.model_dump(mode="json"),
        "epochs": cfg.optim.epochs,
        "data": {
            "dataset": cfg.data.dataset,
            "labelled_train": len(plan.splits.train) - n_unlabeled,
            "unlabelled_transfer": n_unlabeled,
            "val": len(plan.splits.val),
            "test": len(plan.splits.test),
        },
    }
    (plan.run_dir / "distill_report.json").write_text(json.dumps(report, indent=2))
    md = _markdown(report)
    (plan.run_dir / "distill_report.md").write_text(md)
    log.info("%s", md.rstrip())
    return report


def _markdown(r: dict[str, Any]) -> str:
    def acc(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    rows = [
        ("teacher", r["teacher"]["arch"], r["teacher"]["parameters"], r["teacher"]["test_acc"]),
        (
            "student (distilled)",
            f"{r['student']['arch']} x{r['student']['width_mult']}",
            r["student"]["parameters"],
            r["student"]["test_acc"],
        ),
    ]
    if r["baseline"]:
        rows.append(
            (
                "student (labels only)",
                f"{r['student']['arch']} x{r['student']['width_mult']}",
                r["student"]["parameters"],
                r["baseline"]["test_acc"],
            )
        )
    d = r["data"]
    lines = [
        "# Distillation report",
        "",
        f"Test split: {d['test']} labelled images; training: {d['labelled_train']} labelled + "
        f"{d['unlabelled_transfer']} unlabelled; {r['epochs']} epochs; T={r['kd']['temperature']}, "
        f"hard_weight={r['kd']['hard_weight']}, soft_weight={r['kd']['soft_weight']}, "
        f"mixup_alpha={r['kd']['mixup_alpha']}"
        + (f", hints {r['kd']['hints']} x{r['kd']['hint_weight']}" if r["kd"]["hints"] else ""),
        "",
        "| model | architecture | parameters | test top-1 |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {a} | {b} | {c:,} | {acc(e)} |" for a, b, c, e in rows]
    lines += [
        "",
        f"Student/teacher parameters: {r['parameter_ratio']:.3f}; "
        f"student/teacher accuracy: {r['accuracy_ratio']:.4f}",
    ]
    if r["baseline"] and r["baseline"]["dataset"] != r["data"]["dataset"]:
        lines.append(f"Baseline trained on {r['baseline']['dataset']}.")
    return "\n".join(lines) + "\n"
