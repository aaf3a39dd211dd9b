"""The pipeline report from stage results (no training): the model table with balanced accuracy
and the positive class's recall, the label-only comparison, the published figures beside ours,
default vs best of a search, wall times and the confusion-matrix plot."""

import json

from transferkit.config import PipelineConfig, validate
from transferkit.metrics import classification_metrics
from transferkit.report import write_report


def _model(arch, params, cm):
    m = classification_metrics(cm, ["defective", "functional"])
    return {
        "onnx": f"{arch}.onnx",
        "arch": arch,
        "parameters": params,
        "file_mb": params * 4e-6,
        "input_size": 192,
        "test_acc": m["accuracy"],
        "test_images": m["images"],
        "threads": 2,
        "latency_ms": {"1": {"p50": 2.0, "p99": 3.0}, "32": {"p50": 20.0, "p99": 25.0}},
        **m,
    }


def test_report_puts_recall_baseline_published_and_default_vs_best_side_by_side(tmp_path):
    cfg = validate(
        PipelineConfig,
        {
            "output": str(tmp_path),
            "report": {
                "positive_class": "defective",
                "published": [
                    {"name": "VGG-19 (GPU)", "accuracy": 0.8842, "source": "Deitsch et al. 2019"}
                ],
            },
        },
    )
    # rows: true defective, true functional; columns: predicted
    evaluation = {
        "teacher": _model("mobilenet_v2", 2_000_000, [[45, 15], [5, 135]]),
        "student": _model("mobilenet_v2", 250_000, [[40, 20], [6, 134]]),
        "baseline": _model("mobilenet_v2", 250_000, [[30, 30], [4, 136]]),
    }
    search = {
        "best": {
            "trial_id": "t1",
            "config": {"head_lr": 0.01},
            "val_acc": 0.9,
            "val_loss": 0.3,
            "epoch": 2,
            "checkpoint": "",
        },
        "default": {
            "trial_id": "t0",
            "config": {"head_lr": 0.005},
            "val_acc": 0.85,
            "epochs_run": 2,
            "stopped_early": False,
        },
        "best_is_default": False,
        "metric": "val_acc",
        "num_trials": 3,
        "trial_epochs": 5,
        "max_epochs": 2,
        "stopped_early": 1,
        "errored": 0,
        "trials_csv": "trials.csv",
        "plot": str(tmp_path / "tune.png"),
    }
    results = {
        "evaluate": evaluation,
        "tune-teacher": search,
        "seconds": {"tune-teacher": 300.0, "teacher": 900.0, "student": 600.0},
    }
    runs = {n: tmp_path / n for n in evaluation}
    report = write_report(cfg, tmp_path, runs, results)
    md = (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["seconds"]["total"] == 1800.0
    # teacher: accuracy (45 + 135) / 200 = 90%, defective recall 45 / 60 = 75%, balanced (0.75 + 135/140) / 2
    assert "| teacher | mobilenet_v2 | 2,000,000 |" in md and "| 90.00% | 85.71% | 75.00% |" in md
    assert "recall defective" in md and "recall functional" not in md
    assert "20.0 min" in md  # teacher: tune 5 min + fine-tune 15 min
    d = report["distillation_vs_labels_only"]
    assert d["distillation_better"] and abs(d["accuracy_gain"] - 0.04) < 1e-9  # 87% vs 83%
    assert "distillation beat labels alone" in md
    assert "| VGG-19 (GPU) | 88.42% | Deitsch et al. 2019 |" in md
    assert "Default values (trial `t0`" in md and "val_acc 85.00%; best trial: 90.00%" in md
    assert (tmp_path / "confusion_matrices.png").stat().st_size > 1000
