"""After a Ray Train run: the best epoch by ``cfg.metric``, the portable ``model.pt``, the
history (``metrics.jsonl``) and the test split's evaluation (``test_metrics.json``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from transferkit.config import Preprocessing
from transferkit.data.dataset import ImageListDataset, build_transform
from transferkit.errors import TransferkitError
from transferkit.models import count_parameters
from transferkit.models.portable import save_portable
from transferkit.training.evaluate import eval_sums, sums_to_metrics
from transferkit.training.state import load_state

if TYPE_CHECKING:
    from transferkit.training.trainer import RunPlan

log = logging.getLogger(__name__)


class TrainingError(TransferkitError, RuntimeError):
    """The Ray Train run failed (the cause is chained)."""


def metric_mode(metric: str) -> str:
    """``"min"`` for ``val_loss``, ``"max"`` for the accuracy-like metrics."""
    return "min" if metric == "val_loss" else "max"


def _rank_key(metric: str) -> Callable[[dict[str, Any]], tuple]:
    """Sort key of an epoch's metrics, larger = better: ``metric`` (negated for a loss), then the
    lower val loss, then the later epoch. A history written before a metric existed falls back
    to ``val_acc``."""
    sign = -1.0 if metric_mode(metric) == "min" else 1.0

    def key(m: dict[str, Any]) -> tuple:
        return (sign * m.get(metric, m["val_acc"]), -m["val_loss"], m["epoch"])

    return key


def _load_state(checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as d:
        return load_state(d)


def finish_run(plan: RunPlan, result: Any, source: str | None = None) -> dict[str, Any]:
    """Write the run's ``model.pt`` (best epoch by ``cfg.metric``), history and test metrics.

    Args:
        plan: the run :func:`~transferkit.training.trainer.start_run` planned.
        result: Ray Train's ``Result`` of :func:`~transferkit.training.trainer.fit_run`.
        source: what ``model.pt`` records as its origin (default: the run folder).

    Returns:
        The run summary (best epoch, its metrics, test metrics, file paths).

    Raises:
        TrainingError: the run produced no checkpoint.
    """
    cfg, run_dir, names = plan.cfg, plan.run_dir, plan.splits.class_names
    if result.checkpoint is None:
        raise TrainingError(f"training produced no checkpoint in {run_dir}")
    history = _load_state(result.checkpoint)["history"]
    with open(run_dir / "metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    model, best = _best_model(plan, result, history)
    test = (
        evaluate_split(model, plan.splits.test, plan.preprocessing, len(names), class_names=names)
        if plan.splits.test
        else {}
    )
    save_portable(
        run_dir / "model.pt",
        model,
        cfg.model.arch,
        names,
        plan.preprocessing,
        cfg.model.width_mult,
        source=source or str(run_dir),
        keep_stages=cfg.model.keep_stages,
        head_hidden=cfg.model.head_hidden,
        metrics={k: v for k, v in {**best, **test}.items() if isinstance(v, (int, float))},
    )
    (run_dir / "test_metrics.json").write_text(json.dumps(test, indent=2))
    _log_outcome(plan, best, test)
    return {
        "run_dir": str(run_dir),
        "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "parameters": count_parameters(model),
        **test,
    }


def _best_model(plan: RunPlan, result: Any, history: list[dict[str, Any]]):
    """``(model, best epoch's metrics)``: the plan's model holding the weights of the best kept
    checkpoint by ``cfg.metric`` (the latest when Ray kept no ranking), in eval mode."""
    key = _rank_key(plan.cfg.metric)
    ranked = sorted(result.best_checkpoints or [], key=lambda cm: key(cm[1]), reverse=True)
    state = _load_state(ranked[0][0] if ranked else result.checkpoint)
    model = plan.built.model
    model.load_state_dict(state["model"])
    model.eval()
    best = next((m for m in history if m["epoch"] == state["epoch"] + 1), max(history, key=key))
    return model, best


def _log_outcome(plan: RunPlan, best: dict[str, Any], test: dict[str, Any]) -> None:
    log.info(
        f"best epoch {best['epoch']} by {plan.cfg.metric}: val_acc {best['val_acc']:.4f}"
        + (f", balanced {best['val_balanced_acc']:.4f}" if "val_balanced_acc" in best else "")
    )
    if test:
        recalls = ", ".join(
            f"{n} {v['recall']:.3f}" for n, v in test["test_report"]["per_class"].items()
        )
        log.info(
            f"test: top-1 {test['test_acc']:.4f} on {int(test['test_images'])} images"
            + (f", top-5 {test['test_top5']:.4f}" if "test_top5" in test else "")
            + f", balanced {test['test_balanced_acc']:.4f}"
            + (f"; recall {recalls}" if len(plan.splits.class_names) <= 10 else "")
        )
    log.info(f"wrote {plan.run_dir / 'model.pt'}")


def evaluate_split(
    model: torch.nn.Module,
    samples,
    prep: Preprocessing,
    num_classes: int,
    batch_size: int = 128,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Loss, top-1 (top-5), balanced accuracy and macro F1 of ``model`` (eval mode, CPU) on
    ``samples``; with ``class_names`` also ``test_report``: per-class precision/recall/F1 and the
    confusion matrix (:func:`transferkit.metrics.classification_metrics`)."""
    from transferkit.metrics import classification_metrics
    from transferkit.training.evaluate import confusion_from_sums

    ds = ImageListDataset(samples, build_transform(prep, None))
    loader = DataLoader(ds, batch_size=batch_size)
    model.eval()
    sums = eval_sums(model, loader, torch.device("cpu"), num_classes)
    out: dict[str, Any] = sums_to_metrics(sums, num_classes, "test")
    out["test_images"] = float(len(samples))
    if class_names is not None:
        out["test_report"] = classification_metrics(
            confusion_from_sums(sums, num_classes), class_names
        )
    return out
