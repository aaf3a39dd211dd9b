"""The pipeline's report: ``report.md`` + ``report.json`` + PNG plots in the pipeline folder.

Teacher and student (and the label-only student, when trained) side by side as measured on their
ONNX files with ONNX Runtime (test accuracy, balanced accuracy, per-class recall, parameters, file
size, latency p50/p99 per batch size, wall time of their stages), their confusion matrices, the
published figures the config lists, the training curves, each search's default vs best trial, the
export checks, and where every artifact is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transferkit.config import PipelineConfig

__all__ = ["write_report"]


def _history(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def _curves_png(histories: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(histories.values()):
        return False
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, rows) in enumerate(histories.items()):
        if not rows:
            continue
        epochs, color = [r["epoch"] for r in rows], f"C{i}"
        ax_acc.plot(
            epochs,
            [100 * r["val_acc"] for r in rows],
            marker="o",
            ms=3,
            color=color,
            label=f"{name} val",
        )
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], color=color, label=f"{name} train")
        ax_loss.plot(
            epochs, [r["val_loss"] for r in rows], ls="--", color=color, label=f"{name} val"
        )
    ax_acc.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (train: objective, val: cross-entropy)")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _confusion_png(models: dict[str, dict[str, Any]], path: Path) -> bool:
    """One confusion matrix per model (rows true, columns predicted; counts, row-normalised
    colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = {n: m for n, m in models.items() if m.get("confusion_matrix")}
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(3.8 * len(shown), 3.6), squeeze=False)
    for ax, (name, m) in zip(axes[0], shown.items()):
        cm = np.asarray(m["confusion_matrix"], dtype=float)
        classes = m.get("classes") or [str(i) for i in range(len(cm))]
        rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(cm)):
            for j in range(len(cm)):
                ax.text(
                    j,
                    i,
                    f"{int(cm[i, j])}",
                    ha="center",
                    va="center",
                    color="white" if rows[i, j] > 0.5 else "black",
                    fontsize=9,
                )
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set(
            xlabel="predicted",
            ylabel="true",
            title=f"{name}: acc {100 * m['test_acc']:.1f}%, bal. {100 * m.get('balanced_accuracy', 0):.1f}%",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


_STAGES_OF = {
    "teacher": ("tune-teacher", "teacher"),
    "student": ("tune-student", "student"),
    "baseline": (),
}


def write_report(
    cfg: PipelineConfig, out: Path, runs: dict[str, Path], results: dict[str, Any]
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``training_curves.png`` into ``out``.

    Args:
        cfg: the pipeline config.
        out: the pipeline folder.
        runs: ``{"teacher": run folder, "student": run folder}`` (student optional).
        results: each stage's result (``evaluate`` holds the ONNX figures).

    Returns:
        The report dict, plus ``report_md`` / ``report_json`` paths.
    """
    evaluation = results.get("evaluate", {})
    histories = {name: _history(d) for name, d in runs.items()}
    curves = out / "training_curves.png"
    has_curves = _curves_png(histories, curves)
    confusion = out / "confusion_matrices.png"
    has_confusion = _confusion_png(evaluation, confusion)
    seconds = results.get("seconds", {})
    report: dict[str, Any] = {
        "pipeline": str(out),
        "data": cfg.data.dataset,
        "models": evaluation,
        "positive_class": cfg.report.positive_class,
        "published": [p.model_dump(mode="json") for p in cfg.report.published],
        "seconds": {**seconds, "total": sum(seconds.values())},
        "export": results.get("export", {}),
        "quantization": results.get("quantize", {}),
        "training": {
            name: {
                "run_dir": str(d),
                "epochs": len(h),
                "best_val_acc": max((r["val_acc"] for r in h), default=None),
            }
            for (name, d), h in zip(runs.items(), histories.values())
        },
        "search": {k: results[k] for k in ("tune-teacher", "tune-student") if results.get(k)},
        "artifacts": _artifacts(out, runs, results, has_curves, has_confusion),
    }
    report.update(_ratios(evaluation))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(_markdown(report, has_curves, has_confusion))
    report["report_md"], report["report_json"] = str(out / "report.md"), str(out / "report.json")
    return report


def _ratios(evaluation: dict[str, Any]) -> dict[str, Any]:
    """``student_vs_teacher`` (accuracy, parameter, file size ratios and p50 speed-ups) and
    ``distillation_vs_labels_only`` (the student's gains over the label-only baseline), for the
    models that were evaluated."""
    out: dict[str, Any] = {}
    if "teacher" in evaluation and "student" in evaluation:
        t, s = evaluation["teacher"], evaluation["student"]
        out["student_vs_teacher"] = {
            "accuracy_ratio": s["test_acc"] / max(t["test_acc"], 1e-12),
            "parameter_ratio": s["parameters"] / max(t["parameters"], 1),
            "file_ratio": s["file_mb"] / t["file_mb"],
            **{
                f"p50_speedup_b{b}": t["latency_ms"][b]["p50"] / s["latency_ms"][b]["p50"]
                for b in t["latency_ms"]
                if b in s["latency_ms"]
            },
        }
    if "student" in evaluation and "baseline" in evaluation:
        s, b = evaluation["student"], evaluation["baseline"]
        out["distillation_vs_labels_only"] = {
            "accuracy_gain": s["test_acc"] - b["test_acc"],
            "balanced_accuracy_gain": s.get("balanced_accuracy", 0.0)
            - b.get("balanced_accuracy", 0.0),
            "distillation_better": s["test_acc"] > b["test_acc"],
        }
    return out


def _artifacts(
    out: Path, runs: dict[str, Path], results: dict[str, Any], curves: bool, confusion: bool
) -> dict[str, str]:
    """Every file the pipeline wrote, by name."""
    searches = [k for k in ("tune-teacher", "tune-student") if results.get(k)]
    return {
        **{f"{n}_run": str(d) for n, d in runs.items()},
        **{f"{n}_onnx": str(out / f"{n}.onnx") for n in runs},
        **{
            f"{Path(x['onnx']).stem}_onnx": x["onnx"]
            for x in results.get("quantize", {}).values()
            if x.get("onnx")
        },  # fmt: skip
        **({"training_curves": str(out / "training_curves.png")} if curves else {}),
        **({"confusion_matrices": str(out / "confusion_matrices.png")} if confusion else {}),
        **{f"{k}_plot": results[k]["plot"] for k in searches},
        "report_md": str(out / "report.md"),
        "report_json": str(out / "report.json"),
        "stage_records": str(out / "stages"),
    }


def _recall(m: dict[str, Any], cls: str | None) -> float | None:
    return (m.get("per_class") or {}).get(cls, {}).get("recall") if cls else None


def _model_table(r: dict[str, Any]) -> list[str]:
    models = r["models"]
    first = next(iter(models.values()))
    batches = list(first["latency_ms"])
    classes = first.get("classes") or []
    pos = r.get("positive_class")
    recall_cols = [pos] if pos in classes else classes
    lines = [
        f"## Models, measured on their ONNX files (ONNX Runtime, CPU, {first['threads']} "
        f"threads; test split, {first['test_images']} images)",
        "",
        "| model | architecture | parameters | ONNX MB | input px | accuracy | balanced acc. | "
        + "".join(f"recall {c} | " for c in recall_cols)
        + " | ".join(f"p50 / p99 ms, batch {b}" for b in batches)
        + " | wall time |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * (len(recall_cols) + len(batches) + 1),
    ]
    for name, m in models.items():
        lat = " | ".join(
            f"{m['latency_ms'][b]['p50']:.2f} / {m['latency_ms'][b]['p99']:.2f}" for b in batches
        )
        recalls = "".join(f"{_pct(_recall(m, c))} | " for c in recall_cols)
        secs = sum(r["seconds"].get(st, 0.0) for st in _STAGES_OF.get(name, ()))
        wall = f"{secs / 60:.1f} min" if secs else ("in student" if name == "baseline" else "-")
        lines.append(
            f"| {name} | {m['arch']} | {m['parameters']:,} | {m['file_mb']:.2f} | "
            f"{m['input_size']} | {_pct(m['test_acc'])} | {_pct(m.get('balanced_accuracy'))} | "
            f"{recalls}{lat} | {wall} |"
        )
    return lines


def _markdown(r: dict[str, Any], has_curves: bool, has_confusion: bool = False) -> str:
    """``report.md`` from the report dict: wall time, the models table and ratios, published
    results, training, searches, export checks and artifacts."""
    lines = [
        "# transferkit pipeline report",
        "",
        f"Pipeline folder: `{r['pipeline']}`; data: `{r['data']}`.",
        "",
    ]
    if r["seconds"].get("total"):
        lines += [
            "Wall time: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in r["seconds"].items() if k != "total")
            + f"; total {r['seconds']['total'] / 60:.1f} min.",
            "",
        ]
    if r["models"]:
        lines += _model_table(r) + _ratio_lines(r)
        if has_confusion:
            lines += ["", "![confusion matrices](confusion_matrices.png)"]
        lines.append("")
    lines += _quantization_lines(r.get("quantization") or {})
    lines += _published_lines(r) + _training_lines(r, has_curves)
    for key, search in r["search"].items():
        lines += _search_lines(key, search, r["pipeline"])
    if r["export"]:
        lines += ["## Export checks (ONNX vs PyTorch)", ""]
        for name, e in r["export"].items():
            lines.append(
                f"- {name}: max |logit difference| {e['max_abs_diff']:.2e}, top-1 agreement "
                f"{_pct(e['top1_agreement'])} on {e['images_compared']} images"
            )
        lines.append("")
    lines += ["## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in r["artifacts"].items()]
    return "\n".join(lines) + "\n"


def _quantization_lines(q: dict[str, Any]) -> list[str]:
    """What the quantization stage shipped (its rows are in the models table) or refused."""
    if not q:
        return []
    lines = ["## Quantization", ""]
    for name, x in q.items():
        if x.get("shipped") == "fp16":
            lines.append(f"- {name}: fp16 file `{x['onnx']}`")
            continue
        verdicts = x.get("verdicts", {})
        why = "; ".join(
            f"{v}: accuracy {-100 * d['accuracy_drop']:+.2f} pts, batch-32 latency "
            f"{d['latency_ratio']:.2f}x fp32" + ("" if d["passed"] else " (fails the gate)")
            for v, d in verdicts.items()
        )
        if x.get("shipped"):
            how = "forced past the gate" if x.get("forced") else "passed the gate"
            lines.append(f"- {name}: INT8 {x['shipped']} ({how}) `{x['onnx']}`. {why}.")
        else:
            lines.append(f"- {name}: no INT8 file: no variant passed the gate. {why}.")
        lines.append(f"  Figures: `{x.get('figures')}`")
    return lines + [""]


def _ratio_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    if "student_vs_teacher" in r:
        v = r["student_vs_teacher"]
        speedups = ", ".join(
            f"{v[k]:.2f}x at batch {k.split('_b')[1]}" for k in v if k.startswith("p50_speedup")
        )
        lines += [
            "",
            f"Student / teacher: accuracy {v['accuracy_ratio']:.4f}, parameters "
            f"{v['parameter_ratio']:.3f}, file size {v['file_ratio']:.3f}; p50 speed-up "
            f"{speedups}.",
        ]
    if "distillation_vs_labels_only" in r:
        d = r["distillation_vs_labels_only"]
        lines += [
            "",
            f"Distillation vs the label-only student (same architecture, initialisation and "
            f"epochs): accuracy {100 * d['accuracy_gain']:+.2f} pts, balanced accuracy "
            f"{100 * d['balanced_accuracy_gain']:+.2f} pts: distillation "
            + ("beat" if d["distillation_better"] else "did not beat")
            + " labels alone on this data.",
        ]
    return lines


def _published_lines(r: dict[str, Any]) -> list[str]:
    if not r["published"]:
        return []
    lines = [
        "## Beside published results",
        "",
        "| result | accuracy | source | note |",
        "|---|---:|---|---|",
    ]
    lines += [
        f"| transferkit {n} (this run) | {_pct(m['test_acc'])} | this report | "
        f"{m['arch']}, {m['input_size']} px, {m['test_images']} test images |"
        for n, m in r["models"].items()
    ]
    lines += [
        f"| {p['name']} | {_pct(p['accuracy'])} | {p['source']} | {p['note']} |"
        for p in r["published"]
    ]
    return [*lines, ""]


def _training_lines(r: dict[str, Any], has_curves: bool) -> list[str]:
    lines = ["## Training", ""]
    for name, t in r["training"].items():
        best = t["best_val_acc"]
        lines.append(
            f"- {name}: {t['epochs']} epochs, best val top-1 {_pct(best)} (`{t['run_dir']}`)"
        )
    if has_curves:
        lines += ["", "![training curves](training_curves.png)"]
    return [*lines, ""]


def _search_lines(key: str, s: dict[str, Any], pipeline: str) -> list[str]:
    """One search's section: the default trial beside the best, the budget used, the plot."""
    b, d = s["best"], s.get("default")
    metric = s.get("metric", "val_acc")
    lines = [f"## Search: {key}", ""]
    if d:
        lines += [
            f"Default values (trial `{d['trial_id']}`, epochs run: {d.get('epochs_run', '?')}"
            + (", stopped early" if d.get("stopped_early") else "")
            + f"): {metric} "
            f"{_pct(d.get(metric))}; best trial: {_pct(b.get(metric, b.get('val_acc')))}"
            + (" (the defaults were best)." if s.get("best_is_default") else "."),
            "",
        ]
    plot = Path(s["plot"]).relative_to(pipeline) if s["plot"].startswith(pipeline) else s["plot"]
    return lines + [
        f"{s['num_trials']} trials, {s['trial_epochs']} trial-epochs of "
        f"{s['num_trials'] * s['max_epochs']} possible ({s['stopped_early']} stopped early by ASHA, "
        f"{s['errored']} failed). Best trial `{b['trial_id']}`: val top-1 {_pct(b['val_acc'])} at "
        f"epoch {b['epoch']} with `{json.dumps(b['config'])}`. All trials: `{s['trials_csv']}`.",
        "",
        f"![{key}]({plot})",
        "",
    ]
