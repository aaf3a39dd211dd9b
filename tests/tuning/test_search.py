"""Real Ray Tune searches over real Ray Train runs on the real digits (16 px, 2 epochs), on the
session's Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = 16


def _wait_for_free_cpus(timeout_s: float = 20.0) -> dict[str, float]:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"] - 1e-6:
            break
        time.sleep(0.5)
    return ray.available_resources()


def test_asha_search_writes_table_best_config_plot_and_frees_the_cpus(
    ray_cluster, digits_dir, tmp_path
):
    import ray

    from transferkit.config import FinetuneConfig, TuneConfig, load_config
    from transferkit.tuning.search import tune_search

    exp = tmp_path / "search"
    # One trial at a time, a linear probe (freeze depth 9 of 9). The first trial is the base
    # config's head lr (OptimConfig's 5e-3, points_to_evaluate); then the seed's samples are
    # head lr [5e-3, 1e-7] in that order (BasicVariantGenerator(random_state=1) with that point,
    # checked without a cluster). ASHA records the good trials at the epoch-1 rung, and the one
    # with a useless head lr falls below its cutoff and is stopped.
    cfg = TuneConfig.model_validate(
        {
            "data": {"dataset": str(digits_dir), "image_size": TINY},
            "model": {"arch": "mobilenet_v2", "weights": "IMAGENET1K_V1"},
            "optim": {"epochs": 2},
            "output": str(exp),
            "seed": 1,
            "tune": {
                "num_samples": 3,
                "max_concurrent_trials": 1,
                "grace_period": 1,
                "tracking": "mlflow",
                "search": {"freeze_depth": [9], "backbone_lr": [1e-3], "head_lr": [5e-3, 1e-7]},
            },
        }
    )
    summary = tune_search(cfg)

    table = pd.read_csv(exp / "trials.csv")
    assert len(table) == 3 and set(table["status"]) == {"TERMINATED"}
    for col in (
        "freeze_depth",
        "backbone_lr",
        "head_lr",
        "is_default",
        "best_val_acc",
        "best_val_loss",
        "epochs_run",
        "stopped_early",
        "wall_time_s",
    ):
        assert col in table
    assert "best_val_macro_f1" not in table  # tune.metric is val_acc
    # The first trial (the random searcher numbers them, ..._00000 first) is the base config's
    # values, with the search's fixed freeze depth and backbone lr; it counts among the 3.
    first = table.iloc[0]
    assert first["trial_id"].endswith("_00000") and bool(first["is_default"])
    assert (first["freeze_depth"], first["backbone_lr"], first["head_lr"]) == (9, 1e-3, 5e-3)
    assert table["is_default"].sum() == 1
    default = summary["default"]
    assert default["trial_id"] == first["trial_id"] and summary["metric"] == "val_acc"
    assert default["config"] == {"freeze_depth": 9, "backbone_lr": 1e-3, "head_lr": 5e-3}
    assert (
        default["val_acc"] == first["best_val_acc"] and default["epochs_run"] == first["epochs_run"]
    )
    assert default["stopped_early"] == bool(first["stopped_early"])
    assert summary["best"]["val_acc"] >= default["val_acc"]
    assert summary["best_is_default"] == (summary["best"]["trial_id"] == default["trial_id"])
    assert list(table["stopped_early"]) == list(table["epochs_run"] < 2)
    assert table["stopped_early"].sum() >= 1, table.to_string()
    assert summary["trial_epochs"] == table["epochs_run"].sum() < 3 * 2
    # The best trial is the one with the real learning rate, and its config reproduces it.
    best = summary["best"]
    assert best["config"]["head_lr"] == 5e-3 and best["val_acc"] == table["best_val_acc"].max()
    assert Path(best["checkpoint"]).is_dir() and str(exp) in best["checkpoint"]
    best_cfg = load_config(FinetuneConfig, exp / "best_config.yaml")
    assert best_cfg.optim.head_lr == 5e-3 and best_cfg.model.freeze_depth == 9
    assert best_cfg.scaling.num_workers == 1 and best_cfg.optim.epochs == 2
    assert (exp / "tune_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Tracking: one MLflow run per trial, with the epochs' val_acc logged.
    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=(exp / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("search").experiment_id])
    assert len(runs) == 3 and all("val_acc" in r.data.metrics for r in runs)
    # Done-when 5: no leaked reservations once tune returns.
    assert _wait_for_free_cpus().get("CPU", 0) == pytest.approx(ray.cluster_resources()["CPU"])
    # A new search never silently reuses the folder.
    from transferkit.tuning.storage import ExperimentExistsError

    with pytest.raises(ExperimentExistsError, match="--resume"):
        tune_search(cfg)


def _tk(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "transferkit.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _finished_trials(exp: Path, epochs: int) -> list[str]:
    """Trials that reported their last epoch, once a later trial has started (one at a time)."""
    trials = {
        res.parent.name: [json.loads(x) for x in res.read_text().splitlines() if x.strip()]
        for res in exp.glob("*/result.json")
    }
    if len(trials) < 2:
        return []
    return [t for t, rows in trials.items() if rows and rows[-1].get("epoch") == epochs]


def test_interrupted_search_resumes_without_rerunning_the_finished_trial(
    ray_cluster, digits_dir, tmp_path
):
    exp = tmp_path / "interrupted"
    conf = tmp_path / "search.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "tune": {
                    "scheduler": "fifo",
                    "searcher": "optuna",
                    "max_concurrent_trials": 1,
                    "search": {"freeze_depth": [3, 5]},
                }
            }
        )
    )
    proc = _tk(
        "tune",
        "--config",
        conf,
        "--dataset",
        digits_dir,
        "--model",
        "mobilenet_v2",
        "--image-size",
        TINY,
        "--num-samples",
        2,
        "--max-epochs",
        2,
        "--output",
        exp,
    )
    deadline = time.monotonic() + 400
    while not _finished_trials(exp, 2) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    finished = _finished_trials(exp, 2)
    assert len(finished) == 1, (finished, proc.poll())
    first = finished[0]
    # One trial at a time, so the finished one is the first: the base config's values (freeze
    # depth 0, not in [3, 5], joins the choices; the lrs are OptimConfig's).
    base = {"freeze_depth": 0, "backbone_lr": 2e-3, "head_lr": 5e-3}
    first_config = json.loads((exp / first / "params.json").read_text())
    assert {k: first_config[k] for k in base} == base
    proc.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves its state and returns
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-4000:]
    assert f"transferkit tune --resume {exp}" in out
    before = (exp / first / "result.json").read_bytes()
    ckpts_before = sorted(p.name for p in (exp / first / "train").glob("checkpoint_*"))

    r = subprocess.run(
        [sys.executable, "-m", "transferkit.cli", "tune", "--resume", exp],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    table = pd.read_csv(exp / "trials.csv")
    assert len(table) == 2 and set(table["status"]) == {"TERMINATED"}
    assert (table["epochs_run"] == 2).all()
    # The finished trial was not run again: its results and checkpoints are untouched.
    assert (exp / first / "result.json").read_bytes() == before
    assert sorted(p.name for p in (exp / first / "train").glob("checkpoint_*")) == ckpts_before
    assert (exp / "best_config.yaml").is_file()
    # The restored searcher did not hand out the base values again: one trial holds them.
    summary = json.loads((exp / "best_trial.json").read_text())
    assert summary["default"]["trial_id"] == first and summary["default"]["config"] == base
    assert list(table.loc[table["is_default"], "trial_id"]) == [first]
    holds_base = (
        (table["freeze_depth"] == 0) & (table["backbone_lr"] == 2e-3) & (table["head_lr"] == 5e-3)
    )
    assert holds_base.sum() == 1


def test_distillation_search_varies_the_kd_temperature(ray_cluster, trained_run, tmp_path):
    from transferkit.config import DistillConfig, DistillTuneConfig, load_config
    from transferkit.tuning.search import tune_search

    exp = tmp_path / "kd-search"
    cfg = DistillTuneConfig.model_validate(
        {
            "teacher": str(trained_run),
            "optim": {"epochs": 1},
            "output": str(exp),
            "tune": {
                "num_samples": 2,
                "scheduler": "fifo",
                "max_concurrent_trials": 1,
                "search": {"temperature": [2.0, 8.0], "head_lr": None, "backbone_lr": [3e-3]},
            },
        }
    )
    summary = tune_search(cfg)
    table = pd.read_csv(exp / "trials.csv")
    assert (
        len(table) == 2
        and set(table["status"]) == {"TERMINATED"}
        and (table["epochs_run"] == 1).all()
    )
    # The base temperature (KDConfig's 4.0) is not in [2, 8]: it joins the choices and the first
    # trial runs it.
    assert (
        set(table["temperature"]) <= {2.0, 8.0, 4.0} and "freeze_depth" not in table
    )  # student from scratch
    assert table.iloc[0]["temperature"] == 4.0 and bool(table.iloc[0]["is_default"])
    assert summary["default"]["config"] == {"backbone_lr": 3e-3, "temperature": 4.0}
    best = load_config(DistillConfig, exp / "best_config.yaml")  # `distill --config` accepts it
    assert best.kd.temperature == summary["best"]["config"]["temperature"]
    assert Path(best.teacher).resolve() in (
        trained_run.resolve(),
        (trained_run / "model.pt").resolve(),
    )
    assert best.model.arch == "mobilenet_v3_small"
